"""`report`: the overview page and its dependency table on a planted pipeline where one
upstream expert is useful to the downstream one and another is useless by construction."""
from __future__ import annotations

import html
import json
from pathlib import Path

from mlflow.tracking import MlflowClient

from tests.conftest import cli

STAGES = '''
def bit0(y):
    return y % 2


def bit1(y):
    return (y // 2) % 2


def bit2(y):
    return (y // 4) % 2


def low_bits(y):
    return y % 4
'''

PIPELINE = """
name: planted_deps
sources:
  p: {loader: synthetic.planted, n: 2400, d: 8, informative: [0, 1, 2], task: signs}
experts:
  bit0:
    inputs: [p.x]
    target: {from: p.y, fn: "overview_stages:bit0"}
    classes: [negative, positive]
    model: {kind: mlp, hidden: [32]}
    train: {epochs: 15, batch_size: 128, lr: 5.0e-3}
  bit1:
    inputs: [p.x]
    target: {from: p.y, fn: "overview_stages:bit1"}
    model: {kind: mlp, hidden: [32]}
    train: {epochs: 15, batch_size: 128, lr: 5.0e-3}
  bit2:
    description: the sign of x2, which `final` does not need
    inputs: [p.x]
    target: {from: p.y, fn: "overview_stages:bit2"}
    model: {kind: mlp, hidden: [32]}
    train: {epochs: 15, batch_size: 128, lr: 5.0e-3}
  final:
    description: the signs of x0 and x1 (4 classes), from the three experts' probabilities
    inputs: [bit0.probs, bit1.probs, bit2.probs]
    target: {from: p.y, fn: "overview_stages:low_bits"}
    model: {kind: mlp, hidden: [16]}
    train: {epochs: 40, batch_size: 128, lr: 1.0e-2, patience: 10}
"""


def test_overview_recommends_dropping_the_useless_input_and_keeping_the_useful_ones(tmp_path: Path,
                                                                                 registry_uri: str, capsys):
    (tmp_path / "overview_stages.py").write_text(STAGES)
    path = tmp_path / "deps.yaml"
    path.write_text(PIPELINE)
    assert cli("run", path) == 0
    client = MlflowClient(registry_uri, registry_uri)
    versions_before = sorted((mv.name, mv.version) for mv in client.search_model_versions("name LIKE 'planted_deps.%'"))

    out = tmp_path / "overview"
    # --weak 0.9: every input of `final` is ablated, the useful ones too, so both verdicts are measured
    assert cli("report", path, "--out", out, "--weak", "0.9") == 0
    summary = json.loads((out / "overview.json").read_text())
    edges = {(e["ref"], e["expert"]): e for e in summary["edges"]}
    useless = edges[("bit2.probs", "final")]
    assert useless["recommendation"] == "drop" and abs(useless["metric_change"]) <= 0.01
    for ref in ("bit0.probs", "bit1.probs"):
        useful = edges[(ref, "final")]
        assert useful["recommendation"] == "keep" and useful["metric_change"] < -0.1, useful
        assert useful["share"] > useless["share"]
    shares = [edges[(f"bit{i}.probs", "final")]["share"] for i in range(3)]
    assert abs(sum(shares) - 1.0) < 1e-9
    # single-input experts are never ablated; exposure counts the reader and everything below it
    assert edges[("p.x", "bit0")]["why"] == "its only input" and edges[("p.x", "bit0")]["metric_without"] is None
    assert edges[("p.x", "bit0")]["exposed"] == ["bit0", "final"]
    assert edges[("p.x", "bit0")]["exposure_seconds"] > edges[("bit0.probs", "final")]["exposure_seconds"] > 0

    page = (out / "overview.html").read_text()
    assert "<svg" in page and "Dependency table" in page
    # diagnose's oracle gains beside the edges they belong to, and its fix-first sentence on the page
    capsys.readouterr()
    assert cli("diagnose", path, "final", "--json") == 0
    diagnosis = json.loads(capsys.readouterr().out)["experts"][0]
    for finding in diagnosis["upstream"]:
        assert edges[(finding["ref"], "final")]["oracle_gain"] == finding["gain"]
    assert edges[("p.x", "bit0")]["oracle_gain"] is None  # a source field has no oracle
    first = diagnosis["fix_first"][0]
    (sentence,) = summary["fix_first"]
    assert sentence.startswith(f"To improve final (test accuracy {diagnosis['metric']:.4f}), fix {first} first: ")
    assert html.escape(sentence) in page
    for expert in ("bit0", "bit1", "bit2", "final"):
        assert f'href="experts/{expert}/report.html"' in page
        assert (out / "experts" / expert / "report.html").exists()
    assert summary["statuses"] == {"bit0": "fresh", "bit1": "fresh", "bit2": "fresh", "final": "fresh"}
    assert "negative" in (out / "experts" / "bit0" / "report.html").read_text()  # YAML class names on the page

    # ablations train in memory: the registry holds the same versions; the page is logged to a run of its own
    assert sorted((mv.name, mv.version) for mv in client.search_model_versions("name LIKE 'planted_deps.%'")) \
        == versions_before
    runs = client.search_runs([client.get_experiment_by_name("planted_deps").experiment_id],
                              filter_string="tags.`moe.kind` = 'overview'")
    assert len(runs) == 1
    assert {a.path for a in client.list_artifacts(runs[0].info.run_id, "overview")} == \
        {"overview/overview.html", "overview/overview.json"}
