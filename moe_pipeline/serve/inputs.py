"""Read the rows to predict on: a file (`.npz`, `.npy`, `.csv`, `.parquet`) or a split of the pipeline's
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
            import pyarrow.csv as pacsv

            return _only_field(path, system, _table(path, system, pacsv.read_csv(path)))
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return _only_field(path, system, _table(path, system, pq.read_table(path)))
    except (ValueError, OSError) as exc:  # a pickled or damaged array, a bad CSV
        raise DataError(f"{path}: cannot read it: {exc}") from None
    raise DataError(f"{path}: unknown input format '{suffix}'; use .npz (arrays named like the source fields: "
                    f"{', '.join(system.fields)}), .npy, .csv or .parquet")


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


def _table(path: Path, system, table) -> np.ndarray:
    """A table with one column per feature, matched by name to the columns training recorded
    (in that order; a missing one is named), or in file order where none were recorded. A CSV
    without a header is refused: its first row would silently become the column names."""
    first_row = 2 if path.suffix.lower() == ".csv" else 0
    columns = table.column_names
    if path.suffix.lower() == ".csv" and all(_number(name) for name in columns):
        raise DataError(f"{path}: the first row holds numbers ({', '.join(columns[:4])}...), not column names; "
                        "a CSV for predict needs a header row naming its columns")
    ref = next(iter(system.fields))
    names = next((p.saved.feature_names for p in system.experts.values() if ref in p.inputs
                  and len(p.inputs) == 1 and p.saved.feature_names), None)
    if names:
        missing = [n for n in names if n not in columns]
        if missing:
            raise DataError(f"{path}: no column {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1
                            else "") + f"; the system reads {len(names)} columns by name: {', '.join(names[:12])}"
                            + (" ..." if len(names) > 12 else ""))
        columns = list(names)
    out = np.empty((table.num_rows, len(columns)), dtype=np.float32)
    for j, name in enumerate(columns):
        column = table.column(name).to_numpy(zero_copy_only=False)
        try:
            values = np.asarray(column, dtype=np.float64)
        except (TypeError, ValueError):
            bad = next(i for i, v in enumerate(column) if not _number(v))
            raise DataError(f"{path}: row {bad + first_row}, column '{name}': {column[bad]!r} is not a number") from None
        if not np.isfinite(values).all():
            bad = int(np.argmax(~np.isfinite(values)))
            raise DataError(f"{path}: row {bad + first_row}, column '{name}': NaN or inf; predict needs finite numbers")
        out[:, j] = values
    return out


def _number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True
