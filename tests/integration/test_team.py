"""Team mode: a real `mlflow server` on a real PostgreSQL (both started by the tests, on
127.0.0.1), reached over HTTP: the staleness scenario with the cutoff, inspection, and
concurrent runs that train each expert once. The server is shared by the session, so each
test uses a pipeline name of its own.
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import cli
from tests.integration.test_concurrency import concurrent_runs_train_each_expert_once, slower
from tests.integration.test_cutoff import LOOSE, MODULE, PIPELINE, outcomes


@pytest.fixture
def on_server(team_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", team_server)
    return team_server


def test_lr_change_on_the_server_retrains_exactly_the_right_experts_and_the_cutoff_keeps_the_rest(
        on_server: str, tmp_path: Path, monkeypatch, capsys):
    (tmp_path / "team_cut.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "cut.yaml"
    path.write_text(PIPELINE.replace("MOD", "team_cut").replace("CUTOFF", LOOSE).replace("name: cut", "name: team_cut"))
    assert cli("run", path) == 0
    assert {e: a for e, (a, _) in outcomes(capsys).items()} == {"u": "trained", "d": "trained", "e": "trained"}

    path.write_text(path.read_text().replace("lr: 0.05,", "lr: 0.04,"))
    assert cli("status", path, "--json") == 0
    status = {e["name"]: e for e in json.loads(capsys.readouterr().out)["experts"]}
    assert status["u"]["reasons"] == [{"kind": "SPEC", "detail": "train.lr: 0.05 -> 0.04"}]
    assert status["d"]["status"] == "pending" and status["e"]["status"] == "pending"
    assert cli("run", path) == 0
    result = outcomes(capsys)
    assert result["u"][0] == "trained"
    assert result["d"][0] == "kept" and result["e"][0] == "kept"  # behaviour unchanged: the cutoff keeps them
    client = MlflowClient(on_server, on_server)
    assert [int(client.get_model_version_by_alias(f"team_cut.{e}", "current").version) for e in "ude"] == [2, 1, 1]
    assert cli("status", path, "--check") == 0
    capsys.readouterr()

    assert cli("inspect", path, "d", "--methods", "metrics", "--out", tmp_path / "report") == 0
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["version"] == 1 and summary["metrics"]["test_accuracy"] > 0.9


@pytest.mark.parametrize("n", [2, 4])
def test_concurrent_runs_on_the_server_train_each_expert_once(tiny: Path, tmp_path: Path, team_server: str, n: int,
                                                              capsys):
    name = f"team_tiny_{n}"
    tiny.write_text(tiny.read_text().replace("name: tiny", f"name: {name}"))
    concurrent_runs_train_each_expert_once(slower(tiny, 40), tmp_path, team_server, n, capsys, name=name)
