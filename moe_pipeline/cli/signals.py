"""SIGINT and SIGTERM become one exception, so a command stops cleanly and says what it stopped.

Typer turns a KeyboardInterrupt into a silent exit 130, and SIGTERM kills without unwinding;
both would leave an MLflow run RUNNING and temporary folders behind. Here both raise
`Interrupted` (a BaseException), which unwinds through the training run (marked FAILED,
nothing registered) and `tempfile` contexts (removed). Must not import torch or mlflow.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

from moe_pipeline.errors import Interrupted


@contextlib.contextmanager
def interrupt_on_signals() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():  # signals go to the main thread only
        yield
        return

    def handler(signum, frame):
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
