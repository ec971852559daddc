"""Terminal output of the CLI: plans, outcomes and statuses as rich tables, and status JSON."""
from __future__ import annotations

import json
from typing import Iterable

from moe_pipeline.state.planner import PENDING, STALE, Plan, Status, describe
from moe_pipeline.execute.runner import Outcome
from moe_pipeline.terminal import console, is_terminal

STYLE = {"fresh": "green", "pending": "yellow", "stale": "red", "missing": "magenta"}
NOTE_COLUMN_WIDTH = 120  # a run table with its notes beside the numbers needs this many columns


def _table(title: str):
    from rich.table import Table

    return Table(title=title)


def _memory(mb: float) -> str:
    """Peak memory in the unit that shows it: a small expert's 0.04 MB reads 41 KB, not 0.0 MB."""
    if mb >= 1.0:
        return f"{mb:.1f} MB"
    return f"{mb * 1024:.0f} KB" if mb * 1024 >= 1 else "<1 KB"


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}s"


def print_plan(plan: Plan, title: str = "plan") -> None:
    shown = console()
    if not plan.steps:
        shown.print("nothing to do: every selected expert is fresh")
        return
    table = _table(title)
    for column in ("#", "expert", "status", "action"):
        table.add_column(column, no_wrap=column != "action")
    table.add_column("why", min_width=24, overflow="fold", ratio=1)
    table.add_column("estimate", no_wrap=True)
    for index, step in enumerate(plan.steps, 1):
        table.add_row(str(index), str(step.expert), f"[{STYLE.get(step.status, '')}]{step.status}", describe(step),
                      "\n".join(str(r) for r in step.reasons), _seconds(step.estimate))
    shown.print(table)
    shown.print(f"{len(plan.steps)} expert(s) to train or check, estimated {_seconds(plan.estimate)} at most"
                  + (" (? = never trained)" if plan.estimate is None else ""))


def print_outcomes(outcomes: Iterable[Outcome], as_json: bool = False) -> None:
    """The run table: a rich table on a terminal; in a pipe aligned plain lines, one per expert
    (the note last, whole); `as_json`: one JSON document."""
    outcomes = list(outcomes)
    if as_json:
        print(json.dumps({"outcomes": [outcome_json(o) for o in outcomes]}, indent=2))
        return
    shown = console()
    if not outcomes:
        shown.print("nothing to do: every expert is fresh")
        return
    if not is_terminal():
        cells = [[str(o.expert), o.action, f"v{o.version}", f"{o.metric_name} {o.val_metric:.4f}", f"{o.seconds:.2f} s",
                  _memory(o.peak_memory_mb)] for o in outcomes]
        widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
        for row, o in zip(cells, outcomes):
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + (f"  {o.note}" if o.note else ""))
        return
    table = _table("trained")
    # What the cutoff decided and the epochs run are the reason to read this table: on a
    # terminal too narrow for a note column that keeps them whole, each note is a line below.
    narrow = shown.width < NOTE_COLUMN_WIDTH
    for column in ("expert", "action", "version", "validation metric", "seconds", "peak memory"):
        table.add_column(column, no_wrap=True, justify="right" if column in ("seconds", "peak memory") else "left")
    if not narrow:
        table.add_column("note", min_width=30, overflow="fold", ratio=1)
    from rich.markup import escape

    for o in outcomes:  # notes carry class names, which are data, not rich markup
        row = [str(o.expert), o.action, f"v{o.version}", f"{o.metric_name} {o.val_metric:.4f}", f"{o.seconds:.2f}",
               _memory(o.peak_memory_mb)]
        table.add_row(*row, *([] if narrow else [escape(o.note)]))
    shown.print(table)
    if narrow:
        for o in outcomes:
            if o.note:
                shown.print(f"[bold]{escape(str(o.expert))}[/bold]: {escape(o.note)}")


def outcome_json(o: Outcome) -> dict:
    return {"expert": str(o.expert), "action": o.action, "version": o.version, "metric": o.metric_name,
            "val_metric": o.val_metric, "seconds": round(o.seconds, 3), "peak_memory_mb": round(o.peak_memory_mb, 3),
            "note": o.note, **({"deltas": o.deltas} if o.deltas else {})}


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
    table = _table(f"status of {pipeline}")
    for column in ("expert", "status", "version"):
        table.add_column(column, no_wrap=True)
    table.add_column("reasons", min_width=30, overflow="fold", ratio=1)
    for s in statuses.values():
        lines = [str(r) for r in s.reasons]
        decision = _decision(s, cutoff or {})
        lines += [f"-> {decision}"] if decision else []
        lines += [_validated(s)] if s.status == "fresh" and s.validated else []
        lines += [f"[red]not better than the trivial predictor: {s.below_baseline}"] if s.below_baseline else []
        table.add_row(str(s.name), f"[{STYLE[s.status]}]{s.status}", f"v{s.version}" if s.version else "-",
                      "\n".join(lines))
    console().print(table)


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
