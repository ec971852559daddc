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


BITS = '''
import torch


def make():
    """Three independent bits, each decided by its own four features; `code` is a + 2b + 4c."""
    g = torch.Generator().manual_seed(0)
    n = 3000
    fields, code = {}, torch.zeros(n, dtype=torch.long)
    for k, name in enumerate("abc"):
        x = torch.randn(n, 4, generator=g)
        fields[name] = x
        fields[f"{name}_bit"] = ((x[:, 0] + x[:, 1] - x[:, 2]) > 0).long()
        code += fields[f"{name}_bit"] << k
    fields["code"] = code
    return fields
'''

PLANTED = """
name: planted
seed: 0
sources:
  s: {loader: "MOD:make", fields: [a, b, c, a_bit, b_bit, c_bit, code], split: {val: 0.2, test: 0.2}}
experts:
  bit_a:
    inputs: [s.a]
    target: s.a_bit
    model: {kind: mlp, hidden: [16]}
    train: {epochs: 30, batch_size: 64, lr: 1.0e-2, patience: null}
  bit_b:  # the planted weak one: one epoch at a tenth of the others' learning rate
    inputs: [s.b]
    target: s.b_bit
    model: {kind: mlp, hidden: [16]}
    train: {epochs: 1, batch_size: 64, lr: 1.0e-3, patience: null}
  bit_c:
    inputs: [s.c]
    target: s.c_bit
    model: {kind: mlp, hidden: [16]}
    train: {epochs: 30, batch_size: 64, lr: 1.0e-2, patience: null}
  code:
    inputs: [bit_a.probs, bit_b.probs, bit_c.probs]
    target: s.code
    model: {kind: mlp, hidden: [32]}
    train: {epochs: 60, batch_size: 64, lr: 1.0e-2, patience: null}
"""


def test_a_planted_weak_upstream_is_ranked_first_and_its_numbers_match_a_loop_over_rows(
        tmp_path: Path, monkeypatch, registry_uri: str, request, capsys):
    """Of three upstream experts, one is trained too briefly: `diagnose` ranks it first, with the
    largest oracle gain and the largest share of the reader's errors; every number is recounted
    in plain Python, one row at a time."""
    from moe_pipeline.execute.view import View
    from moe_pipeline.pipeline.loader import load_pipeline
    from tests.conftest import unique_module

    module = unique_module("bits", request, tmp_path, monkeypatch, BITS)
    path = tmp_path / "planted.yaml"
    path.write_text(PLANTED.replace("MOD", module))
    assert cli("run", path, "--quiet") == 0
    capsys.readouterr()
    assert cli("diagnose", path, "--json") == 0
    (code,) = json.loads(capsys.readouterr().out)["experts"]
    found = {u["expert"]: u for u in code["upstream"]}
    assert code["fix_first"][0] == "bit_b"
    assert found["bit_b"]["gain"] > max(found["bit_a"]["gain"], found["bit_c"]["gain"])
    assert found["bit_b"]["wrong_on_reader_errors"] > max(found["bit_a"]["wrong_on_reader_errors"],
                                                          found["bit_c"]["wrong_on_reader_errors"])

    # the brute-force reference: each test row on its own, as Python lists
    view = View(load_pipeline(path))
    model, _ = view.load_model(view.record("code"))
    source = view.store.source("s")
    rows = source.splits["test"].tolist()
    truth = {name: source.fields[f"{name[-1]}_bit"].tolist() for name in ("bit_a", "bit_b", "bit_c")}
    probs = {name: view.load_outputs(view.record(name))["test"]["probs"].tolist() for name in truth}
    labels = source.fields["code"].tolist()

    def answer(columns: list[float]) -> int:
        with torch.no_grad():
            scores = model(torch.tensor([columns]))[0].tolist()
        return scores.index(max(scores))

    right = {"actual": 0, **{name: 0 for name in truth}}
    reader_errors, blamed = 0, {name: 0 for name in truth}
    for k, row in enumerate(rows):
        inputs = {name: probs[name][k] for name in truth}
        guess = answer(inputs["bit_a"] + inputs["bit_b"] + inputs["bit_c"])
        right["actual"] += guess == labels[row]
        if guess != labels[row]:
            reader_errors += 1
            for name in truth:
                blamed[name] += max(range(2), key=lambda c: inputs[name][c]) != truth[name][row]
        for name in truth:  # this upstream replaced by a perfect one: its true answer, one-hot
            perfect = dict(inputs, **{name: [1.0 - truth[name][row], float(truth[name][row])]})
            right[name] += answer(perfect["bit_a"] + perfect["bit_b"] + perfect["bit_c"]) == labels[row]
    assert code["errors"] == reader_errors and abs(code["metric"] - right["actual"] / len(rows)) < 1e-12
    for name in truth:
        assert found[name]["wrong_on_reader_errors"] == blamed[name]
        assert abs(found[name]["oracle_metric"] - right[name] / len(rows)) < 1e-12
        assert abs(found[name]["gain"] - (right[name] - right["actual"]) / len(rows)) < 1e-12

    # --log: the page under the reader's version run, and nothing else written
    from mlflow.tracking import MlflowClient

    assert cli("diagnose", path, "--log") == 0
    client = MlflowClient(registry_uri, registry_uri)
    assert [f.path for f in client.list_artifacts(view.record("code").run_id, "diagnose")] == ["diagnose/test.html"]
