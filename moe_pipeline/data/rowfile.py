"""An expert's input rows on disk: a float32 matrix written once, a block at a time, and read
back by row ranges (what training under `resources.max_host_memory_gb` shuffles a buffer of).

Reads are explicit, never a memory map: a mapped page once read counts in the process's
resident memory until it is unmapped, so a map of a file larger than memory would grow the
process to the file's size. Must not know what the rows are.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

if TYPE_CHECKING:
    import torch


class RowFile:
    """(rows, *row_shape) float32 at `path`: `append` blocks, then `read` ranges."""

    def __init__(self, path: Path, row_shape: tuple[int, ...]):
        self.path, self.row_shape, self.rows = path, tuple(row_shape), 0
        self._row_values = math.prod(self.row_shape)
        self._handle = open(path, "wb")

    def append(self, block: np.ndarray) -> None:
        """The next rows (float32, the file's row shape)."""
        if tuple(block.shape[1:]) != self.row_shape:
            raise ValueError(f"rows of shape {tuple(block.shape[1:])} appended to rows of {self.row_shape}")
        self._handle.write(np.ascontiguousarray(block, dtype=np.float32).tobytes())
        self.rows += len(block)

    def close(self) -> None:
        self._handle.close()

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.rows, *self.row_shape)

    def __len__(self) -> int:
        return self.rows

    def row_bytes(self) -> int:
        return 4 * self._row_values

    def read(self, start: int, stop: int) -> "torch.Tensor":
        """Rows [start, stop), as one tensor that owns its memory."""
        import torch

        stop = min(stop, self.rows)
        count = max(0, stop - start)
        values = np.fromfile(self.path, dtype=np.float32, count=count * self._row_values,
                             offset=start * self.row_bytes())
        return torch.from_numpy(values.reshape(count, *self.row_shape))

    def chunks(self, size: int) -> Iterator["torch.Tensor"]:
        """Every row in order, `size` rows at a time."""
        for start in range(0, self.rows, size):
            yield self.read(start, start + size)


def rows_folder(root: Path) -> Path:
    """A new folder for one expert's row files, under the project's cache (`.moe-cache/rows/`);
    the folders of processes that died (kill -9) are removed first."""
    import shutil
    import tempfile

    base = root / ".moe-cache" / "rows"
    base.mkdir(parents=True, exist_ok=True)
    for old in base.iterdir():
        pid = old.name.partition("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists() and Path("/proc/self").exists():
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=base))
