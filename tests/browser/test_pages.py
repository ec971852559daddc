"""The pages as a person sees them: Debian's chromium (through its chromedriver, headless) opens
the overview, an expert's report, the explain page and the diagnose page of a small trained
pipeline whose first expert's `lr` was changed afterwards, and the MLflow UI's model list of its
registry.

On every page: nothing wider than the window, every image loaded, no console error. On the
graphs: every arrow ends at its own point, its share label sits in the reading expert's box
(nearer that box than any other), and the stale expert shows its reason.
"""
from __future__ import annotations

import math
import re

import pytest

WIDTH = 1280  # a laptop's window


def _overflowing(driver) -> list[str]:
    """Elements whose box reaches past the window's right edge (a horizontal scroll bar)."""
    return driver.execute_script("""
        const w = document.documentElement.clientWidth;
        return [...document.body.querySelectorAll('*')]
            .filter(e => e.getBoundingClientRect().right > w + 1 && !e.closest('title'))
            .map(e => e.tagName + '.' + (e.getAttribute('class') || '') + ' right=' + e.getBoundingClientRect().right)
            .slice(0, 5);""")


def _broken_images(driver) -> list[str]:
    return driver.execute_script("""
        return [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src);""")


def _console_errors(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _looks_whole(driver, url: str) -> None:
    driver.get(url)
    assert driver.execute_script("return document.readyState") == "complete"
    assert _overflowing(driver) == [], url
    assert _broken_images(driver) == [], url
    assert _console_errors(driver) == [], url


def _graph(driver) -> tuple[dict, list[dict]]:
    """Each node's box and text, each edge's ends, label and where its line ends, as the browser lays them out."""
    return driver.execute_script("""
        const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
        const nodes = {};
        for (const g of document.querySelectorAll('svg.graph g.node')) {
            nodes[g.dataset.node] = {box: box(g), title: g.querySelector('title').textContent,
                texts: [...g.querySelectorAll('text')].map(t => ({text: t.textContent, box: box(t)}))};
        }
        const edges = [...document.querySelectorAll('svg.graph g.edge')].map(g => ({
            source: g.dataset.source, target: g.dataset.target, label: g.dataset.label,
            head: box(g.querySelector('polygon'))}));
        return [nodes, edges];""")


def _distance(point, box) -> float:
    x, y = point
    dx = max(box[0] - x, 0, x - box[2])
    dy = max(box[1] - y, 0, y - box[3])
    return math.hypot(dx, dy)


def _centre(box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _check_arrows(nodes: dict, edges: list[dict]) -> None:
    assert edges, "no arrows drawn"
    heads = {}
    for edge in edges:
        reader = nodes[edge["target"]]
        # the label: the row of the reader's box that names this input, starting with the share
        rows = [t for t in reader["texts"] if t["text"].strip().startswith(edge["label"])
                and any(edge["source"] in u["text"] for u in reader["texts"] if abs(u["box"][1] - t["box"][1]) < 4)]
        assert rows, f"no label {edge['label']!r} for {edge['source']} in {edge['target']}'s box"
        label = _centre(rows[0]["box"])
        nearest = min(nodes, key=lambda name: _distance(label, nodes[name]["box"]))
        assert nearest == edge["target"], (edge, nearest)
        # the arrow ends at that row: its head is beside the label, not at another input's row
        head = _centre(edge["head"])
        assert abs(head[1] - label[1]) < 9, (edge, head, label)
        heads.setdefault(edge["target"], []).append(head)
    for target, points in heads.items():  # no two arrowheads meet
        for i, a in enumerate(points):
            for b in points[i + 1:]:
                assert math.dist(a, b) > 8, (target, a, b)


def test_the_overview_draws_each_share_at_its_own_arrow_and_says_why_an_expert_is_stale(browser, pages):
    _looks_whole(browser, pages["overview"])
    nodes, edges = _graph(browser)
    assert set(nodes) == {"digits.image", "has_loop", "is_even", "digit"}
    assert {(e["source"], e["target"]) for e in edges} == {
        ("digits.image", "has_loop"), ("digits.image", "is_even"), ("has_loop.probs", "digit"),
        ("is_even.embedding", "digit")}
    _check_arrows(nodes, edges)
    reason = "SPEC train.lr: 0.01 -> 0.02"
    assert any(t["text"].startswith(reason) for t in nodes["has_loop"]["texts"]), nodes["has_loop"]["texts"]
    assert reason in nodes["has_loop"]["title"]
    assert "UPSTREAM waits for has_loop" in nodes["digit"]["title"]
    legend = browser.find_element("css selector", "figure.graph figcaption").text
    assert "arrow's width" in legend and "share of the reader's AGOP trace" in legend


def test_an_expert_report_shows_whole(browser, pages):
    _looks_whole(browser, pages["expert"])
    assert browser.execute_script("return document.images.length") >= 3


def test_the_explain_page_draws_the_same_graph(browser, pages):
    _looks_whole(browser, pages["explain"])
    nodes, edges = _graph(browser)
    assert {"digits.image", "has_loop", "is_even", "digit"} <= set(nodes)
    _check_arrows(nodes, edges)


def test_the_diagnose_page_shows_whole(browser, pages):
    _looks_whole(browser, pages["diagnose"])
    assert browser.execute_script("return document.images.length") == 2  # the two confusion matrices


def test_the_mlflow_model_list_names_every_expert(browser, pages):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(pages["mlflow"] + "/#/models")
    WebDriverWait(browser, 30).until(lambda d: "browser.digit" in d.find_element("tag name", "body").text)
    text = browser.find_element("tag name", "body").text
    assert all(f"browser.{name}" in text for name in ("has_loop", "is_even", "digit"))
    browser.get(pages["mlflow"] + "/#/models/browser.has_loop")  # its version list says the version is stale
    WebDriverWait(browser, 30).until(lambda d: "moe.state" in d.find_element("tag name", "body").text)
    row = browser.find_element("tag name", "body").text
    at = row.index("moe.state")
    assert re.match(r"moe\.state\s*:?\s*stale", row[at:]), row[at - 200:at + 200]
    assert "inspect report" in row  # `report` inspected it: the description links the page


@pytest.fixture(autouse=True)
def _fresh_log(browser):
    browser.get_log("browser")  # what an earlier page logged is not this page's
