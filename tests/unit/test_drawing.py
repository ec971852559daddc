"""The graph drawing (pipeline/drawing.py) through Graphviz's real `dot`: the marks the pages
promise (nodes, edges, reasons in titles, one port per input), and the table it writes where
`dot` is not installed."""
from __future__ import annotations

from xml.etree import ElementTree

import pytest

from moe_pipeline.pipeline.drawing import SVG_NS, Arrow, Box, graph_html

BOXES = {"digits.image": Box(["digits.image", "source field"]),
         "has_loop": Box(["has_loop", "v2 · stale"], reasons=["SPEC train.lr: 0.003 -> 0.002", "DATA digits.image changed"]),
         "digit": Box(["digit", "v1 · pending"], href="experts/digit/report.html")}
ARROWS = [Arrow("digits.image", "has_loop", "digits.image", "100%", 1.0),
          Arrow("has_loop", "digit", "has_loop.probs", "16%", 0.16),
          Arrow("has_loop", "digit", "has_loop.embedding", "84%", 0.84, stale=True)]


def _svg() -> ElementTree.Element:
    page = graph_html(BOXES, ARROWS, "share of the AGOP trace")
    return ElementTree.fromstring(page[page.index("<svg"):page.index("</svg>") + 6])


def test_every_node_and_edge_is_marked_with_what_it_is():
    root = _svg()
    groups = list(root.iter(f"{{{SVG_NS}}}g"))
    nodes = {g.get("data-node"): g for g in groups if g.get("class") == "node"}
    edges = [(g.get("data-source"), g.get("data-target"), g.get("data-label")) for g in groups if g.get("class") == "edge"]
    assert set(nodes) == set(BOXES)
    assert edges == [("digits.image", "has_loop", "100%"), ("has_loop.probs", "digit", "16%"),
                     ("has_loop.embedding", "digit", "84%")]
    title = nodes["has_loop"].find(f"{{{SVG_NS}}}title").text
    assert title.splitlines() == ["has_loop", "SPEC train.lr: 0.003 -> 0.002", "DATA digits.image changed"]
    texts = ["".join(t.itertext()) for t in nodes["has_loop"].iter(f"{{{SVG_NS}}}text")]
    assert "SPEC train.lr: 0.003 -> 0.002 (+1)" in texts  # the first reason shown, the count of the others
    rows = {"".join(t.itertext()).strip(): t.get("y") for t in nodes["digit"].iter(f"{{{SVG_NS}}}text")}
    assert rows["16%"] == rows["◂ has_loop.probs"] != rows["84%"] == rows["◂ has_loop.embedding"]  # share at its row


def test_a_stale_arrow_is_dashed_and_the_legend_says_what_width_and_dashes_mean():
    page = graph_html(BOXES, ARROWS, "share of the AGOP trace")
    stale = [g for g in _svg().iter(f"{{{SVG_NS}}}g") if g.get("data-source") == "has_loop.embedding"][0]
    assert stale.find(f"{{{SVG_NS}}}path").get("stroke-dasharray")
    assert "share of the AGOP trace" in page and "trained on another version of this upstream" in page


def test_without_dot_the_arrows_are_listed_and_the_page_says_why(monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` on it
    page = graph_html(BOXES, ARROWS, "share")
    assert "<svg" not in page and "not installed" in page
    assert page.count("<tr>") == 1 + len(ARROWS) and "<td>has_loop.embedding</td><td>digit</td><td>84%</td>" in page
