"""Where a pipeline's files are: its project root, and a source's `path` resolved against it.

The one home of both rules, so the loader (which checks that files exist), the data store
(which reads them) and the registry (whose default sqlite store lives under the root) agree.
Pure path arithmetic and `exists()` checks: must not read a file's content.
"""
from __future__ import annotations

from pathlib import Path

ROOT_MARKERS = ("pyproject.toml", ".git")


def project_root(pipeline_path: Path) -> Path:
    """The nearest folder above the pipeline file holding pyproject.toml or .git (else its own folder)."""
    start = Path(pipeline_path).resolve().parent
    for folder in (start, *start.parents):
        if any((folder / marker).exists() for marker in ROOT_MARKERS):
            return folder
    return start


def source_path(root: Path | None, path: str) -> Path:
    """A source's `path`: absolute (or `~`) as written, else under the project root."""
    given = Path(path).expanduser()
    return given if given.is_absolute() or root is None else root / given
