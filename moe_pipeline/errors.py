"""Every error the project raises on purpose.

The CLI turns any `MoeError` into one clear message and exit code 2, never a traceback.
This module must not import anything heavy: the CLI imports it at start-up.
"""
from __future__ import annotations

from dataclasses import dataclass


QUOTED = 60  # characters of a value from a data file that a message shows


def quoted(value: object, limit: int = QUOTED) -> str:
    """A value from a data file as a message shows it: repr'd, and cut to its first `limit`
    characters with its length when longer (a 200,000-character cell stays one readable line)."""
    text = str(value)
    if len(text) <= limit:
        return repr(value)
    return f"{text[:limit]!r}... ({len(text)} characters)"


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

    MAX_SHOWN = 50  # a file with a million bad keys needs its first few fixed, not a million lines

    def __init__(self, problems: list[Problem], more: int = 0):
        self.problems = sorted(problems, key=lambda p: (p.line, p.col, p.message))
        hidden = more + max(0, len(self.problems) - self.MAX_SHOWN)
        lines = [str(p) for p in self.problems[:self.MAX_SHOWN]]
        if hidden:
            first = self.problems[0].file if self.problems else "<pipeline>"
            lines.append(f"{first}: and {hidden} more problem(s); fix these first")
        super().__init__("\n".join(lines))


class DataError(MoeError):
    """A source or an expert's inputs cannot be built (wrong shapes, dtypes, lengths).

    `placed` is True once the message starts with the YAML position of the source at fault;
    no later step prefixes another position."""

    placed = False


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


class UserCodeError(MoeError):
    """Code the pipeline references (a loader, a target function, a model) raised or returned nonsense."""


class ExecutorError(MoeError):
    """The Ray executor cannot run this plan (Ray missing, a request no node can meet)."""


class StepsFailed(MoeError):
    """Some experts failed (on the cluster, or one stopped a local run) after others finished.
    Carries what finished (`outcomes`)."""

    def __init__(self, message: str, outcomes: list, cause: MoeError | None = None):
        super().__init__(message)
        self.outcomes = outcomes
        self.cause = cause  # the one error that stopped a local run, reported as it was raised


class Interrupted(BaseException):
    """SIGINT or SIGTERM during a command. A BaseException, so no `except Exception` swallows it
    and every context manager on the way out (a training run marked FAILED) still runs."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.exit_code = 128 + signum
        self.expert: str | None = None  # set on the way out by the step that was running
        self.doing: str | None = None  # what a command other than `run` was doing (`inspect has_loop: AGOP`)

    def describe(self) -> str:
        if self.doing is not None:
            return f"stopped at {self.doing}; nothing registered"
        if self.expert is None:
            return "nothing was training; nothing registered"
        return f"{self.expert} was training; nothing registered for it"
