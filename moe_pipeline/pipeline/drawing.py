"""The graph pages' drawing: experts and source fields as boxes, their inputs as arrows, laid
out by Graphviz `dot` (through the `graphviz` package) and marked for tests and scripts.

Each reading box has one row per input, and each arrow ends at its own row, which starts with
the arrow's label (its share): a label cannot sit beside another expert, and no two arrowheads
meet. The SVG is marked: `<g class="node" data-node="EXPERT">` (its `<title>` holds every reason
it is not fresh) and `<g class="edge" data-source="EXPERT.output" data-target="EXPERT"
data-label="16%">` holding the arrow's line (its `<title>` says input, reader and label). Where `dot` is not installed the page lists the arrows in a table instead and says
why: it never falls back to coordinates placed by hand. The overview and the explain page both
draw with this module. Must not read the registry or data: callers give boxes and arrows.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from xml.etree import ElementTree

SVG_NS, XLINK_NS = "http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"
ARROW, STALE_ARROW = "#4a7bd0", "#c0392b"
MAX_REASON = 46  # characters of the first reason shown in a box (all of them are in its <title>)


@dataclass
class Box:
    """One expert (or source field) on a graph page."""

    lines: list[str]  # first line bold (the name), the rest plain
    fill: str = "#eef2f7"
    href: str | None = None  # a link on the box (a relative path)
    reasons: list[str] = field(default_factory=list)  # why it is stale or pending: the first shown, all in <title>


@dataclass
class Arrow:
    """One input of an expert: from a box (`start`) to the reading expert's box (`end`)."""

    start: str
    end: str
    ref: str  # the input as the reader names it: `has_loop.probs`, `digits.image`
    label: str  # drawn at the arrow's end, beside the reader
    weight: float  # 0..1: the arrow's width
    stale: bool = False  # the reader was trained on another version of this upstream


def graph_html(boxes: dict[str, Box], arrows: list[Arrow], width_means: str) -> str:
    """The graph as inline SVG with its legend, or, without Graphviz, as a table that says so."""
    import graphviz

    try:
        svg = _marked(_dot(boxes, arrows).pipe(format="svg", encoding="utf-8"), boxes, arrows)
    except graphviz.ExecutableNotFound:
        return _without_dot(arrows, width_means)
    key = legend(width_means, any(a.stale for a in arrows), any(b.reasons for b in boxes.values()))
    return f"<figure class='graph'>{svg}<figcaption>{key}</figcaption></figure>"


def legend(width_means: str, stale_arrows: bool, reasons: bool) -> str:
    parts = [f"<svg width='46' height='12'><line x1='0' y1='6' x2='46' y2='6' stroke='{ARROW}' stroke-width='1'/>"
             f"</svg> to <svg width='46' height='12'><line x1='0' y1='6' x2='46' y2='6' stroke='{ARROW}' "
             f"stroke-width='7'/></svg> an arrow's width, and the percentage at its end in the reading box: "
             f"{html.escape(width_means)} (0% to 100%)"]
    if stale_arrows:
        parts.append(f"<svg width='46' height='12'><line x1='0' y1='6' x2='46' y2='6' stroke='{STALE_ARROW}' "
                     "stroke-width='2' stroke-dasharray='5,3'/></svg> the reader was trained on another version "
                     "of this upstream")
    if reasons:
        parts.append("red text in a box: why it is stale or pending, the first reason (hover the box for all)")
    return "".join(f"<span style='display:block;margin:2px 0'>{part}</span>" for part in parts)


def _dot(boxes: dict[str, Box], arrows: list[Arrow]):
    import graphviz

    ids = {name: f"n{i}" for i, name in enumerate(boxes)}
    ports: dict[str, list[int]] = {}
    for i, arrow in enumerate(arrows):
        ports.setdefault(arrow.end, []).append(i)
    graph = graphviz.Digraph(graph_attr={"rankdir": "LR", "nodesep": "0.3", "ranksep": "1.3", "bgcolor": "transparent",
                                         "fontname": "Helvetica"},
                             node_attr={"shape": "plain", "fontname": "Helvetica", "fontsize": "13"},
                             edge_attr={"fontname": "Helvetica", "arrowsize": "0.7"})
    for name, box in boxes.items():
        rows = [f'<TR><TD ALIGN="LEFT"><B>{_h(box.lines[0])}</B></TD></TR>']
        rows += [f'<TR><TD ALIGN="LEFT">{_h(line)}</TD></TR>' for line in box.lines[1:]]
        if box.reasons:
            first = box.reasons[0] if len(box.reasons[0]) <= MAX_REASON else box.reasons[0][:MAX_REASON - 1] + "…"
            more = f" (+{len(box.reasons) - 1})" if len(box.reasons) > 1 else ""
            rows.append(f'<TR><TD ALIGN="LEFT"><FONT COLOR="#aa1111" POINT-SIZE="11">{_h(first + more)}</FONT></TD></TR>')
        rows += [f'<TR><TD ALIGN="LEFT" PORT="i{i}"><FONT POINT-SIZE="11" COLOR="{_label_colour(arrows[i])}">'
                 f'<B>{_h(arrows[i].label)}</B> ◂ {_h(arrows[i].ref)}</FONT></TD></TR>' for i in ports.get(name, [])]
        label = (f'<<TABLE BORDER="1" CELLBORDER="0" CELLSPACING="0" CELLPADDING="3" STYLE="ROUNDED" '
                 f'BGCOLOR="{box.fill}" COLOR="#555555">{"".join(rows)}</TABLE>>')
        extra = {"URL": box.href, "target": "_top"} if box.href else {}
        graph.node(name, label=label, id=ids[name], **extra)
    for i, arrow in enumerate(arrows):
        graph.edge(arrow.start, f"{arrow.end}:i{i}:w", id=f"e{i}", penwidth=f"{1 + 6 * max(0.0, min(1.0, arrow.weight)):.1f}",
                   color=STALE_ARROW if arrow.stale else ARROW, style="dashed" if arrow.stale else "solid")
    return graph


def _label_colour(arrow: Arrow) -> str:
    return STALE_ARROW if arrow.stale else "#2a4f9a"


def _marked(svg: str, boxes: dict[str, Box], arrows: list[Arrow]) -> str:
    """dot's SVG with the data- attributes and titles the pages promise, without its XML header."""
    ElementTree.register_namespace("", SVG_NS)
    ElementTree.register_namespace("xlink", XLINK_NS)
    root = ElementTree.fromstring(svg[svg.index("<svg"):])
    names = {f"n{i}": name for i, name in enumerate(boxes)}
    root.set("class", "graph")
    root.set("style", "max-width:100%;height:auto")  # a wide graph shrinks to the page, never past it
    for group in root.iter(f"{{{SVG_NS}}}g"):
        kind, ident = group.get("class"), group.get("id", "")
        title = group.find(f"{{{SVG_NS}}}title")
        if kind == "node" and ident in names:
            name = names[ident]
            group.set("data-node", name)
            if title is not None:
                title.text = "\n".join([name, *boxes[name].reasons])
        elif kind == "edge" and re.fullmatch(r"e\d+", ident):
            arrow = arrows[int(ident[1:])]
            group.set("data-source", arrow.ref)
            group.set("data-target", arrow.end)
            group.set("data-label", arrow.label)
            if title is not None:
                title.text = f"{arrow.ref} -> {arrow.end}: {arrow.label}"
    return ElementTree.tostring(root, encoding="unicode")


def _without_dot(arrows: list[Arrow], width_means: str) -> str:
    rows = "".join(f"<tr><td>{_h(a.ref)}</td><td>{_h(a.end)}</td><td>{_h(a.label)}</td></tr>" for a in arrows)
    return ("<p class='how'>Graphviz's <code>dot</code> is not installed on this machine, so the graph is listed "
            "here rather than drawn (install the <code>graphviz</code> system package, then write the page again)."
            f"</p><table><tr><th>input</th><th>read by</th><th>{_h(width_means)}</th></tr>{rows}</table>")


def _h(text: str) -> str:
    return html.escape(text, quote=True)
