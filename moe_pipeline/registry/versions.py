"""What a registry snapshot holds: every version of each expert, its `current` alias, and the
tag names that say who trained a run. Plain data shared by the MLflow reader (`store`) and
the sqlite fast read (`fastread`), so neither imports the other for it. Must not import mlflow.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from moe_pipeline.state.record import Record

CURRENT = "current"  # the alias of the version a pipeline uses
HOST, PID = "moe.host", "moe.pid"  # who trains a run: the next run marks runs of dead processes FAILED


@dataclass
class ExpertVersions:
    """Every registered version of one expert, and which one is `current`."""

    name: str
    current: int | None = None
    records: dict[int, Record] = field(default_factory=dict)
    sources: dict[int, str] = field(default_factory=dict)  # version -> artifact URI
    model_tags: dict[str, str] = field(default_factory=dict)  # tags of the registered model itself

    @property
    def current_record(self) -> Record | None:
        """The record of the `current` version, or None when no version is current."""
        return self.records.get(self.current) if self.current is not None else None
