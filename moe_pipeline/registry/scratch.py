"""Scratch folders for a version's files before upload, and for downloads from a remote store.

Each is named `moe-<pid>-...` in the system temp folder, so that the next run can remove
what a killed process (kill -9 unwinds nothing) left behind, and never touches a folder of
a process that is still alive. Must not import mlflow or torch.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

_NAME = re.compile(r"^moe-(\d+)-")


def prefix(label: str) -> str:
    return f"moe-{os.getpid()}-{label}-"


@contextlib.contextmanager
def scratch_dir(label: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix(label)) as folder:
        yield Path(folder)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def remove_dead_scratch() -> list[Path]:
    """Remove scratch folders of processes that no longer exist; returns what was removed."""
    removed = []
    for entry in Path(tempfile.gettempdir()).glob("moe-*"):
        match = _NAME.match(entry.name)
        if match and entry.is_dir() and not pid_alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed
