"""Which rows each training step reads, and inference a chunk of rows at a time.

In memory, an epoch is one seeded permutation of the train rows cut into batches. Rows on disk
(a `RowFile`, under `resources.max_host_memory_gb`) are shuffled within a buffer: the train
rows are cut into consecutive buffers of `buffer_rows`, each epoch visits the buffers in a
seeded order and each buffer's rows in a seeded permutation; a buffer that holds every row is
exactly the in-memory epoch (the same generator calls, the same order, the same weights).
Knows nothing of YAML, files' formats or the registry.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterator

import torch

from moe_pipeline.data.rowfile import RowFile

Rows = torch.Tensor | RowFile


def epoch_steps(x: Rows, batch_size: int, buffer_rows: int | None) -> int:
    """How many batches an epoch has (a buffer's last batch may be short)."""
    n = len(x)
    if not isinstance(x, RowFile) or not buffer_rows or buffer_rows >= n:
        return math.ceil(n / batch_size)
    full, rest = divmod(n, buffer_rows)
    return full * math.ceil(buffer_rows / batch_size) + (math.ceil(rest / batch_size) if rest else 0)


def epoch_batches(x: Rows, batch_size: int, generator: torch.Generator,
                  buffer_rows: int | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(row indices, their inputs) of each batch of one epoch."""
    n = len(x)
    if not isinstance(x, RowFile):
        order = torch.randperm(n, generator=generator)
        for batch in order.split(batch_size):
            yield batch, x[batch]
        return
    size = n if not buffer_rows or buffer_rows >= n else buffer_rows
    starts = list(range(0, n, size))
    if len(starts) > 1:
        starts = [starts[i] for i in torch.randperm(len(starts), generator=generator).tolist()]
    for start in starts:
        buffer = x.read(start, start + size)
        for batch in torch.randperm(len(buffer), generator=generator).split(batch_size):
            yield batch + start, buffer[batch]
        del buffer


def row_chunks(x: Rows, size: int) -> Iterator[torch.Tensor]:
    """Every row in order, `size` rows at a time."""
    return x.chunks(size) if isinstance(x, RowFile) else iter(x.split(size))


def first_rows(x: Rows, size: int) -> torch.Tensor:
    return x.read(0, size) if isinstance(x, RowFile) else x[:size]


Sink = Callable[[int, dict[str, tuple[int, ...]]], Any]  # (rows, shape per output) -> a writer with write/close


def infer_into(forward: Callable[[torch.Tensor], dict[str, torch.Tensor]], x: Rows, chunk: int, sink: Sink,
               metrics: Any) -> None:
    """Outputs of every row, a chunk at a time, written as they come (`sink` opens the writer
    once the first chunk says the outputs' shapes); the metrics of the logits accumulated."""
    writer = None
    chunks = row_chunks(x, chunk) if len(x) else iter([torch.empty(0, *x.shape[1:])])  # an empty split: its shapes
    for rows in chunks:
        outputs = forward(rows)
        if writer is None:
            writer = sink(len(x), {k: tuple(v.shape[1:]) for k, v in outputs.items()})
        writer.write(outputs)
        if metrics is not None and len(rows):
            metrics.add(outputs["logits"])
    writer.close()
