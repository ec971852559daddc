"""Status and plan: records and fingerprints in, statuses with reasons and a plan out.

Pure: no MLflow, no torch, no files. Works on any networkx DiGraph whose nodes are
experts (tests use integers). Checks run cheapest first: spec hash, then code, then data,
then upstream versions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable, Mapping, Protocol

import networkx as nx

from moe_pipeline.pipeline import graph as g
from moe_pipeline.state.fingerprint import mapping_diff, spec_diff

MISSING, STALE, PENDING, FRESH = "missing", "stale", "pending", "fresh"


# (data key, the hash the record holds) -> the reason naming the changed files, or None if unknown
ChangedFiles = Callable[[str, str], "str | None"]


class FingerprintLike(Protocol):
    """What the planner reads of a fingerprint (state.fingerprint.Fingerprint)."""
    spec: dict[str, Any]
    spec_hash: str
    code: dict[str, str]
    data: dict[str, str]


@dataclass(frozen=True)
class Reason:
    """Why an expert is not fresh, in one category and one line (`SPEC train.lr: 0.003 -> 0.001`)."""

    kind: str  # SPEC | CODE | DATA | UPSTREAM | MISSING | INTEGRITY
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} {self.detail}"


@dataclass
class Status:
    """One expert's status (missing, stale, pending, fresh), its current version, the reasons,
    and for a pending one the stale or missing experts upstream it waits for."""

    name: Hashable
    status: str
    version: int | None
    reasons: list[Reason] = field(default_factory=list)
    root_causes: list[Hashable] = field(default_factory=list)  # for pending: the non-fresh ancestors to blame
    upstream_only: bool = False  # stale only because an upstream's current moved (cutoff may keep it)
    validated: dict[str, Any] | None = None  # the last cutoff check that kept this version, with its deltas
    below_baseline: str | None = None  # "val accuracy 0.30 vs majority class 0.62" when not better than trivial

    def summary(self) -> str:
        """The reasons, in one line."""
        return "; ".join(str(r) for r in self.reasons)


def own_reasons(fp: FingerprintLike, record: Any, files: ChangedFiles | None = None) -> list[Reason]:
    """What differs between an expert's record and what the YAML, code and data say now.

    `files(key, old_hash)`, where given, says which files of a changed data field changed
    (`digits.image (data/img/7/0012.png) changed`): the reason names them, not the folder."""
    if record.spec_hash == fp.spec_hash and record.code == fp.code and record.data == fp.data:
        return []
    reasons = [Reason("SPEC", line) for line in spec_diff(record.spec, fp.spec)] if record.spec_hash != fp.spec_hash else []
    reasons += [Reason("CODE", line) for line in mapping_diff(record.code, fp.code)]
    for line in mapping_diff(record.data, fp.data):
        key = line.removesuffix(" changed")
        which = files(key, record.data[key]) if files and key != line and key in record.data else None
        reasons.append(Reason("DATA", which or line))
    if not reasons:  # hashes differ but no key does: a canonicalisation change; say so rather than hide it
        reasons.append(Reason("SPEC", "spec hash changed"))
    return reasons


def statuses(graph: nx.DiGraph, fingerprints: Mapping[Hashable, FingerprintLike],
             current: Mapping[Hashable, Any], integrity: Mapping[Hashable, str] | None = None,
             files: ChangedFiles | None = None) -> dict[Hashable, Status]:
    """Status of every expert, in topological order. `current[n]` is n's current record or None.

    `integrity[n]`, when given, says what is wrong with n's stored artifacts (a checksum
    mismatch, a missing file): n is then stale and must be retrained.
    """
    out: dict[Hashable, Status] = {}
    for node in g.order(graph):
        record = current.get(node)
        if record is None:
            out[node] = Status(node, MISSING, None, [Reason("MISSING", "no version registered")])
            continue
        reasons = own_reasons(fingerprints[node], record, files)
        if integrity and node in integrity:
            reasons.append(Reason("INTEGRITY", integrity[node]))
        upstream_reasons, waiting = [], []
        for up in g.upstream(graph, node):
            up_record, consumed = current.get(up), record.upstream.get(up)
            if up_record is not None and consumed is not None and consumed.version == up_record.version \
                    and consumed.outputs == up_record.outputs_sha:
                pass
            elif up_record is not None and consumed is None:
                upstream_reasons.append(Reason("UPSTREAM", f"{up} (not consumed by v{record.version})"))
            elif up_record is not None and consumed.version != up_record.version:
                upstream_reasons.append(Reason("UPSTREAM", f"{up} v{consumed.version} -> v{up_record.version}"))
            elif up_record is not None:
                upstream_reasons.append(Reason("UPSTREAM", f"{up} v{up_record.version} (stored outputs refreshed)"))
            if out[up].status != FRESH:
                waiting.append(up)
        if reasons or upstream_reasons:
            out[node] = Status(node, STALE, record.version, reasons + upstream_reasons,
                               upstream_only=not reasons)
        elif waiting:
            roots = _root_causes(graph, out, waiting)
            detail = [Reason("UPSTREAM", f"waits for {r} ({out[r].status}: {out[r].summary()})") for r in roots]
            out[node] = Status(node, PENDING, record.version, detail, root_causes=roots)
        else:
            out[node] = Status(node, FRESH, record.version)
        out[node].validated = getattr(record, "validated", None)
        if getattr(record, "below_baseline", False):
            out[node].below_baseline = record.baseline_text()
    return out


def _root_causes(graph: nx.DiGraph, out: dict[Hashable, Status], waiting: Iterable[Hashable]) -> list[Hashable]:
    roots: list[Hashable] = []
    for up in waiting:
        for cause in (out[up].root_causes if out[up].status == PENDING else [up]):
            if cause not in roots:
                roots.append(cause)
    return sorted(roots, key=str)


# ---------------------------------------------------------------- plan


TRAIN, CHECK = "train", "retrain or keep"


@dataclass(frozen=True)
class Step:
    """One expert the plan trains, or checks first (the behavioural cutoff), and why."""

    expert: Hashable
    status: str
    reasons: tuple[Reason, ...]
    estimate: float | None  # seconds, from the recorded training time; None when unknown
    forced: bool = False
    action: str = TRAIN  # CHECK: the behavioural cutoff decides once its upstream has trained
    decided_after: tuple[Hashable, ...] = ()
    planned_version: int | None = None  # its current version when the plan was made (None: it had none)


@dataclass(frozen=True)
class Plan:
    """The steps of a `run`, in topological order; pure data the runners execute."""

    steps: tuple[Step, ...]

    @property
    def experts(self) -> list[Hashable]:
        """The experts of the steps, in plan order."""
        return [s.expert for s in self.steps]

    @property
    def estimate(self) -> float | None:
        """Seconds the whole plan is expected to take; None when any step's is unknown."""
        known = [s.estimate for s in self.steps]
        return None if any(e is None for e in known) else float(sum(known))  # type: ignore[arg-type]


def decision(status: Status, cutoff: bool) -> tuple[str, tuple[Hashable, ...]]:
    """TRAIN, or CHECK (retrain or keep) when only upstream changes stand against this expert."""
    if not cutoff:
        return TRAIN, ()
    if status.status == PENDING:
        return CHECK, tuple(status.root_causes)
    if status.status == STALE and status.upstream_only:
        return CHECK, ()
    return TRAIN, ()


def describe(step: Step) -> str:
    """A step's action in words (train, or retrain-or-keep and what decides it)."""
    if step.action == CHECK and step.decided_after:
        return f"retrain or keep, decided after {', '.join(map(str, step.decided_after))} trains"
    return "retrain or keep, decided by re-evaluation" if step.action == CHECK else "train"


def plan(graph: nx.DiGraph, status: Mapping[Hashable, Status], estimates: Mapping[Hashable, float | None],
         named: Iterable[Hashable] = (), downstream_of: Hashable | None = None, force: bool = False,
         cutoff: Mapping[Hashable, bool] | None = None) -> Plan:
    """Experts to train, in order. Named experts bring their non-fresh ancestors along.

    `cutoff[n]` says whether n's behavioural cutoff is on; such an expert that is only
    waiting for (or outdated by) its upstream gets the action CHECK instead of TRAIN.
    """
    cutoff = cutoff or {}
    named = list(named)
    if downstream_of is not None:
        selected = {downstream_of, *nx.descendants(graph, downstream_of)}
    elif named:
        selected = set(named)
    else:
        selected = set(graph.nodes)
    needed = set(selected)
    for node in selected:  # an expert cannot train before what it reads exists and is fresh
        needed |= {a for a in nx.ancestors(graph, node) if status[a].status != FRESH}
    steps = []
    for node in g.order(graph):
        if node not in needed:
            continue
        forced = force and node in selected and status[node].status == FRESH
        if status[node].status != FRESH or forced:
            reasons = tuple(status[node].reasons) or (Reason("FORCED", "--force"),)
            action, after = (TRAIN, ()) if forced else decision(status[node], cutoff.get(node, False))
            steps.append(Step(node, status[node].status, reasons, estimates.get(node), forced, action, after,
                              status[node].version))
    return Plan(tuple(steps))


def impact(graph: nx.DiGraph, expert: Hashable, estimates: Mapping[Hashable, float | None]) -> Plan:
    """What a change to `expert` would retrain (it and everything downstream), with estimates."""
    nodes = [expert, *g.downstream(graph, expert)]
    steps = [Step(n, STALE if n == expert else PENDING,
                  (Reason("CHANGED", "hypothetical change"),) if n == expert
                  else (Reason("UPSTREAM", f"downstream of {expert}"),), estimates.get(n)) for n in nodes]
    return Plan(tuple(steps))
