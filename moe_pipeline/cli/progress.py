"""Progress of long commands: a rich bar per expert for `run`, a step line for the others; lines on stderr in a pipe."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator


class _Bar:
    def __init__(self, progress):
        self.progress = progress

    def expert(self, name: str, epochs: int):
        task = self.progress.add_task(name, total=epochs, info="")

        def update(epoch: int, total: int, record: dict[str, float]) -> None:
            metric = record.get("val_accuracy", record.get("val_r2", float("nan")))
            self.progress.update(task, completed=epoch, info=f"val loss {record['val_loss']:.4f}  metric {metric:.4f}")
        return update


@contextlib.contextmanager
def progress_bar(quiet: bool) -> Iterator[_Bar | None]:
    if quiet:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[info]}"))
    with Progress(*columns, transient=False) as progress:
        yield _Bar(progress)


class _Lines:
    """`run`'s progress where stdout is not a terminal: one line per expert on stderr, as it starts."""

    def __init__(self, stream):
        self.stream = stream

    def expert(self, name: str, epochs: int):
        print(f"run: training {name} ({epochs} epochs at most)", file=self.stream, flush=True)
        return lambda epoch, total, record: None


@contextlib.contextmanager
def run_progress(quiet: bool, terminal: bool) -> Iterator[_Bar | _Lines | None]:
    """A bar per expert on a terminal; a line per expert on stderr in a pipe; nothing with --quiet."""
    import sys

    if quiet or terminal:
        with progress_bar(quiet) as bar:
            yield bar
        return
    yield _Lines(sys.stderr)


# (what is being done, steps done before it, steps in all): how a long command says where it is
Step = Callable[[str, int, int], None]


@contextlib.contextmanager
def steps(command: str, quiet: bool = False) -> Iterator[Step | None]:
    """Where a long command is (`inspect`, `report`, `explain`, `export`): on a terminal one rich
    line (what, a bar of k of n, time elapsed), replaced as it moves; in a pipe one line per step on
    stderr (`inspect has_loop: [3/7] AGOP`); nothing with `quiet`. stdout keeps the results alone."""
    import sys

    from moe_pipeline.errors import Interrupted

    if quiet:
        yield None
        return
    where = [command]  # the step now running: an interrupt's message names it
    try:
        if not sys.stderr.isatty():
            def line(what: str, done: int, total: int) -> None:
                where[0] = f"{command}: {what}"
                print(f"{command}: [{done + 1}/{total}] {what}", file=sys.stderr, flush=True)
            yield line
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn(f"{command}: {{task.description}}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=Console(stderr=True), transient=True) as progress:
            task = progress.add_task("", total=None)

            def update(what: str, done: int, total: int) -> None:
                where[0] = f"{command}: {what}"
                progress.update(task, description=what, completed=done, total=total)
            yield update
    except Interrupted as exc:
        exc.doing = exc.doing or where[0]
        raise
