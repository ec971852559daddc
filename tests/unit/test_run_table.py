"""The run table on a terminal: at 80 columns each note goes on its own line below the table
(nothing folded mid-word, nothing past the edge); wide enough, the notes are a column."""
from __future__ import annotations

import io

from rich.console import Console

from moe_pipeline.cli import tables
from moe_pipeline.execute.runner import Outcome

NOTE = "30 epochs; weakest on val: [loop] (recall 0.71)"  # brackets: data, not rich markup


def _printed(monkeypatch, width: int) -> list[str]:
    out = io.StringIO()
    monkeypatch.setattr(tables, "is_terminal", lambda: True)
    monkeypatch.setattr(tables, "console", lambda: Console(file=out, width=width, force_terminal=False))
    tables.print_outcomes([Outcome("has_loop", "trained", 3, "accuracy", 0.9123, 1.5, 40.0, NOTE),
                           Outcome("is_even", "kept", 2, "accuracy", 0.88, 0.2, 0.5, "")])
    return out.getvalue().splitlines()


def test_at_80_columns_each_note_is_a_whole_line_below_the_table(monkeypatch):
    lines = _printed(monkeypatch, 80)
    assert all(len(line) <= 80 for line in lines)
    assert lines[-1] == f"has_loop: {NOTE}"
    assert any("has_loop" in line and "v3" in line and "accuracy 0.9123" in line and "40.0 MB" in line for line in lines)
    assert not any(line.startswith("is_even:") for line in lines)  # no note, no line


def test_on_a_wide_terminal_the_notes_are_a_column_of_the_table(monkeypatch):
    lines = _printed(monkeypatch, 160)
    assert any("note" in line for line in lines[:4])  # the header
    row = next(line for line in lines if "has_loop" in line)
    assert "v3" in row and NOTE in row and "512 KB" in next(line for line in lines if "is_even" in line)
