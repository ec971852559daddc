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
    header: str = ""  # status and upstream versions, above every section

    def add(self, heading: str, text: str, figures: list[Path] | None = None, how: str = "") -> None:
        """`how`: one line on how to read the section, shown first."""
        lead = f"<p class='how'>{how}</p>" if how else ""
        self.sections.append((heading, lead + text, figures or []))


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row.values()) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4g}" if isinstance(value, float) else html.escape(str(value))


def _image_shape(in_shape: list[int]) -> tuple[int, int] | None:
    return (in_shape[-2], in_shape[-1]) if len(in_shape) == 3 else None


def _maps(vector: torch.Tensor, in_shape: list[int]) -> torch.Tensor:
    """A flat (d,) vector as an (h, w) map, summing over channels."""
    return vector.reshape(in_shape).abs().sum(0) if len(in_shape) == 3 else vector


def feature_names(data, in_shape: list[int]) -> list[str]:
    """A name per flattened input column: the sources' names, `pixel (row 3, col 4)` for an
    image (with the channel where there are several), `x7` where nothing names it."""
    d = 1
    for size in in_shape:
        d *= size
    if data.feature_names and len(data.feature_names) == d:
        return list(data.feature_names)
    if len(in_shape) == 3:
        c, h, w = in_shape
        return [f"pixel (row {r}, col {col})" + (f" ch {ch}" if c > 1 else "")
                for ch in range(c) for r in range(h) for col in range(w)]
    return [f"x{i}" for i in range(d)]


def class_labels(data) -> list[str]:
    names = saved_class_names(data)
    return names or [f"class {c}" for c in range(data.n_outputs)]


# ---------------------------------------------------------------- sections


def section_metrics(rep: Report, model, data, record) -> None:
    from moe_pipeline.inspect.confusion import confusion_matrix, per_class, residual_summary, row_normalised
    from moe_pipeline.training.train import infer, metrics_of

    split = "test" if len(data.y["test"]) else "val"
    out = infer(model, data.x[split], data.task)
    metrics = metrics_of(data.task, out["logits"], data.y[split], split)
    rep.summary["metrics"] = {**metrics, "recorded_val_metric": record.val_metric}
    trivial = "the majority class" if data.task == "classification" else "the training mean"
    row = {f"val {record.metric_name} (recorded)": record.val_metric,
           f"trivial predictor ({trivial})": record.baseline, **{k.replace("_", " "): v for k, v in metrics.items()}}
    text = _table([row])
    if record.baseline is not None:
        rep.summary["baseline"] = {"val_metric": record.val_metric, "trivial": record.baseline,
                                   "below": record.below_baseline}
        verdict = "NOT better than" if record.below_baseline else "better than"
        text += f"<p>The expert is <b>{verdict}</b> the trivial predictor: {record.baseline_text()}.</p>"
    if data.task != "classification":
        res = residual_summary(data.y[split], out["logits"])
        rep.summary["residuals"] = res
        rep.add("Metrics and residuals", text + _table([{f"residual {k}": v for k, v in res.items()}]),
                how=f"On the {split} split; the trivial predictor is the bar the expert must clear.")
        return
    counts = confusion_matrix(data.y[split], out["logits"].argmax(1), data.n_outputs)
    labels = class_labels(data)
    classes = per_class(counts)
    rep.summary["confusion"] = counts.tolist()
    rep.summary["per_class"] = [{"class": name, **vals} for name, vals in zip(labels, classes)]
    text += "<h3>Per class</h3>" + _table(rep.summary["per_class"])
    figs = [plots.heatmap(counts, rep.out / "confusion_counts.png", f"confusion on {split} (counts)", labels),
            plots.heatmap(row_normalised(counts), rep.out / "confusion_normalised.png",
                          f"confusion on {split} (row-normalised)", labels, fmt=".2f")]
    rep.add("Metrics and confusion matrix", text, figs,
            how=f"On the {split} split ({len(data.y[split])} rows). Precision: of the rows predicted as a class, the "
                "share that are it; recall: of its rows, the share found. In the matrices rows are true classes, "
                "columns predictions; the diagonal is right.")


def saved_class_names(data) -> list[str] | None:
    names = data.class_names
    return names if names and len(names) == data.n_outputs else None


def section_agop(rep: Report, model, data, saved, initial, planted: list[int] | None = None) -> None:
    from moe_pipeline.inspect import agop as A
    from moe_pipeline.training.models import first_layer

    x = data.x["train"][:AGOP_ROWS]
    started = time.perf_counter()
    res = A.compute(model, x, k=6, dense_limit=A.DENSE_LIMIT)
    seconds = time.perf_counter() - started
    in_shape = saved["in_shape"]
    diag = res.diagonal
    top = diag.argsort(descending=True)[:10].tolist()
    names = feature_names(data, in_shape)
    classes = class_labels(data) if data.task == "classification" else [f"output {c}" for c in range(data.n_outputs)]
    exact = res.residuals is None
    info: dict[str, Any] = {"of": "logits", "rows": len(x), "input_dim": int(diag.numel()),
                            "seconds": round(seconds, 3), "trace": res.trace, "top_features": top,
                            "top_feature_names": [names[i] for i in top],
                            "top_feature_share": [float(diag[i] / diag.sum()) for i in top],
                            "eigenvalues": res.eigenvalues.tolist(), "effective_rank": res.rank95,
                            "dense": res.matrix is not None, "eigenpairs_exact": exact,
                            "eigen_residuals": None if exact else res.residuals.tolist()}
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
                                     rep.out / "agop.png", "Which pixels the expert's logits use (AGOP diagonal)",
                                     colorbar="pixel value | AGOP diagonal (larger = used more)"))
        figs.append(plots.image_grid([res.eigenvectors[:, i].reshape(in_shape).sum(0) for i in range(k)],
                                     [f"eigenvector {i + 1} (λ={float(res.eigenvalues[i]):.3g})" for i in range(k)],
                                     rep.out / "agop_eigenvectors.png", "Top AGOP eigenvectors: feature directions",
                                     symmetric=True, colorbar="weight (sign is arbitrary: red/blue = opposite)"))
        if res.per_class is not None and res.per_class.shape[0] > 1:
            figs.append(plots.image_grid([_maps(p.diagonal(), in_shape) for p in res.per_class],
                                         [f"logit of {classes[c]}" for c in range(res.per_class.shape[0])],
                                         rep.out / "agop_per_class.png", "AGOP diagonal per output logit "
                                         "(they sum to the AGOP)", colorbar="AGOP diagonal"))
    else:
        figs.append(plots.bars(diag, rep.out / "agop.png", "AGOP diagonal of the logits: how much each input is used",
                               labels=names, top=min(30, diag.numel())))
    layer = first_layer(model)
    nfa_why = None
    if res.matrix is None:
        nfa_why = f"the input has {diag.numel()} columns, above the dense AGOP limit ({A.DENSE_LIMIT})"
    elif not isinstance(layer, torch.nn.Linear):
        nfa_why = (f"the expert's first layer is {type(layer).__name__ if layer is not None else 'absent'}, not a "
                   "fully connected layer: the ansatz compares a Linear layer's WᵀW with the AGOP")
    elif not initial.numel():
        nfa_why = "the version stored no initial first-layer weights"
    else:
        info["neural_feature_ansatz"] = A.neural_feature_ansatz(layer.weight.detach(), initial, res.matrix)
    info["neural_feature_ansatz_absent_because"] = nfa_why
    rep.summary["agop"] = info
    nfa = info.get("neural_feature_ansatz")
    share = 100 * sum(info["top_feature_share"])
    text = (f"<p>Computed over {len(x)} training rows in {seconds:.2f} s. The 10 most used inputs: "
            f"{html.escape(', '.join(info['top_feature_names']))} ({share:.1f}% of the trace). "
            f"Effective rank {res.rank95}: that many eigen-directions hold 95% of the trace. Eigenpairs: "
            + ("exact (dense eigendecomposition)." if exact else
               f"approximate (matrix-free subspace iteration), largest residual ‖Gv − λv‖/λ = "
               f"{max(info['eigen_residuals']):.1e}.") + "</p>")
    if planted:
        text += (f"<p><b>Planted coordinates {planted}</b> (the only ones the target depends on) hold "
                 f"<b>{100 * info['planted_share']:.1f}%</b> of the AGOP trace; uniform use would give "
                 f"{100 * len(planted) / diag.numel():.1f}%.</p>")
    if len(blocks) > 1 or any("." in b[0] and b[0].split(".")[1] in ("probs", "logits", "embedding") for b in blocks):
        text += ("<h3>Reliance on each input</h3><p class='how'>Share of the AGOP trace in each input's columns: how "
                 "much the logits move with that input.</p>" + _table(info["reliance"]))
    text += "<h3>Neural Feature Ansatz (first layer WᵀW vs AGOP)</h3>"
    text += (("<p class='how'>Cosine similarity of the first layer's Gram matrix WᵀW (and of its change from "
              "initialisation) with the AGOP and its square root; near 1: the layer learned the features the "
              "logits use.</p>" + _table([nfa])) if nfa else f"<p>Not computed: {html.escape(nfa_why)}.</p>")
    rep.add("AGOP of the logits: which input features the expert uses", text, figs,
            how="The average over training rows of JᵀJ, J = d logits / d input. Its diagonal says how strongly the "
                "expert's logits (not its probabilities) change with each input; its top eigenvectors are the "
                "feature directions it uses.")


def section_collapse(rep: Report, model, data) -> None:
    from moe_pipeline.inspect.collapse import MEANINGS, collapse_metrics, deep_nc1
    from moe_pipeline.training.train import infer

    if data.task != "classification":
        rep.add("Neural collapse", "<p>Not defined for regression experts.</p>")
        return
    x, y = data.x["train"], data.y["train"]
    feats = infer(model, x, data.task)["embedding"]
    metrics = collapse_metrics(feats, y, model.head.weight.detach(), model.head.bias.detach(), data.n_outputs)
    layers = deep_nc1(model, x, y, data.n_outputs)
    rep.summary["collapse"] = {**metrics, "nc1_per_layer": layers, "centring": "global mean of all features"}
    two = data.n_outputs <= 2
    rows = [{"quantity": MEANINGS[k][0], "value": v if v is not None else "n/a (two classes)",
             "how to read it": MEANINGS[k][1]} for k, v in metrics.items()]
    note = ("<p>NC2 is n/a with two classes: two centred class means always point in opposite directions, so "
            "equal angles and the simplex hold trivially and a 0 would say nothing.</p>" if two else "")
    layer_rows = [{"hidden layer (module path)": name, "NC1": value} for name, value in layers.items()]
    rep.add("Neural collapse (penultimate features, training split)",
            _table(rows) + note + "<h3>NC1 per hidden layer</h3><p class='how'>Deep neural collapse: NC1 falls layer "
            "by layer when later layers separate the classes more cleanly.</p>" + _table(layer_rows),
            how="Papyan, Han and Donoho (2020). Class means are centred at the global mean of all features. Values "
                "near 0 mean the geometry has collapsed to one point per class.")


def section_attribution(rep: Report, model, data, saved) -> None:
    from moe_pipeline.inspect.attribution import class_averaged, integrated_gradients, saliency, training_mean_baseline

    x, y = data.x["val"][:ATTRIBUTION_ROWS], data.y["val"][:ATTRIBUTION_ROWS]
    in_shape = saved["in_shape"]
    image = _image_shape(in_shape) is not None
    target = y if data.task == "classification" else torch.zeros_like(y, dtype=torch.long)
    n_classes = data.n_outputs if data.task == "classification" else 1
    labels = y if data.task == "classification" else torch.zeros(len(y), dtype=torch.long)
    classes = class_labels(data) if data.task == "classification" else ["output"]
    names = feature_names(data, in_shape)
    baseline = training_mean_baseline(data.x["train"], [tuple(b) for b in saved["blocks"]], image)
    ig = integrated_gradients(model, x, target, baseline)
    maps = {"integrated_gradients": ig.attributions, "saliency": saliency(model, x, target)}
    info: dict[str, Any] = {"rows": len(x), "ig_steps": ig.steps, "ig_completeness_gap": ig.gap_relative,
                            "ig_baseline": "zero" if not bool(baseline.any()) else "training mean on .probs inputs, "
                            "zero elsewhere"}
    figs = []
    for method, attr in maps.items():
        per_class = class_averaged(attr.abs(), labels, n_classes)  # (C, *in_shape)
        info[method] = {"mean_abs": float(attr.abs().mean())}
        title = method.replace("_", " ")
        if image:
            figs.append(plots.image_grid([_maps(p.flatten(), in_shape) for p in per_class],
                                         [f"true {classes[c]}" for c in range(n_classes)],
                                         rep.out / f"{method}_per_class.png",
                                         f"{title}: mean |attribution| over the rows of each true class",
                                         colorbar="mean |attribution|"))
            if method == "integrated_gradients":
                examples = list(range(min(4, len(x))))
                figs.append(plots.image_grid([x[i].reshape(in_shape).sum(0) for i in examples] +
                                             [attr[i].reshape(in_shape).sum(0) for i in examples],
                                             [f"input (true {classes[int(y[i])] if n_classes > 1 else float(y[i])})"
                                              for i in examples] + ["IG map"] * len(examples),
                                             rep.out / "examples.png", "examples (top) and their integrated gradients "
                                             "(bottom: red raises the explained logit, blue lowers it)",
                                             symmetric=True, cols=len(examples), colorbar="value | attribution"))
        else:
            mean = attr.abs().reshape(len(attr), -1).mean(0)
            figs.append(plots.bars(mean, rep.out / f"{method}.png", f"{title}: mean |attribution| per input "
                                   "over all rows", labels=names))
    rep.summary["attribution"] = info
    baseline_text = ("a zero baseline (a black image)" if image else
                     "a baseline of zero, except on inputs that are another expert's probabilities, where zero is off "
                     "the data and the baseline is their training mean")
    rep.add("Attributions (captum)",
            f"<p>{len(x)} validation rows, explaining the logit of each row's true class. Integrated gradients from "
            f"{baseline_text}: {ig.steps} steps, completeness gap {100 * ig.gap_relative:.2f}% of the output change "
            f"(steps double until it is at most 1%).</p>", figs,
            how="Integrated gradients: how much each input moved the logit away from the baseline; saliency: "
                "|gradient| at the row. The charts show mean |attribution|: size, not sign.")


def section_dynamics(rep: Report, ws, record) -> None:
    series = {key: ws.registry.metric_history(record.run_id, key) for key in ("train_loss", "val_loss", "grad_norm")}
    best = ws.registry.metric_history(record.run_id, "final_best_epoch")
    best_epoch = int(best[-1][1]) if best else None
    rep.summary["dynamics"] = {**{k: [v for _, v in pts] for k, pts in series.items()}, "best_epoch": best_epoch}
    rep.add("Training dynamics (from MLflow)", "", [plots.training_curves(
        series["train_loss"], series["val_loss"], series["grad_norm"], best_epoch, rep.out / "dynamics.png")],
        how="Train and validation loss per epoch; the registered weights are those of the best epoch (lowest "
            "validation loss).")


def section_opacity(rep: Report, ws, expert, data, record, modes: list[str], runs: int) -> None:
    from moe_pipeline.inspect.opacity import sensitivity

    spec = ws.pipeline.experts[expert]
    train = record.spec["train"]
    result = sensitivity(spec, ws.pipeline.resources_for(expert), data, train.get("init_seed", train["seed"]),
                         train.get("order_seed", train["seed"]), modes, runs)
    rep.summary["opacity"] = result
    skip = ("verdict", "digests", "shared", "varied")
    rows = [{"source": mode, "what varied": vals["varied"],
             **{k.replace("_", " "): v for k, v in vals.items() if k not in skip}} for mode, vals in result.items()]
    verdicts = "".join(f"<li><b>{mode}</b>: {html.escape(vals['verdict'])}</li>" for mode, vals in result.items())
    rep.add("Learning opacity by source", f"<ul>{verdicts}</ul>" + _table(rows),
            how=f"Each source retrained {runs} times in memory with only that source changed (nothing registered). "
                "Churn: share of validation predictions two runs disagree on; CKA: similarity of their embeddings; "
                "AGOP correlation and eigenspace overlap (at the effective rank): whether they use the same features.")


def _planted(pipeline, expert: str) -> list[int] | None:
    """The informative coordinates when the expert reads exactly one synthetic.planted field."""
    inputs = pipeline.experts[expert].inputs
    source = pipeline.sources.get(inputs[0].partition(".")[0]) if len(inputs) == 1 else None
    return list(source.informative) if source is not None and source.loader == "synthetic.planted" else None


# ---------------------------------------------------------------- writing


STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
         "table{border-collapse:collapse;margin:.5em 0;display:block;max-width:100%;overflow-x:auto}"
         "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;vertical-align:top}"
         "th{background:#f3f3f3;text-align:left}img{max-width:100%}section{margin-bottom:2em}"
         ".how{color:#555;font-style:italic}.head{background:#f7f7f7;border:1px solid #ddd;padding:.6em 1em}"
         ".fresh{color:#1a7f37}.stale,.pending,.failed,.untrained{color:#b35900}")


def write_html(rep: Report) -> Path:
    parts = [f"<h1>{html.escape(rep.title)}</h1>", rep.header]
    for heading, text, figs in rep.sections:
        parts.append(f"<section><h2>{html.escape(heading)}</h2>{text}")
        for fig in figs:
            data = base64.b64encode(fig.read_bytes()).decode()
            parts.append(f'<figure><img alt="{fig.stem}" src="data:image/png;base64,{data}"></figure>')
        parts.append("</section>")
    path = rep.out / "report.html"
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(rep.title)}</title>"
                    f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")
    return path


def _header(ws, expert: str, record) -> tuple[str, dict[str, Any]]:
    """The version's status now (its own reasons included) and the upstream versions it read."""
    current = ws.current()[expert]
    if current is not None and current.version == record.version:
        status = ws.statuses()[expert]
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
                   quiet: bool = False, ws=None) -> Report:
    """`ws`: a Workspace to reuse (the overview inspects every expert through one)."""
    from moe_pipeline.registry.artifacts import INITIAL, read_tensors
    from moe_pipeline.execute.write import Workspace
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
    ws = ws or Workspace(loaded)
    record = ws.record(expert, version)
    model, saved = ws.load_model(record)
    data = ws.expert_data(expert, upstream_versions={u: r.version for u, r in record.upstream.items()})[0]
    from moe_pipeline.pipeline.loader import project_root

    # under the project root, like the registry: the same place wherever the command runs from
    out = out or project_root(loaded.path) / "reports" / ws.pipeline.name / expert / f"v{record.version}"
    out.mkdir(parents=True, exist_ok=True)
    rep = Report(f"{ws.pipeline.name}.{expert} v{record.version}: {ws.pipeline.experts[expert].description or expert}", out)
    rep.header, state = _header(ws, expert, record)
    rep.summary.update({"pipeline": ws.pipeline.name, "expert": expert, "version": record.version, "task": data.task,
                        **state, "inputs": ws.pipeline.experts[expert].inputs,
                        "upstream": {u: r.version for u, r in record.upstream.items()},
                        "class_names": saved_class_names(data)})
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
    if opacity:
        section_opacity(rep, ws, expert, data, record, opacity, runs)
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
    from rich.markup import escape

    s = rep.summary
    lines = [rep.title]
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
        lines.append(f"opacity ({mode}): {vals['verdict']}")
    lines.append(f"report: {html_path}  ({s['seconds']:.1f} s)")
    # names such as `has_loop.probs[loop]` are data, not rich markup
    Console().print("[bold]" + escape(lines[0]) + "[/bold]\n" + escape("\n".join(lines[1:])))
