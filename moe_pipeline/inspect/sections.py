"""The sections of an expert report, each a function of one loaded version and its data.

Each adds to a `Report` (page.py) one heading, a line on how to read it, tables and figures,
and its numbers to the summary. The numerics come from `agop`, `collapse`, `confusion`,
`attribution` and `opacity`; nothing here writes to the registry.
"""
from __future__ import annotations

import html
import time
from typing import Any

import torch

from moe_pipeline.inspect import plots
from moe_pipeline.inspect.page import Report, table as _table

AGOP_ROWS = 2000  # each section's row budget, said on the page (`rows_used`); digits' train split has fewer
ATTRIBUTION_ROWS = 200
NFA_WORDS = {"wtw_vs_agop_sqrt": "WᵀW vs √AGOP", "wtw_vs_agop": "WᵀW vs AGOP",
             "delta_wtw_vs_agop_sqrt": "WᵀW's change since initialisation vs √AGOP",
             "delta_wtw_vs_agop": "WᵀW's change since initialisation vs AGOP"}


def _image_shape(in_shape: list[int]) -> tuple[int, int] | None:
    return (in_shape[-2], in_shape[-1]) if len(in_shape) == 3 else None


def _maps(vector: torch.Tensor, in_shape: list[int]) -> torch.Tensor:
    """A flat (d,) vector as an (h, w) map, summing over channels."""
    return vector.reshape(in_shape).abs().sum(0) if len(in_shape) == 3 else vector


def feature_names(data, in_shape: list[int]) -> list[str]:
    """A name per flattened input column, as the expert's data names them (`radius`,
    `digits.image (row 3, col 4)`, `has_loop.probs[loop]`); `x7` where nothing does."""
    d = 1
    for size in in_shape:
        d *= size
    if data.feature_names and len(data.feature_names) == d:
        return list(data.feature_names)
    return [f"x{i}" for i in range(d)]


def class_labels(data) -> list[str]:
    names = saved_class_names(data)
    return names or [f"class {c}" for c in range(data.n_outputs)]


# ---------------------------------------------------------------- sections


def section_metrics(rep: Report, model, data, record) -> None:
    from moe_pipeline.inspect.confusion import confusion_matrix, per_class, residual_summary, row_normalised
    from moe_pipeline.training.metrics import metrics_of
    from moe_pipeline.training.train import infer

    split = "test" if len(data.y["test"]) else "val"
    out = infer(model, data.x[split], data.task)
    metrics = metrics_of(data.task, out["logits"], data.y[split], split)
    rep.summary["metrics"] = {**metrics, "recorded_val_metric": record.val_metric}
    trivial = "the majority class" if data.task == "classification" else "the training mean"
    # one row per split, one column per quantity: a test number never sits under a validation heading
    names = [k.removeprefix(f"{split}_") for k in metrics]
    where = "test split, now" if split == "test" else "validation split, now"
    rows = [{"rows": where, **{n.replace("_", " "): metrics[f"{split}_{n}"] for n in names}},
            {"rows": "validation split, recorded at training (best epoch)",
             **{n.replace("_", " "): record.val_metric if n == record.metric_name else None for n in names}}]
    if record.baseline is not None:
        rows.append({"rows": f"trivial predictor ({trivial}), validation split",
                     **{n.replace("_", " "): record.baseline if n == record.metric_name else None for n in names}})
    text = _table(rows)
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
            how=f"On {rows_used(len(data.y[split]), data.rows_in(split), split, sample_budget(data))}. Precision: of "
                "the rows predicted as a class, the share that are it; recall: of its rows, the share found. In the "
                "matrices rows are true classes, columns predictions; the diagonal is right.")


def saved_class_names(data) -> list[str] | None:
    names = data.class_names
    return names if names and len(names) == data.n_outputs else None


def rows_used(used: int, available: int, split: str, budget: int | None) -> str:
    """What a section ran on, in words: `the first 2,000 of 7,000 training rows (this section's
    budget: 2,000)`, or `all 1,000 training rows` when the split fits (no budget: `None`)."""
    if used < available:
        return f"the first {used:,} of {available:,} {split} rows (this section's budget: {budget:,})"
    return f"all {used:,} {split} rows" + (f" (this section's budget: {budget:,})" if budget is not None else "")


def sample_budget(data) -> int | None:
    """The rows of each split an expert trained from data on disk is inspected on (None: every row)."""
    from moe_pipeline.data.streamed_inputs import INSPECT_ROWS

    return INSPECT_ROWS if data.split_rows else None


def section_agop(rep: Report, model, data, saved, initial, planted: list[int] | None = None) -> None:
    from moe_pipeline.inspect import agop as A
    from moe_pipeline.training.models import first_layer

    x = data.x["train"][:AGOP_ROWS]
    started = time.perf_counter()
    res = A.compute(model, x, k=6, dense_limit=A.DENSE_LIMIT)
    seconds = time.perf_counter() - started
    in_shape = saved.in_shape
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
    blocks = [tuple(b) for b in saved.blocks]
    info["reliance"] = A.reliance(diag, blocks)
    if planted:
        info["planted_coordinates"] = planted
        info["planted_share"] = float(diag[planted].sum() / diag.sum())
    figs = []
    shape = _image_shape(in_shape)
    if shape:
        k = min(5, res.eigenvectors.shape[1])
        mean_input = x.reshape(len(x), *in_shape).mean(0).sum(0)
        figs.append(plots.image_grid([mean_input, _maps(diag, in_shape)], ["mean input (pixel value)",
                                     "AGOP diagonal (larger = used more)"],
                                     rep.out / "agop.png", "Which pixels the expert's logits use (AGOP diagonal)",
                                     colorbar=["pixel value", "AGOP diagonal"], shared=False))
        figs.append(plots.image_grid([res.eigenvectors[:, i].reshape(in_shape).sum(0) for i in range(k)],
                                     [f"eigenvector {i + 1} (λ={float(res.eigenvalues[i]):.3g})" for i in range(k)],
                                     rep.out / "agop_eigenvectors.png", "Top AGOP eigenvectors: feature directions",
                                     symmetric=True, colorbar="weight (sign is arbitrary: red/blue = opposite)"))
        if res.class_diagonals is not None and res.class_diagonals.shape[0] > 1:
            figs.append(plots.image_grid([_maps(p, in_shape) for p in res.class_diagonals],
                                         [f"logit of {classes[c]}" for c in range(res.class_diagonals.shape[0])],
                                         rep.out / "agop_per_class.png", "AGOP diagonal per output logit "
                                         "(they sum to the AGOP)", colorbar="AGOP diagonal"))
    else:
        figs.append(plots.bars(diag, rep.out / "agop.png", "AGOP diagonal of the logits: how much each input is used",
                               labels=names, top=min(30, diag.numel()), xlabel="AGOP diagonal (larger = used more)"))
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
    text = (f"<p>Computed over {rows_used(len(x), data.rows_in('train'), 'training', AGOP_ROWS)} in {seconds:.2f} s. "
            "The 10 most used inputs: "
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
              "logits use.</p>" + _table([{NFA_WORDS.get(k, k): v for k, v in nfa.items()}]))
             if nfa else f"<p>Not computed: {html.escape(nfa_why)}.</p>")
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
            f"<p>Over {rows_used(len(x), data.rows_in('train'), 'training', sample_budget(data))}, streamed a chunk "
            "at a time.</p>"
            + _table(rows) + note + "<h3>NC1 per hidden layer</h3><p class='how'>Deep neural collapse: NC1 falls "
            "layer by layer when later layers separate the classes more cleanly.</p>" + _table(layer_rows),
            how="Papyan, Han and Donoho (2020). Class means are centred at the global mean of all features. Values "
                "near 0 mean the geometry has collapsed to one point per class.")


def section_attribution(rep: Report, model, data, saved) -> None:
    from moe_pipeline.inspect.attribution import class_averaged, integrated_gradients, saliency, training_mean_baseline

    x, y = data.x["val"][:ATTRIBUTION_ROWS], data.y["val"][:ATTRIBUTION_ROWS]
    in_shape = saved.in_shape
    image = _image_shape(in_shape) is not None
    target = y if data.task == "classification" else torch.zeros_like(y, dtype=torch.long)
    n_classes = data.n_outputs if data.task == "classification" else 1
    labels = y if data.task == "classification" else torch.zeros(len(y), dtype=torch.long)
    classes = class_labels(data) if data.task == "classification" else ["output"]
    names = feature_names(data, in_shape)
    baseline = training_mean_baseline(data.x["train"], [tuple(b) for b in saved.blocks], image)
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
                figs.append(plots.examples([x[i].reshape(in_shape).sum(0) for i in examples],
                                           [attr[i].reshape(in_shape).sum(0) for i in examples],
                                           _example_titles(model, data, x[examples], y[examples], classes),
                                           rep.out / "examples.png", "validation examples (top) and their integrated "
                                           "gradients for the true class's logit (bottom)"))
        else:
            mean = attr.abs().reshape(len(attr), -1).mean(0)
            figs.append(plots.bars(mean, rep.out / f"{method}.png", f"{title}: mean |attribution| per input "
                                   "over all rows", labels=names, xlabel="mean |attribution|"))
    rep.summary["attribution"] = info
    baseline_text = ("a zero baseline (a black image)" if image else
                     "a baseline of zero, except on inputs that are another expert's probabilities, where zero is off "
                     "the data and the baseline is their training mean")
    rep.add("Attributions (captum)",
            f"<p>On {rows_used(len(x), data.rows_in('val'), 'validation', ATTRIBUTION_ROWS)}, explaining the logit "
            "of each row's true class. Integrated gradients from "
            f"{baseline_text}: {ig.steps} steps, completeness gap {100 * ig.gap_relative:.2f}% of the output change "
            f"(steps double until it is at most 1%).</p>", figs,
            how="Integrated gradients: how much each input moved the logit away from the baseline; saliency: "
                "|gradient| at the row. The charts show mean |attribution|: size, not sign.")


def _example_titles(model, data, x, y, classes: list[str]) -> list[str]:
    """`true even · predicted odd (p 0.62)` per example row (regression: true and predicted values)."""
    from moe_pipeline.training.train import infer

    probs = infer(model, x, data.task)["probs"]
    if data.task != "classification":
        return [f"true {float(t):.3g} · predicted {float(p[0]):.3g}" for t, p in zip(y, probs)]
    return [f"true {classes[int(t)]} · predicted {classes[int(p.argmax())]} (p {float(p.max()):.2f})"
            for t, p in zip(y, probs)]


def section_dynamics(rep: Report, view, record) -> None:
    series = {key: view.registry.metric_history(record.run_id, key) for key in ("train_loss", "val_loss", "grad_norm")}
    # `final_best_epoch`: what versions logged before the best epoch's metrics were named `best_*`
    best = (view.registry.metric_history(record.run_id, "best_epoch")
            or view.registry.metric_history(record.run_id, "final_best_epoch"))
    best_epoch = int(best[-1][1]) if best else None
    rep.summary["dynamics"] = {**{k: [v for _, v in pts] for k, pts in series.items()}, "best_epoch": best_epoch}
    rep.add("Training dynamics (from MLflow)", "", [plots.training_curves(
        series["train_loss"], series["val_loss"], series["grad_norm"], best_epoch, rep.out / "dynamics.png")],
        how="Train and validation loss per epoch; the registered weights are those of the best epoch (lowest "
            "validation loss).")


def section_opacity(rep: Report, view, expert, data, record, modes: list[str], runs: int, progress=None,
                    pool=None) -> None:
    """`progress(what, k)`: told before the k-th training (`init run 2 of 3`); `pool`: where the
    runs train (`opacity_workers.OpacityPool`; None: here, one after another)."""
    from moe_pipeline.inspect.opacity import CRITERIA, sensitivity
    from moe_pipeline.state.fingerprint import training_seeds
    from moe_pipeline.training.metrics import primary_metric

    spec = view.pipeline.experts[expert]
    result = sensitivity(spec, view.pipeline.resources_for(expert), data, *training_seeds(record.spec), modes, runs,
                         progress, pool)
    rep.summary["opacity"] = result
    metric = primary_metric(data.task)
    rows = [{"source": mode, "what varied": vals["varied"], "runs": vals["runs"],
             "prediction churn": f"{100 * vals['prediction_churn_mean']:.1f}%" if "prediction_churn_mean" in vals
             else "n/a (regression)",
             f"val {metric} mean": f"{vals[f'val_{metric}_mean']:.4f}",
             f"val {metric} spread (max − min)": f"{vals[f'val_{metric}_spread']:.4f}",
             "embedding CKA": f"{vals['embedding_cka_mean']:.3f}", "AGOP correlation": f"{vals['agop_correlation_mean']:.3f}",
             "eigenspace overlap": f"{vals['eigenspace_overlap_mean']:.3f}",
             "effective rank per run": ", ".join(str(r) for r in vals["effective_rank"])} for mode, vals in result.items()]
    verdicts = "".join(f"<li><b>{mode}</b>: {html.escape(vals['verdict'])}</li>" for mode, vals in result.items())
    figure = plots.opacity_chart(result, metric, rep.out / "opacity.png")
    rep.add("Learning opacity by source", f"<ul>{verdicts}</ul><p class='how'>{html.escape(CRITERIA)}</p>"
            + _table(rows), [figure],
            how=f"Each source retrained {runs} times in memory with only that source changed (nothing registered). "
                "Churn: share of validation predictions two runs disagree on; CKA: similarity of their embeddings; "
                "AGOP correlation and eigenspace overlap (at the effective rank): whether they use the same features. "
                "Every number is the mean over pairs of runs.")


def _planted(pipeline, expert: str) -> list[int] | None:
    """The informative coordinates when the expert reads exactly one synthetic.planted field."""
    inputs = pipeline.experts[expert].inputs
    source = pipeline.sources.get(inputs[0].partition(".")[0]) if len(inputs) == 1 else None
    return list(source.informative) if source is not None and source.loader == "synthetic.planted" else None


# ---------------------------------------------------------------- writing
