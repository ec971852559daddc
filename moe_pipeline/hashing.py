"""sha256 of a file, read in 1 MiB chunks: the one place the project hashes a file's bytes.

A leaf every layer may use (artifacts, the empty-store seed, the stat cache, the exported
system). Must not import anything of the package, nor torch or mlflow.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20  # memory stays flat for any file size


def sha256_file(path: Path | str) -> str:
    """The hex sha256 of the file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
