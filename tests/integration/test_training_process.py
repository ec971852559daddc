"""`run`'s training process, with real processes: a `run` started fresh trains its experts in a
second process and registers the same bits as training in its own process would; errors there
read exactly as they do here; it dies with a killed `run`; it never loads mlflow.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import ROOT, cli
from tests.integration.test_faults import CUSTOM

# a target function that says which process built the expert's data, then computes is_even
WHO = '''
import os, time
from pathlib import Path


def is_even(label):
    Path(os.environ["MOE_TEST_WHO"]).write_text(str(os.getpid()))
    time.sleep(float(os.environ.get("MOE_TEST_SLEEP", "0")))
    return (label % 2 == 0).long()
'''


def fresh_run(tiny: Path, tmp_path: Path, registry_uri: str, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "moe_pipeline", "run", str(tiny), "--quiet", *args],
                            env={**os.environ, "MLFLOW_TRACKING_URI": registry_uri,
                                 "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]), **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def with_who(tiny: Path, tmp_path: Path) -> None:
    (tmp_path / "who.py").write_text(WHO)
    text, n = re.subn(r'fn: "[^"]+:is_even"', 'fn: "who:is_even"', tiny.read_text())
    assert n == 1
    tiny.write_text(text)


def current_files(registry_uri: str) -> dict[str, dict[str, str]]:
    """expert -> sha256 of each tensor file and the spec of its current version."""
    client = MlflowClient(registry_uri, registry_uri)
    out = {}
    for expert in ("has_loop", "is_even", "digit"):
        record = json.loads(client.get_model_version_by_alias(f"tiny.{expert}", "current").tags["moe.record"])
        out[expert] = {k: v for k, v in record["sha256"].items() if k.endswith(".safetensors") or k == "spec.json"}
    return out


def test_a_fresh_run_trains_in_a_second_process_and_registers_the_same_bits(tiny: Path, tmp_path: Path,
                                                                            registry_uri: str, monkeypatch):
    with_who(tiny, tmp_path)
    who = tmp_path / "who.txt"
    there = f"sqlite:///{tmp_path / 'there' / 'mlflow.db'}"
    proc = fresh_run(tiny, tmp_path, there, MOE_TEST_WHO=str(who))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    trained_by = int(who.read_text())
    assert trained_by != proc.pid  # is_even's data was built in the training process
    # the same pipeline trained in this process: with torch loaded already, `run` starts no training process
    import torch  # noqa: F401

    monkeypatch.setenv("MOE_TEST_WHO", str(who))
    assert cli("run", tiny, "--quiet") == 0
    assert int(who.read_text()) == os.getpid()
    assert current_files(there) == current_files(registry_uri)


def test_the_training_process_imports_what_run_would(tiny: Path, tmp_path: Path, registry_uri: str):
    """The target functions' module is only on the calling process's sys.path (as in a caller
    that added it), not on PYTHONPATH: the training process must find it too."""
    with_who(tiny, tmp_path)
    who = tmp_path / "who.txt"
    script = (f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n"
              "from moe_pipeline.cli.app import run_cli\n"
              f"sys.exit(run_cli(['run', {str(tiny)!r}, 'is_even', '--quiet']))\n")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "MLFLOW_TRACKING_URI": registry_uri, "MOE_TEST_WHO": str(who)})
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert int(who.read_text()) != proc.pid  # built in the training process, by the module on the caller's sys.path


@pytest.mark.parametrize("edit", [
    "{kind: custom, class: 'faulty:BadForward'}",  # the model's own exception, by its name
    "{kind: custom, class: 'faulty:Exploding'}",  # a TrainingError
])
def test_errors_in_the_training_process_read_exactly_as_in_process(tiny: Path, tmp_path: Path, registry_uri: str,
                                                                    edit: str, capsys):
    (tmp_path / "faulty.py").write_text(CUSTOM)
    text = tiny.read_text()
    start = text.index("  is_even:\n")
    tiny.write_text(text[:start] + text[start:].replace("model: {kind: mlp, hidden: [16]}", f"model: {edit}", 1))
    there = f"sqlite:///{tmp_path / 'there' / 'mlflow.db'}"
    proc = fresh_run(tiny, tmp_path, there, "is_even")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in err
    capsys.readouterr()
    import torch  # noqa: F401  (loaded here: this `run` trains in this process)

    assert cli("run", tiny, "is_even", "--quiet") == 2
    assert err == capsys.readouterr().err  # word for word, FILE:LINE:COL first
    client = MlflowClient(there, there)
    assert client.search_model_versions("name = 'tiny.is_even'") == []
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]


def test_the_training_process_dies_with_a_killed_run(tiny: Path, tmp_path: Path, registry_uri: str):
    with_who(tiny, tmp_path)
    who = tmp_path / "who.txt"
    proc = fresh_run(tiny, tmp_path, registry_uri, "is_even", MOE_TEST_WHO=str(who), MOE_TEST_SLEEP="120")
    deadline = time.monotonic() + 120
    while not who.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int(who.read_text())
    assert child != proc.pid
    proc.kill()  # SIGKILL: nothing in `run` unwinds
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.1)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; its parent (here: init) reaps it


# The training process on its own: one expert through the protocol, then the end of its input;
# as it ends it says whether anything loaded mlflow.
ALONE = """
import os, runpy, sys
end = os._exit  # how it ends, once its input has ended
def _exit(code):
    sys.stderr.write("\\nmlflow loaded: %s\\n" % ("mlflow" in sys.modules))
    sys.stderr.flush()
    end(code)
os._exit = _exit
sys.argv = ["trainer"]
runpy.run_module("moe_pipeline.execute.training_process", run_name="__main__")
"""


def test_the_training_process_speaks_json_lines_and_never_loads_mlflow(tiny: Path, tmp_path: Path):
    """It trains from the pipeline `run` sent it: the YAML file, overwritten before it starts, is never read."""
    from moe_pipeline.execute.training_contracts import TrainingJob, TrainingOpening
    from moe_pipeline.pipeline.loader import load_pipeline
    from moe_pipeline.state.fingerprint import fingerprint, training_seeds
    from moe_pipeline.data.store import DataStore

    loaded = load_pipeline(tiny)
    pipeline = loaded.pipeline
    spec = fingerprint(pipeline, "is_even", DataStore(pipeline).field_hash).spec
    job = TrainingJob("is_even", spec, *training_seeds(spec), 16)
    folder = tmp_path / "version"
    folder.mkdir()
    opening = TrainingOpening.of(loaded, ["is_even"])
    tiny.write_text("not: [a pipeline\n")
    requests = [{"open": opening.to_json()}, {"prepare": {"expert": "is_even", "upstream": {}}},
                {"train": {"job": job.__dict__, "folder": str(folder), "progress": True}}]
    proc = subprocess.run([sys.executable, "-c", ALONE, str(tiny)], input="".join(json.dumps(r) + "\n" for r in requests),
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    replies = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [next(iter(r)) for r in replies] == ["ready", "prepared", *["progress"] * 3, "trained"]
    assert [r["progress"][:2] for r in replies if "progress" in r] == [[1, 3], [2, 3], [3, 3]]
    trained = replies[-1]["trained"]
    assert trained["epochs_run"] == 3 and trained["task"] == "classification"
    assert {p.name for p in folder.rglob("*.safetensors")} >= {"weights.safetensors", "train.safetensors"}
    assert "mlflow loaded: False" in proc.stderr
