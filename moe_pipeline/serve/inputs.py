"""Read the rows to predict on: a file (`.npz`, `.npy`, `.csv`, `.parquet`, an image such as
`.png`), a folder of images, or a split of the pipeline's own sources, through the same
readers the source loaders use. Every problem names the file and what was expected; nothing
is unpickled (`allow_pickle=False`). Must not write anything.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from moe_pipeline.data.files import IMAGE_SUFFIXES
from moe_pipeline.errors import DataError


@dataclass
class Rows:
    """The source fields to predict on, and what names each row where a file does (an image's path)."""

    fields: dict[str, np.ndarray]
    ids: list[str] | None = None


def from_split(view, system, split: str) -> Rows:
    """The raw (untransformed) source fields of one split, as a user would hand them in."""
    out = {}
    for ref in system.fields:
        owner, _, field = ref.partition(".")
        out[ref] = view.store.source(owner).raw_field(field, split).numpy()
    return Rows(out)


def from_file(path: Path, system) -> Rows:
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    suffix = path.suffix.lower()
    try:
        if path.is_dir() or suffix in IMAGE_SUFFIXES:
            return _images(path, system)
        if suffix == ".npz":  # only the arrays the system reads, each size-checked before it inflates
            from moe_pipeline.data.files import npz_members, read_npz_arrays

            wanted = _named(path, {name: name for name in npz_members(path)}, system)  # field -> array name
            arrays = read_npz_arrays(path, sorted(set(wanted.values())))
            return Rows({ref: arrays[name] for ref, name in wanted.items()})
        if suffix == ".npy":
            from moe_pipeline.data.files import read_npy

            return Rows(_only_field(path, system, read_npy(path, path.stem)))
        if suffix == ".csv":
            import pyarrow.csv as pacsv

            return Rows(table_fields(pacsv.read_csv(path), system, str(path), first_row=2, csv=True))
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return Rows(table_fields(pq.read_table(path), system, str(path)))
    except (ValueError, OSError) as exc:  # a pickled or damaged array, a bad CSV
        raise DataError(f"{path}: cannot read it: {exc}") from None
    raise DataError(f"{path}: unknown input format '{suffix}'; use .npz (arrays named like the source fields: "
                    f"{', '.join(system.fields)}), .npy, .csv, .parquet, an image ({', '.join(sorted(IMAGE_SUFFIXES))}) "
                    "or a folder of images")


CHUNK_ROWS = 65_536  # rows of a parquet input read, predicted and written at a time


def parquet_chunks(path: Path, system, rows: int | None = None) -> tuple[int, Iterator[Rows]]:
    """A parquet input's row count and its rows a chunk at a time (only the columns the system
    reads, where training recorded their names): `predict`'s memory does not grow with the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = rows or CHUNK_ROWS
    try:
        file = pq.ParquetFile(path, pre_buffer=False)  # pre-buffering would read ahead every row group
        names = file.schema_arrow.names
    except Exception as exc:  # pyarrow raises several types for a broken file; the user needs the reason
        raise DataError(f"{path}: cannot read it: {exc}") from None
    wanted = [[c for c in (_columns_of(system, ref) or []) if c in names] for ref in system.fields]
    columns = sorted({c for cs in wanted for c in cs}) if all(wanted) else None

    def chunks() -> Iterator[Rows]:
        start = 0
        try:
            for batch in file.iter_batches(batch_size=rows, columns=columns):
                yield Rows(table_fields(pa.Table.from_batches([batch]), system, str(path), first_row=start))
                start += batch.num_rows
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot read it: {exc}") from None
    return file.metadata.num_rows, chunks()


def _images(path: Path, system) -> Rows:
    """One image, or every image under a folder (any depth, sorted by path), decoded as the
    image folder loader decodes them: the same size and mode checks, the same scale to [0, 1]."""
    from moe_pipeline.data.files import decode_images

    refs = [ref for ref, want in system.fields.items() if "image" in want]
    if len(refs) != 1 or len(system.fields) != 1:
        raise DataError(f"{path}: images feed an image folder's image field, but the system reads "
                        f"{', '.join(system.fields)}; use an .npz with one array per field")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise DataError(f"{path}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))} at any depth)")
    else:
        files = [path]
    want = system.fields[refs[0]]["image"]
    images = decode_images(files, tuple(want["size"]), want["mode"])
    return Rows({refs[0]: images}, [str(p.relative_to(path)) if path.is_dir() else p.name for p in files])


def _named(path: Path, found: dict[str, Any], system) -> dict[str, Any]:
    """Arrays named `source.field`, or `field` where that names one field of the system: each of
    the system's fields with the value `found` holds under that name."""
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


def table_fields(table: Any, system, where: str, first_row: int = 0, csv: bool = False) -> dict[str, np.ndarray]:
    """Every field the system reads, from a table (pyarrow) with one column per feature: each
    field's columns matched by the names training recorded (any order; extra columns ignored; a
    missing one named). A CSV without a header is refused: its first row would silently become
    the column names. `where` names the input in errors; `first_row` is its first data row's number."""
    from moe_pipeline.data.tables import no_duplicates

    columns = table.column_names
    no_duplicates(columns, where)
    if csv and all(_number(name) for name in columns):
        raise DataError(f"{where}: the first row holds numbers ({', '.join(columns[:4])}...), not column names; "
                        "a CSV for predict needs a header row naming its columns")
    out = {}
    for ref in system.fields:
        names = _columns_of(system, ref)
        if names is None:  # nothing recorded (an old export): the file's columns in order, one field only
            if len(system.fields) != 1:
                raise DataError(f"{where}: the system reads {', '.join(system.fields)} and recorded no column names; "
                                "use an .npz with one array per field")
            names = list(columns)
        missing = [n for n in names if n not in columns]
        if missing:
            raise DataError(f"{where}: no column {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1
                            else "") + f"; the system reads {len(names)} columns of {ref} by name: "
                            f"{', '.join(names[:12])}" + (" ..." if len(names) > 12 else ""))
        out[ref] = _numbers(table, names, where, first_row)
    return out


def _columns_of(system, ref: str) -> list[str] | None:
    recorded = system.fields[ref].get("columns")
    if recorded:
        return list(recorded)
    return next((list(p.saved.feature_names) for p in system.experts.values() if ref in p.inputs
                 and len(p.inputs) == 1 and p.saved.feature_names), None)


def _numbers(table: Any, names: list[str], where: str, first_row: int) -> np.ndarray:
    out = np.empty((table.num_rows, len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        column = table.column(name).to_numpy(zero_copy_only=False)
        try:
            values = np.asarray(column, dtype=np.float64)
        except (TypeError, ValueError):
            bad = next(i for i, v in enumerate(column) if not _number(v))
            raise DataError(f"{where}: row {bad + first_row}, column '{name}': {column[bad]!r} is not a number") from None
        if not np.isfinite(values).all():
            bad = int(np.argmax(~np.isfinite(values)))
            raise DataError(f"{where}: row {bad + first_row}, column '{name}': NaN or inf; predict needs finite numbers")
        out[:, j] = values
    return out


def _number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True
