"""The pipeline overview: one page with the expert graph and the dependency table.

The graph is drawn as SVG: a box per source field and per expert, coloured by status, with
its current version and validation metric, linking to its expert report (written beside the
page); each arrow is labelled with the downstream expert's reliance share on that input (the
share of its logits' AGOP trace in the input's columns).

The dependency table is the measured form of "be very selective about what becomes
dependent". Per arrow: the reliance share; the retraining exposure (recorded training
seconds of the downstream expert and of everything below it, which a change of the upstream
puts at risk of retraining through this arrow); and, for a weak arrow (share below `weak`),
an ablation: the downstream expert retrained in memory without that input, with the same
seeds and settings, and its validation metric compared with the registered version's. A
drop of at most `tolerance` recommends dropping the input. Nothing is registered: ablations
train in memory; the page is written to the report folder and logged to an MLflow run of
its own (tag `moe.kind: overview`).
"""
from __future__ import annotations

import dataclasses
import html
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

WEAK = 0.10  # an input holding less than this share of the expert's AGOP trace is weak: ablate it
TOLERANCE = 0.01  # the validation metric may fall by this much without the input: drop it
FILLS = {"fresh": "#e3f3e6", "stale": "#fde3c8", "pending": "#fff3bf", "missing": "#eeeeee"}


@dataclass
class Edge:
    """One dependency of the pipeline: its reliance share, exposure, ablation and recommendation."""

    ref: str  # the input, `source.field` or `expert.output`
    expert: str  # the downstream expert reading it
    share: float  # its share of the expert's AGOP trace
    exposure_seconds: float
    exposed: list[str]
    metric: str = ""
    metric_now: float | None = None
    metric_without: float | None = None  # the ablation's validation metric, where one ran
    recommendation: str = "keep"
    why: str = ""
    oracle_gain: float | None = None  # `diagnose`: the reader's test metric gain were this upstream perfect

    @property
    def metric_change(self) -> float | None:
        return None if self.metric_without is None else self.metric_without - self.metric_now


def without_input(data, ref: str):
    """The expert's data with the columns of input `ref` removed (blocks and names shifted)."""
    block = next(b for b in data.blocks if b.ref == ref)
    width = block.stop - block.start
    x = {split: torch.cat([v[:, :block.start], v[:, block.stop:]], dim=1) for split, v in data.x.items()}
    blocks = [b if b.stop <= block.start else dataclasses.replace(b, start=b.start - width, stop=b.stop - width)
              for b in data.blocks if b.ref != ref]
    names = data.feature_names[:block.start] + data.feature_names[block.stop:] if data.feature_names else None
    return dataclasses.replace(data, x=x, blocks=blocks, feature_names=names)


def _ablate(view, expert: str, record, data, ref: str) -> float:
    from moe_pipeline.state.fingerprint import training_seeds
    from moe_pipeline.training.train import train_expert

    spec = view.pipeline.experts[expert]
    init_seed, order_seed = training_seeds(record.spec)
    result = train_expert(spec.model, spec.train, view.pipeline.resources_for(expert), without_input(data, ref),
                          init_seed, order_seed=order_seed)
    return result.metrics[f"val_{record.metric_name}"]


def dependency_table(view, reliance: dict[str, list[dict[str, Any]]], weak: float = WEAK,
                     tolerance: float = TOLERANCE) -> list[Edge]:
    """One Edge per input of every expert with a current version, ablating the weak ones."""
    from moe_pipeline.pipeline.graph import downstream

    current = view.current()
    edges = []
    for expert, shares in reliance.items():
        record = current[expert]
        exposed = [expert, *downstream(view.graph, expert)]
        seconds = sum(current[e].train_seconds for e in exposed if current[e] is not None)
        data = None  # the expert's inputs, read once for all its ablations
        for row in shares:
            edge = Edge(row["input"], expert, row["share"], seconds, exposed, record.metric_name, record.val_metric)
            if len(shares) == 1:
                edge.why = "its only input"
            elif row["share"] >= weak:
                edge.why = f"strong reliance (share ≥ {weak:.0%})"
            else:
                if data is None:
                    data = view.expert_data(expert, upstream_versions={u: r.version for u, r in record.upstream.items()})[0]
                edge.metric_without = _ablate(view, expert, record, data, row["input"])
                change = edge.metric_change
                edge.recommendation = "drop" if change >= -tolerance else "keep"
                edge.why = (f"without it val {record.metric_name} changes by {change:+.4f} "
                            + (f"(within {tolerance})" if edge.recommendation == "drop" else f"(worse than -{tolerance})"))
            edges.append(edge)
    return edges


def _boxes(view, statuses, reliance: dict[str, list[dict[str, Any]]], links: dict[str, str]):
    """The overview's boxes (in the pipeline file's order) and arrows: each expert's version,
    status and metric, the reasons of a stale or pending one, each input's reliance share."""
    from moe_pipeline.pipeline.drawing import Arrow, Box

    current = view.current()
    boxes, arrows = {}, []
    for expert, spec in view.pipeline.experts.items():
        for ref in spec.inputs:
            if ref.partition(".")[0] in view.pipeline.sources:
                boxes.setdefault(ref, Box([ref, "source field"]))
    for expert in view.pipeline.experts:
        status = statuses[expert]
        record = current[expert]
        lines = [expert, f"v{record.version} · {status.status}" if record else status.status]
        if record is not None:
            lines.append(f"val {record.metric_name} {record.val_metric:.3f}")
        reasons = [str(r) for r in status.reasons] if status.status != "fresh" else []
        boxes[expert] = Box(lines, FILLS.get(status.status, "#eeeeee"), links.get(expert), reasons)
        shares = {r["input"]: r["share"] for r in reliance.get(expert, [])}
        for ref in view.pipeline.experts[expert].inputs:
            owner = ref.partition(".")[0]
            start = ref if owner in view.pipeline.sources else owner  # a source field's own box, or the expert's
            share = shares.get(ref)
            consumed = record.upstream.get(owner) if record is not None and start == owner else None
            stale = consumed is not None and current[owner] is not None and consumed.version != current[owner].version
            arrows.append(Arrow(start, expert, ref, f"{share:.0%}" if share is not None else "?", share or 0.0, stale))
    return boxes, arrows


def add_diagnoses(view, edges: list[Edge]) -> list[str]:
    """Each expert-to-expert edge's oracle gain (`diagnose`, inference only, on the test split),
    and one sentence per reader naming the upstream to fix first."""
    from moe_pipeline.inspect.diagnose import diagnose_expert

    sentences = []
    for reader in sorted({e.expert for e in edges if e.ref.partition(".")[0] in view.pipeline.experts}):
        found = diagnose_expert(view, reader)
        gains = {u.ref: u.gain for u in found.upstream}
        for edge in edges:
            if edge.expert == reader and edge.ref in gains:
                edge.oracle_gain = gains[edge.ref]
        first = found.fix_first()
        if first:
            best = first[0]
            sentences.append(f"To improve {reader} (test {found.metric_name} {found.metric:.4f}), fix {best.expert} "
                             f"first: {found.change(best.gain)} if it were perfect, for "
                             f"{best.train_seconds or 0:.1f} s of training (the most gain per second); "
                             f"{found.errors_with_every_upstream_right} of {reader}'s {found.errors} test errors "
                             "happen with every upstream expert right (those are its own)."
                             if found.errors is not None else
                             f"To improve {reader}, fix {best.expert} first: {found.change(best.gain)} if perfect.")
    return sentences


def _page(title: str, svg: str, edges: list[Edge], weak: float, tolerance: float, seconds: float,
          sentences: list[str] = ()) -> str:
    from moe_pipeline.inspect.diagnose import metric_change
    from moe_pipeline.inspect.page import STYLE, table as _table

    rows = [{"input": e.ref, "read by": e.expert, "reliance share": f"{e.share:.1%}",
             "exposure (s)": f"{e.exposure_seconds:.1f}", "experts exposed": ", ".join(e.exposed),
             "val metric now": e.metric_now,
             "without the input": e.metric_without if e.metric_without is not None else "—",
             "change": f"{e.metric_change:+.4f}" if e.metric_change is not None else "—",
             "recommendation": e.recommendation, "why": e.why,
             "if the upstream were perfect (test)": "—" if e.oracle_gain is None else
             metric_change(e.oracle_gain, e.metric)} for e in edges]
    legend = "".join(f"<span style='background:{fill};border:1px solid #999;padding:1px 8px;margin-right:6px'>"
                     f"{name}</span>" for name, fill in FILLS.items())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}body{{max-width:1400px}}</style></head><body><h1>{html.escape(title)}</h1>"
            "<p class='how'>Each box is an expert (click it for its report) or a source field; its colour is its "
            "status. An arrow is an input: it ends at the input's own row in the reading expert's box, which starts "
            "with the input's reliance share (the share of the reader's AGOP trace, of its logits, that the input "
            f"holds).</p><p>{legend}</p>{svg}"
            "<h2>Dependency table</h2><p class='how'>Every dependency is a retraining risk: a change upstream "
            "may retrain the reading expert and everything below it (the exposure: their recorded training "
            f"seconds). Inputs with a reliance share below {weak:.0%} are ablated: the reading expert is retrained "
            "in memory without the input (same seeds, nothing registered). If its validation metric falls by at "
            f"most {tolerance}, the input is not worth its exposure: drop it. The last column is diagnose's "
            "oracle gain: the reader's test metric were that upstream expert perfect (its probabilities replaced by "
            "its true answer; inference only).</p>"
            + "".join(f"<p><b>{html.escape(line)}</b></p>" for line in sentences) + _table(rows) +
            f"<p>Written in {seconds:.1f} s.</p></body></html>")


def pipeline_report(loaded, out: Path | None = None, weak: float = WEAK, tolerance: float = TOLERANCE,
                    quiet: bool = False, progress=None) -> Path:
    """`progress(what, done, total)`: told each expert's inspection, then the ablations, before they run."""
    from moe_pipeline.execute.view import View
    from moe_pipeline.registry.writes import Registry
    from moe_pipeline.inspect.report import inspect_expert
    from moe_pipeline.pipeline.drawing import graph_html
    from moe_pipeline.pipeline.paths import project_root

    started = time.perf_counter()
    view = View(loaded)
    out = out or project_root(loaded.path) / "reports" / view.pipeline.name / "overview"
    out.mkdir(parents=True, exist_ok=True)
    statuses, current = view.statuses(), view.current()
    reliance, links = {}, {}
    say = progress or (lambda what, done, total: None)
    inspected = [e for e in view.pipeline.experts if current[e] is not None]
    for k, expert in enumerate(inspected):
        inner = (lambda what, done, total, k=k, expert=expert:  # noqa: E731  (a step of this expert's report)
                 say(f"{expert}: {what}", k, len(inspected) + 1))
        rep = inspect_expert(loaded, expert, out=out / "experts" / expert, quiet=True, view=view, progress=inner)
        reliance[expert] = rep.summary["agop"]["reliance"]
        links[expert] = f"experts/{expert}/report.html"
    say(f"ablating the inputs below {weak:.0%} reliance", len(inspected), len(inspected) + 1)
    edges = dependency_table(view, reliance, weak, tolerance)
    sentences = add_diagnoses(view, edges)
    boxes, arrows = _boxes(view, statuses, reliance, links)
    title = f"{view.pipeline.name}: pipeline overview"
    seconds = time.perf_counter() - started
    page = out / "overview.html"
    svg = graph_html(boxes, arrows, "the input's share of the reader's AGOP trace")
    page.write_text(_page(title, svg, edges, weak, tolerance, seconds, sentences))
    summary = out / "overview.json"
    summary.write_text(json.dumps({
        "pipeline": view.pipeline.name, "weak": weak, "tolerance": tolerance, "seconds": round(seconds, 2),
        "statuses": {n: s.status for n, s in statuses.items()},
        "edges": [{**dataclasses.asdict(e), "metric_change": e.metric_change} for e in edges],
        "fix_first": sentences}, indent=2))
    Registry.over(view.registry).log_report([page, summary], "overview")
    if not quiet:
        from rich.markup import escape

        from moe_pipeline.terminal import console

        lines = [f"{e.ref} -> {e.expert}: share {e.share:.1%}, exposure {e.exposure_seconds:.1f} s, "
                 f"{e.recommendation} ({e.why})" for e in edges]
        console().print(escape("\n".join([*lines, f"overview: {page}  ({seconds:.1f} s)"])))
    return page
