"""A parquet or npy source read a block of rows at a time: what `resources.max_host_memory_gb`
trains from, for data larger than memory.

It knows what an in-memory `SourceData` knows (the rows of each split, from the same seeded
permutation; feature and class names; each field's fitted transforms, over the train rows) but
holds only each row's split (one byte a row) and, while it is read, one block. Every check the
in-memory loader makes is made here too, a block at a time (a class seen only outside the
train split, a bad cell with the file's row number). Must not train or touch the registry.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from moe_pipeline.data.blocks import NpyBlocks, ParquetBlocks, open_blocks, rows_per_block
from moe_pipeline.errors import DataError
from moe_pipeline.pipeline.spec import SPLITS

STREAMED_LOADERS = ("parquet", "npy")


@dataclass
class StreamedSource:
    """One source's rows, split and transformed as `load_source` would, read on demand."""

    name: str
    reader: ParquetBlocks | NpyBlocks
    labels: np.ndarray  # (n,) uint8: each row's split, as SPLITS indexes them
    transforms: dict[str, dict[str, Any]]  # field -> fitted parameters

    @property
    def names(self) -> dict[str, list[str]]:
        return self.reader.names

    @property
    def classes(self) -> dict[str, list[str]]:
        return self.reader.classes

    @property
    def formats(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """field -> (shape of one row, dtype) as read, before any transform."""
        return self.reader.formats

    def split_rows(self, split: str) -> int:
        return int((self.labels == SPLITS.index(split)).sum())

    def blocks(self, split: str, rows: int, fields: list[str]) -> Iterator[dict[str, np.ndarray]]:
        """The split's rows of `fields` in file order, transformed, in blocks of at most `rows` file rows."""
        from moe_pipeline.data.transforms import apply

        wanted = SPLITS.index(split)
        for start, block in self.reader.blocks(rows, fields):
            mask = self.labels[start:start + len(next(iter(block.values())))] == wanted
            out = {f: v[mask] for f, v in block.items()}
            for field, params in self.transforms.items():
                if field in out:
                    out[field] = apply(params, out[field])
            yield out


def open_streamed(name: str, source: Any, seed: int, path: Path) -> StreamedSource:
    """The streamed source, after one pass that checks its classes and fits its transforms on
    the train rows."""
    from moe_pipeline.data.sources import class_only_in, split_indices
    from moe_pipeline.data.transforms import RunningFit

    if source.loader not in STREAMED_LOADERS:
        raise DataError(f"source '{name}' ({source.loader}) cannot be read a block at a time; only parquet and npy "
                        "sources can (resources.max_host_memory_gb)")
    reader = open_blocks(source, path, name)
    splits = split_indices(reader.n_rows, source.split, seed)
    labels = np.empty(reader.n_rows, dtype=np.uint8)
    for index, split in enumerate(SPLITS):
        labels[splits[split].numpy()] = index
    del splits
    fits = {field: RunningFit(kind) for field, kind in sorted(getattr(source, "transform", {}).items())}
    counts = {field: np.zeros((len(SPLITS), len(names)), dtype=np.int64) for field, names in reader.classes.items()}
    needed = sorted(set(fits) | set(counts))  # the check pass reads only the fields it checks
    for start, fields in (reader.blocks(rows_per_block(reader), needed) if needed else ()):
        block_labels = labels[start:start + len(next(iter(fields.values())))]
        for field, fit in fits.items():
            fit.add(fields[field][block_labels == 0])
        for field, count in counts.items():
            np.add.at(count, (block_labels, fields[field]), 1)
    for field, count in counts.items():
        for index, split in enumerate(SPLITS[1:], start=1):
            missing = np.flatnonzero((count[index] > 0) & (count[0] == 0))
            if len(missing):
                raise class_only_in(getattr(source, "path", source.loader), name, field,
                                    reader.classes[field][missing[0]], split, int(count[:, missing[0]].sum()))
    return StreamedSource(name=name, reader=reader, labels=labels,
                          transforms={field: fit.params() for field, fit in fits.items()})
