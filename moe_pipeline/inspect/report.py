"""Inspect one expert version and write its report: HTML, PNGs and summary.json.

Loads exactly one version (its safetensors weights, sha256-checked) and its stored inputs:
upstream experts contribute their stored outputs, never their weights. Each section is a
function of tensors from `agop`, `collapse`, `confusion`, `attribution`, `opacity`; this
module only gathers inputs, draws, writes, and logs the files to the version's MLflow run.
"""
from __future__ import annotations

import base64
import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from moe_pipeline.errors import SelectionError
from moe_pipeline.inspect import plots

METHODS = ("metrics", "agop", "collapse", "attribution")
AGOP_ROWS = 2000  # the n; the train split of digits has fewer
ATTRIBUTION_ROWS = 200


@dataclass
class Report:
    title: str
    out: Path
    summary: dict[str, Any] = field(default_factory=dict)
    sections: list[tuple[str, str, list[Path]]] = field(default_factory=list)  # heading, html text, figures

    def add(self, heading: str, text: str, figures: list[Path] | None = None) -> None:
        self.sections.append((heading, text, figures or []))


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row.values()) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else html.escape(str(value))


def _image_shape(in_shape: list[int]) -> tuple[int, int] | None:
    return (in_shape[-2], in_shape[-1]) if len(in_shape) == 3 else None


def _maps(vector: torch.Tensor, in_shape: list[int]) -> torch.Tensor:
    """A flat (d,) vector as an (h, w) map, summing over channels."""
    return vector.reshape(in_shape).abs().sum(0) if len(in_shape) == 3 else vector


# ---------------------------------------------------------------- sections


def section_metrics(rep: Report, model, data, record) -> None:
    from moe_pipeline.inspect.confusion import confusion_matrix, residual_summary, row_normalised
    from moe_pipeline.training.train import infer, metrics_of

    split = "test" if len(data.y["test"]) else "val"
    out = infer(model, data.x[split], data.task)
    metrics = metrics_of(data.task, out["logits"], data.y[split], split)
    rep.summary["metrics"] = {**metrics, "recorded_val_metric": record.val_metric}
    if record.baseline is not None:
        rep.summary["baseline"] = {"val_metric": record.val_metric, "trivial": record.baseline,
                                   "below": record.below_baseline}
        verdict = "NOT better than" if record.below_baseline else "better than"
        rep.add("Baseline", f"<p>The expert is <b>{verdict}</b> the trivial predictor: {record.baseline_text()}.</p>")
    if data.task != "classification":
        res = residual_summary(data.y[split], out["logits"])
        rep.summary["residuals"] = res
        rep.add("Metrics and residuals", _table([{**metrics, **{f"residual_{k}": v for k, v in res.items()}}]))
        return
    counts = confusion_matrix(data.y[split], out["logits"].argmax(1), data.n_outputs)
    rep.summary["confusion"] = counts.tolist()
    labels = saved_class_names(data)
    figs = [plots.heatmap(counts, rep.out / "confusion_counts.png", f"confusion on {split} (counts)", labels),
            plots.heatmap(row_normalised(counts), rep.out / "confusion_normalised.png",
                          f"confusion on {split} (row-normalised)", labels, fmt=".2f")]
    rep.add("Metrics and confusion matrix", _table([metrics]) +
            f"<p>Rows are true classes, columns predictions, on the {split} split ({len(data.y[split])} rows).</p>", figs)


def saved_class_names(data) -> list[str] | None:
    names = data.class_names
    return names if names and len(names) == data.n_outputs else None


def section_agop(rep: Report, model, data, saved, initial, planted: list[int] | None = None) -> None:
    from moe_pipeline.inspect import agop as A
    from moe_pipeline.training.models import first_layer

    x = data.x["train"][:AGOP_ROWS]
    started = time.perf_counter()
    res = A.compute(model, x, k=6)
    seconds = time.perf_counter() - started
    in_shape = saved["in_shape"]
    diag = res.diagonal
    top = diag.argsort(descending=True)[:10].tolist()
    names = data.feature_names if data.feature_names and len(data.feature_names) == diag.numel() else None
    info: dict[str, Any] = {"rows": len(x), "input_dim": int(diag.numel()), "seconds": round(seconds, 3),
                            "trace": res.trace, "top_features": top,
                            "top_feature_names": [names[i] for i in top] if names else [f"x{i}" for i in top],
                            "top_feature_share": [float(diag[i] / diag.sum()) for i in top],
                            "eigenvalues": res.eigenvalues.tolist(), "dense": res.matrix is not None}
    blocks = [tuple(b) for b in saved["blocks"]]
    info["reliance"] = A.reliance(diag, blocks)
    if planted:
        info["planted_coordinates"] = planted
        info["planted_share"] = float(diag[planted].sum() / diag.sum())
    figs = []
    shape = _image_shape(in_shape)
    if shape:
        k = min(5, res.eigenvectors.shape[1])
        mean_input = x.reshape(len(x), *in_shape).mean(0).sum(0)
        figs.append(plots.image_grid([mean_input, _maps(diag, in_shape)], ["mean input", "AGOP diagonal"],
                                     rep.out / "agop.png", "Which pixels the expert uses (AGOP diagonal)"))
        figs.append(plots.image_grid([res.eigenvectors[:, i].reshape(in_shape).sum(0) for i in range(k)],
                                     [f"eigenvector {i + 1} (λ={float(res.eigenvalues[i]):.3g})" for i in range(k)],
                                     rep.out / "agop_eigenvectors.png", "Top AGOP eigenvectors: feature directions",
                                     symmetric=True))
        if res.per_class is not None and res.per_class.shape[0] > 1:
            figs.append(plots.image_grid([_maps(p.diagonal(), in_shape) for p in res.per_class],
                                         [f"output {c}" for c in range(res.per_class.shape[0])],
                                         rep.out / "agop_per_class.png", "AGOP diagonal per output (they sum to the AGOP)"))
    else:
        figs.append(plots.bars(diag, rep.out / "agop.png", "AGOP diagonal: feature importance", labels=names,
                               top=min(30, diag.numel())))
    layer = first_layer(model)
    if res.matrix is not None and isinstance(layer, torch.nn.Linear) and initial.numel():
        info["neural_feature_ansatz"] = A.neural_feature_ansatz(layer.weight.detach(), initial, res.matrix)
    rep.summary["agop"] = info
    nfa = info.get("neural_feature_ansatz")
    text = (f"<p>The average gradient outer product over {len(x)} training rows: the diagonal says how strongly the "
            f"expert's outputs change with each input feature. The 10 most used features: {info['top_feature_names']} "
            f"({100 * sum(info['top_feature_share']):.1f}% of the AGOP trace).</p>")
    if planted:
        text += (f"<p><b>Planted coordinates {planted}</b> (the only ones the target depends on) hold "
                 f"<b>{100 * info['planted_share']:.1f}%</b> of the AGOP trace; uniform use would give "
                 f"{100 * len(planted) / diag.numel():.1f}%.</p>")
    if len(blocks) > 1 or any("." in b[0] and b[0].split(".")[1] in ("probs", "logits", "embedding") for b in blocks):
        text += "<h3>Reliance on each input</h3>" + _table(info["reliance"])
    if nfa:
        text += "<h3>Neural Feature Ansatz (first layer W<sup>T</sup>W vs AGOP)</h3>" + _table([nfa])
    rep.add("AGOP: which input features the expert uses", text, figs)


def section_collapse(rep: Report, model, data) -> None:
    from moe_pipeline.inspect.collapse import collapse_metrics, deep_nc1
    from moe_pipeline.training.train import infer

    if data.task != "classification":
        rep.add("Neural collapse", "<p>Not defined for regression experts.</p>")
        return
    x, y = data.x["train"], data.y["train"]
    feats = infer(model, x, data.task)["embedding"]
    metrics = collapse_metrics(feats, y, model.head.weight.detach(), model.head.bias.detach(), data.n_outputs)
    layers = deep_nc1(model, x, y, data.n_outputs)
    rep.summary["collapse"] = {**metrics, "nc1_per_layer": layers}
    rep.add("Neural collapse (penultimate features, training split)",
            _table([metrics]) + "<h3>NC1 per hidden layer</h3>" + _table([{k: v for k, v in layers.items()}]) +
            "<p>NC1 near 0: rows of a class share one feature vector; ETF distance near 0: class means form a "
            "simplex; NC4: how often the classifier disagrees with the nearest class mean.</p>")


def section_attribution(rep: Report, model, data, saved) -> None:
    from moe_pipeline.inspect.attribution import attributions, class_averaged

    x, y = data.x["val"][:ATTRIBUTION_ROWS], data.y["val"][:ATTRIBUTION_ROWS]
    in_shape = saved["in_shape"]
    target = y if data.task == "classification" else torch.zeros_like(y, dtype=torch.long)
    n_classes = data.n_outputs if data.task == "classification" else 1
    labels = y if data.task == "classification" else torch.zeros(len(y), dtype=torch.long)
    figs, info = [], {}
    for method in ("integrated_gradients", "saliency"):
        attr = attributions(model, x, target, method)
        per_class = class_averaged(attr.abs(), labels, n_classes)  # (C, *in_shape)
        info[method] = {"mean_abs": float(attr.abs().mean())}
        if _image_shape(in_shape):
            figs.append(plots.image_grid([_maps(p.flatten(), in_shape) for p in per_class],
                                         [f"class {c}" for c in range(n_classes)], rep.out / f"{method}_per_class.png",
                                         f"{method.replace('_', ' ')}: class-averaged |attribution|"))
            if method == "integrated_gradients":
                examples = list(range(min(4, len(x))))
                figs.append(plots.image_grid([x[i].reshape(in_shape).sum(0) for i in examples] +
                                             [attr[i].reshape(in_shape).sum(0) for i in examples],
                                             [f"input (y={int(y[i])})" for i in examples] + ["IG map"] * len(examples),
                                             rep.out / "examples.png", "examples (top) and their integrated "
                                             "gradients (bottom)", symmetric=True, cols=len(examples)))
        else:
            mean = per_class.reshape(n_classes, -1).mean(0)
            names = data.feature_names if data.feature_names and len(data.feature_names) == mean.numel() else None
            figs.append(plots.bars(mean, rep.out / f"{method}.png",
                                   f"{method.replace('_', ' ')}: mean |attribution| per feature", labels=names))
    rep.summary["attribution"] = info
    rep.add("Attributions (captum)", f"<p>Integrated gradients (zero baseline) and saliency on {len(x)} validation "
                                     "rows, averaged per true class.</p>", figs)


def section_dynamics(rep: Report, ws, record) -> None:
    series = {key: ws.registry.metric_history(record.run_id, key) for key in ("train_loss", "val_loss", "grad_norm")}
    rep.summary["dynamics"] = {k: [v for _, v in pts] for k, pts in series.items()}
    rep.add("Training dynamics (from MLflow)", "", [plots.curves(series, rep.out / "dynamics.png", "loss and gradient norm")])


def section_opacity(rep: Report, ws, expert, data, record, seeds: int, bootstrap: int) -> None:
    from moe_pipeline.inspect.opacity import sensitivity

    spec = ws.pipeline.experts[expert]
    result = sensitivity(spec, ws.pipeline.resources_for(expert), data, record.spec["train"]["seed"], seeds, bootstrap)
    rep.summary["opacity"] = result
    rows = [{"retrained on": "new seeds, same data" if mode == "seeds" else "bootstrap resamples, same seed", **vals}
            for mode, vals in result.items()]
    rep.add("Learning opacity: sensitivity to initialisation and to data", _table(rows) +
            "<p>Churn: fraction of validation predictions two runs disagree on. CKA: similarity of their embeddings. "
            "AGOP correlation and eigenspace overlap: whether they use the same input features.</p>")


def _planted(pipeline, expert: str) -> list[int] | None:
    """The informative coordinates when the expert reads exactly one synthetic.planted field."""
    inputs = pipeline.experts[expert].inputs
    source = pipeline.sources.get(inputs[0].partition(".")[0]) if len(inputs) == 1 else None
    return list(source.informative) if source is not None and source.loader == "synthetic.planted" else None


# ---------------------------------------------------------------- writing


def write_html(rep: Report) -> Path:
    parts = [f"<h1>{html.escape(rep.title)}</h1>"]
    for heading, text, figs in rep.sections:
        parts.append(f"<section><h2>{html.escape(heading)}</h2>{text}")
        for fig in figs:
            data = base64.b64encode(fig.read_bytes()).decode()
            parts.append(f'<figure><img alt="{fig.stem}" src="data:image/png;base64,{data}"></figure>')
        parts.append("</section>")
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
             "th{background:#f3f3f3}img{max-width:100%}section{margin-bottom:2em}")
    path = rep.out / "report.html"
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(rep.title)}</title>"
                    f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
    return path


def inspect_expert(loaded, expert: str, version: int | None = None, methods: list[str] | None = None,
                   seeds: int = 0, bootstrap: int = 0, out: Path | None = None, quiet: bool = False) -> Report:
    from moe_pipeline.registry.artifacts import INITIAL, read_tensors
    from moe_pipeline.execute.write import Workspace

    methods = list(methods or METHODS)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SelectionError(f"unknown inspection method(s) {unknown}; choose from {', '.join(METHODS)}")
    started = time.perf_counter()
    ws = Workspace(loaded)
    record = ws.record(expert, version)
    model, saved = ws.load_model(record)
    data = ws.expert_data(expert, upstream_versions={u: r.version for u, r in record.upstream.items()})[0]
    from moe_pipeline.pipeline.loader import project_root

    # under the project root, like the registry: the same place wherever the command runs from
    out = out or project_root(loaded.path) / "reports" / ws.pipeline.name / expert / f"v{record.version}"
    out.mkdir(parents=True, exist_ok=True)
    rep = Report(f"{ws.pipeline.name}.{expert} v{record.version}: {ws.pipeline.experts[expert].description or expert}", out)
    rep.summary.update({"pipeline": ws.pipeline.name, "expert": expert, "version": record.version, "task": data.task,
                        "inputs": ws.pipeline.experts[expert].inputs,
                        "upstream": {u: r.version for u, r in record.upstream.items()}})
    initial = read_tensors(ws.artifact(record, INITIAL))["first_layer"]
    if "metrics" in methods:
        section_metrics(rep, model, data, record)
    if "agop" in methods:
        section_agop(rep, model, data, saved, initial, _planted(ws.pipeline, expert))
    if "collapse" in methods:
        section_collapse(rep, model, data)
    if "attribution" in methods:
        section_attribution(rep, model, data, saved)
    section_dynamics(rep, ws, record)
    if seeds or bootstrap:
        section_opacity(rep, ws, expert, data, record, seeds, bootstrap)
    rep.summary["seconds"] = round(time.perf_counter() - started, 2)
    (out / "summary.json").write_text(json.dumps(rep.summary, indent=2, default=float))
    html_path = write_html(rep)
    # only what this report wrote: --out may name a folder holding anything else
    written = [html_path, out / "summary.json", *(f for _, _, figs in rep.sections for f in figs)]
    ws.registry.log_files(record.run_id, written, "inspect")
    if not quiet:
        _print_summary(rep, html_path)
    return rep


def _print_summary(rep: Report, html_path: Path) -> None:
    from rich.console import Console

    s = rep.summary
    lines = [f"[bold]{rep.title}[/bold]"]
    if "metrics" in s:
        lines.append("metrics: " + ", ".join(f"{k} {v:.4f}" for k, v in s["metrics"].items() if isinstance(v, float)))
    if "agop" in s:
        share = 100 * sum(s["agop"]["top_feature_share"])
        lines.append(f"AGOP: top features {s['agop']['top_feature_names']} hold {share:.1f}% of the trace")
        if "planted_share" in s["agop"]:
            lines.append(f"AGOP: planted coordinates {s['agop']['planted_coordinates']} hold "
                         f"{100 * s['agop']['planted_share']:.1f}% of the trace")
        if len(s["agop"]["reliance"]) > 1:
            lines.append("reliance: " + ", ".join(f"{r['input']} {100 * r['share']:.1f}%" for r in s["agop"]["reliance"]))
    if "collapse" in s:
        lines.append(f"neural collapse: NC1 {s['collapse']['nc1']:.3f}, NC4 {s['collapse']['nc4_ncc_mismatch']:.3f}")
    for mode, vals in s.get("opacity", {}).items():
        lines.append(f"opacity ({mode}): " + ", ".join(f"{k} {v:.3f}" for k, v in vals.items() if isinstance(v, float)))
    lines.append(f"report: {html_path}  ({s['seconds']:.1f} s)")
    Console().print("\n".join(lines))
