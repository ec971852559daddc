"""Files a command writes for the user (predictions, pages) appear whole or not at all.

Each is written to a hidden temporary file beside its destination, then renamed over it (one
`os.replace` on the same file system); an error or an interrupt on the way removes the
temporary file and leaves the destination as it was. Must not decide what to write.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def write_whole(path: Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` fills a temporary file beside `path`, which then replaces `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:  # an interrupt too: nothing half-written stays
        tmp.unlink(missing_ok=True)
        raise
