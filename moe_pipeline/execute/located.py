"""Errors of user code, data or training, prefixed with the YAML position that caused them.

Both write steps (training a version, the cutoff check) run code the user wrote (targets,
custom models) on data the user gave; whatever they raise is reported at the expert's key in
the pipeline file. Must not catch an error of ours that already says where it is.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from moe_pipeline.errors import DataError, MoeError, TrainingError, UserCodeError
from moe_pipeline.pipeline.loader import LoadedPipeline


@contextlib.contextmanager
def located(loaded: LoadedPipeline, expert: str, key: str) -> Iterator[None]:
    """Inside: an error becomes `FILE:LINE:COL: expert 'x': ...` at `experts.<expert>.<key>`.

    Anything a model's own forward/backward raises (a custom model's bug, a shape mismatch)
    becomes a UserCodeError too: one message, the run FAILED, nothing registered.
    """
    where = loaded.where("experts", expert, key)
    try:
        yield
    except DataError as exc:
        if exc.placed:  # already at its source's key
            raise
        raise DataError(f"{where}: {_named(expert, exc)}") from None
    except (UserCodeError, TrainingError) as exc:
        raise type(exc)(f"{where}: {_named(expert, exc)}") from None
    except MoeError:
        raise
    except Exception as exc:  # a model's forward or backward: user code for custom models
        raise UserCodeError(f"{where}: expert '{expert}': training raised {type(exc).__name__}: {exc}") from None


def _named(expert: str, exc: Exception) -> str:
    """The message after the position, naming the expert once (data code may name it already)."""
    text, prefix = str(exc), f"expert '{expert}': "
    return text if text.startswith(prefix) else prefix + text
