"""`diff` after a retraining, checked against a recount from the two versions' stored outputs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import torch

from tests.conftest import cli, store_bytes


def test_diff_names_the_record_change_and_counts_flips_as_a_recount_does(tiny: Path, registry_uri: str, capsys):
    from scipy.stats import binomtest

    from moe_pipeline.execute.view import View
    from moe_pipeline.pipeline.loader import load_pipeline

    assert cli("run", tiny, "--quiet") == 0
    text = tiny.read_text()
    start = text.index("  is_even:")
    tiny.write_text(text[:start] + text[start:].replace("lr: 1.0e-2", "lr: 5.0e-3", 1))
    capsys.readouterr()
    assert cli("run", tiny, "--quiet") == 0
    ran = capsys.readouterr().out.splitlines()
    before = store_bytes(registry_uri)
    assert cli("diff", tiny, "is_even", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    # the run printed one line of it for the expert it retrained
    test = next(e for e in report["splits"] if e["split"] == "test")
    verdict = "a detectable difference" if test["detectable"] else "no detectable difference"
    change = 100 * (test["metric_b"] - test["metric_a"])
    assert f"is_even v2 vs v1: accuracy {change:+.1f} pt (McNemar p = {test['p_value']:.2g}, {verdict}), " \
           f"{100 * test['churn']:.1f}% of test rows changed" in ran
    assert store_bytes(registry_uri) == before  # reads only
    assert (report["version_a"], report["version_b"]) == (1, 2)
    assert report["record"] == ["SPEC train.lr: 0.01 -> 0.005"]

    view = View(load_pipeline(tiny))
    labels = view.store.source("digits").fields["label"]
    for entry in report["splits"]:
        split = entry["split"]
        y = (labels[view.store.source("digits").splits[split]] % 2 == 0).long()
        pred = {v: view.load_outputs(view.record("is_even", v))[split]["logits"].argmax(1) for v in (1, 2)}
        right = {v: pred[v] == y for v in (1, 2)}
        assert entry["right_to_wrong"] == [i for i in range(len(y)) if right[1][i] and not right[2][i]]
        assert entry["wrong_to_right"] == [i for i in range(len(y)) if right[2][i] and not right[1][i]]
        assert entry["churn"] == float((pred[1] != pred[2]).double().mean())
        discordant = len(entry["right_to_wrong"]) + len(entry["wrong_to_right"])
        want = binomtest(len(entry["right_to_wrong"]), discordant, 0.5).pvalue if discordant else 1.0
        assert abs(entry["p_value"] - want) < 1e-12
        assert entry["detectable"] == (want < 0.05)
        # the confusion matrix's change, recounted cell by cell
        recount = [[0, 0], [0, 0]]
        for truth, a, b in zip(y.tolist(), pred[1].tolist(), pred[2].tolist()):
            recount[truth][b] += 1
            recount[truth][a] -= 1
        assert entry["confusion_delta"] == recount

    # the feature shift against a brute-force AGOP (a full Jacobian per row, in a loop)
    from moe_pipeline.inspect.agop import agop_per_sample
    from moe_pipeline.inspect.diff import AGOP_ROWS

    rows = view.expert_data("is_even")[0].x["train"][:AGOP_ROWS]
    share = {}
    for v in (1, 2):
        diag = agop_per_sample(view.load_model(view.record("is_even", v))[0], rows).diagonal()
        share[v] = diag / diag.sum()
    cosine = float(share[1] @ share[2] / (share[1].norm() * share[2].norm()))
    assert abs(report["features"]["cosine"] - cosine) < 1e-6  # float32 Jacobians against float64 ones
    change = share[2] - share[1]
    best = int(change.argmax())
    assert report["features"]["gained"][0] == [f"digits.image (row {best // 8}, col {best % 8})",
                                               pytest.approx(float(change[best]), abs=1e-6)]
    # the eigenspace overlap: the brute-force AGOPs' top eigenvectors at the larger effective rank
    vectors, ranks = {}, []
    for v in (1, 2):
        values, vecs = torch.linalg.eigh(agop_per_sample(view.load_model(view.record("is_even", v))[0], rows))
        values, vecs = values.flip(0), vecs.flip(1)
        ranks.append(int((torch.cumsum(values, 0) / values.sum() < 0.95 - 1e-12).sum()) + 1)
        vectors[v] = vecs
    k = min(max(ranks), 16)
    assert report["features"]["rank"] == k
    overlap = float(sum((vectors[1][:, i] @ vectors[2][:, j]) ** 2 for i in range(k) for j in range(k)) / k)
    assert abs(report["features"]["overlap"] - overlap) < 1e-4
    # the flipped test rows kept for the page: the first of each direction, with both answers
    test = next(e for e in report["splits"] if e["split"] == "test")
    shown = [(f["row"], f["direction"]) for f in report["flipped"]]
    assert shown == [(r, "right -> wrong") for r in test["right_to_wrong"][:8]] + \
        [(r, "wrong -> right") for r in test["wrong_to_right"][:8]]

    capsys.readouterr()
    assert cli("diff", tiny, "is_even") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["is_even v1 -> v2", "  SPEC train.lr: 0.01 -> 0.005"]
    assert any("difference" in line and line.startswith("  test: accuracy ") for line in lines)
    capsys.readouterr()
    assert cli("diff", tiny, "digit", "1", "1", "--json") == 0  # a version against itself: nothing changed
    itself = json.loads(capsys.readouterr().out)
    assert itself["record"] == [] and itself["flipped"] == [] and itself["features"]["overlap"] == pytest.approx(1.0)
    assert all(e["churn"] == 0.0 and not e["detectable"] and e["p_value"] == 1.0 for e in itself["splits"])
    assert cli("diff", tiny, "digit", "1", "1") == 0
    assert capsys.readouterr().out.count("no detectable difference") == 2
    assert cli("diff", tiny, "is_even", "--html", tiny.parent / "diff.html") == 0  # the same, as a page
    page = (tiny.parent / "diff.html").read_text()
    assert store_bytes(registry_uri) == before
    directions = {f["direction"] for f in report["flipped"]}  # one grid of images per direction
    assert page.count("<img") == 2 + len(directions) and "SPEC train.lr: 0.01 -&gt; 0.005" in page
    assert f"<b>{report['features']['cosine']:.3f}</b>" in page

    # --log: the page under version 2's run, and nothing else written
    from mlflow.tracking import MlflowClient

    assert cli("diff", tiny, "is_even", "--log") == 0
    client = MlflowClient(registry_uri, registry_uri)
    run_id = view.record("is_even", 2).run_id
    assert [f.path for f in client.list_artifacts(run_id, "diff")] == ["diff/v1-v2.html"]
    logged = Path(client.download_artifacts(run_id, "diff/v1-v2.html", str(tiny.parent)))
    assert logged.read_text().count("SPEC train.lr: 0.01 -&gt; 0.005") == 1
