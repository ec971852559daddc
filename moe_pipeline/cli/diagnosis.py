"""`moe-pipeline diagnose` (which upstream expert to fix first) and `moe-pipeline diff` (what a
retraining changed), and the line of `diff` that `run` prints per retrained expert.

Both read the registry through a View and train nothing; they write nothing but the page
`--html` names (`--json` prints to stdout) and, with `--log`, that page as an artifact of the
version's MLflow run. Heavy imports stay inside the commands.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

PipelineArg = typer.Argument(..., help="pipeline YAML file, e.g. pipelines/digits.yaml", show_default=False)
LogOption = typer.Option(False, "--log", help="also log the page under the version's MLflow run (the only write)")


def _write_page(view, page: str, html: Path | None, log_to, artifact: str) -> None:
    """The page to the file `--html` names and, with `--log` (`log_to`: the record of the version
    whose run gets it), to that run as `artifact` (`diagnose/digit-test.html`)."""
    if html is not None:
        from moe_pipeline.cli.whole import write_whole

        write_whole(html, lambda tmp: tmp.write_text(page))
        typer.echo(f"page: {html}", err=True)
    if log_to is not None:
        from moe_pipeline.registry.scratch import scratch_dir
        from moe_pipeline.registry.writes import Registry

        folder, name = artifact.rsplit("/", 1)
        with scratch_dir("page") as scratch:
            (scratch / name).write_text(page)
            Registry.over(view.registry).log_files(log_to.run_id, [scratch / name], folder)
        typer.echo(f"logged: runs:/{log_to.run_id}/{artifact}", err=True)


def diagnose(
    pipeline: Path = PipelineArg,
    expert: Optional[str] = typer.Argument(None, help="a reading expert (default: every sink that reads experts)",
                                           show_default=False),
    split: str = typer.Option("test", "--split", help="train, val or test"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    html: Optional[Path] = typer.Option(None, "--html", help="also write the diagnosis as a page to this .html file",
                                        show_default=False),
    retrain: bool = typer.Option(False, "--retrain", help="also retrain the reader in memory with each upstream "
                                 "perfect (nothing registered): what it could learn from a perfect upstream"),
    log: bool = LogOption,
) -> None:
    """Trace a reading expert's errors to the upstream experts wrong on the same rows, and rank
    them by oracle gain (its metric if that upstream were perfect) per second of their training."""
    from moe_pipeline.execute.view import View
    from moe_pipeline.longlived import long_lived
    from moe_pipeline.pipeline import graph as g
    from moe_pipeline.pipeline.loader import load_pipeline

    with long_lived():  # torch: see moe_pipeline.longlived
        from moe_pipeline.inspect.diagnose import diagnose_expert

    view = View(load_pipeline(pipeline))
    if expert is not None:
        view.record(expert)  # a clear error for an unknown expert or one never trained
        names = [expert]
    else:
        names = [n for n in g.order(view.graph) if not list(view.graph.successors(n))
                 and list(g.upstream(view.graph, n))]
    results = [diagnose_expert(view, name, split, retrain) for name in names]
    if html is not None or log:
        from moe_pipeline.inspect.findings_page import diagnosis_html

        page = diagnosis_html(results, f"{view.pipeline.name}: which expert to fix first ({split} split)")
        # with --log each reader's own version run gets the page (it holds every reader diagnosed)
        logged = [view.record(r.expert, r.version) for r in results] if log else [None]
        for k, record in enumerate(logged):
            _write_page(view, page, html if k == 0 else None, record, f"diagnose/{split}.html")
    if as_json:
        typer.echo(json.dumps({"pipeline": view.pipeline.name, "split": split,
                               "experts": [r.as_dict() for r in results]}, indent=2, default=float))
        return
    for result in results:
        for line in result.lines():
            typer.echo(line)


def diff(
    pipeline: Path = PipelineArg,
    expert: str = typer.Argument(..., help="the expert whose versions to compare", show_default=False),
    version_a: Optional[int] = typer.Argument(None, help="default: the version before B", show_default=False),
    version_b: Optional[int] = typer.Argument(None, help="default: the current version", show_default=False),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    html: Optional[Path] = typer.Option(None, "--html", help="also write the comparison as a page to this .html file",
                                        show_default=False),
    log: bool = LogOption,
) -> None:
    """What a retraining changed: record differences, metric deltas with a paired test of
    significance, prediction churn and the rows that flipped, on val and test."""
    from moe_pipeline.execute.view import View
    from moe_pipeline.longlived import long_lived
    from moe_pipeline.pipeline.loader import load_pipeline

    with long_lived():  # torch: see moe_pipeline.longlived
        from moe_pipeline.inspect.diff import diff_versions

    view = View(load_pipeline(pipeline))
    result = diff_versions(view, expert, version_a, version_b)
    if html is not None or log:
        from moe_pipeline.inspect.findings_page import diff_html

        page = diff_html(result, f"{view.pipeline.name}.{expert}: v{result.version_a} -> v{result.version_b}")
        _write_page(view, page, html, view.record(expert, result.version_b) if log else None,
                    f"diff/v{result.version_a}-v{result.version_b}.html")
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2, default=float))
        return
    for line in result.lines():
        typer.echo(line)


def print_behaviour_changes(loaded, outcomes) -> None:
    """One `diff` line per expert this run trained a new version of over an older one: what the
    retraining changed on the test rows (`diff` says the rest)."""
    retrained = [o for o in outcomes if o.action in ("trained", "retrained") and o.version > 1]
    if not retrained:
        return
    from moe_pipeline.errors import MoeError
    from moe_pipeline.execute.view import View
    from moe_pipeline.longlived import long_lived

    with long_lived():  # torch: see moe_pipeline.longlived
        from moe_pipeline.inspect.diff import diff_versions

    view = View(loaded)  # a fresh read: the versions this run registered
    for o in retrained:
        try:
            typer.echo(diff_versions(view, str(o.expert), version_b=o.version, splits=("test",), features=False).summary())
        except MoeError as exc:  # the run itself succeeded: say why there is no comparison, and go on
            typer.echo(f"{o.expert} v{o.version}: no behavioural diff ({exc})")
