"""Importing the large libraries (torch, mlflow) without Python's collector rescanning them.

Importing torch and mlflow creates about half a million objects (modules, functions, classes)
that live as long as the process. Python 3.11's cyclic garbage collector runs a full
collection each time the surviving objects have grown by a quarter, and each one scans all of
them, to free almost nothing (`bench_demo` measures what this costs a `run`). So those imports run with the
collector paused, and what they created is frozen afterwards (`gc.freeze`): later collections
skip it. Frozen objects are still freed by reference counting when dropped; only a reference
cycle among them is never collected, and modules are not dropped.

Must not import anything large itself: it is imported on the way to importing them.
"""
from __future__ import annotations

import contextlib
import gc
import sys
from typing import Iterator


@contextlib.contextmanager
def long_lived() -> Iterator[None]:
    """Run the block (a large import, opening a store) with the cyclic collector paused; if it
    imported anything, freeze every object alive, so later full collections no longer scan them.

    A block that imported nothing new (the libraries were loaded already) freezes nothing: a
    process that opens many stores (the tests, a server) does not pile up frozen objects."""
    enabled = gc.isenabled()  # a block inside another, or a caller that paused it, leaves it paused
    modules = len(sys.modules)
    gc.disable()
    try:
        yield
    finally:
        if len(sys.modules) > modules:
            gc.freeze()
        if enabled:
            gc.enable()
