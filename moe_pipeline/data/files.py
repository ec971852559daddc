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
from moe_pipeline.pipeline.spec import IMAGE_SUFFIXES  # noqa: F401  (where the readers' users find it)


@dataclass
class FileData:
    """What reading one data file gives: its fields as arrays, each field's column names and class names."""
    fields: dict[str, np.ndarray]
    names: dict[str, list[str]] = field(default_factory=dict)  # field -> one name per feature column
    classes: dict[str, list[str]] = field(default_factory=dict)  # field -> class names (index = class id)


def read(source: Any, path: Path, name: str) -> FileData:
    readers = {"csv": _csv, "parquet": _parquet, "npz": _npz, "npy": _npy, "imagefolder": _imagefolder}
    if source.loader != "imagefolder":
        regular_file(path)
    return readers[source.loader](source, path, name)


def regular_file(path: Path) -> None:
    """A data file must be a regular file: a FIFO or a device (`/dev/zero`) would never end."""
    import stat

    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise DataError(f"{path}: cannot read it: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
        raise DataError(f"{path}: is {kind}, not a regular file; a source reads a file")


def max_array_bytes() -> int:
    """The largest array a data file may declare: half this machine's memory (checked before
    anything is allocated, so a header claiming 10^11 rows is an error, not an OOM kill)."""
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def _declared(handle, path: Path, field: str) -> None:
    """Refuse an .npy header whose shape and dtype would not fit, before reading the data."""
    try:
        version = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(handle)
    except (ValueError, OSError, SyntaxError) as exc:
        raise DataError(f"{path}: array {field!r} has a damaged header: {exc}") from None
    size = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if size > max_array_bytes():
        raise DataError(f"{path}: array {field!r} declares shape {tuple(shape)} of {dtype} ({size / 2**30:.1f} GiB), "
                        f"more than half this machine's memory; split the data or use a smaller sample")
    if len(shape) >= 1 and shape[0] == 0:
        raise DataError(f"{path}: array {field!r} has 0 rows; expected one row per sample")


# ---------------------------------------------------------------- tables


def _csv(source: Any, path: Path, name: str) -> FileData:
    from moe_pipeline.data.tables import read_csv, to_fields

    groups, columns = read_csv(source, path)
    return FileData(*to_fields(groups, columns, path, first_row=2))


def _parquet(source: Any, path: Path, name: str) -> FileData:
    from moe_pipeline.data.tables import read_parquet, to_fields

    groups, columns = read_parquet(source, path, max_array_bytes())
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
    fields = read_npz_arrays(path, list(source.arrays))
    return FileData(fields={f: _numeric(path, f, a) for f, a in fields.items()})


def npz_members(path: Path) -> list[str]:
    """The array names an .npz holds, from its zip directory (nothing inflated)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return [n[:-len(".npy")] for n in archive.namelist() if n.endswith(".npy")]
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path}: cannot read it as npz: {exc}") from None


def read_npz_arrays(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    """Only the named arrays of an .npz (`predict` given a file with arrays it does not need reads
    none of them), each one's inflated size and declared shape checked first: a zip bomb or a
    header claiming 10^11 rows is refused before it inflates. Never unpickles object arrays."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            for field in names:
                member = f"{field}.npy"
                if member in archive.namelist():
                    if archive.getinfo(member).file_size > max_array_bytes():
                        raise DataError(f"{path}: array {field!r} inflates to "
                                        f"{archive.getinfo(member).file_size / 2**30:.1f} GiB, more than half this "
                                        "machine's memory")
                    with archive.open(member) as handle:
                        _declared(handle, path, field)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path}: cannot read it as npz: {exc}") from None
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {f: np.asarray(archive[f]) for f in names}
    except (ValueError, OSError, KeyError) as exc:
        raise DataError(f"{path}: cannot read it as npz: {exc}") from None


def read_npy(path: Path, name: str) -> np.ndarray:
    """An .npy array, its declared shape checked before it is read. Never unpickles."""
    with open(path, "rb") as handle:
        _declared(handle, path, name)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: cannot read it as npy: {exc}") from None


def _npy(source: Any, path: Path, name: str) -> FileData:
    return FileData(fields={name: _numeric(path, name, read_npy(path, name))})


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
    for file, _ in pairs:  # a link to nothing, a link loop, a folder named like an image: say so
        if not file.is_file():
            what = ("a folder" if file.is_dir() else "a link to nothing or a link loop" if file.is_symlink()
                    else "not a regular file")
            raise DataError(f"{file}: is {what}, not an image; remove it or point it at an image")
    if not pairs:
        raise DataError(f"{folder}: no images found; expected {folder}/<class>/<image>.png")
    return pairs


def _imagefolder(source: Any, path: Path, name: str) -> FileData:
    pairs = image_files(path)
    images = decode_images([file for file, _ in pairs], tuple(source.size), source.mode)
    ids, classes = class_ids([c for _, c in pairs])
    return FileData(fields={"image": images, "label": ids}, classes={"label": classes})


def decode_images(files: list[Path], size: tuple[int, int], mode: str) -> np.ndarray:
    """(n, channels, height, width) float32 in [0, 1], as the image folder loader makes them
    (`predict` reads PNGs through this too, so an image is scaled exactly as in training)."""
    from PIL import Image, UnidentifiedImageError

    height, width = size
    channels = 1 if mode == "L" else 3
    need = len(files) * channels * height * width * 4
    if need > max_array_bytes():  # before decoding any: 120 images of 4096x4096 would need 24 GiB
        raise DataError(f"{files[0].parent.parent}: {len(files)} images of {height}x{width}x{channels} need "
                        f"{need / 2**30:.1f} GiB as float32, more than half this machine's memory; use fewer or "
                        "smaller images (`size:`)")
    images = np.empty((len(files), channels, height, width), dtype=np.float32)
    for i, file in enumerate(files):
        try:
            with Image.open(file) as image:
                if image.size != (width, height):  # from the header: a huge image is refused before decoding
                    raise DataError(f"{file}: size {image.size[1]}x{image.size[0]} (height x width), expected "
                                    f"{height}x{width} as `size:` says")
                image.load()
                if image.mode != mode:
                    raise DataError(f"{file}: mode {image.mode}, expected {mode} as `mode:` says")
                pixels = np.asarray(image, dtype=np.float32) / 255.0
        except Image.DecompressionBombError as exc:
            raise DataError(f"{file}: the image is too large to decode safely ({exc}); expected "
                            f"{height}x{width}") from None
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{file}: cannot read the image: {exc}") from None
        images[i] = pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)
    return images
