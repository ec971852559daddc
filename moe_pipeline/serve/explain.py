"""Explain one prediction through the expert graph: every expert's answer, and for each expert,
how much each of its inputs drove its output.

Integrated gradients (captum) of the expert's predicted-class logit, from a zero baseline to
the example, summed over each input block (`has_loop.probs`, `digits.image`, ...). The
steps double until the completeness gap |sum(attributions) - (f(x) - f(baseline))| is at
most 1% of |f(x) - f(baseline)| (at most MAX_STEPS); the gap is reported with the shares.
Reads a `System`; writes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from moe_pipeline.inspect.attribution import integrated_gradients



@dataclass
class Answer:
    """One expert's answer to one example, and how much each input block drove it."""

    expert: str
    label: str  # class name, or the value for regression
    probability: float | None
    drivers: list[dict[str, Any]] = field(default_factory=list)  # per input block: ref, share, attribution, answer
    output_change: float = 0.0  # f(x) - f(baseline) of the explained logit
    gap: float = 0.0  # |sum of attributions - output change|
    steps: int = 0
    distribution: list[tuple[str, float]] = field(default_factory=list)  # every class and its probability
    maps: dict[str, np.ndarray] = field(default_factory=dict)  # source field -> attributions, shaped as one row of it

    def sentence(self) -> str:
        head = f"{self.expert} = {self.label}" + (f" (p {self.probability:.2f})" if self.probability is not None else "")
        if not self.drivers:
            return head
        parts = [f"{d['ref']}{' ' + d['answer'] if d.get('answer') else ''} ({d['share']:.0%})" for d in self.drivers]
        rel = self.gap / abs(self.output_change) if self.output_change else 0.0
        return f"{head} <- {', '.join(parts)}   [completeness gap {rel:.2%} of the output change, {self.steps} steps]"

    def as_dict(self) -> dict[str, Any]:
        return {"expert": self.expert, "answer": self.label, "probability": self.probability, "drivers": self.drivers,
                "output_change": self.output_change, "completeness_gap": self.gap,
                "completeness_gap_relative": self.gap / abs(self.output_change) if self.output_change else 0.0,
                "steps": self.steps}


def explain(system, fields: dict[str, np.ndarray], row: int, progress=None) -> list[Answer]:
    """One Answer per expert of `system`, in graph order, for row `row` of `fields`;
    `progress(what, done, total)` is told each expert before its attributions are computed."""
    one = {ref: np.asarray(value)[row:row + 1] for ref, value in fields.items()}
    system.check_inputs(one)
    done = system._forward(one)
    answers = []
    for k, name in enumerate(system.order):
        if progress:
            progress(f"{name}: integrated gradients", k, len(system.order))
        answers.append(_answer(system, name, one, done))
    return answers


def _label(p, probs: torch.Tensor) -> tuple[str, float | None, int | None]:
    if p.saved.task != "classification":
        return ", ".join(f"{v:.4g}" for v in probs[0].tolist()), None, None
    k = int(probs[0].argmax())
    names = p.class_names or [str(i) for i in range(probs.shape[1])]
    return names[k], float(probs[0, k]), k


def _answer(system, name: str, one: dict[str, np.ndarray], done: dict) -> Answer:
    p = system.experts[name]
    label, probability, target = _label(p, done[name]["probs"])
    answer = Answer(name, label, probability)
    x = system.expert_input(p, one, done).float()
    baseline = torch.zeros_like(x)
    with torch.no_grad():
        change = float(p.model(x)[0, target or 0] - p.model(baseline)[0, target or 0])
    result = integrated_gradients(p.model, x, target or 0, baseline)
    gap, steps = result.gap, result.steps
    flat = result.attributions.reshape(-1).double()
    total = float(flat.abs().sum()) or 1.0
    if p.saved.task == "classification":
        names = p.class_names or [str(i) for i in range(done[name]["probs"].shape[1])]
        answer.distribution = list(zip(names, done[name]["probs"][0].tolist()))
    for ref, start, stop in p.saved.blocks:
        block = flat[start:stop]
        if ref in system.fields:
            answer.maps[ref] = block.reshape(system.fields[ref]["shape"]).numpy()
        owner = ref.partition(".")[0]
        upstream = None
        if owner in system.experts:
            up_label, up_p, _ = _label(system.experts[owner], done[owner]["probs"])
            upstream = f"{up_label} {up_p:.2f}" if up_p is not None else up_label
        answer.drivers.append({"ref": ref, "answer": upstream, "attribution": float(block.sum()),
                               "share": float(block.abs().sum()) / total})
    answer.drivers.sort(key=lambda d: -d["share"])
    answer.output_change, answer.gap, answer.steps = change, gap, steps
    return answer


def to_html(system, answers: list[Answer], title: str, row: dict[str, np.ndarray], truth: dict[str, str],
            order: list[str], columns: dict[str, list[str]] | None = None) -> str:
    """One self-contained page (inline SVG and PNG, no scripts): the example itself (an image
    with each first-level expert's pixel attributions over it, or a table of its values and their
    attributions), the graph with each expert's answer, then per expert (in the pipeline file's
    order) its full class distribution and the true label where it is known.

    `row`: source field -> this example's values; `truth`: expert -> its true answer;
    `columns`: a table field's column names."""
    from html import escape

    from moe_pipeline.pipeline.drawing import Arrow, Box, graph_html

    by_name = {a.expert: a for a in answers}
    boxes = {ref: Box([ref, "input"]) for ref in system.fields}
    arrows = []
    for name in order:
        a = by_name[name]
        p = f"p {a.probability:.2f}" if a.probability is not None else ""
        lines = [name, f"= {a.label} · {p}" if p else f"= {a.label}"]
        if name in truth:
            lines.append(f"true: {truth[name]}")
        boxes[name] = Box(lines, fill="#fff7e0")
        for driver in a.drivers:
            ref = driver["ref"]
            start = ref if ref in system.fields else ref.partition(".")[0]
            arrows.append(Arrow(start, name, ref, f"{driver['share']:.0%}", driver["share"]))
    svg = graph_html(boxes, arrows, "the share of the reader's answer this input drove")
    example = "".join(_field_html(ref, row[ref], [by_name[n] for n in order if ref in by_name[n].maps],
                                  (columns or {}).get(ref)) for ref in system.fields)
    experts = "".join(_expert_html(by_name[n], truth.get(n)) for n in order)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{escape(title)}</title><style>
body {{ font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1200px; color: #222 }}
code {{ font-size: 13px }} img {{ max-width: 100% }} table {{ border-collapse: collapse }}
td, th {{ border: 1px solid #ccc; padding: 2px 8px; font-size: 13px; text-align: left }}
.bar {{ background: #4a7bd0; height: 10px; display: inline-block }} .right {{ color: #1a7f37 }}
.wrong {{ color: #b3261e }} .how {{ color: #555; font-style: italic }}
</style></head><body><h1>{escape(title)}</h1>
<h2>The example</h2>{example}
<h2>The graph</h2>
<p class="how">Each box is one expert's answer for this example (and the true answer where the data has it);
each arrow's width and the percentage at its end is the share of the reader's output that input drove
(integrated gradients of the predicted class's logit from a zero input, summed per input block).</p>
{svg}<h2>Every expert's answer</h2>{experts}</body></html>"""


def _field_html(ref: str, values: np.ndarray, readers: list[Answer], columns: list[str] | None) -> str:
    """A source field of the example: an image with each reader's attributions over it, or a table
    of its values with each reader's attribution per column."""
    from html import escape

    if values.ndim == 3:  # (channels, height, width)
        from moe_pipeline.inspect.page import drawn
        from moe_pipeline.inspect.plots import input_attributions

        figure = drawn(lambda path: input_attributions(
            torch.as_tensor(values).sum(0), {a.expert: torch.as_tensor(a.maps[ref]).sum(0) for a in readers}, path,
            f"{ref}, and the pixels each expert reading it used"), alt=ref)
        return f"<h3>{escape(ref)}</h3>{figure}"
    flat = values.reshape(-1)
    names = columns if columns and len(columns) == flat.size else [f"{ref}[{i}]" for i in range(flat.size)]
    head = "".join(f"<th>attribution in {escape(a.expert)}</th>" for a in readers)
    rows = "".join(f"<tr><td>{escape(n)}</td><td>{v:.4g}</td>"
                   + "".join(f"<td>{float(a.maps[ref].reshape(-1)[i]):+.3g}</td>" for a in readers) + "</tr>"
                   for i, (n, v) in enumerate(zip(names, flat.tolist())))
    return f"<h3>{escape(ref)}</h3><table><tr><th>column</th><th>value</th>{head}</tr>{rows}</table>"


def _expert_html(a: Answer, truth: str | None) -> str:
    from html import escape

    verdict = "" if truth is None else (f" <span class='right'>right</span> (true: {escape(truth)})" if truth == a.label
                                        else f" <span class='wrong'>wrong</span> (true: {escape(truth)})")
    bars = "".join(f"<tr><td>{escape(name)}</td><td><span class='bar' style='width:{200 * p:.0f}px'></span> "
                   f"{p:.3f}</td></tr>" for name, p in a.distribution)
    return (f"<h3>{escape(a.expert)}</h3><p><code>{escape(a.sentence())}</code>{verdict}</p>"
            + (f"<table><tr><th>class</th><th>probability</th></tr>{bars}</table>" if bars else ""))
