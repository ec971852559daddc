"""Large data files a block of rows at a time: parquet record batches and .npy rows.

What `resources.max_host_memory_gb` reads, and how a parquet table's fields are hashed: a
block is checked as a whole file is (every cell, the row numbers the file's own), categorical
fields take the classes found over the whole file first, and the values are what the whole
file's reader gives. An .npy is read with explicit reads, not a memory map: a mapped page
that was read counts in the process's resident memory until it is unmapped. Must not import
torch or mlflow, and must not keep more than one block.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from moe_pipeline.errors import DataError

BLOCK_BYTES = 64 << 20  # a block's size where no budget says otherwise (hashing, checks)


class ParquetBlocks:
    """A parquet source's fields, a block of rows at a time (pyarrow's batches of its row groups)."""

    def __init__(self, source: Any, path: Path):
        import pyarrow.parquet as pq

        from moe_pipeline.data.tables import no_duplicates
        from moe_pipeline.pipeline.columns import groups_of

        try:  # the footer: the columns and the row count, before any data is read
            # pre_buffer off: with it on, pyarrow reads ahead every row group a batch iterator will
            # need (3.3 GB resident for a 2.9 GB file read in 64 MB blocks, 0.6 GB without)
            self._file = pq.ParquetFile(path, pre_buffer=False)
            names = self._file.metadata.schema.to_arrow_schema().names
        except Exception as exc:  # pyarrow raises several types for a broken file; the user needs the reason
            raise DataError(f"{path}: cannot read parquet: {exc}") from None
        self.path, self.n_rows = path, self._file.metadata.num_rows
        if self.n_rows == 0:
            raise DataError(f"{path}: the file has no rows")
        no_duplicates(names, path)
        self.groups = groups_of(source, names, path)
        self._wanted = [c for g in self.groups for c in g.columns]
        self.names = {g.name: list(g.columns) for g in self.groups
                      if g.kind == "features" or (g.kind == "numeric" and len(g.columns) > 1)}
        self.formats = {g.name: ((), "int64") if g.kind == "categorical" else
                        ((len(g.columns),) if g.name in self.names else (), "float32") for g in self.groups}
        self.classes = self._classes()

    def _batches(self, rows: int, columns: list[str]) -> Iterator[tuple[int, Any]]:
        import pyarrow as pa

        start = 0
        try:
            for batch in self._file.iter_batches(batch_size=rows, columns=columns):
                yield start, batch
                start += batch.num_rows
        except (OSError, ValueError) as exc:  # a damaged page: pyarrow's reason
            raise DataError(f"{self.path}: cannot read parquet: {exc}") from None
        finally:  # pyarrow's allocator keeps what it freed for reuse: give it back before training
            pa.default_memory_pool().release_unused()

    def _classes(self) -> dict[str, list[str]]:
        """Each categorical field's class names over the whole file, its cells checked."""
        from moe_pipeline.data.tables import class_order, class_texts, pc_unique

        groups = [g for g in self.groups if g.kind == "categorical"]
        seen: dict[str, set[str]] = {g.name: set() for g in groups}
        if groups:
            rows = max(1, BLOCK_BYTES // (8 * len(groups)))
            for start, batch in self._batches(rows, [g.columns[0] for g in groups]):
                for group in groups:
                    seen[group.name].update(pc_unique(class_texts(batch.column(group.columns[0]), group, self.path,
                                                                  start)))
        return {g.name: class_order(list(seen[g.name]), g.columns[0], self.path) for g in groups}

    def row_bytes(self) -> int:
        """Bytes of one row of every field, as read."""
        return sum(4 * int(np.prod(shape)) if dtype == "float32" else 8 for shape, dtype in self.formats.values())

    def blocks(self, rows: int, fields: list[str] | None = None) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """(first row, {field: values}) of consecutive blocks of at most `rows` rows; only the
        columns of `fields` are read (default: every field)."""
        from moe_pipeline.data.tables import to_fields

        groups = [g for g in self.groups if fields is None or g.name in fields]
        wanted = [c for g in groups for c in g.columns]
        for start, batch in self._batches(rows, wanted):
            values, _, _ = to_fields(groups, {c: batch.column(c) for c in wanted}, self.path, first_row=start,
                                     known=self.classes)
            yield start, values


class NpyBlocks:
    """An .npy array, a block of rows at a time: float arrays as float32, integers as int64."""

    def __init__(self, path: Path, field: str):
        from moe_pipeline.data.files import regular_file

        regular_file(path)
        self.path, self.field = path, field
        with open(path, "rb") as handle:
            try:
                version = np.lib.format.read_magic(handle)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape, fortran, self._dtype = read(handle)
            except (ValueError, OSError, SyntaxError) as exc:
                raise DataError(f"{path}: array {field!r} has a damaged header: {exc}") from None
            self._offset = handle.tell()
        if not shape:
            raise DataError(f"{path}: array {field!r} is a scalar; expected one row per sample")
        if not (np.issubdtype(self._dtype, np.number) or self._dtype == np.bool_) or self._dtype.hasobject:
            raise DataError(f"{path}: array {field!r} has dtype {self._dtype}; expected numbers")
        if fortran and len(shape) > 1:
            raise DataError(f"{path}: array {field!r} is stored in Fortran (column) order, which cannot be read a "
                            "block of rows at a time; save it with np.save(np.ascontiguousarray(a))")
        if shape[0] == 0:
            raise DataError(f"{path}: array {field!r} has 0 rows; expected one row per sample")
        self.n_rows, self._row_shape = int(shape[0]), tuple(int(s) for s in shape[1:])
        floating = np.issubdtype(self._dtype, np.floating)
        self.formats = {field: (self._row_shape, "float32" if floating else "int64")}
        self.names: dict[str, list[str]] = {}
        self.classes: dict[str, list[str]] = {}
        size = self._offset + self.n_rows * int(np.prod(self._row_shape, dtype=np.int64)) * self._dtype.itemsize
        if path.stat().st_size < size:
            raise DataError(f"{path}: array {field!r} declares {self.n_rows} rows but the file is shorter; it is "
                            "truncated")

    def row_bytes(self) -> int:
        return (4 if self.formats[self.field][1] == "float32" else 8) * int(np.prod(self._row_shape, dtype=np.int64))

    def blocks(self, rows: int, fields: list[str] | None = None) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        width = int(np.prod(self._row_shape, dtype=np.int64))
        for start in range(0, self.n_rows, rows):
            count = min(rows, self.n_rows - start)
            values = np.fromfile(self.path, dtype=self._dtype, count=count * width,
                                 offset=self._offset + start * width * self._dtype.itemsize)
            values = values.reshape((count, *self._row_shape))
            if np.issubdtype(values.dtype, np.floating):
                bad = ~np.isfinite(values.reshape(count, -1)).all(axis=1)
                if bad.any():
                    raise DataError(f"{self.path}: array {self.field!r} holds NaN or inf (first in row "
                                    f"{start + int(np.argmax(bad))})")
                values = values.astype(np.float32, copy=False)
            else:
                values = values.astype(np.int64, copy=False)
            yield start, {self.field: values}


def open_blocks(source: Any, path: Path, name: str) -> ParquetBlocks | NpyBlocks:
    """The block reader of a parquet or npy source (`name`: an npy source's one field)."""
    return ParquetBlocks(source, path) if source.loader == "parquet" else NpyBlocks(path, name)


def rows_per_block(reader: ParquetBlocks | NpyBlocks, budget_bytes: int = BLOCK_BYTES) -> int:
    """How many rows of every field fit in `budget_bytes`."""
    return max(1, budget_bytes // max(1, reader.row_bytes()))


def table_digests(reader: ParquetBlocks, rows: int | None = None) -> dict[str, str]:
    """Each field's content hash exactly as of the whole file's values (dtype, shape, bytes,
    then its names and classes), computed a block of `rows` rows at a time."""
    digests: dict[str, Any] = {}
    for field, (shape, dtype) in reader.formats.items():
        digests[field] = hashlib.sha256(f"{dtype}|{(reader.n_rows, *shape)}|".encode())
    for _, fields in reader.blocks(rows or rows_per_block(reader)):
        for field, values in fields.items():
            digests[field].update(np.ascontiguousarray(values).tobytes())
    for field, digest in digests.items():
        digest.update(json.dumps([reader.names.get(field), reader.classes.get(field)]).encode())
    return {field: digest.hexdigest() for field, digest in digests.items()}
