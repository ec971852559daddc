"""A rich progress bar per expert, silent when not on a terminal or with --quiet."""
from __future__ import annotations

import contextlib
from typing import Iterator


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
