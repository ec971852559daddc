"""The pages of `diagnose --html` and `diff --html`: what the terminal prints, with its tables and
confusion matrices drawn. One self-contained HTML file each (PNG figures inline, no scripts).

Takes the computed `Diagnosis` and `VersionDiff` (inspect/diagnose.py, inspect/diff.py) and
draws them; computes nothing of its own, and writes only the page the user asked for.
"""
from __future__ import annotations

import html

import torch

from moe_pipeline.inspect import plots
from moe_pipeline.inspect.diff import FLIPPED_SHOWN
from moe_pipeline.inspect.page import STYLE, drawn, table


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>")


def diagnosis_html(results: list, title: str) -> str:
    """Per reading expert: the summary lines, its upstream experts ranked as what to fix first, and
    its confusion matrices on the rows where every upstream was right and where some were wrong."""
    parts = []
    for d in results:
        lines = "".join(f"<li>{html.escape(line.strip())}</li>" for line in d.lines())
        rows = [{"upstream": u.expert, "input": u.ref,
                 "its error rate": "—" if u.error_rate is None else f"{100 * u.error_rate:.1f}%",
                 f"wrong on {d.expert}'s errors": "—" if u.wrong_on_reader_errors is None else
                 f"{u.wrong_on_reader_errors} of {d.errors}",
                 f"{d.metric_name} if it were perfect": "—" if u.oracle_metric is None else f"{u.oracle_metric:.4f}",
                 "gain": u.not_applicable or d.change(u.gain),
                 "training seconds": "—" if u.train_seconds is None else f"{u.train_seconds:.1f}",
                 **({f"gain with {d.expert} retrained on it perfect": "—" if u.retrained_gain is None else
                     d.change(u.retrained_gain)}
                    if any(f.retrained_gain is not None for f in d.upstream) else {})}
                for u in [*d.fix_first(), *(u for u in d.upstream if u.gain is None)]]
        figures = ""
        for label, counts in (("every upstream expert right", d.confusion_upstream_right),
                              ("some upstream expert wrong", d.confusion_upstream_wrong)):
            if counts is not None:
                matrix = torch.tensor(counts)
                figures += drawn(lambda path, m=matrix, label=label: plots.heatmap(
                    m, path, f"{d.expert} on {d.split}: rows with {label} ({int(m.sum())})", d.classes))
        parts.append(f"<section><h2>{html.escape(d.expert)} v{d.version}</h2><ul>{lines}</ul>"
                     "<p class='how'>Gain: the reader's metric with that upstream's probabilities replaced by its true "
                     "answer (inference only); ranked by gain per second of the upstream's training.</p>"
                     f"{table(rows)}<h3>Where its errors are</h3><p class='how'>Rows are true classes, columns "
                     f"predictions. An error where every upstream expert was right is {html.escape(d.expert)}'s own; "
                     f"fixing an upstream cannot remove it.</p>{figures}</section>")
    return _page(title, "".join(parts))


def diff_html(result, title: str) -> str:
    """The record changes, per split the metrics with their paired test and churn, the change of
    the confusion matrix (B minus A) and the features that moved."""
    record = "".join(f"<li><code>{html.escape(line)}</code></li>" for line in result.record) or \
        "<li>same spec, code, data and upstream</li>"
    rows = [{"split": s.split, f"{result.metric_name} v{result.version_a}": f"{s.metric_a:.4f}",
             f"{result.metric_name} v{result.version_b}": f"{s.metric_b:.4f}", "change": f"{s.metric_b - s.metric_a:+.4f}",
             "test": s.test, "p or 95% interval": f"{s.p_value:.3g}" if s.p_value is not None else
             f"[{s.interval[0]:+.4f}, {s.interval[1]:+.4f}]",
             "verdict": s.verdict,
             "churn": "—" if s.churn is None else f"{100 * s.churn:.1f}%",
             "right → wrong": len(s.right_to_wrong), "wrong → right": len(s.wrong_to_right)} for s in result.splits]
    figures = "".join(drawn(lambda path, s=s: plots.heatmap(
        torch.tensor(s.confusion_delta), path, f"{s.split}: confusion v{result.version_b} minus v{result.version_a}",
        s.classes, signed=True, colorbar=f"rows, v{result.version_b} minus v{result.version_a}")) for s in result.splits if s.confusion_delta)
    features = ""
    if result.features is not None:
        moved = [{"feature": name, "share of the AGOP trace": f"{100 * change:+.1f} pt"}
                 for name, change in [*result.features["gained"], *result.features["lost"]]]
        features = (f"<h2>Features used</h2><p>Cosine of the two versions' AGOP diagonals on the same training rows: "
                    f"<b>{result.features['cosine']:.3f}</b> (1: the same features in the same proportions). "
                    f"Overlap of their top-{result.features['rank']} AGOP eigenspaces (the larger effective rank): "
                    f"<b>{result.features['overlap']:.3f}</b> (1: the same feature directions, 0: none shared).</p>"
                    + table(moved))
    body = (f"<h2>What the records say changed</h2><ul>{record}</ul><h2>Behaviour</h2>{table(rows)}"
            "<p class='how'>McNemar's exact test on the rows one version got right and the other wrong "
            "(classification), or a seeded paired bootstrap of the R² change (regression). In the matrices rows are "
            "true classes, columns predictions; red: more rows there in the new version, blue: fewer.</p>"
            f"{figures}{_flipped(result)}{features}")
    return _page(title, body)


SHOWN_COLUMNS = 12  # input columns of a flipped row shown in its table (the first ones)


def _flipped(result) -> str:
    """The test rows that flipped, as images where the expert reads an image, else their values."""
    if not result.flipped:
        return ""
    head = (f"<h2>Rows that flipped (test)</h2><p class='how'>The first {FLIPPED_SHOWN} test rows of each direction "
            f"(right → wrong, wrong → right), with their inputs as v{result.version_b} reads them.</p>")
    inputs = result.flipped_inputs
    titles = [f"row {f.row}, true {f.truth}\nv{result.version_a} {f.before} → v{result.version_b} {f.after}"
              for f in result.flipped]
    if inputs is not None and inputs.dim() == 4:  # (n, C, H, W): channels averaged for display
        grid = [image.double().mean(0) for image in inputs]
        parts = ""
        for direction in ("right -> wrong", "wrong -> right"):
            chosen = [k for k, f in enumerate(result.flipped) if f.direction == direction]
            if chosen:
                parts += drawn(lambda path, chosen=chosen, direction=direction: plots.image_grid(
                    [grid[k] for k in chosen], [titles[k] for k in chosen], path,
                    f"{result.expert}: test rows {direction.replace('->', 'to')} (v{result.version_a} to "
                    f"v{result.version_b})", cmap="gray", cols=4, colorbar="pixel value"))
        return head + parts
    names = result.input_names[:SHOWN_COLUMNS]
    rows = [{"direction": f.direction.replace("->", "→"), "row": f.row, "true": f.truth, f"v{result.version_a}": f.before,
             f"v{result.version_b}": f.after,
             **({name: float(v) for name, v in zip(names, inputs[k].flatten().tolist())} if inputs is not None else {})}
            for k, f in enumerate(result.flipped)]
    more = len(result.input_names) - len(names)
    note = f"<p class='how'>The first {len(names)} of {len(result.input_names)} input columns.</p>" if more > 0 else ""
    return head + table(rows) + note
