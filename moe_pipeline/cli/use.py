"""Commands that use the trained system: `export`, `predict`, `explain`.

They read the registry through a View (read-only), check inputs before writing anything,
and write only the file or folder asked for (and, with `export --register`, one registered
model). Heavy imports stay inside the commands.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from moe_pipeline.cli.whole import write_whole

PipelineArg = typer.Argument(..., help="pipeline YAML file, e.g. pipelines/digits.yaml", show_default=False)


def _system(pipeline: Path, experts: list[str] | None, allow_stale: bool):
    from moe_pipeline.execute.view import View
    from moe_pipeline.longlived import long_lived
    from moe_pipeline.pipeline.loader import load_pipeline

    with long_lived():  # torch: see moe_pipeline.longlived
        from moe_pipeline.serve.system import System

    view = View(load_pipeline(pipeline))
    return view, System.from_view(view, experts or None, allow_stale)


def _rows(view, system, input_file: Path | None, split: str | None):
    from moe_pipeline.errors import SelectionError
    from moe_pipeline.serve import inputs

    if (input_file is None) == (split is None):
        raise SelectionError("give exactly one of --input FILE and --split train|val|test")
    if split is not None and split not in ("train", "val", "test"):
        raise SelectionError(f"--split must be train, val or test, not {split!r}")
    return inputs.from_file(input_file, system) if input_file else inputs.from_split(view, system, split)


def export(
    pipeline: Path = PipelineArg,
    out: Optional[Path] = typer.Option(None, "--out", help="default: exports/<pipeline>/ under the project root"),
    register: bool = typer.Option(False, "--register", help="also register it as model <pipeline>, alias current"),
    allow_stale: bool = typer.Option(False, "--allow-stale", help="export even while experts are stale or pending"),
) -> None:
    """Write the whole graph as one MLflow pyfunc model: pinned expert versions, the DAG, preprocessing."""
    from moe_pipeline.pipeline.paths import project_root
    from moe_pipeline.registry.mlmodel import write_system_mlmodel

    from moe_pipeline.cli.progress import steps

    total = 3 if register else 2
    with steps("export") as say:
        say = say or (lambda what, done, total: None)
        say("loading the current versions (sha256-checked)", 0, total)
        view, system = _system(pipeline, None, allow_stale)
        out = out or project_root(view.loaded.path) / "exports" / view.pipeline.name
        say(f"writing {out}", 1, total)
        replace_export(out, lambda folder: (system.save(folder),
                                            write_system_mlmodel(folder, system.fields, _columns(system))))
        pinned = ", ".join(f"{n} v{p.version}" for n, p in system.experts.items())
        if register:
            from moe_pipeline.registry.writes import Registry

            say("registering the system in the registry", 2, total)
            registry = Registry(view.registry.tracking_uri, view.pipeline.name)
            version = registry.register_system(out, pinned, f"the {view.pipeline.name} system: {pinned}")
    typer.echo(f"exported {view.pipeline.name} ({pinned}) to {out}")
    if register:
        import shlex

        # the command names the store: `models:/` is looked up in MLFLOW_TRACKING_URI, which a
        # shell in another folder (or none at all) would not point at this pipeline's registry
        typer.echo(f"registered model '{view.pipeline.name}' v{version} (alias current); serve it from any folder:\n"
                   f"  MLFLOW_TRACKING_URI={shlex.quote(view.registry.tracking_uri)} mlflow models serve "
                   f"-m {shlex.quote(f'models:/{view.pipeline.name}@current')} --env-manager local")


EXPORT_MARKER = ".moe-export.json"  # the files an export wrote: all it may ever delete again


def replace_export(out: Path, write) -> None:
    """Write an export into a new folder beside `out` (`write(folder)`), then put it in place:
    where `out` is absent or empty, or holds exactly an earlier export's files (its marker lists
    them). Anything else in `out` is never deleted: exit 2, naming it. Never half old, half new."""
    import json
    import shutil
    import tempfile

    from moe_pipeline.errors import SelectionError

    foreign = _not_exported(out)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise SelectionError(f"--out {out} holds files that are not an export ({shown}); choose an empty or "
                             "new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    try:
        write(fresh)
        files = sorted(str(p.relative_to(fresh)) for p in fresh.rglob("*") if p.is_file())
        (fresh / EXPORT_MARKER).write_text(json.dumps({"files": files}, indent=2))
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            out.rename(old / "export")  # out is now absent: the new one goes in with one rename
            fresh.rename(out)
            shutil.rmtree(old)
        else:
            fresh.rename(out)
    finally:
        if fresh.exists():
            shutil.rmtree(fresh)


def _not_exported(out: Path) -> list[str]:
    """Files and folders in `out` that no earlier export wrote (its marker), sorted; [] when
    `out` is absent, empty, or exactly an earlier export."""
    import json

    if not out.exists():
        return []
    if not out.is_dir():
        return [str(out)]
    present = sorted(str(p.relative_to(out)) for p in out.rglob("*") if not p.is_dir())
    try:
        written = set(json.loads((out / EXPORT_MARKER).read_text())["files"]) | {EXPORT_MARKER}
    except (OSError, ValueError, KeyError, TypeError):
        written = set()
    folders = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_dir())
    empty_foreign = [f for f in folders if not any(w.startswith(f + "/") for w in written)
                     and not any(x.startswith(f + "/") for x in present)]
    return [p for p in present if p not in written] + empty_foreign


def _columns(system) -> list[tuple[str, str]]:
    """The output table's columns and their MLflow types, from one row of zeros."""
    import numpy as np

    zeros = {ref: np.zeros((1, *spec["shape"]), dtype=spec["dtype"]) for ref, spec in system.fields.items()}
    from pandas.api.types import is_numeric_dtype

    table = system.table(system.outputs(zeros, system.order, keys=("probs",)))
    sinks = tuple(f"{s}." for s in system.sinks)
    return [(c, "float" if is_numeric_dtype(table[c]) else "string", c.startswith(sinks)) for c in table.columns]


def predict(
    pipeline: Path = PipelineArg,
    input_file: Optional[Path] = typer.Option(None, "--input", help=".npz (arrays named like the source fields), "
                                              ".npy, .csv, .parquet, an image or a folder of images",
                                              show_default=False),
    split: Optional[str] = typer.Option(None, "--split", help="instead of --input: a split of the pipeline's data"),
    experts: Optional[List[str]] = typer.Option(None, "--expert", help="these experts' outputs (default: the sinks)"),
    out: Optional[Path] = typer.Option(None, "--out", help=".csv or .json; default: CSV on stdout"),
    allow_stale: bool = typer.Option(False, "--allow-stale", help="predict even while experts are stale"),
) -> None:
    """Apply the current versions to new rows: probabilities and the predicted class per expert."""
    from moe_pipeline.errors import SelectionError

    if out is not None and out.suffix.lower() not in (".csv", ".json"):
        raise SelectionError(f"--out must end in .csv or .json, not {out.name}")
    view, system = _system(pipeline, experts, allow_stale)
    if input_file is not None and split is None and out is not None and out.suffix.lower() == ".csv" \
            and input_file.suffix.lower() == ".parquet" and input_file.is_file():
        from moe_pipeline.serve.inputs import parquet_chunks

        n, chunks = parquet_chunks(input_file, system)
        if n:  # (no rows: the whole-table path says what it says of an empty input)
            _predict_in_chunks(system, n, chunks, experts, out)
            typer.echo(f"{n} rows -> {out}", err=True)
            return
    rows = _rows(view, system, input_file, split)
    n = system.check_inputs(rows.fields)  # before anything is written
    with _progress(n) as progress:
        table = system.table(system.outputs(rows.fields, experts or system.sinks, progress, keys=("probs",)))
    if rows.ids is not None:  # images: each row says which file it is
        table.insert(0, "file", rows.ids)
    if out is None:
        table.to_csv(sys.stdout, index=False)
    elif out.suffix.lower() == ".json":
        write_whole(out, lambda tmp: tmp.write_text(json.dumps(table.to_dict(orient="records"), indent=1)))
    else:
        write_whole(out, lambda tmp: table.to_csv(tmp, index=False))
    if out is not None:
        typer.echo(f"{n} rows -> {out}", err=True)


def _predict_in_chunks(system, n: int, chunks, experts: list[str] | None, out: Path) -> None:
    """A parquet input predicted a chunk of rows at a time into a CSV: the same lines the whole
    table gives, written to a temporary file that replaces `out` only once every chunk is done."""
    def write(tmp: Path) -> None:
        done = 0
        with open(tmp, "w", newline="") as handle, _progress(n) as progress:
            for index, rows in enumerate(chunks):
                done += system.check_inputs(rows.fields)
                table = system.table(system.outputs(rows.fields, experts or system.sinks, None, keys=("probs",)))
                table.to_csv(handle, index=False, header=index == 0)
                if progress is not None:
                    progress(done, n)
    write_whole(out, write)


def _progress(n: int):
    """predict's progress over its rows: a rich bar on a terminal, a line per tenth in a pipe
    (stderr); nothing for one batch, which takes well under 2 s."""
    import contextlib

    from moe_pipeline.serve.system import BATCH

    if n <= BATCH:
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def lines():
        said = [0]

        def line(done: int, total: int) -> None:
            tenth = 10 * done // total
            if tenth > said[0]:
                said[0] = tenth
                print(f"predict: {done} of {total} rows", file=sys.stderr, flush=True)
        yield line

    @contextlib.contextmanager
    def bar():
        from rich.progress import Progress

        with Progress(transient=True) as progress:
            task = progress.add_task("predict", total=n)
            yield lambda done, total: progress.update(task, completed=done)
    return bar() if sys.stderr.isatty() else lines()


def _truth(view, system, split: str, row: int) -> dict[str, str]:
    """Each expert's true answer for row `row` of a split: its target as training built it."""
    out = {}
    for name, p in system.experts.items():
        target = view.expert_data(name)[0].y[split][row]
        if p.saved.task == "classification":
            names = p.class_names or []
            out[name] = names[int(target)] if int(target) < len(names) else str(int(target))
        else:
            out[name] = ", ".join(f"{v:.4g}" for v in target.reshape(-1).tolist())
    return out


def explain(
    pipeline: Path = PipelineArg,
    input_file: Optional[Path] = typer.Option(None, "--input", help=".npz, .npy, .csv, .parquet or an image",
                                              show_default=False),
    split: Optional[str] = typer.Option(None, "--split", help="instead of --input: a split of the pipeline's data"),
    row: int = typer.Option(0, "--row", min=0, help="which row"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    html: Optional[Path] = typer.Option(None, "--html", help="also draw the graph with each expert's answer "
                                        "to this .html file", show_default=False),
    allow_stale: bool = typer.Option(False, "--allow-stale", help="explain even while experts are stale"),
) -> None:
    """Explain one prediction: every expert's answer, and how much each input drove it (integrated gradients)."""
    from moe_pipeline.errors import SelectionError
    from moe_pipeline.serve.explain import explain as explain_row

    view, system = _system(pipeline, None, allow_stale)
    fields = _rows(view, system, input_file, split).fields
    n = system.check_inputs(fields)
    if row >= n:
        raise SelectionError(f"--row {row}: the input has {n} rows (0..{n - 1})")
    from moe_pipeline.cli.progress import steps

    with steps("explain") as say:
        answers = explain_row(system, fields, row, say)
    if html is not None:
        from moe_pipeline.serve.explain import to_html

        where = f"{input_file.name}" if input_file else f"the {split} split"
        order = [name for name in view.pipeline.experts if name in system.experts]  # the pipeline file's order
        columns = {ref: want["columns"] for ref, want in system.fields.items() if want.get("columns")}
        page = to_html(system, answers, f"{view.pipeline.name}: one prediction explained (row {row} of {where})",
                       {ref: value[row] for ref, value in fields.items()},
                       _truth(view, system, split, row) if split else {}, order, columns)
        write_whole(html, lambda tmp: tmp.write_text(page))
        typer.echo(f"graph: {html}", err=True)
    if as_json:
        typer.echo(json.dumps({"pipeline": view.pipeline.name, "row": row,
                               "experts": [a.as_dict() for a in answers]}, indent=2))
        return
    for answer in answers:
        typer.echo(answer.sentence())
