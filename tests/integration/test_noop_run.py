"""A `run` with nothing to train reads as `status` does: no mlflow, no torch, no write. Where
something is left to write (a stale mark from another branch, a killed run's debris, a
damaged artifact) it takes the write path as before."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, cli, store_bytes

PROBE = """
import sys
from moe_pipeline.cli.app import run_cli
code = run_cli(sys.argv[1:])
print(f"exit {code}; mlflow {'mlflow' in sys.modules}; torch {'torch' in sys.modules}", file=sys.stderr)
"""


def _run_in_fresh_process(pipeline: Path) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(pipeline.parent), str(ROOT)])}
    done = subprocess.run([sys.executable, "-c", PROBE, "run", str(pipeline)], env=env, capture_output=True,
                          text=True, timeout=300)
    return done.stderr + done.stdout


def test_a_run_with_nothing_to_do_imports_neither_mlflow_nor_torch_and_writes_nothing(tiny: Path, registry_uri: str):
    assert cli("run", tiny, "--quiet") == 0
    before = store_bytes(registry_uri)
    printed = _run_in_fresh_process(tiny)
    assert "exit 0; mlflow False; torch False" in printed, printed
    assert "nothing to do: every expert is fresh" in printed
    assert store_bytes(registry_uri) == before


def test_a_stale_mark_written_from_another_branch_is_put_right_by_the_next_run(tiny: Path, registry_uri: str,
                                                                            capsys):
    from mlflow.tracking import MlflowClient

    assert cli("run", tiny, "--quiet") == 0
    branch = tiny.with_name("branch.yaml")  # the same pipeline on another branch: has_loop's lr differs
    branch.write_text(tiny.read_text().replace("lr: 1.0e-2", "lr: 5.0e-3", 1))
    assert cli("status", branch, "--record") == 0
    client = MlflowClient(tracking_uri=registry_uri, registry_uri=registry_uri)
    assert client.get_registered_model("tiny.has_loop").tags["moe.status"].startswith("v1 stale")
    capsys.readouterr()
    assert cli("run", tiny) == 0  # nothing to train here, but tags to write: the write path
    assert "nothing to do" in capsys.readouterr().out
    assert client.get_registered_model("tiny.has_loop").tags["moe.status"] == "v1 fresh"
    assert "moe.needs_retrain" not in client.get_model_version("tiny.has_loop", "1").tags


def test_a_killed_runs_debris_is_recovered_by_a_run_with_nothing_to_train(tiny: Path, registry_uri: str):
    from mlflow.tracking import MlflowClient

    assert cli("run", tiny, "--quiet") == 0
    client = MlflowClient(tracking_uri=registry_uri, registry_uri=registry_uri)
    experiment = client.get_experiment_by_name("tiny").experiment_id
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that is gone
    run = client.create_run(experiment, tags={"moe.host": socket.gethostname(), "moe.pid": str(dead.pid)})
    from moe_pipeline.execute.view import View
    from moe_pipeline.pipeline.loader import load_pipeline

    view = View(load_pipeline(tiny))
    assert view.registry.left_debris() is True and not view.settled(view.statuses())
    assert cli("run", tiny, "--quiet") == 0
    assert client.get_run(run.info.run_id).info.status == "FAILED"
    assert View(load_pipeline(tiny)).registry.left_debris() is False
