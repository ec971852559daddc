"""`export --out DIR` never deletes what it did not write (the audit's data loss: a folder holding
a `system.json` beside a user's files was deleted whole)."""
from __future__ import annotations

from pathlib import Path

import pytest

from moe_pipeline.cli.use import EXPORT_MARKER, replace_export
from moe_pipeline.errors import SelectionError


def _export(version: str):
    def write(folder: Path) -> None:
        (folder / "system.json").write_text(version)
        (folder / "experts" / "a").mkdir(parents=True)
        (folder / "experts" / "a" / "weights.safetensors").write_text(version)
    return write


def test_a_new_folder_gets_the_export_and_a_marker_naming_its_files(tmp_path: Path):
    out = tmp_path / "exp"
    replace_export(out, _export("v1"))
    assert (out / "system.json").read_text() == "v1" and (out / EXPORT_MARKER).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]  # no scratch folder left beside it


@pytest.mark.reliability("export over a folder")
def test_an_earlier_export_is_replaced_whole(tmp_path: Path):
    out = tmp_path / "exp"
    replace_export(out, _export("v1"))
    replace_export(out, _export("v2"))
    assert (out / "system.json").read_text() == "v2"
    assert (out / "experts" / "a" / "weights.safetensors").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]


@pytest.mark.reliability("export over a folder")
@pytest.mark.parametrize("planted", ["important.txt", "sub/thesis.tex"])
def test_a_users_file_beside_an_export_stops_it_and_nothing_is_deleted(tmp_path: Path, planted: str):
    out = tmp_path / "exp"
    replace_export(out, _export("v1"))
    (out / planted).parent.mkdir(parents=True, exist_ok=True)
    (out / planted).write_text("a user's work")
    with pytest.raises(SelectionError, match="holds files that are not an export"):
        replace_export(out, _export("v2"))
    assert (out / planted).read_text() == "a user's work" and (out / "system.json").read_text() == "v1"


@pytest.mark.reliability("export over a folder")
def test_a_system_json_without_the_marker_is_not_taken_for_an_export(tmp_path: Path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "system.json").write_text("{}")
    (out / "notes.txt").write_text("keep")
    with pytest.raises(SelectionError):
        replace_export(out, _export("v1"))
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "system.json"]


@pytest.mark.reliability("export over a folder")
def test_a_failed_write_leaves_the_earlier_export_and_no_scratch(tmp_path: Path):
    out = tmp_path / "exp"
    replace_export(out, _export("v1"))

    def broken(folder: Path) -> None:
        (folder / "system.json").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        replace_export(out, broken)
    assert (out / "system.json").read_text() == "v1" and sorted(p.name for p in tmp_path.iterdir()) == ["exp"]
