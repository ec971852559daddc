"""Staleness scenarios on a real sqlite registry, driven through the CLI."""
from __future__ import annotations

import json
import re
from pathlib import Path

from mlflow.tracking import MlflowClient

from moe_pipeline.pipeline.loader import load_pipeline
from moe_pipeline.state.record import NEEDS_RETRAIN
from moe_pipeline.execute.view import View
from tests.conftest import cli, run_table, status_entries, store_bytes


status_of = status_entries


def assert_tags_agree_with_status(path: Path, registry_uri: str, capsys) -> None:
    """After `status --record`, the moe.needs_retrain tag of every current version says exactly what status says."""
    experts = status_of(path, capsys, "--record")
    client = MlflowClient(tracking_uri=registry_uri, registry_uri=registry_uri)
    for name, entry in experts.items():
        if entry["version"] is None:
            continue
        tag = client.get_model_version(f"tiny.{name}", str(entry["version"])).tags.get(NEEDS_RETRAIN)
        if entry["status"] == "fresh":
            assert tag is None, (name, tag)
        else:
            assert tag is not None and tag.startswith(entry["status"]), (name, tag, entry)
            assert re.search(r" \(pipeline state [0-9a-f]{12}\)$", tag), tag  # which file state it describes
            for reason in entry["reasons"]:
                assert f"{reason['kind']} {reason['detail']}" in tag


def trained(capsys) -> list[str]:
    return [name for name, (action, _) in run_table(capsys.readouterr().out).items() if action == "trained"]


def test_spec_change_retrains_exactly_the_stale_and_pending(tiny: Path, registry_uri: str, capsys):
    assert cli("run", tiny) == 0
    assert set(e["status"] for e in status_of(tiny, capsys).values()) == {"fresh"}
    text = tiny.read_text()
    tiny.write_text(text.replace("model: {kind: cnn, channels: [4], hidden: 16}\n    train: {epochs: 3, batch_size: 128, lr: 1.0e-2",
                                 "model: {kind: cnn, channels: [4], hidden: 16}\n    train: {epochs: 3, batch_size: 128, lr: 3.0e-3"))
    experts = status_of(tiny, capsys)
    assert experts["has_loop"]["status"] == "stale"
    assert experts["has_loop"]["reasons"] == [{"kind": "SPEC", "detail": "train.lr: 0.01 -> 0.003"}]
    assert experts["is_even"]["status"] == "fresh"
    assert experts["digit"]["status"] == "pending"
    assert "waits for has_loop" in experts["digit"]["reasons"][0]["detail"]
    assert_tags_agree_with_status(tiny, registry_uri, capsys)
    assert cli("status", tiny, "--check") == 1

    capsys.readouterr()
    assert cli("run", tiny, "--dry-run") == 0
    dry = capsys.readouterr().out
    assert "has_loop" in dry and "digit" in dry and "is_even" not in dry
    assert status_of(tiny, capsys)["has_loop"]["version"] == 1  # dry run changed nothing

    capsys.readouterr()
    assert cli("run", tiny) == 0
    assert trained(capsys) == ["has_loop", "digit"]
    experts = status_of(tiny, capsys)
    assert {n: (e["status"], e["version"]) for n, e in experts.items()} == {
        "has_loop": ("fresh", 2), "is_even": ("fresh", 1), "digit": ("fresh", 2)}
    assert_tags_agree_with_status(tiny, registry_uri, capsys)
    assert cli("status", tiny, "--check") == 0


def test_comment_and_formatting_edits_change_nothing_but_a_body_edit_does(tiny: Path, registry_uri: str, capsys):
    assert cli("run", tiny) == 0
    module = next(tiny.parent.glob("tiny_targets_*.py"))
    source = module.read_text()
    module.write_text("# a new comment\n" + source.replace("def is_even(label):", "def is_even( label ):  # even?")
                      .replace("return (label % 2 == 0).long()", '"""New docstring."""\n    return (label  %  2 == 0).long()'))
    assert {e["status"] for e in status_of(tiny, capsys).values()} == {"fresh"}
    module.write_text(source.replace("return (label % 2 == 0).long()", "return (label % 2 == 1).long()"))
    experts = status_of(tiny, capsys)
    assert experts["is_even"]["status"] == "stale"
    assert experts["is_even"]["reasons"] == [{"kind": "CODE", "detail": f"{module.stem}:is_even changed"}]
    assert experts["has_loop"]["status"] == "fresh"
    assert experts["digit"]["status"] == "pending"
    assert_tags_agree_with_status(tiny, registry_uri, capsys)


def test_changed_data_is_a_data_reason(tmp_path: Path, registry_uri: str, capsys):
    path = tmp_path / "planted.yaml"
    text = """
name: tiny
sources:
  p: {loader: synthetic.planted, n: 400, d: 6, informative: [0, 1], seed: 1}
experts:
  quadrant:
    inputs: [p.x]
    target: p.y
    model: {kind: mlp, hidden: [8]}
    train: {epochs: 2}
"""
    path.write_text(text)
    assert cli("run", path) == 0
    path.write_text(text.replace("seed: 1", "seed: 2"))
    experts = status_of(path, capsys)
    assert experts["quadrant"]["status"] == "stale"
    assert experts["quadrant"]["reasons"] == [{"kind": "DATA", "detail": "p.x changed"},
                                              {"kind": "DATA", "detail": "p.y changed"}]


def test_deleted_version_is_missing(tiny: Path, registry_uri: str, capsys):
    assert cli("run", tiny) == 0
    MlflowClient(tracking_uri=registry_uri, registry_uri=registry_uri).delete_model_version("tiny.is_even", "1")
    experts = status_of(tiny, capsys)
    assert experts["is_even"]["status"] == "missing"
    assert experts["is_even"]["reasons"][0]["kind"] == "MISSING"
    assert experts["digit"]["status"] == "pending"
    capsys.readouterr()
    assert cli("run", tiny) == 0
    assert trained(capsys) == ["is_even", "digit"]


def test_impact_and_dag_show_the_cascade(tiny: Path, registry_uri: str, capsys):
    capsys.readouterr()
    assert cli("run", tiny, "--json") == 0  # JSON alone on stdout; in a pipe, a line per expert on stderr
    captured = capsys.readouterr()
    done = json.loads(captured.out)["outcomes"]
    assert [(o["expert"], o["action"], o["version"]) for o in done] == [
        ("has_loop", "trained", 1), ("is_even", "trained", 1), ("digit", "trained", 1)]
    assert [line for line in captured.err.splitlines() if line.startswith("run: training ")] == [
        "run: training has_loop (3 epochs at most)", "run: training is_even (3 epochs at most)",
        "run: training digit (3 epochs at most)"]
    assert cli("impact", tiny, "is_even") == 0
    out = capsys.readouterr().out
    assert "is_even" in out and "digit" in out and "has_loop" not in out
    assert re.search(r"2 expert\(s\) to train or check, estimated \d+\.\ds", out)
    assert cli("dag", tiny) == 0
    rows = {line.split()[1]: line.split() for line in capsys.readouterr().out.splitlines() if line[:3].strip().isdigit()}
    assert rows["digit"][:3] == ["1", "digit", "fresh"] and rows["has_loop"][:3] == ["0", "has_loop", "fresh"]


def test_unreachable_registry_is_a_clear_error_and_writes_nothing(tiny: Path, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    capsys.readouterr()
    assert cli("run", tiny) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach the MLflow registry at http://127.0.0.1:9")
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.rglob("*") if "__pycache__" not in p.parts and p.suffix != ".pyc") == \
        [n for n in before if not n.endswith(".pyc") and n != "__pycache__"]


def test_status_queries_the_registry_a_fixed_number_of_times(tiny: Path, registry_uri: str):
    assert cli("run", tiny) == 0
    ws = View(load_pipeline(tiny), fast_reads=False)
    ws.statuses()
    assert ws.registry.requests == 3  # connect + registered models + model versions, for any number of experts


def test_read_only_commands_leave_the_registry_byte_for_byte_unchanged(tiny: Path, registry_uri: str, capsys):
    assert cli("run", tiny) == 0
    tiny.write_text(tiny.read_text().replace("lr: 1.0e-2", "lr: 5.0e-3", 1))  # has_loop stale, digit pending
    before = store_bytes(registry_uri)
    for args in (["status"], ["status", "--json", "--verify"], ["dag"], ["dag", "-f", "dot"], ["impact", "has_loop"],
                 ["run", "--dry-run"], ["validate"]):
        assert cli(args[0], tiny, *args[1:]) in (0, 1), args
        assert store_bytes(registry_uri) == before, f"`{' '.join(args)}` wrote to the registry"
    capsys.readouterr()
    assert cli("status", tiny, "--record") == 0
    # has_loop stale, digit pending: the version's two tags (state, reason) and the registered model's tag of each
    assert "recorded 6 tag(s) in the registry" in capsys.readouterr().err
    assert store_bytes(registry_uri) != before
    assert cli("status", tiny, "--record") == 0
    assert "recorded 0 tag(s)" in capsys.readouterr().err  # already in agreement: nothing rewritten
    from mlflow.tracking import MlflowClient

    client = MlflowClient(registry_uri, registry_uri)
    state = {name: client.get_model_version(f"tiny.{name}", "1").tags.get("moe.state")
             for name in ("has_loop", "is_even", "digit")}
    assert state == {"has_loop": "stale", "is_even": "fresh", "digit": "pending"}  # the version list says it
    assert cli("run", tiny) == 0
    assert client.get_model_version("tiny.has_loop", "1").tags["moe.state"] == "superseded by v2"
    assert client.get_model_version("tiny.has_loop", "2").tags["moe.state"] == "fresh"
    # MLflow's UI files the experiment under model training, not GenAI
    assert client.get_experiment_by_name("tiny").tags["mlflow.experimentKind"] == "custom_model_development"


def test_two_pipeline_files_on_one_registry_do_not_rewrite_each_others_tags(tiny: Path, registry_uri: str, capsys):
    assert cli("run", tiny) == 0
    branch = tiny.with_name("branch.yaml")  # the same pipeline on another branch: has_loop's lr differs
    branch.write_text(tiny.read_text().replace("lr: 1.0e-2", "lr: 5.0e-3", 1))
    before = store_bytes(registry_uri)
    for _ in range(2):
        for path in (tiny, branch):
            for args in (["status"], ["dag"], ["run", "--dry-run"]):
                assert cli(args[0], path, *args[1:]) == 0
    assert store_bytes(registry_uri) == before


def test_the_registered_model_carries_its_status_for_the_mlflow_model_list(tiny: Path, registry_uri: str, capsys):
    assert cli("run", tiny) == 0
    client = MlflowClient(tracking_uri=registry_uri, registry_uri=registry_uri)
    assert client.get_registered_model("tiny.has_loop").tags["moe.status"] == "v1 fresh"
    tiny.write_text(tiny.read_text().replace("lr: 1.0e-2", "lr: 5.0e-3", 1))
    assert cli("status", tiny, "--record") == 0
    assert client.get_registered_model("tiny.has_loop").tags["moe.status"] == "v1 stale: SPEC train.lr: 0.01 -> 0.005"
    assert client.get_registered_model("tiny.digit").tags["moe.status"].startswith("v1 pending: UPSTREAM waits for")
    assert client.get_registered_model("tiny.is_even").tags["moe.status"] == "v1 fresh"
