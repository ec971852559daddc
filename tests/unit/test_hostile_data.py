"""Hostile data files: each is one DataError naming the file, found before anything big is
allocated or read; never a hang, an OOM kill or a traceback."""
from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from moe_pipeline.data.files import read
from moe_pipeline.errors import DataError
from moe_pipeline.pipeline.spec import ArraySource, ImageFolderSource, TableSource


def _npy_header_only(path: Path, shape: tuple[int, ...]) -> None:
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": shape})


@pytest.mark.reliability("hostile data files")
def test_an_npy_header_claiming_ten_to_the_eleven_rows_is_refused_before_allocating(tmp_path: Path):
    path = tmp_path / "x.npy"
    _npy_header_only(path, (10**11, 4))
    with pytest.raises(DataError, match=r"declares shape \(100000000000, 4\) of float32"):
        read(ArraySource.model_validate({"loader": "npy", "path": "x.npy"}), path, "x")


@pytest.mark.reliability("hostile data files")
def test_a_zero_row_npz_array_is_refused(tmp_path: Path):
    path = tmp_path / "x.npz"
    np.savez(path, x=np.zeros((0, 3), np.float32))
    with pytest.raises(DataError, match="has 0 rows"):
        read(ArraySource.model_validate({"loader": "npz", "path": "x.npz", "fields": ["x"]}), path, "x")


@pytest.mark.reliability("hostile data files")
def test_a_zip_bomb_npz_is_refused_from_its_directory(tmp_path: Path):
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False,
                                                          "shape": (10**10,)})
    with pytest.raises(DataError, match="declares shape|inflates to"):
        read(ArraySource.model_validate({"loader": "npz", "path": "bomb.npz", "fields": ["x"]}), path, "bomb")


@pytest.mark.reliability("hostile data files")
def test_a_fifo_is_not_read_it_would_never_end(tmp_path: Path):
    path = tmp_path / "t.csv"
    os.mkfifo(path)
    with pytest.raises(DataError, match="is a FIFO, not a regular file"):
        read(TableSource.model_validate({"loader": "csv", "path": "t.csv", "label": "y"}), path, "t")


@pytest.mark.reliability("hostile data files")
@pytest.mark.parametrize("plant", ["dangling", "loop", "folder"])
def test_an_image_folder_entry_that_is_not_an_image_file_is_named(tmp_path: Path, plant: str):
    from PIL import Image

    folder = tmp_path / "img" / "a"
    folder.mkdir(parents=True)
    Image.new("L", (8, 8)).save(folder / "ok.png")
    bad = folder / "x.png"
    if plant == "dangling":
        bad.symlink_to(tmp_path / "nowhere.png")
    elif plant == "loop":
        bad.symlink_to(bad)
    else:
        bad.mkdir()
    source = ImageFolderSource.model_validate({"loader": "imagefolder", "path": "img", "size": [8, 8], "mode": "L"})
    with pytest.raises(DataError, match=rf"{bad}: is .*not an image"):
        read(source, tmp_path / "img", "img")


@pytest.mark.reliability("hostile data files")
def test_an_image_of_another_size_is_refused_from_its_header_before_decoding(tmp_path: Path):
    from PIL import Image

    folder = tmp_path / "img" / "a"
    folder.mkdir(parents=True)
    Image.new("L", (4096, 4096)).save(folder / "big.png")
    source = ImageFolderSource.model_validate({"loader": "imagefolder", "path": "img", "size": [8, 8], "mode": "L"})
    with pytest.raises(DataError, match="size 4096x4096"):
        read(source, tmp_path / "img", "img")


@pytest.mark.reliability("hostile data files")
def test_validate_refuses_a_fifo_source_at_its_path_key(tmp_path: Path):
    from moe_pipeline.errors import PipelineError
    from moe_pipeline.pipeline.loader import load_pipeline

    (tmp_path / "pyproject.toml").write_text("")
    os.mkfifo(tmp_path / "t.csv")
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("name: p\nsources:\n  s: {loader: csv, path: t.csv, label: y}\n"
                        "experts:\n  e: {inputs: [s.features], target: s.label, model: {kind: mlp}}\n")
    with pytest.raises(PipelineError) as info:
        load_pipeline(pipeline)  # returns at once: the FIFO is never opened
    assert str(info.value).startswith(f"{pipeline}:3:") and "is not a regular file" in str(info.value)


@pytest.mark.reliability("hostile data files")
def test_images_that_would_not_fit_in_memory_are_refused_before_any_is_decoded(tmp_path: Path, monkeypatch):
    """The folder's total (images x size x channels as float32) is checked against the machine's
    bound before decoding; the bound is lowered here so that two small images exceed it."""
    from PIL import Image

    from moe_pipeline.data import files

    for k in range(2):
        (tmp_path / "imgs" / "a").mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8)).save(tmp_path / "imgs" / "a" / f"{k}.png")
    monkeypatch.setattr(files, "max_array_bytes", lambda: 2 * 8 * 8 * 4 - 1)
    with pytest.raises(DataError, match="2 images of 8x8x1 need"):
        files.decode_images(sorted((tmp_path / "imgs" / "a").iterdir()), (8, 8), "L")
    monkeypatch.setattr(files, "max_array_bytes", lambda: 2 * 8 * 8 * 4)
    assert files.decode_images(sorted((tmp_path / "imgs" / "a").iterdir()), (8, 8), "L").shape == (2, 1, 8, 8)


@pytest.mark.reliability("hostile data files")
def test_an_image_past_pillows_bomb_guard_is_one_error_naming_it(tmp_path: Path, monkeypatch):
    """An image whose `size:` matches its header, but whose pixels exceed Pillow's decompression
    bomb guard, is refused naming the file (Pillow's limit lowered here: a real bomb is 179M pixels)."""
    from PIL import Image

    from moe_pipeline.data import files

    folder = tmp_path / "img" / "a"
    folder.mkdir(parents=True)
    Image.new("L", (64, 64)).save(folder / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4,096 pixels is over twice the guard: an error, not a warning
    with pytest.raises(DataError, match=rf"{folder / 'bomb.png'}: the image is too large to decode safely"):
        files.decode_images([folder / "bomb.png"], (64, 64), "L")


@pytest.mark.reliability("hostile data files")
def test_a_classes_list_shorter_than_the_targets_ids_is_refused_naming_the_expert(tmp_path: Path):
    """Four label values and two names: one error, never an index past the names later."""
    from moe_pipeline.data.inputs import build_expert_data
    from moe_pipeline.data.statcache import StatCache
    from moe_pipeline.data.store import DataStore
    from moe_pipeline.pipeline.loader import load_pipeline

    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "t.csv").write_text("a,b,y\n" + "".join(f"{i},{i * 2},{i % 4}\n" for i in range(40)))
    (tmp_path / "p.yaml").write_text("name: p\nsources:\n  t: {loader: csv, path: t.csv, label: y}\n"
                                     "experts:\n  e: {inputs: [t.features], target: t.label, classes: [x, z],"
                                     " model: {kind: mlp}}\n")
    pipeline = load_pipeline(tmp_path / "p.yaml").pipeline
    store = DataStore(pipeline, tmp_path, StatCache(None))
    with pytest.raises(DataError, match=r"expert 'e': `classes` names 2 classes but the target has 4"):
        build_expert_data("e", pipeline.experts["e"], store, {})


@pytest.mark.reliability("bad data files")
@pytest.mark.parametrize("case, fragment", [
    ("size", "size 9x8 (height x width), expected 8x8"),
    ("mode", "mode RGB, expected L"),
    ("unreadable", "cannot read the image"),
])
def test_a_bad_image_is_one_data_error_naming_the_image(case: str, fragment: str, tmp_path: Path):
    from PIL import Image

    for label in ("0", "1"):
        (tmp_path / "pngs" / label).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (8, 8), color=i * 10).save(tmp_path / "pngs" / label / f"{i}.png")
    bad = tmp_path / "pngs" / "1" / "bad.png"
    if case == "size":
        Image.new("L", (8, 9)).save(bad)
    elif case == "mode":
        Image.new("RGB", (8, 8)).save(bad)
    else:
        bad.write_bytes(b"not a png at all")
    source = ImageFolderSource.model_validate({"loader": "imagefolder", "path": "pngs", "size": [8, 8], "mode": "L"})
    with pytest.raises(DataError, match="^" + re.escape(f"{bad}: {fragment}")):
        read(source, tmp_path / "pngs", "t")
