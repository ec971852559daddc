"""What a command writes for the user appears whole or not at all: an interrupt while writing
leaves the earlier file as it was and no partial file beside it."""
from __future__ import annotations

from pathlib import Path

import pytest

from moe_pipeline.cli.whole import write_whole


def test_a_whole_write_replaces_the_file(tmp_path: Path):
    out = tmp_path / "p.csv"
    out.write_text("old\n")
    write_whole(out, lambda tmp: tmp.write_text("new\n"))
    assert out.read_text() == "new\n" and sorted(p.name for p in tmp_path.iterdir()) == ["p.csv"]


@pytest.mark.parametrize("stop", [KeyboardInterrupt, OSError])
def test_an_interrupt_or_error_midway_leaves_the_old_file_and_nothing_else(tmp_path: Path, stop):
    out = tmp_path / "p.csv"
    out.write_text("old\n")

    def half_then_stop(tmp: Path) -> None:
        with open(tmp, "w") as fh:
            fh.write("row 1\n")
            fh.flush()
            raise stop()

    with pytest.raises(stop):
        write_whole(out, half_then_stop)
    assert out.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["p.csv"]
