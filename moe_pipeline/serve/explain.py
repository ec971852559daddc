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


def explain(system, fields: dict[str, np.ndarray], row: int) -> list[Answer]:
    """One Answer per expert of `system`, in graph order, for row `row` of `fields`."""
    one = {ref: np.asarray(value)[row:row + 1] for ref, value in fields.items()}
    system.check_inputs(one)
    done = system._forward(one)
    return [_answer(system, name, one, done) for name in system.order]


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
    for ref, start, stop in p.saved.blocks:
        block = flat[start:stop]
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


def to_html(system, answers: list[Answer], title: str) -> str:
    """One self-contained page (inline SVG, no scripts): the graph left to right, each expert's
    answer in its box, each edge labelled with the share of the output that input drove."""
    from html import escape

    from moe_pipeline.pipeline.drawing import Arrow, Box, graph_html

    by_name = {a.expert: a for a in answers}
    boxes = {ref: Box([ref, "input"]) for ref in system.fields}
    arrows = []
    for name in system.order:
        a = by_name[name]
        p = f"p {a.probability:.2f}" if a.probability is not None else ""
        boxes[name] = Box([name, f"= {a.label} · {p}" if p else f"= {a.label}"], fill="#fff7e0")
        for driver in a.drivers:
            ref = driver["ref"]
            start = ref if ref in system.fields else ref.partition(".")[0]
            arrows.append(Arrow(start, name, ref, f"{driver['share']:.0%}", driver["share"]))
    svg = graph_html(boxes, arrows, "the share of the reader's answer this input drove")
    rows = "".join(f"<li><code>{escape(a.sentence())}</code></li>" for a in answers)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{escape(title)}</title><style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222 }} code {{ font-size: 13px }}
</style></head><body><h1>{escape(title)}</h1>
<p>Each box is one expert's answer for this example; each arrow's width and label is the share of that
expert's output driven by the input (integrated gradients of the predicted class's logit from a zero input,
summed per input block).</p>
{svg}<ul>{rows}</ul></body></html>"""
