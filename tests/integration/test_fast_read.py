"""The read-only commands' fast path: an sqlite snapshot without mlflow, data hashes without
torch. It must return exactly what the MLflow client returns, and load neither library."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from moe_pipeline.pipeline.loader import load_pipeline
from moe_pipeline.registry.reader import RegistryReader
from tests.conftest import ROOT, cli


def test_fast_snapshot_equals_the_mlflow_clients_on_a_real_registry(tiny: Path, registry_uri: str):
    text = tiny.read_text().replace('cutoff: "off"', "cutoff: {mean_abs: 1.0, agreement: 0.0, metric_drop: 1.0}")
    tiny.write_text(text)
    assert cli("run", tiny) == 0
    assert cli("run", tiny, "is_even", "--force") == 0
    assert cli("run", tiny) == 0  # digit: checked and kept (refreshed outputs, validation)
    assert cli("run", tiny, "has_loop", "--force") == 0
    client = MlflowClient(registry_uri, registry_uri)
    client.delete_model_version("tiny.has_loop", "1")  # a deleted version must not appear
    tiny.write_text(text.replace("lr: 1.0e-2", "lr: 5.0e-3", 1))
    assert cli("status", tiny, "--record") == 0  # needs_retrain and model status tags
    reader = RegistryReader(registry_uri, load_pipeline(tiny).pipeline.name)
    slow, fast = reader.snapshot(), reader.snapshot(fast=True)
    assert reader.requests == 3  # the client path ran; the fast one made no request
    assert set(fast) == {"has_loop", "is_even", "digit"}
    assert fast == slow
    assert sorted(fast["has_loop"].records) == [2] and fast["is_even"].current == 2
    assert fast["digit"].records[1].validated is not None and fast["digit"].model_tags["moe.status"]


def test_status_loads_neither_torch_nor_mlflow_nor_sklearn(tiny: Path, registry_uri: str, tmp_path: Path):
    assert cli("run", tiny) == 0
    code = ("import sys, json; from moe_pipeline.cli.app import run_cli; "
            f"code = run_cli(['status', {str(tiny)!r}, '--json']); "
            "print(json.dumps([code, [m for m in ('torch', 'mlflow', 'sklearn') if m in sys.modules]]))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    status_json, last = proc.stdout.rsplit("\n", 2)[0], proc.stdout.strip().splitlines()[-1]
    assert json.loads(last) == [0, []]
    assert '"status": "fresh"' in status_json


def test_validate_loads_no_networkx_unless_there_is_a_cycle(tmp_path: Path):
    """The standard library finds whether there is a cycle; networkx only lists the cycles."""
    good = ROOT / "pipelines" / "digits.yaml"
    cyclic = tmp_path / "cycle.yaml"
    cyclic.write_text(good.read_text().replace("inputs: [digits.image]\n    target: {from: digits.label, fn: "
                                               '"stages.digits:has_loop"}',
                                               "inputs: [digit.probs]\n    target: {from: digits.label, fn: "
                                               '"stages.digits:has_loop"}', 1))
    loaded = []
    for path in (good, cyclic):
        code = ("import sys, json; from moe_pipeline.cli.app import run_cli; "
                f"code = run_cli(['validate', {str(path)!r}]); print(json.dumps([code, 'networkx' in sys.modules]))")
        proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                              capture_output=True, text=True, check=True)
        loaded.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        if path == cyclic:
            assert "cycle: digit -> has_loop -> digit" in proc.stderr + proc.stdout
    assert loaded == [[0, False], [2, True]]
