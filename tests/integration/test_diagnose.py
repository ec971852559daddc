"""`diagnose` on a real registry, checked against a brute-force recount from the stored outputs."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.conftest import cli, store_bytes

LOOPED = (0, 6, 8, 9)


def test_diagnose_counts_provenance_and_oracle_gain_as_a_hand_recount_does(tiny: Path, registry_uri: str, capsys,
                                                                           tmp_path: Path):
    from moe_pipeline.execute.view import View
    from moe_pipeline.pipeline.loader import load_pipeline
    from moe_pipeline.training.train import infer

    assert cli("run", tiny, "--quiet") == 0
    before = store_bytes(registry_uri)
    capsys.readouterr()
    assert cli("diagnose", tiny, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert store_bytes(registry_uri) == before  # inference only: nothing written
    (digit,) = report["experts"]
    findings = {u["expert"]: u for u in digit["upstream"]}

    # by hand, from the stored test outputs and the labels
    view = View(load_pipeline(tiny))
    labels = view.store.source("digits").fields["label"][view.store.source("digits").splits["test"]]
    digit_probs = view.load_outputs(view.record("digit"))["test"]["probs"]
    digit_wrong = digit_probs.argmax(1) != labels
    loop_wrong = view.load_outputs(view.record("has_loop"))["test"]["probs"].argmax(1) != torch.isin(
        labels, torch.tensor(LOOPED)).long()
    assert digit["errors"] == int(digit_wrong.sum()) and digit["rows"] == len(labels)
    assert findings["has_loop"]["wrong_on_reader_errors"] == int((digit_wrong & loop_wrong).sum())
    assert findings["has_loop"]["error_rate"] == float(loop_wrong.double().mean())

    # the oracle: has_loop's two probability columns replaced by its true answer, one-hot
    model, _ = view.load_model(view.record("digit"))
    data, _ = view.expert_data("digit")
    x = data.x["test"].clone()
    x[:, 0:2] = torch.nn.functional.one_hot(torch.isin(labels, torch.tensor(LOOPED)).long(), 2).float()
    oracle_accuracy = float((infer(model, x, "classification")["logits"].argmax(1) == labels).double().mean())
    assert abs(findings["has_loop"]["oracle_metric"] - oracle_accuracy) < 1e-12
    assert abs(findings["has_loop"]["gain"] - (oracle_accuracy - digit["metric"])) < 1e-12
    assert findings["is_even"]["gain"] is None and "reads is_even.embedding" in findings["is_even"]["not_applicable"]
    assert digit["fix_first"] == ["has_loop"]

    # the reader's confusion split by whether its upstream experts were right, recounted row by row
    even_wrong = view.load_outputs(view.record("is_even"))["test"]["probs"].argmax(1) != (labels % 2 == 0).long()
    some_wrong = (loop_wrong | even_wrong).tolist()
    recount = {True: [[0] * 10 for _ in range(10)], False: [[0] * 10 for _ in range(10)]}
    for truth, pred, wrong in zip(labels.tolist(), digit_probs.argmax(1).tolist(), some_wrong):
        recount[wrong][truth][pred] += 1
    assert digit["confusion_upstream_wrong"] == recount[True] and digit["confusion_upstream_right"] == recount[False]

    capsys.readouterr()
    assert cli("diagnose", tiny) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("digit v1 on test: accuracy ") and lines[3].startswith("  has_loop: ")
    right = sum(recount[False][k][k] for k in range(10))
    assert lines[1] == f"  rows with every upstream right: {some_wrong.count(False)}, digit right on {right} " \
                       f"({right / some_wrong.count(False):.1%})"
    assert any(line.startswith("  is_even: n/a (reads is_even.embedding") for line in lines)
    assert cli("diagnose", tiny, "has_loop") == 2  # reads no expert: nothing to diagnose
    # --retrain: digit retrained in memory on has_loop perfect in every split (its own seeds), by hand
    import dataclasses

    from moe_pipeline.pipeline.loader import load_pipeline as load
    from moe_pipeline.state.fingerprint import training_seeds
    from moe_pipeline.training.train import train_expert

    capsys.readouterr()
    assert cli("diagnose", tiny, "--retrain", "--json") == 0
    retrained = {u["expert"]: u for u in json.loads(capsys.readouterr().out)["experts"][0]["upstream"]}
    pipeline = load(tiny).pipeline
    splits = view.store.source("digits").splits
    perfect = {s: data.x[s].clone() for s in ("train", "val", "test")}
    for s in perfect:
        loops = torch.isin(view.store.source("digits").fields["label"][splits[s]], torch.tensor(LOOPED)).long()
        perfect[s][:, 0:2] = torch.nn.functional.one_hot(loops, 2).float()
    init_seed, order_seed = training_seeds(view.record("digit").spec)
    spec = pipeline.experts["digit"]
    by_hand = train_expert(spec.model, spec.train, pipeline.resources_for("digit"), dataclasses.replace(data, x=perfect),
                           init_seed, order_seed=order_seed).model
    accuracy = float((infer(by_hand, perfect["test"], "classification")["logits"].argmax(1) == labels).double().mean())
    assert abs(retrained["has_loop"]["retrained_metric"] - accuracy) < 1e-12
    assert abs(retrained["has_loop"]["retrained_gain"] - (accuracy - digit["metric"])) < 1e-12
    assert retrained["is_even"]["retrained_metric"] is None  # an embedding input has no oracle
    assert store_bytes(registry_uri) == before  # retrained in memory: nothing registered
    assert cli("diagnose", tiny, "--html", tmp_path / "diagnose.html") == 0  # the same, as a page
    page = (tmp_path / "diagnose.html").read_text()
    assert store_bytes(registry_uri) == before  # the page is the only thing written
    assert page.count("<img") == 2 and "rows with every upstream right: " in page
    assert f"{findings['has_loop']['gain'] * 100:+.1f} pt" in page and "reads is_even.embedding" in page
