"""The user's data files as named arrays: csv, parquet, npz, npy and image folders.

Each reader returns fields (numpy arrays, one row per sample) with feature and class names
where the file has them. Every problem names the file, and the row and column (or the
image) where it is known, and says what was expected: bad data is a `DataError` (exit 2),
never a traceback. Must not import torch or mlflow, and must not touch the registry.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moe_pipeline.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass
class FileData:
    fields: dict[str, np.ndarray]
    names: dict[str, list[str]] = field(default_factory=dict)  # field -> one name per feature column
    classes: dict[str, list[str]] = field(default_factory=dict)  # field -> class names (index = class id)


def read(source: Any, path: Path, name: str) -> FileData:
    readers = {"csv": _csv, "parquet": _parquet, "npz": _npz, "npy": _npy, "imagefolder": _imagefolder}
    return readers[source.loader](source, path, name)


# ---------------------------------------------------------------- tables


def _csv(source: Any, path: Path, name: str) -> FileData:
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: the file is empty; expected a header row and one row per sample")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: byte 0x{raw[exc.start]:02x} is not UTF-8; save the file as "
                        "UTF-8") from None
    rows = list(csv.reader(io.StringIO(text), delimiter=source.delimiter))
    header, body = rows[0], [r for r in rows[1:] if r]
    if len(header) < 2:
        raise DataError(f"{path}: found one column ({header[0][:60]!r}) with delimiter {source.delimiter!r}; "
                        "set `delimiter:` to the file's separator")
    if not body:
        raise DataError(f"{path}: the file has a header but no rows")
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataError(f"{path}: row {number} has {len(row)} cells, the header {len(header)}")
    columns = {col: [row[i] for row in body] for i, col in enumerate(header)}
    return _table(source, path, columns, first_row=2)


def _parquet(source: Any, path: Path, name: str) -> FileData:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a broken file; the user needs the reason
        raise DataError(f"{path}: cannot read parquet: {exc}") from None
    if table.num_rows == 0:
        raise DataError(f"{path}: the file has no rows")
    return _table(source, path, {col: table.column(col).to_pylist() for col in table.column_names}, first_row=0)


def _table(source: Any, path: Path, columns: dict[str, list], first_row: int) -> FileData:
    """Feature columns to float32 (row/column of the first bad cell in errors), the label to class ids."""
    for wanted in ([source.label] if source.label else []) + list(source.columns or []):
        if wanted not in columns:
            raise DataError(f"{path}: no column {wanted!r}; columns: {', '.join(list(columns)[:30])}")
    features = list(source.columns or [c for c in columns if c != source.label])
    matrix = np.empty((len(next(iter(columns.values()))), len(features)), dtype=np.float32)
    for j, col in enumerate(features):
        for i, cell in enumerate(columns[col]):
            value = _number(cell)
            if value is None or not math.isfinite(value):
                where = f"row {i + first_row}" if first_row else f"row {i}"
                what = "NaN or inf" if value is not None else f"{cell!r}, not a number"
                raise DataError(f"{path}: {where}, column {col!r}: {what}; feature columns must hold finite numbers "
                                f"(choose columns with `columns:` or clean the file)")
            matrix[i, j] = value
    out = FileData(fields={"features": matrix}, names={"features": features})
    if source.label:
        ids, classes = class_ids(columns[source.label])
        out.fields["label"], out.classes["label"] = ids, classes
    return out


def _number(cell: Any) -> float | None:
    if isinstance(cell, bool) or cell is None:
        return None
    if isinstance(cell, (int, float)):
        return float(cell)
    try:
        return float(str(cell).strip())
    except ValueError:
        return None


def class_ids(values: list) -> tuple[np.ndarray, list[str]]:
    """Class names are the values, sorted (numerically when they are all numbers); ids index them."""
    text = [str(v).strip() for v in values]
    distinct = sorted(set(text))
    numbers = [_number(v) for v in distinct]
    if all(n is not None for n in numbers):
        distinct = [d for _, d in sorted(zip(numbers, distinct))]
    index = {name: i for i, name in enumerate(distinct)}
    return np.array([index[t] for t in text], dtype=np.int64), distinct


# ---------------------------------------------------------------- arrays


def _npz(source: Any, path: Path, name: str) -> FileData:
    try:
        with np.load(path, allow_pickle=False) as archive:  # never unpickle object arrays
            fields = {f: np.asarray(archive[f]) for f in source.arrays}
    except (ValueError, OSError, KeyError) as exc:
        raise DataError(f"{path}: cannot read npz: {exc}") from None
    return FileData(fields={f: _numeric(path, f, a) for f, a in fields.items()})


def _npy(source: Any, path: Path, name: str) -> FileData:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: cannot read npy: {exc}") from None
    return FileData(fields={name: _numeric(path, name, array)})


def _numeric(path: Path, field: str, array: np.ndarray) -> np.ndarray:
    if array.ndim == 0:
        raise DataError(f"{path}: array {field!r} is a scalar; expected one row per sample")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise DataError(f"{path}: array {field!r} has dtype {array.dtype}; expected numbers")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        row = int(np.argwhere(~np.isfinite(array.reshape(len(array), -1)))[0, 0])
        raise DataError(f"{path}: array {field!r} holds NaN or inf (first in row {row})")
    return array


# ---------------------------------------------------------------- images


def image_files(folder: Path) -> list[tuple[Path, str]]:
    """(image path, class) for every image under `folder/<class>/`, in a stable order."""
    pairs = [(p, sub.name) for sub in sorted(folder.iterdir()) if sub.is_dir()
             for p in sorted(sub.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not pairs:
        raise DataError(f"{folder}: no images found; expected {folder}/<class>/<image>.png")
    return pairs


def _imagefolder(source: Any, path: Path, name: str) -> FileData:
    from PIL import Image, UnidentifiedImageError

    height, width = source.size
    pairs = image_files(path)
    channels = 1 if source.mode == "L" else 3
    images = np.empty((len(pairs), channels, height, width), dtype=np.float32)
    for i, (file, _) in enumerate(pairs):
        try:
            with Image.open(file) as image:
                image.load()
                if image.size != (width, height):
                    raise DataError(f"{file}: size {image.size[1]}x{image.size[0]} (height x width), expected "
                                    f"{height}x{width} as `size:` says")
                if image.mode != source.mode:
                    raise DataError(f"{file}: mode {image.mode}, expected {source.mode} as `mode:` says")
                pixels = np.asarray(image, dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{file}: cannot read the image: {exc}") from None
        images[i] = pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)
    ids, classes = class_ids([c for _, c in pairs])
    return FileData(fields={"image": images, "label": ids}, classes={"label": classes})
