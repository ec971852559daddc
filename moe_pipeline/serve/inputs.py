"""Read the rows to predict on: a file (`.npz`, `.npy`, `.csv`) or a split of the pipeline's
own sources. Every problem names the file and what was expected; nothing is unpickled
(`allow_pickle=False`). Must not write anything.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from moe_pipeline.errors import DataError


def from_split(view, system, split: str) -> dict[str, np.ndarray]:
    """The raw (untransformed) source fields of one split, as a user would hand them in."""
    out = {}
    for ref in system.fields:
        owner, _, field = ref.partition(".")
        out[ref] = view.store.source(owner).raw_field(field, split).numpy()
    return out


def from_file(path: Path, system) -> dict[str, np.ndarray]:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                found = {key: archive[key] for key in archive.files}
            return _named(path, found, system)
        if suffix == ".npy":
            return _only_field(path, system, np.load(path, allow_pickle=False))
        if suffix == ".csv":
            return _only_field(path, system, _csv(path, system))
    except (ValueError, OSError) as exc:  # a pickled or damaged array, a bad CSV
        raise DataError(f"{path}: cannot read it: {exc}") from None
    raise DataError(f"{path}: unknown input format '{suffix}'; use .npz (arrays named like the source fields: "
                    f"{', '.join(system.fields)}), .npy or .csv")


def _named(path: Path, found: dict[str, np.ndarray], system) -> dict[str, np.ndarray]:
    """Arrays named `source.field`, or `field` where that names one field of the system."""
    out = {}
    for ref in system.fields:
        field = ref.partition(".")[2]
        short = [r for r in system.fields if r.partition(".")[2] == field]
        if ref in found:
            out[ref] = found[ref]
        elif field in found and len(short) == 1:
            out[ref] = found[field]
        else:
            raise DataError(f"{path}: no array named '{ref}' (or '{field}'); it holds {sorted(found) or 'none'}. "
                            f"The system reads {', '.join(system.fields)}")
    return out


def _only_field(path: Path, system, values: np.ndarray) -> dict[str, np.ndarray]:
    if len(system.fields) != 1:
        raise DataError(f"{path}: one array, but the system reads {len(system.fields)} fields "
                        f"({', '.join(system.fields)}); use an .npz with one array per field")
    return {next(iter(system.fields)): values}


def _csv(path: Path, system) -> np.ndarray:
    """A table with one column per feature: in the order of the names training recorded, when the
    header has them, else in file order. Values must be numbers; the first bad cell is named."""
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(path)
    ref = next(iter(system.fields))
    names = next((p.saved.feature_names for p in system.experts.values() if ref in p.inputs
                  and len(p.inputs) == 1), None)
    columns = table.column_names
    if names and set(names) <= set(columns):
        columns = list(names)
    out = np.empty((table.num_rows, len(columns)), dtype=np.float32)
    for j, name in enumerate(columns):
        column = table.column(name).to_numpy(zero_copy_only=False)
        try:
            out[:, j] = np.asarray(column, dtype=np.float64)
        except (TypeError, ValueError):
            bad = next(i for i, v in enumerate(column) if not _number(v))
            raise DataError(f"{path}: row {bad + 2}, column '{name}': {column[bad]!r} is not a number") from None
    return out


def _number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True
