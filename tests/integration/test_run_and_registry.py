"""End to end through the CLI on a temporary sqlite registry: train, register, verify."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from moe_pipeline.pipeline.loader import load_pipeline
from moe_pipeline.execute.view import View
from tests.conftest import cli


def client(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_run_registers_every_expert_with_record_and_alias(tiny: Path, registry_uri: str, capsys):
    assert cli("run", tiny) == 0
    out = capsys.readouterr().out
    for expert in ("has_loop", "is_even", "digit"):
        assert expert in out
        mv = client(registry_uri).get_model_version_by_alias(f"tiny.{expert}", "current")
        assert int(mv.version) == 1
        tags = mv.tags
        record = json.loads(tags["moe.record"])
        for key in ("spec", "spec_hash", "code_hash", "data_hash", "upstream", "train_seconds", "peak_memory_mb",
                    "sha256", "val_metric"):
            assert key in record, key
        assert record["spec"]["model"]["kind"] in ("cnn", "mlp")
        # the key fields as short tags of their own, for the MLflow UI's version list
        assert tags["moe.spec_hash"] == record["spec_hash"][:12] and tags["moe.data_hash"] == record["data_hash"][:12]
        assert tags["moe.val_accuracy"] == f"{record['val_metric']:.4f}"
        assert tags["moe.upstream"] == ("has_loop v1, is_even v1" if expert == "digit" else "-")
        sha = record["sha256"]
        assert {"weights.safetensors", "spec.json", "outputs/train.safetensors", "outputs/val.safetensors",
                "outputs/test.safetensors"} <= set(sha)
    digit = client(registry_uri).get_model_version_by_alias("tiny.digit", "current")
    assert set(json.loads(digit.tags["moe.record"])["upstream"]) == {"has_loop", "is_even"}
    run = client(registry_uri).get_run(digit.run_id)
    assert run.info.status == "FINISHED"
    assert "val_accuracy" in run.data.metrics and "grad_norm" in run.data.metrics
    assert run.data.params["train.lr"] == "0.01"
    history = client(registry_uri).get_metric_history(digit.run_id, "train_loss")
    assert len(history) == 3


def test_same_spec_and_seed_give_bitwise_identical_weights(tiny: Path, registry_uri: str):
    assert cli("run", tiny, "is_even") == 0
    assert cli("run", tiny, "is_even", "--force") == 0
    ws = View(load_pipeline(tiny), fast_reads=False)
    records = ws.snapshot()["is_even"].records
    assert set(records) == {1, 2}
    assert records[1].sha256["weights.safetensors"] == records[2].sha256["weights.safetensors"]
    assert records[1].sha256["outputs/val.safetensors"] == records[2].sha256["outputs/val.safetensors"]


def test_downstream_trains_from_stored_outputs_without_upstream_weights(tiny: Path, monkeypatch):
    assert cli("run", tiny) == 0
    import moe_pipeline.registry.artifacts as artifacts

    import safetensors.torch

    read = []
    load_file = safetensors.torch.load_file  # read_tensors' own reader, kept before it is forbidden below
    monkeypatch.setattr(artifacts, "read_tensors", lambda path: read.append(Path(path)) or load_file(str(path)))

    def forbidden(*args, **kwargs):
        raise AssertionError("a downstream expert must not load an upstream model")

    monkeypatch.setattr(View, "load_model", forbidden)
    monkeypatch.setattr(safetensors.torch, "load_file", lambda *a, **k: forbidden())  # any other path to weights
    assert cli("run", tiny, "digit", "--force") == 0
    assert read, "the upstream outputs were never read"
    assert all(p.name in ("train.safetensors", "val.safetensors", "test.safetensors") for p in read)
    assert {p.parents[2].name for p in read} != set()  # came from the upstream runs' artifact folders


def test_checksum_mismatch_is_a_clear_error(tiny: Path, registry_uri: str, capsys, tmp_path: Path):
    assert cli("run", tiny) == 0
    ws = View(load_pipeline(tiny), fast_reads=False)
    record = ws.record("has_loop")
    path = ws.artifact(record, "outputs/train.safetensors")
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    capsys.readouterr()
    # `run` would repair it (test_faults.py); reading the stored outputs without a plan must refuse them
    assert cli("inspect", tiny, "digit", "--methods", "metrics", "--out", tmp_path / "r") == 2
    err = capsys.readouterr().err
    assert "expert 'has_loop' v1: artifact 'outputs/train.safetensors' has sha256" in err
    assert "Traceback" not in err
    assert client(registry_uri).get_model_version_by_alias("tiny.digit", "current").version == 1


def test_failed_training_leaves_current_alias_untouched(tiny: Path, registry_uri: str, monkeypatch, capsys):
    assert cli("run", tiny, "is_even") == 0
    import moe_pipeline.training.train as train

    def broken(*args, **kwargs):
        raise RuntimeError("simulated crash in the middle of training")

    monkeypatch.setattr(train, "train_expert", broken)
    capsys.readouterr()
    assert cli("run", tiny, "is_even", "--force") == 2  # one message, never a traceback (issue 12)
    err = capsys.readouterr().err
    assert "tiny.yaml:" in err and "expert 'is_even'" in err and "RuntimeError: simulated crash" in err
    c = client(registry_uri)
    assert c.get_model_version_by_alias("tiny.is_even", "current").version == 1
    assert len(c.search_model_versions("name = 'tiny.is_even'")) == 1
    experiment = c.get_experiment_by_name("tiny")
    statuses = sorted(r.info.status for r in c.search_runs([experiment.experiment_id]))
    assert statuses == ["FAILED", "FINISHED"]


def test_memory_budget_accumulates_to_the_same_effective_batch(tiny: Path):
    import torch

    from moe_pipeline.training.train import train_expert

    ws = View(load_pipeline(tiny), fast_reads=False)
    data, _ = ws.expert_data("is_even")
    spec = ws.pipeline.experts["is_even"]
    resources = ws.pipeline.resources.model_copy(update={"max_memory_gb": 1.0})
    measured = []

    def measure(micro: int) -> float:  # pretend each sample costs 40 MiB of device memory
        measured.append(micro)
        return micro * 40 * 2**20

    small = train_expert(spec.model, spec.train, resources, data, seed=0, measure=measure)
    full = train_expert(spec.model, spec.train, resources, data, seed=0)
    assert measured == [128, 64, 32, 16]
    assert small.micro_batch == 16 and full.micro_batch == 128
    for a, b in zip(small.model.state_dict().values(), full.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_validate_exit_code_and_no_traceback():
    root = Path(__file__).resolve().parents[2]
    bad = root / "tests/invalid/unknown_expert_ref.yaml"
    proc = subprocess.run([sys.executable, "-m", "moe_pipeline", "validate", str(bad)],
                          capture_output=True, text=True, cwd=root)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"{bad}:9:")
    assert "Traceback" not in proc.stderr
    ok = subprocess.run([sys.executable, "-m", "moe_pipeline", "validate", "pipelines/digits.yaml"],
                        capture_output=True, text=True, cwd=root)
    assert ok.returncode == 0, ok.stderr


def test_cli_start_does_not_import_torch_or_mlflow():
    code = ("import sys; from moe_pipeline.cli.app import run_cli; run_cli(['validate', 'pipelines/digits.yaml']); "
            "print(sorted(m for m in ('torch', 'mlflow') if m in sys.modules))")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert proc.stdout.strip().endswith("[]"), proc.stdout + proc.stderr


def test_custom_code_next_to_the_pipeline_imports_without_pythonpath(tiny: Path, tmp_path: Path, registry_uri: str):
    """The target module sits beside the YAML; a fresh process started elsewhere finds it."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-m", "moe_pipeline", "run", str(tiny), "is_even", "--quiet"],
                          cwd=elsewhere, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr


def test_validate_resolves_every_code_reference_with_its_position(tmp_path: Path, capsys):
    (tmp_path / "helpers_for_validate.py").write_text("def other(label):\n    return label\n")
    (tmp_path / "broken_for_validate.py").write_text("def f(:\n")
    path = tmp_path / "p.yaml"
    path.write_text("""name: t
sources:
  s: {loader: "no_such_module_xyz:load", fields: [x, y]}
experts:
  a:
    inputs: [s.x]
    target: {from: s.y, fn: "helpers_for_validate:nothere"}
    model: {kind: custom, class: "broken_for_validate:Model"}
  b:
    inputs: [s.x]
    target: {from: s.y, fn: "helpers_for_validate:other"}
    model: {kind: mlp}
""")
    capsys.readouterr()
    assert cli("validate", path) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"{path}:3:7: sources.s.loader: cannot find the Python source of module 'no_such_module_xyz'")
    assert err[1] == (f"{path}:7:25: experts.a.target.fn: module 'helpers_for_validate' defines no 'nothere' "
                      "(referenced as 'helpers_for_validate:nothere')")
    assert err[2].startswith(f"{path}:8:27: experts.a.model.class: module 'broken_for_validate' (")
    assert "cannot be parsed at line 1" in err[2]
    assert len(err) == 3  # b's reference resolves
