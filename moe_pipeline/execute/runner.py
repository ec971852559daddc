"""Execute a plan: one expert at a time, in the plan's order, in this process.

A runner takes a plan and a callable per action; it knows nothing of YAML, MLflow or
torch. Experts with no path between them could run in parallel (a Ray executor would
submit `graph.layers` one layer at a time); the default is sequential so that peak memory
is that of the largest single expert.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Hashable

from moe_pipeline.errors import Interrupted, MoeError, StepsFailed
from moe_pipeline.state.planner import Plan, Step


@dataclass
class Outcome:
    """What one step did to one expert, for the run table: the action, the version it left
    current, its validation metric, and a note (epochs, the cutoff's verdict)."""

    expert: Hashable
    action: str  # trained | retrained | kept | unchanged
    version: int
    metric_name: str
    val_metric: float
    seconds: float
    peak_memory_mb: float
    note: str = ""
    deltas: dict[str, float] = field(default_factory=dict)  # measured by a cutoff check


def run_plan(plan: Plan, execute_step: Callable[[Step], Outcome],
             on_outcome: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Run every step in order; stop at the first failure (later steps may depend on it).

    A failure after some steps finished is a `StepsFailed` carrying their outcomes (they are
    registered: the run table lists them) and the error itself (`cause`), as it was raised."""
    outcomes = []
    for step in plan.steps:
        try:
            outcome = execute_step(step)
        except Interrupted as exc:  # the message after Ctrl-C names the expert that was running
            exc.expert = exc.expert or str(step.expert)
            raise
        except MoeError as exc:
            if not outcomes:
                raise
            raise StepsFailed(str(exc), outcomes, cause=exc) from exc
        outcomes.append(outcome)
        if on_outcome:
            on_outcome(outcome)
    return outcomes
