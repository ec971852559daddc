"""Terminal output of the CLI: plans, outcomes and statuses as rich tables, and status JSON."""
from __future__ import annotations

import json
from typing import Iterable

from moe_pipeline.planner import Plan, Status
from moe_pipeline.runner import Outcome

STYLE = {"fresh": "green", "pending": "yellow", "stale": "red", "missing": "magenta"}


def _console():
    from rich.console import Console

    return Console()


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}s"


def print_plan(plan: Plan, title: str = "plan") -> None:
    from rich.table import Table

    console = _console()
    if not plan.steps:
        console.print("nothing to do: every selected expert is fresh")
        return
    table = Table(title=title)
    for column in ("#", "expert", "status", "why", "estimate"):
        table.add_column(column)
    for index, step in enumerate(plan.steps, 1):
        table.add_row(str(index), str(step.expert), f"[{STYLE.get(step.status, '')}]{step.status}",
                      "\n".join(str(r) for r in step.reasons), _seconds(step.estimate))
    console.print(table)
    console.print(f"{len(plan.steps)} expert(s) to train, estimated {_seconds(plan.estimate)}"
                  + (" (? = never trained)" if plan.estimate is None else ""))


def print_outcomes(outcomes: Iterable[Outcome]) -> None:
    from rich.table import Table

    outcomes = list(outcomes)
    console = _console()
    if not outcomes:
        console.print("nothing to do: every expert is fresh")
        return
    table = Table(title="trained")
    for column in ("expert", "action", "version", "validation metric", "seconds", "peak memory", "note"):
        table.add_column(column)
    for o in outcomes:
        table.add_row(str(o.expert), o.action, f"v{o.version}", f"{o.metric_name} {o.val_metric:.4f}",
                      f"{o.seconds:.2f}", f"{o.peak_memory_mb:.1f} MB", o.note)
    console.print(table)


def print_status(pipeline: str, statuses: dict[str, Status]) -> None:
    from rich.table import Table

    table = Table(title=f"status of {pipeline}")
    for column in ("expert", "status", "version", "reasons"):
        table.add_column(column)
    for s in statuses.values():
        table.add_row(str(s.name), f"[{STYLE[s.status]}]{s.status}", f"v{s.version}" if s.version else "-",
                      "\n".join(str(r) for r in s.reasons))
    _console().print(table)


def status_json(pipeline: str, statuses: dict[str, Status]) -> str:
    experts = [{"name": str(s.name), "status": s.status, "version": s.version,
                "reasons": [{"kind": r.kind, "detail": r.detail} for r in s.reasons]} for s in statuses.values()]
    return json.dumps({"pipeline": pipeline, "experts": experts}, indent=2)
