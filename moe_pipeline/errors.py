"""Every error the project raises on purpose.

The CLI turns any `MoeError` into one clear message and exit code 2, never a traceback.
This module must not import anything heavy: the CLI imports it at start-up.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a pipeline file, located as FILE:LINE:COL."""

    file: str
    line: int
    col: int
    path: str  # dotted key path, e.g. experts.digit.inputs[1]
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}:{self.line}:{self.col}: {where}{self.message}"


class MoeError(Exception):
    """Base class: a user-facing error with a message that says what, where and the fix."""

    exit_code = 2


class PipelineError(MoeError):
    """A pipeline file is invalid; carries every problem found in it, not only the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems, key=lambda p: (p.line, p.col, p.message))
        super().__init__("\n".join(str(p) for p in self.problems))


class DataError(MoeError):
    """A source or an expert's inputs cannot be built (wrong shapes, dtypes, lengths)."""


class TrainingError(MoeError):
    """Training one expert failed for a reason the user can act on."""


class MemoryBudgetError(TrainingError):
    """Even a micro-batch of 1 does not fit in `resources.max_memory_gb`."""


class RegistryError(MoeError):
    """The MLflow registry is unreachable or holds something we did not expect."""


class IntegrityError(RegistryError):
    """An artifact's sha256 does not match the one recorded with its version."""


class SelectionError(MoeError):
    """A command named an expert or version that does not exist."""
