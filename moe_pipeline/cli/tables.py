"""Terminal output of the CLI: plans, outcomes and statuses as rich tables, and status JSON."""
from __future__ import annotations

import json
from typing import Iterable

from moe_pipeline.state.planner import PENDING, STALE, Plan, Status, describe
from moe_pipeline.execute.runner import Outcome

STYLE = {"fresh": "green", "pending": "yellow", "stale": "red", "missing": "magenta"}


def _console():
    import sys

    from rich.console import Console

    # A pipe or a CI log has no width: rich would assume 80 columns and wrap every reason.
    return Console() if sys.stdout.isatty() else Console(width=200)


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}s"


def print_plan(plan: Plan, title: str = "plan") -> None:
    from rich.table import Table

    console = _console()
    if not plan.steps:
        console.print("nothing to do: every selected expert is fresh")
        return
    table = Table(title=title)
    for column in ("#", "expert", "status", "action", "why", "estimate"):
        table.add_column(column)
    for index, step in enumerate(plan.steps, 1):
        table.add_row(str(index), str(step.expert), f"[{STYLE.get(step.status, '')}]{step.status}", describe(step),
                      "\n".join(str(r) for r in step.reasons), _seconds(step.estimate))
    console.print(table)
    console.print(f"{len(plan.steps)} expert(s) to train or check, estimated {_seconds(plan.estimate)} at most"
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
        table.add_column(column, no_wrap=column != "note")
    from rich.markup import escape

    for o in outcomes:  # notes carry class names, which are data, not rich markup
        table.add_row(str(o.expert), o.action, f"v{o.version}", f"{o.metric_name} {o.val_metric:.4f}",
                      f"{o.seconds:.2f}", f"{o.peak_memory_mb:.1f} MB", escape(o.note))
    console.print(table)


def _decision(s: Status, cutoff: dict[str, bool]) -> str | None:
    if not cutoff.get(str(s.name)):
        return None
    if s.status == PENDING:
        return f"retrain or keep, decided after {', '.join(map(str, s.root_causes))} trains"
    if s.status == STALE and s.upstream_only:
        return "retrain or keep, decided by re-evaluation on the new upstream outputs"
    return None


def _validated(s: Status) -> str:
    if not s.validated:
        return ""
    ups = ", ".join(f"{u} v{r['version']}" for u, r in sorted(s.validated["upstream"].items()))
    d = s.validated["deltas"]
    return f"kept: validated against {ups} (max delta {d['max_abs']:.3f}, agreement {100 * d['agreement']:.1f}%)"


def print_status(pipeline: str, statuses: dict[str, Status], cutoff: dict[str, bool] | None = None) -> None:
    from rich.table import Table

    table = Table(title=f"status of {pipeline}")
    for column in ("expert", "status", "version", "reasons"):
        table.add_column(column)
    for s in statuses.values():
        lines = [str(r) for r in s.reasons]
        decision = _decision(s, cutoff or {})
        lines += [f"-> {decision}"] if decision else []
        lines += [_validated(s)] if s.status == "fresh" and s.validated else []
        lines += [f"[red]not better than the trivial predictor: {s.below_baseline}"] if s.below_baseline else []
        table.add_row(str(s.name), f"[{STYLE[s.status]}]{s.status}", f"v{s.version}" if s.version else "-",
                      "\n".join(lines))
    _console().print(table)


def status_json(pipeline: str, statuses: dict[str, Status], cutoff: dict[str, bool] | None = None) -> str:
    experts = []
    for s in statuses.values():
        entry = {"name": str(s.name), "status": s.status, "version": s.version,
                 "reasons": [{"kind": r.kind, "detail": r.detail} for r in s.reasons]}
        decision = _decision(s, cutoff or {})
        if decision:
            entry["decision"] = decision
        if s.below_baseline:
            entry["below_baseline"] = s.below_baseline
        if s.validated:
            entry["validated"] = {"upstream": {u: r["version"] for u, r in s.validated["upstream"].items()},
                                  "deltas": s.validated["deltas"], "val_metric": s.validated.get("val_metric")}
        experts.append(entry)
    return json.dumps({"pipeline": pipeline, "experts": experts}, indent=2)
