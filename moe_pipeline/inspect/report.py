"""Inspect one expert version and write its report: HTML, PNGs and summary.json.

Loads exactly one version (its safetensors weights, sha256-checked) and its stored inputs:
upstream experts contribute their stored outputs, never their weights. The sections
(sections.py) compute and draw; this module only gathers inputs, runs the sections asked
for, writes the page (page.py) and logs the files to the version's MLflow run.
"""
from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any, Callable

from moe_pipeline.errors import SelectionError
from moe_pipeline.inspect.page import Report, write_html
from moe_pipeline.inspect.sections import (saved_class_names, section_agop, section_attribution, section_collapse,
                                           section_dynamics, section_metrics, section_opacity)

METHODS = ("metrics", "agop", "collapse", "attribution")
SECTION_NAMES = {"metrics": "metrics and confusion matrix", "agop": "AGOP", "collapse": "neural collapse",
                 "attribution": "attributions"}


def _planted(pipeline, expert: str) -> list[int] | None:
    """The informative coordinates when the expert reads exactly one synthetic.planted field."""
    inputs = pipeline.experts[expert].inputs
    source = pipeline.sources.get(inputs[0].partition(".")[0]) if len(inputs) == 1 else None
    return list(source.informative) if source is not None and source.loader == "synthetic.planted" else None


# ---------------------------------------------------------------- writing


def _header(view, expert: str, record) -> tuple[str, dict[str, Any]]:
    """The version's status now (its own reasons included) and the upstream versions it read."""
    current = view.current()[expert]
    if current is not None and current.version == record.version:
        status = view.statuses()[expert]
        state, why = status.status, status.summary()
    else:
        state = "not current"
        why = f"the current version is v{current.version}" if current is not None else "no current version"
    upstream = {u: r.version for u, r in record.upstream.items()}
    reads = ", ".join(f"{html.escape(u)} v{v}" for u, v in sorted(upstream.items())) or "sources only"
    text = (f"<div class='head'><p>Status: <b class='{html.escape(state.split()[0])}'>{html.escape(state)}</b>"
            + (f" ({html.escape(why)})" if why else "") + f". Reads: {reads}. Trained in {record.train_seconds:.1f} s; "
            f"val {html.escape(record.metric_name)} {record.val_metric:.4f}.</p></div>")
    return text, {"status": state, "status_reasons": why}


def inspect_expert(loaded, expert: str, version: int | None = None, methods: list[str] | None = None,
                   opacity: list[str] | None = None, runs: int = 3, out: Path | None = None,
                   quiet: bool = False, view=None, progress: Callable[[str, int, int], None] | None = None,
                   workers: int | None = None) -> Report:
    """`view`: a View to reuse (the overview inspects every expert through one); the report's
    files are uploaded to the version's run and the version's description links the page: the
    only writes. `progress(what, done, total)` is told each section (and each opacity training)
    before it runs. `workers`: processes the opacity runs train in (default: one per core)."""
    from moe_pipeline.registry.artifacts import INITIAL, read_tensors
    from moe_pipeline.execute.view import View
    from moe_pipeline.registry.writes import Registry
    from moe_pipeline.inspect.opacity import MODES

    methods = list(methods or METHODS)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SelectionError(f"unknown inspection method(s) {unknown}; choose from {', '.join(METHODS)}")
    opacity = list(opacity or [])
    unknown = sorted(set(opacity) - set(MODES))
    if unknown:
        raise SelectionError(f"unknown opacity source(s) {unknown}; choose from {', '.join(MODES)}")
    if opacity and runs < 2:
        raise SelectionError(f"--runs must be at least 2 to compare runs; got {runs}")
    started = time.perf_counter()
    view = view or View(loaded)
    record = view.record(expert, version)
    model, saved = view.load_model(record)
    data = view.expert_data(expert, upstream_versions={u: r.version for u, r in record.upstream.items()},
                            sample=True)[0]
    from moe_pipeline.pipeline.paths import project_root

    # under the project root, like the registry: the same place wherever the command runs from
    out = out or project_root(loaded.path) / "reports" / view.pipeline.name / expert / f"v{record.version}"
    out.mkdir(parents=True, exist_ok=True)
    rep = Report(f"{view.pipeline.name}.{expert} v{record.version}: {view.pipeline.experts[expert].description or expert}", out)
    rep.header, state = _header(view, expert, record)
    rep.summary.update({"pipeline": view.pipeline.name, "expert": expert, "version": record.version, "task": data.task,
                        **state, "inputs": view.pipeline.experts[expert].inputs,
                        "upstream": {u: r.version for u, r in record.upstream.items()},
                        "class_names": saved_class_names(data)})
    initial = read_tensors(view.artifact(record, INITIAL))["first_layer"]
    sections = {"metrics": lambda: section_metrics(rep, model, data, record),
                "agop": lambda: section_agop(rep, model, data, saved, initial, _planted(view.pipeline, expert)),
                "collapse": lambda: section_collapse(rep, model, data),
                "attribution": lambda: section_attribution(rep, model, data, saved)}
    chosen = [m for m in METHODS if m in methods]
    total = len(chosen) + 1 + len(opacity) * runs
    say = progress or (lambda what, done, total: None)
    for done, method in enumerate(chosen):
        say(SECTION_NAMES[method], done, total)
        sections[method]()
    say("training curves", len(chosen), total)
    section_dynamics(rep, view, record)
    if opacity:
        from moe_pipeline.inspect.opacity_workers import OpacityPool, worker_count

        # in worker processes where there are cores for more than one run at a time
        count = worker_count(len(opacity) * runs) if workers is None else min(workers, len(opacity) * runs)
        pool = OpacityPool(loaded.path, expert, record.version, {u: r.version for u, r in record.upstream.items()},
                           count) if count > 1 else None
        section_opacity(rep, view, expert, data, record, opacity, runs,
                        lambda what, k: say(f"opacity: {what}", len(chosen) + 1 + k, total), pool)
    rep.summary["seconds"] = round(time.perf_counter() - started, 2)
    (out / "summary.json").write_text(json.dumps(rep.summary, indent=2, default=float))
    html_path = write_html(rep)
    # only what this report wrote: --out may name a folder holding anything else
    written = [html_path, out / "summary.json", *(f for _, _, figs in rep.sections for f in figs)]
    registry = Registry.over(view.registry)
    registry.log_files(record.run_id, written, "inspect")
    registry.link_report(expert, record.version, record.run_id, view.pipeline.experts[expert].description,
                         "inspect/report.html")
    if not quiet:
        _print_summary(rep, html_path)
    return rep


def _print_summary(rep: Report, html_path: Path) -> None:
    from rich.markup import escape

    from moe_pipeline.terminal import console

    s = rep.summary
    lines = [rep.title]
    if "metrics" in s:
        lines.append("metrics: " + ", ".join(f"{k} {v:.4f}" for k, v in s["metrics"].items() if isinstance(v, float)))
    if "agop" in s:
        share = 100 * sum(s["agop"]["top_feature_share"])
        names = s["agop"]["top_feature_names"]
        lines.append(f"AGOP: the top {len(names)} features hold {share:.1f}% of the trace: " + "; ".join(names))
        if "planted_share" in s["agop"]:
            planted = ", ".join(str(c) for c in s["agop"]["planted_coordinates"])
            lines.append(f"AGOP: the planted coordinates ({planted}) hold {100 * s['agop']['planted_share']:.1f}% "
                         "of the trace")
        if len(s["agop"]["reliance"]) > 1:
            lines.append("reliance: " + ", ".join(f"{r['input']} {100 * r['share']:.1f}%" for r in s["agop"]["reliance"]))
    if "collapse" in s:
        lines.append(f"neural collapse: NC1 {s['collapse']['nc1']:.3f}, NC4 {s['collapse']['nc4_ncc_mismatch']:.3f}")
    for mode, vals in s.get("opacity", {}).items():
        lines.append(f"opacity ({mode}): {vals['verdict']}")
    lines.append(f"report: {html_path}  ({s['seconds']:.1f} s)")
    # names such as `has_loop.probs[loop]` are data, not rich markup
    console().print("[bold]" + escape(lines[0]) + "[/bold]\n" + escape("\n".join(lines[1:])))
