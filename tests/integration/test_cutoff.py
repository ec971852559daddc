"""Behavioural early cutoff, end to end on a real registry.

u (linear regression on x) -> d (classifies from u's value) -> e (reads d's probs).
u's task is well determined, so a new seed barely changes its outputs.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from moe_pipeline.state.cutoff import measure
from moe_pipeline.pipeline.loader import load_pipeline
from moe_pipeline.execute.view import View
from tests.conftest import cli, run_table, unique_module

MODULE = '''
import torch

OFFSET = 0.0


def make(n: int = 1000):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, generator=g)
    y = x @ torch.tensor([1.0, -0.5, 0.25, 0.0, 0.0])
    return {"x": x, "y": y, "cls": (y > 0).long()}


def shifted(y):
    return y + OFFSET
'''

PIPELINE = """
name: cut
sources:
  s: {loader: "MOD:make", fields: [x, y, cls], split: {val: 0.3, test: 0.1}}
experts:
  u:
    inputs: [s.x]
    target: {from: s.y, fn: "MOD:shifted"}
    model: {kind: linear}
    train: {epochs: 300, batch_size: 1000, lr: 0.05, patience: null}
  d:
    inputs: [u.probs]
    target: s.cls
    model: {kind: linear}
    train: {epochs: 300, batch_size: 1000, lr: 0.1, patience: null}
    cutoff: CUTOFF
  e:
    inputs: [d.probs]
    target: s.cls
    model: {kind: linear}
    train: {epochs: 100, batch_size: 1000, lr: 0.1, patience: null}
"""

LOOSE = "{agreement: 0.965, max_abs: 1.0, mean_abs: 1.0, metric_drop: 1.0, probe_size: 1000}"


@pytest.fixture
def cut(tmp_path: Path, monkeypatch, registry_uri: str, request):
    module = unique_module("cut", request, tmp_path, monkeypatch, MODULE)
    path = tmp_path / "cut.yaml"

    def write(cutoff: str = LOOSE, offset: float | None = None, extra: str = "") -> Path:
        path.write_text(PIPELINE.replace("MOD", module).replace("CUTOFF", cutoff) + extra)
        if offset is not None:
            file = tmp_path / f"{module}.py"
            file.write_text(re.sub(r"OFFSET = .*", f"OFFSET = {offset}", file.read_text()))
            sys.modules.pop(module, None)  # the next run imports the edited module, as a new process would
        return path

    return write


def outcomes(capsys) -> dict[str, tuple[str, str]]:
    return run_table(capsys.readouterr().out)


def test_behaviour_preserving_change_keeps_downstream(cut, registry_uri, capsys):
    path = cut()
    assert cli("run", path) == 0
    capsys.readouterr()
    text = path.read_text().replace("lr: 0.05, patience: null}", "lr: 0.05, patience: null, seed: 7}")
    path.write_text(text)
    assert cli("run", path, "--dry-run") == 0
    dry = capsys.readouterr().out
    assert "retrain or keep, decided after u trains" in dry
    assert cli("run", path) == 0
    result = outcomes(capsys)
    assert result["u"][0] == "trained"
    assert result["d"][0] == "kept" and "kept (validated against u v2: max delta" in result["d"][1]
    assert result["e"][0] == "kept"  # d's refreshed outputs were checked one level further down
    client = MlflowClient(tracking_uri=registry_uri, registry_uri=registry_uri)
    d = client.get_model_version_by_alias("cut.d", "current")
    assert int(d.version) == 1
    validated = json.loads(d.tags["moe.validated_against"])
    assert validated["upstream"]["u"]["version"] == 2 and validated["deltas"]["agreement"] >= 0.965
    assert "moe.needs_retrain" not in d.tags
    assert cli("status", path, "--json") == 0
    experts = {e["name"]: e for e in json.loads(capsys.readouterr().out)["experts"]}
    assert {e["status"] for e in experts.values()} == {"fresh"}
    assert experts["d"]["validated"]["upstream"] == {"u": 2}
    assert set(experts["d"]["validated"]["deltas"]) == {"max_abs", "mean_abs", "agreement", "metric_drop"}


def test_behaviour_changing_change_cascades(cut, capsys, registry_uri):
    path = cut()
    assert cli("run", path) == 0
    capsys.readouterr()
    cut(offset=3.0)  # u now learns y + 3: d's decisions on u's value all move
    assert cli("run", path) == 0
    result = outcomes(capsys)
    assert result["u"][0] == "trained"
    assert result["d"][0] == "retrained" and re.search(r"agreement \d+\.\d% < 96\.5%", result["d"][1])
    client = MlflowClient(registry_uri, registry_uri)
    new = client.get_model_version_by_alias("cut.d", "current")  # the reason is stored on the new version
    assert int(new.version) == 2 and re.search(r"^cutoff check failed: .*agreement \d+\.\d% < 96\.5%",
                                            new.tags["moe.retrained_because"])


def test_drifts_are_compared_with_the_training_reference_not_chained(cut, capsys):
    path = cut()
    assert cli("run", path) == 0
    actions = []
    for offset in (0.05, 0.1, 0.2):
        cut(offset=offset)
        capsys.readouterr()
        assert cli("run", path) == 0
        actions.append(outcomes(capsys)["d"][0])
    assert actions == ["kept", "kept", "retrained"]
    # The last drift alone is small: d v1 on u v4's outputs vs d v1 on u v3's outputs agrees within tolerance.
    ws = View(load_pipeline(path), fast_reads=False)
    snap = ws.snapshot()
    model, _ = ws.load_model(snap["d"].records[1])
    val = {v: ws.load_outputs(snap["u"].records[v])["val"]["probs"] for v in (3, 4)}
    with torch.no_grad():
        p3, p4 = (model(val[v]).softmax(dim=1) for v in (3, 4))
    assert measure(p3, p4, "classification", 0, 0).agreement >= 0.965


def test_cutoff_off_always_retrains(cut, capsys):
    path = cut(cutoff="'off'")
    assert cli("run", path) == 0
    capsys.readouterr()
    path.write_text(path.read_text().replace("lr: 0.05, patience: null}", "lr: 0.05, patience: null, seed: 7}"))
    assert cli("run", path) == 0
    result = outcomes(capsys)
    assert result["d"][0] == "trained"
