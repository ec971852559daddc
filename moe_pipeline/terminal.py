"""Where the project prints for a person: a rich Console sized for a terminal, or for a pipe.

A pipe or a CI log has no width: rich would assume 80 columns and wrap every line. There a
line is as long as it is (a table as wide as its longest row), never cut or wrapped mid-word.
Must not import anything heavy (it is on every command's path).
"""
from __future__ import annotations

import sys


def is_terminal() -> bool:
    return sys.stdout.isatty()


def console():
    from rich.console import Console

    return Console() if is_terminal() else Console(width=10_000, soft_wrap=True)
