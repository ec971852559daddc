"""The `moe-pipeline` command line. The only module that reads argv.

Commands import torch and mlflow inside their bodies so that `--help`, `validate`,
`schema` and `dag` start fast. Every `MoeError` becomes one message and exit code 2.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from moe_pipeline.errors import Interrupted, MoeError, PipelineError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Pipelines of small single-task experts: validate, train stage by stage, track staleness, inspect.",
)

PipelineArg = typer.Argument(..., help="pipeline YAML file, e.g. pipelines/digits.yaml", show_default=False)


class DagFormat(str, Enum):
    """The output formats of `dag`."""
    text = "text"
    mermaid = "mermaid"
    dot = "dot"


def _echo(text: str) -> None:
    typer.echo(text)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        _echo(f"moe-pipeline {version('moe-pipeline')}")
        raise typer.Exit()


@app.callback()
def _main(_: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="print the version and exit")) -> None:
    """Pipelines of small single-task experts: validate, train stage by stage, track staleness, inspect."""


@app.command()
def validate(pipeline: Path = PipelineArg) -> None:
    """Check a pipeline file: schema, references, cycles, code it names. Exit 2 with FILE:LINE:COL on errors."""
    from moe_pipeline.pipeline.loader import load_pipeline, make_importable
    from moe_pipeline.state.fingerprint import unresolved_code

    loaded = load_pipeline(pipeline)
    make_importable(loaded.path)
    unresolved = unresolved_code(loaded.pipeline)
    if unresolved:
        raise PipelineError([loaded.problem(loc, message) for loc, message in unresolved])
    p = loaded.pipeline
    _echo(f"{pipeline}: ok ({len(p.sources)} sources, {len(p.experts)} experts)")


class Template(str, Enum):
    """The project templates of `init`."""
    tabular = "tabular"
    images = "images"


@app.command()
def init(
    folder: Path = typer.Argument(Path("."), help="where to create the project (empty or new)"),
    template: Template = typer.Option(Template.tabular, "--template", help="tabular (a CSV) or images (PNG folders)"),
) -> None:
    """Create a project: sample data, a pipeline YAML reading it, a stages module. Then `run` it."""
    from moe_pipeline.cli.scaffold import scaffold

    written = scaffold(folder, template.value)
    _echo(f"created {len(written)} files in {folder}; next: moe-pipeline run {folder / 'pipeline.yaml'}")


@app.command()
def schema() -> None:
    """Print the JSON Schema of pipeline files (for editor completion and checks)."""
    from moe_pipeline.pipeline.spec import json_schema_text

    _echo(json_schema_text())


@app.command()
def dag(
    pipeline: Path = PipelineArg,
    format: DagFormat = typer.Option(DagFormat.text, "--format", "-f", help="text, mermaid or dot"),
    status: bool = typer.Option(True, "--status/--no-status", help="mark each expert's status from the registry"),
) -> None:
    """Show the expert graph, level by level, with each expert's status."""
    from moe_pipeline.pipeline.dagview import render
    from moe_pipeline.pipeline.loader import load_pipeline

    loaded = load_pipeline(pipeline)
    statuses = None
    if status:
        from moe_pipeline.registry.reader import RegistryReader, resolve_tracking_uri

        # Only a store that exists has statuses; checking costs no torch or mlflow import.
        if RegistryReader(resolve_tracking_uri(loaded.pipeline, loaded.path), loaded.pipeline.name).exists():
            from moe_pipeline.execute.view import View

            statuses = {s.name: s.status for s in View(loaded).statuses().values()}
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    _echo(render(loaded.pipeline, format.value, statuses, width))


@app.command()
def run(
    pipeline: Path = PipelineArg,
    experts: Optional[List[str]] = typer.Argument(None, help="train these (and what they need)", show_default=False),
    downstream: Optional[str] = typer.Option(None, "--downstream", help="this expert and everything after it"),
    force: bool = typer.Option(False, "--force", help="retrain selected experts even when fresh"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan with estimates; change nothing"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
    as_json: bool = typer.Option(False, "--json", help="what each expert's step did, as JSON (stdout)"),
    wait: float = typer.Option(600.0, "--wait", min=0, help="seconds to wait for an expert another run is "
                               "training, then use its version"),
    executor: Optional[str] = typer.Option(None, "--executor", help="local (one expert at a time, here) or ray "
                                           "(each expert a Ray task once its upstreams are done); default: "
                                           "resources.executor", show_default=False),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to use (auto, or HOST:PORT); "
                                          "default: a local Ray started for this run", show_default=False),
) -> None:
    """Train what is missing, stale or pending, stage by stage, and register each version.

    Concurrent runs on one registry cooperate: each expert is trained by one of them, under
    a lease in the registry; the others wait and use the version it registered."""
    from moe_pipeline.cli import tables
    from moe_pipeline.cli.progress import run_progress
    from moe_pipeline.execute.view import View
    from moe_pipeline.pipeline.loader import load_pipeline

    loaded = load_pipeline(pipeline)
    view = View(loaded)
    # The plan, made once, read-only (no mlflow): every current artifact verified, so a damaged
    # one makes its expert stale (INTEGRITY) and the run repairs it. Recovery, later, changes no
    # current version, so it cannot change the plan; another run registering meanwhile is what
    # each step finds under its lease (`Run.step`).
    statuses = view.statuses(verify=True)
    plan = view.plan(experts or [], downstream=downstream, force=force, statuses=statuses)
    if dry_run:
        tables.print_plan(plan)
        return
    executor = executor or loaded.pipeline.resources.executor
    if executor not in ("local", "ray"):
        raise typer.BadParameter(f"--executor must be local or ray, not {executor!r}")
    if not plan.steps and view.settled(statuses):
        # nothing to train and nothing to write: a no-op run reads, as `status` does (no mlflow, no torch)
        from moe_pipeline.registry.scratch import remove_dead_scratch

        remove_dead_scratch()
        tables.print_outcomes([], as_json)
        return
    import contextlib
    import os
    from concurrent.futures import ThreadPoolExecutor

    from moe_pipeline.errors import StepsFailed
    from moe_pipeline.execute.run import RemoteStep, Run
    from moe_pipeline.pipeline.paths import project_root
    from moe_pipeline.registry.reader import resolve_tracking_uri

    def open_run(trainer) -> Run:
        the_run = Run(loaded, wait=wait, notify=lambda message: typer.echo(message, err=True), trainer=trainer)
        the_run.recover()
        return the_run

    uri = resolve_tracking_uri(loaded.pipeline, loaded.path)
    root = project_root(loaded.path)
    remote = RemoteStep(None if address else str(root), os.path.relpath(loaded.path.resolve(), root), uri, wait)
    with contextlib.ExitStack() as stack:
        trainer = None
        # Something to train, and torch not loaded here yet: a training process loads it while this
        # process loads mlflow (execute/training_process.py). The read-only plan reads no mlflow.
        if executor == "local" and "torch" not in sys.modules and plan.steps:
            from moe_pipeline.execute.training_contracts import TrainingOpening
            from moe_pipeline.execute.training_process import TrainingProcess

            trainer = stack.enter_context(TrainingProcess(TrainingOpening.of(loaded, [str(s.expert)
                                                                                     for s in plan.steps])))
        # Ray first: its workers start (and import) while this process reads the registry and plans.
        # Opening the registry (importing mlflow, connecting, recovering dead runs) needs none of
        # Ray, and starting a local cluster is mostly waiting for its processes, so a thread opens
        # the registry meanwhile.
        opening = stack.enter_context(ThreadPoolExecutor(max_workers=1)).submit(open_run, trainer)
        runner = None
        if executor == "ray":  # the thread has finished (result() below) before Ray can shut down
            from moe_pipeline.execute.ray_runner import RayRunner, cluster

            stack.enter_context(cluster(address, root, len(loaded.pipeline.experts), remote.warm_up))
        the_run = opening.result()
        if executor == "ray":
            runner = RayRunner(remote, the_run.view.graph, the_run.resources_of,
                               lambda expert: loaded.where("experts", expert), address)
        try:
            with run_progress(quiet or executor == "ray", sys.stdout.isatty() and not as_json) as bar:
                outcomes = the_run.execute(plan, bar, runner=runner)
        except StepsFailed as exc:  # what finished is registered: show it, then the failures (exit 2)
            tables.print_outcomes(exc.outcomes, as_json)
            raise exc.cause or exc
    tables.print_outcomes(outcomes, as_json)
    if not as_json:
        from moe_pipeline.cli.diagnosis import print_behaviour_changes

        print_behaviour_changes(loaded, outcomes)


@app.command()
def status(
    pipeline: Path = PipelineArg,
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    check: bool = typer.Option(False, "--check", help="exit 1 when any expert is not fresh (for CI)"),
    verify: bool = typer.Option(False, "--verify", help="also check every current artifact's sha256 (reads them all)"),
    record: bool = typer.Option(False, "--record", help="publish the statuses as registry tags (for CI); "
                                "without it, status writes nothing"),
) -> None:
    """Which experts are missing, stale, pending or fresh, and why. Read-only unless --record."""
    from moe_pipeline.cli import tables
    from moe_pipeline.execute.view import View
    from moe_pipeline.pipeline.loader import load_pipeline

    loaded = load_pipeline(pipeline)
    if record:
        from moe_pipeline.execute.publish import publish_statuses
        from moe_pipeline.registry.writes import Registry

        view = View(loaded, fast_reads=False)
        registry = Registry.over(view.registry)
        statuses = publish_statuses(view, registry, verify)
        typer.echo(f"recorded {registry.tag_writes} tag(s) in the registry", err=True)
    else:
        view = View(loaded)
        statuses = view.statuses(verify)
    if as_json:
        _echo(tables.status_json(view.pipeline.name, statuses, view.cutoff_enabled()))
    else:
        tables.print_status(view.pipeline.name, statuses, view.cutoff_enabled())
    if check and any(s.status != "fresh" for s in statuses.values()):
        raise typer.Exit(1)


@app.command()
def impact(pipeline: Path = PipelineArg, expert: str = typer.Argument(..., show_default=False)) -> None:
    """Which experts would need retraining if EXPERT changed, and the estimated time."""
    from moe_pipeline.cli import tables
    from moe_pipeline.execute.view import View
    from moe_pipeline.pipeline.loader import load_pipeline

    tables.print_plan(View(load_pipeline(pipeline)).impact(expert), title=f"impact of a change to {expert}")


@app.command()
def inspect(
    pipeline: Path = PipelineArg,
    expert: str = typer.Argument(..., show_default=False),
    version: Optional[int] = typer.Option(None, "--version", help="default: the current version"),
    methods: Optional[List[str]] = typer.Option(None, "--methods", help="subset of: metrics agop collapse attribution (repeat, or comma-separated)"),
    opacity: Optional[str] = typer.Option(
        None, "--opacity", help="learning opacity by source, comma-separated: init (new initial weights), order "
        "(new batch order), data (bootstrap resamples); each retrains --runs times in memory"),
    runs: int = typer.Option(3, "--runs", help="trainings per opacity source (at least 2)"),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="processes the opacity runs train in "
                                          "(default: one per core; 1: here, one after another)"),
    out: Optional[Path] = typer.Option(None, "--out", help="default: reports/<pipeline>/<expert>/v<N>/"),
) -> None:
    """Inspect one expert version: metrics, confusion, AGOP, collapse, attributions, opacity."""
    from moe_pipeline.longlived import long_lived
    from moe_pipeline.pipeline.loader import load_pipeline

    with long_lived():  # torch: see moe_pipeline.longlived
        from moe_pipeline.inspect.report import inspect_expert

    from moe_pipeline.cli.progress import steps

    modes = [m.strip() for m in opacity.split(",") if m.strip()] if opacity else []
    methods = [m.strip() for given in methods for m in given.split(",") if m.strip()] if methods else None
    with steps(f"inspect {expert}") as progress:
        inspect_expert(load_pipeline(pipeline), expert, version=version, methods=methods, opacity=modes, runs=runs,
                       out=out, progress=progress, workers=workers)


@app.command()
def report(
    pipeline: Path = PipelineArg,
    out: Optional[Path] = typer.Option(None, "--out", help="default: reports/<pipeline>/overview/"),
    weak: float = typer.Option(0.10, "--weak", min=0.0, max=1.0,
                               help="ablate inputs holding less than this share of the reading expert's AGOP trace"),
    tolerance: float = typer.Option(0.01, "--tolerance", min=0.0,
                                    help="recommend dropping an input whose ablation costs at most this much metric"),
) -> None:
    """One overview page: the graph by status, each expert's report, and the dependency table (drop or keep)."""
    from moe_pipeline.longlived import long_lived
    from moe_pipeline.pipeline.loader import load_pipeline

    with long_lived():  # torch: see moe_pipeline.longlived
        from moe_pipeline.inspect.overview import pipeline_report

    from moe_pipeline.cli.progress import steps

    with steps("report") as progress:
        pipeline_report(load_pipeline(pipeline), out=out, weak=weak, tolerance=tolerance, progress=progress)


from moe_pipeline.cli import services  # noqa: E402  (the commands that start servers)

from moe_pipeline.cli import use  # noqa: E402  (the commands that use the trained system)
from moe_pipeline.cli import diagnosis  # noqa: E402  (which expert to fix)

app.command()(diagnosis.diagnose)
app.command()(diagnosis.diff)
app.command()(use.predict)
app.command()(use.explain)
app.command()(use.export)
app.command()(services.ui)
app.command()(services.server)


def run_cli(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code. Tests call this in-process.

    Every way a command can fail ends here as one message and an exit code, never a
    traceback: our errors (2), usage errors from typer's own copy of click (2), and
    SIGINT/SIGTERM (130/143, naming the expert that was training).
    """
    from moe_pipeline.cli.signals import interrupt_on_signals

    try:
        with interrupt_on_signals():
            result = app(args=argv, standalone_mode=False, prog_name="moe-pipeline")
        return result if isinstance(result, int) else 0
    except PipelineError as exc:
        typer.echo(str(exc), err=True)  # each line already reads FILE:LINE:COL: message
        return exc.exit_code
    except MoeError as exc:
        typer.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except typer.TyperException as exc:  # usage errors; typer carries its own click, so not click.ClickException
        show = getattr(exc, "show", None)
        show() if show else typer.echo(f"error: {exc}", err=True)
        return getattr(exc, "exit_code", 2) or 2
    except Interrupted as exc:
        typer.echo(f"interrupted: {exc.describe()}", err=True)
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):  # an interrupt outside the main thread's handler
        typer.echo("interrupted", err=True)
        return 130


def main() -> None:
    _exit_without_teardown(run_cli())


def _exit_without_teardown(code: int) -> None:
    """End the process the way sys.exit does, less the interpreter's teardown.

    Once torch and mlflow are loaded, Python's shutdown frees their thousands of modules one
    by one: 0.9-1.5 s on this machine, longer than most experts take to train. By now every
    command has closed what it wrote (registry runs end inside the command), so only that
    teardown is skipped: exit handlers (logging's flush, MLflow's, Ray's shutdown, temporary
    folders' clean-up) still run and the standard streams are flushed first. Under a profiler
    or tracer, which writes its results after the program returns, it exits as usual.
    """
    if sys.getprofile() or sys.gettrace():
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe (`| head`) has nothing left to flush to
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
