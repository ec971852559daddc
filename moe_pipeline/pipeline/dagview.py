"""Render the expert graph as text, Mermaid, Graphviz dot, or an SVG of labelled boxes and
weighted arrows (the overview page and `explain --html`). Pure: strings out, no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING

from moe_pipeline.pipeline import graph as g

if TYPE_CHECKING:
    from moe_pipeline.pipeline.spec import Pipeline


def render(pipeline: Pipeline, fmt: str, statuses: dict[str, str] | None = None) -> str:
    statuses = statuses or {}
    return {"text": _text, "mermaid": _mermaid, "dot": _dot}[fmt](pipeline, statuses)


def _text(pipeline: Pipeline, statuses: dict[str, str]) -> str:
    lines = [f"pipeline {pipeline.name}"]
    for name, source in pipeline.sources.items():
        lines.append(f"  source {name} [{', '.join(pipeline.source_fields(name))}]")
    for level, names in enumerate(g.layers(g.expert_graph(pipeline))):
        lines.append(f"level {level}")
        for name in names:
            expert = pipeline.experts[name]
            mark = f"  ({statuses[name]})" if name in statuses else ""
            lines.append(f"  {name}{mark} <- {', '.join(expert.inputs)}   target {expert.target_field}")
    return "\n".join(lines)


def _mermaid(pipeline: Pipeline, statuses: dict[str, str]) -> str:
    lines = ["graph TD"]
    for name in pipeline.sources:
        lines.append(f"  {name}[({name})]")
    for name in pipeline.experts:
        label = f"{name}<br/>{statuses[name]}" if name in statuses else name
        lines.append(f'  {name}["{label}"]')
    for u, v, data in g.full_graph(pipeline).edges(data=True):
        lines.append(f"  {u} -->|{','.join(data['outputs'])}| {v}")
    return "\n".join(lines)


def _dot(pipeline: Pipeline, statuses: dict[str, str]) -> str:
    lines = [f'digraph "{pipeline.name}" {{', "  rankdir=LR;"]
    for name in pipeline.sources:
        lines.append(f'  "{name}" [shape=cylinder];')
    for name in pipeline.experts:
        label = f"{name}\\n{statuses[name]}" if name in statuses else name
        lines.append(f'  "{name}" [shape=box, label="{label}"];')
    for u, v, data in g.full_graph(pipeline).edges(data=True):
        lines.append(f'  "{u}" -> "{v}" [label="{",".join(data["outputs"])}"];')
    lines.append("}")
    return "\n".join(lines)


@dataclass
class Box:
    """One expert (or source) drawn on a layered graph page."""

    lines: list[str]  # first line bold (the name), the rest plain
    fill: str = "#eef2f7"
    href: str | None = None  # a link on the box (a relative path)


@dataclass
class Arrow:
    """One input edge drawn on a layered graph page, with its label."""

    start: str
    end: str
    label: str
    weight: float  # 0..1: the arrow's width


def layered_svg(boxes: dict[str, Box], arrows: list[Arrow], width: int = 230, line_height: int = 20) -> str:
    """Boxes in columns by depth (a box sits one column right of its deepest start), arrows
    left to right, each labelled near its end where fanned-out arrows are apart."""
    depth: dict[str, int] = {}
    incoming: dict[str, list[str]] = {}
    for arrow in arrows:
        incoming.setdefault(arrow.end, []).append(arrow.start)

    def place_of(node: str, seen: tuple = ()) -> int:
        if node not in depth:
            starts = [s for s in incoming.get(node, []) if s not in seen]
            depth[node] = 1 + max((place_of(s, seen + (node,)) for s in starts), default=-1)
        return depth[node]

    for node in boxes:
        place_of(node)
    columns: dict[int, list[str]] = {}
    for node in boxes:
        columns.setdefault(depth[node], []).append(node)
    height = 16 + line_height * max(len(b.lines) for b in boxes.values())
    gap_x, gap_y = 130, 28
    place = {node: (20 + d * (width + gap_x), 20 + i * (height + gap_y))
             for d, nodes in columns.items() for i, node in enumerate(nodes)}
    svg_w = 40 + (max(columns) + 1) * (width + gap_x) - gap_x
    svg_h = 40 + max(len(n) for n in columns.values()) * (height + gap_y) - gap_y
    fan_out = {node: sum(a.start == node for a in arrows) for node in boxes}
    fan_in = {node: len(incoming.get(node, [])) for node in boxes}
    parts = []
    for arrow in arrows:
        (x1, y1), (x2, y2) = place[arrow.start], place[arrow.end]
        parts.append(f'<line x1="{x1 + width}" y1="{y1 + height / 2}" x2="{x2}" y2="{y2 + height / 2}" '
                     f'stroke="#4a7bd0" stroke-opacity="0.7" stroke-width="{1 + 7 * arrow.weight:.1f}" '
                     'marker-end="url(#a)"/>')
        # the label where arrows are apart: near the end of a fan-out, near the start of a fan-in
        t = 0.72 if fan_out[arrow.start] >= fan_in[arrow.end] else 0.3
        mx, my = x1 + width + t * (x2 - x1 - width), y1 + height / 2 + t * (y2 - y1) - 5
        parts.append(f'<text x="{mx:.0f}" y="{my:.0f}" class="share">{escape(arrow.label)}</text>')
    for node, (x, y) in place.items():
        box = boxes[node]
        shape = [f'<rect x="{x}" y="{y}" width="{width}" height="{height}" rx="8" fill="{box.fill}" stroke="#555"/>']
        for i, line in enumerate(box.lines):
            cls = "name" if i == 0 else "answer"
            shape.append(f'<text x="{x + 12}" y="{y + 24 + i * line_height}" class="{cls}">{escape(line)}</text>')
        parts.append(f'<a href="{escape(box.href)}">{"".join(shape)}</a>' if box.href else "".join(shape))
    return (f'<svg width="{svg_w}" height="{svg_h}" xmlns="http://www.w3.org/2000/svg"><style>'
            ".name{font-weight:600;font-size:15px}.answer{font-size:13px}"
            ".share{font-size:12px;fill:#2a4f9a;text-anchor:middle}</style>"
            '<defs><marker id="a" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="10" markerHeight="10" '
            'markerUnits="userSpaceOnUse" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#4a7bd0"/></marker></defs>'
            f"{''.join(parts)}</svg>")
