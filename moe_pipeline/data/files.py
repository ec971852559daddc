"""The user's data files as named arrays: csv, parquet, npz, npy and image folders.

Each reader returns fields (numpy arrays, one row per sample) with feature and class names
where the file has them. Every problem names the file, and the row and column (or the
image) where it is known, and says what was expected: bad data is a `DataError` (exit 2),
never a traceback. Must not import torch or mlflow, and must not touch the registry.
"""
from __future__ import annotations

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
    from moe_pipeline.data.tables import read_csv, to_fields

    groups, columns = read_csv(source, path)
    return FileData(*to_fields(groups, columns, path, first_row=2))


def _parquet(source: Any, path: Path, name: str) -> FileData:
    from moe_pipeline.data.tables import read_parquet, to_fields

    groups, columns = read_parquet(source, path)
    return FileData(*to_fields(groups, columns, path, first_row=0))


def class_ids(values: list[str]) -> tuple[np.ndarray, list[str]]:
    """Class names are the values, sorted (numerically when they are all numbers); ids index them."""
    distinct = sorted(set(values))
    try:
        distinct = sorted(distinct, key=float)
    except ValueError:
        pass
    index = {name: i for i, name in enumerate(distinct)}
    return np.array([index[v] for v in values], dtype=np.int64), distinct


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
