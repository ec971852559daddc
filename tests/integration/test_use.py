"""Using the trained system: predict, export (an MLflow pyfunc model), MLflow's own server,
each expert version as a pyfunc model, and explanations through the graph.

Real parts: a real registry, `mlflow.pyfunc.load_model` in fresh processes, a real
`mlflow models serve` process on 127.0.0.1 started and stopped here.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import ROOT, _free_port, cli


@pytest.fixture
def trained(tiny: Path, registry_uri: str, capsys) -> Path:
    assert cli("run", tiny, "--quiet") == 0
    capsys.readouterr()
    return tiny


def env_for(tmp_path: Path, uri: str) -> dict[str, str]:
    # `mlflow models serve` starts `uvicorn` by name: the environment's bin folder is on PATH, as once activated
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
            "PATH": path}


def stored_test_outputs(pipeline: Path, expert: str) -> torch.Tensor:
    from moe_pipeline.execute.view import View
    from moe_pipeline.pipeline.loader import load_pipeline

    view = View(load_pipeline(pipeline))
    return view.load_outputs(view.current()[expert])["test"]["probs"]


def test_predict_on_the_raw_test_split_equals_the_stored_test_outputs(trained: Path, tmp_path: Path, capsys):
    out = tmp_path / "pred.csv"
    assert cli("predict", trained, "--split", "test", "--out", out) == 0
    table = pd.read_csv(out)
    probs = table[[f"digit.p[{k}]" for k in range(10)]].to_numpy()
    stored = stored_test_outputs(trained, "digit").numpy()
    assert probs.shape == stored.shape
    assert np.abs(probs - stored).max() <= 1e-6
    assert (table["digit.class"].to_numpy() == stored.argmax(axis=1)).all()
    # an .npz of the raw images gives the same rows; --expert picks an upstream expert's outputs
    from moe_pipeline.execute.view import View
    from moe_pipeline.pipeline.loader import load_pipeline

    view = View(load_pipeline(trained))
    images = view.store.source("digits").raw_field("image", "test").numpy()
    np.savez(tmp_path / "rows.npz", image=images)
    assert cli("predict", trained, "--input", tmp_path / "rows.npz", "--expert", "has_loop", "--out",
               tmp_path / "loop.json") == 0
    rows = json.loads((tmp_path / "loop.json").read_text())
    loop = np.array([[r["has_loop.p[0]"], r["has_loop.p[1]"]] for r in rows])
    assert np.abs(loop - stored_test_outputs(trained, "has_loop").numpy()).max() <= 1e-6


@pytest.mark.reliability("hostile predict inputs")
def test_a_big_endian_file_predicts_what_the_native_one_does(trained: Path, tmp_path: Path, capsys):
    from moe_pipeline.execute.view import View
    from moe_pipeline.pipeline.loader import load_pipeline

    images = View(load_pipeline(trained)).store.source("digits").raw_field("image", "test").numpy()
    np.save(tmp_path / "native.npy", images)
    np.save(tmp_path / "big.npy", images.astype(">f4"))
    for name in ("native", "big"):
        assert cli("predict", trained, "--input", tmp_path / f"{name}.npy", "--out", tmp_path / f"{name}.csv") == 0
    assert (tmp_path / "native.csv").read_text() == (tmp_path / "big.csv").read_text()


@pytest.mark.parametrize("make, message", [
    (lambda d: np.savez(d / "bad.npz", pixels=np.zeros((3, 1, 8, 8), np.float32)), "no array named 'digits.image'"),
    (lambda d: np.savez(d / "bad.npz", image=np.zeros((3, 64), np.float32)),
     "input field 'digits.image' has shape [3, 64]; expected [n, 1, 8, 8]"),
    (lambda d: np.save(d / "bad.npy", np.array([["a"] * 64] * 2).reshape(2, 1, 8, 8)), "has dtype <U1"),
    (lambda d: (d / "bad.txt").write_text("1,2"), "unknown input format '.txt'"),
    (lambda d: np.save(d / "bad.npy", np.array([{"x": 1}], dtype=object)), "cannot read it"),
    (lambda d: np.save(d / "bad.npy", np.full((2, 1, 8, 8), 200, np.uint8)), "has dtype uint8; the system reads float32"),
    (lambda d: np.save(d / "bad.npy", np.full((2, 1, 8, 8), np.nan, np.float32)), "holds NaN or inf (first in row 0)"),
    (lambda d: np.save(d / "bad.npy", np.zeros((2, 1, 8, 8), np.complex64)), "would lose its imaginary part"),
    (lambda d: np.save(d / "bad.npy", np.zeros((0, 1, 8, 8), np.float32)), "has 0 rows"),
])
@pytest.mark.reliability("hostile predict inputs")
def test_a_wrong_input_exits_2_names_the_problem_and_writes_nothing(trained: Path, tmp_path: Path, capsys,
                                                                    make, message):
    make(tmp_path)
    bad = next(tmp_path.glob("bad.*"))
    out = tmp_path / "never.csv"
    assert cli("predict", trained, "--input", bad, "--out", out) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not out.exists()


@pytest.mark.reliability("export over a folder")
def test_export_refuses_while_an_expert_is_stale_unless_allowed(trained: Path, tmp_path: Path, capsys):
    trained.write_text(trained.read_text().replace("lr: 1.0e-2", "lr: 2.0e-2", 1))  # has_loop stale, digit pending
    assert cli("export", trained, "--out", tmp_path / "exp") == 2
    err = capsys.readouterr().err
    assert "has_loop (stale)" in err and "digit (pending)" in err and "--allow-stale" in err
    assert not (tmp_path / "exp").exists()
    assert cli("export", trained, "--out", tmp_path / "exp", "--allow-stale") == 0
    assert cli("export", trained, "--out", tmp_path / "exp", "--allow-stale") == 0  # an earlier export: replaced
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("a user's file")
    capsys.readouterr()
    assert cli("export", trained, "--out", tmp_path / "mine", "--allow-stale") == 2  # not an export: untouched
    assert "holds files that are not an export" in capsys.readouterr().err
    assert (tmp_path / "mine" / "keep.txt").read_text() == "a user's file"


@pytest.mark.reliability("hostile predict inputs")
def test_the_registered_system_and_each_expert_version_load_as_pyfunc_in_a_fresh_process_and_serve_over_http(
        trained: Path, tmp_path: Path, registry_uri: str, capsys):
    assert cli("export", trained, "--out", tmp_path / "exp", "--register") == 0
    printed = capsys.readouterr().out
    assert "registered model 'tiny' v1 (alias current)" in printed
    serve_hint = next(line.strip() for line in printed.splitlines() if "mlflow models serve" in line)
    assert cli("predict", trained, "--split", "test", "--out", tmp_path / "pred.csv") == 0
    expected = pd.read_csv(tmp_path / "pred.csv")
    from moe_pipeline.execute.view import View
    from moe_pipeline.pipeline.loader import load_pipeline

    images = View(load_pipeline(trained)).store.source("digits").raw_field("image", "test").numpy()
    np.save(tmp_path / "images.npy", images)
    script = f"""
import json, sys, numpy as np, mlflow.pyfunc
images = np.load({str(tmp_path / 'images.npy')!r})
system = mlflow.pyfunc.load_model("models:/tiny@current")
system.predict({{"digits.image": images}}).to_csv({str(tmp_path / 'pyfunc.csv')!r}, index=False)
out = {{}}
for expert, x in (("has_loop", images), ("is_even", images)):
    out[expert] = mlflow.pyfunc.load_model(f"models:/tiny.{{expert}}@current").predict(x).tolist()
json.dump(out, open({str(tmp_path / 'experts.json')!r}, "w"))
"""
    done = subprocess.run([sys.executable, "-c", script], env=env_for(tmp_path, registry_uri), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    via_pyfunc = pd.read_csv(tmp_path / "pyfunc.csv")
    assert list(via_pyfunc.columns) == list(expected.columns)
    numeric = [c for c in expected.columns if c != "digit.class"]
    assert np.abs(via_pyfunc[numeric].to_numpy() - expected[numeric].to_numpy()).max() <= 1e-6
    experts = json.loads((tmp_path / "experts.json").read_text())
    for expert in experts:
        assert np.abs(np.array(experts[expert]) - stored_test_outputs(trained, expert).numpy()).max() <= 1e-6

    # the hint export printed, run as printed from another folder by a shell that knows no store
    port = _free_port()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shell_env = {k: v for k, v in env_for(tmp_path, registry_uri).items() if k != "MLFLOW_TRACKING_URI"}
    server = subprocess.Popen(["bash", "-c", f"{serve_hint} --host 127.0.0.1 --port {port}"], cwd=elsewhere,
                              env=shell_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)
    try:
        body = json.dumps({"inputs": {"digits.image": images[:20].tolist()}}).encode()
        deadline, answer = time.monotonic() + 180, None
        while answer is None:
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                                 headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=10) as response:
                    answer = json.loads(response.read())
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.stderr.read().decode()[-2000:]
                time.sleep(0.5)
        # input the model cannot answer is the caller's error: 400 with the reason, not a 500
        bad = images[:2].copy()
        bad[1, 0, 3, 3] = float("nan")
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", headers={"Content-Type":
                                         "application/json"}, data=json.dumps({"inputs": {"digits.image": bad.tolist()}}
                                                                              ).encode())
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 400
        assert "holds NaN or inf (first in row 1)" in refused.value.read().decode()
    finally:
        if server.poll() is None:
            os.killpg(server.pid, 15)
        server.wait(timeout=30)
    assert not (elsewhere / "mlflow.db").exists() and not (elsewhere / "mlruns").exists()  # no stray store
    served = pd.DataFrame(answer["predictions"])
    assert np.abs(served[numeric].to_numpy(dtype=float) - expected[numeric].to_numpy()[:20]).max() <= 1e-6
    assert [str(v) for v in served["digit.class"]] == [str(v) for v in expected["digit.class"][:20]]


def test_explain_names_every_expert_and_closes_the_completeness_gap(trained: Path, tmp_path: Path, capsys):
    assert cli("explain", trained, "--split", "test", "--row", "5", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    answers = {a["expert"]: a for a in report["experts"]}
    assert list(answers) == ["has_loop", "is_even", "digit"]
    digit = answers["digit"]
    assert {d["ref"] for d in digit["drivers"]} == {"has_loop.probs", "is_even.embedding"}
    assert abs(sum(d["share"] for d in digit["drivers"]) - 1.0) < 1e-9
    for answer in answers.values():
        assert answer["completeness_gap_relative"] <= 0.01, answer
        # completeness: the attributions add up to the change of the explained output
        total = sum(d["attribution"] for d in answer["drivers"])
        assert abs(total - answer["output_change"]) <= 0.01 * abs(answer["output_change"]) + 1e-6
    stored = stored_test_outputs(trained, "digit")[5]
    assert digit["answer"] == str(int(stored.argmax())) and abs(digit["probability"] - float(stored.max())) < 1e-6
    assert cli("explain", trained, "--split", "test", "--row", "5") == 0
    text = capsys.readouterr().out
    assert text.splitlines()[-1].startswith(f"digit = {digit['answer']} (p ")
    assert "<- " in text and "completeness gap" in text
    assert cli("explain", trained, "--split", "test", "--row", "5", "--html", tmp_path / "why.html") == 0
    page = (tmp_path / "why.html").read_text()
    assert "<svg" in page and "<script" not in page
    for name in answers:
        assert f">{name}</text>" in page
    assert f">= {digit['answer']} · p {digit['probability']:.2f}</text>" in page


from tests.integration.test_own_data import wine  # noqa: E402,F401  (fixture: wine CSV, standardized)


def test_predict_reads_a_csv_applies_the_stored_transform_and_names_the_classes(wine: Path, tmp_path: Path, capsys):
    assert cli("run", wine, "--quiet") == 0
    out = tmp_path / "cultivar.csv"
    # the raw file, label column and all: the feature columns are picked by the names training recorded
    assert cli("predict", wine, "--expert", "cultivar", "--input", wine.parent / "data" / "wine.csv", "--out", out) == 0
    table = pd.read_csv(out)
    classes = ["class_0", "class_1", "class_2"]
    assert list(table.columns) == [*(f"cultivar.p[{c}]" for c in classes), "cultivar.class"]
    from moe_pipeline.execute.view import View
    from moe_pipeline.pipeline.loader import load_pipeline

    view = View(load_pipeline(wine))
    rows = view.store.source("wine").splits["test"].numpy()
    stored = stored_test_outputs(wine, "cultivar").numpy()
    assert np.abs(table.iloc[rows, :3].to_numpy() - stored).max() <= 1e-6  # standardised as in training
    assert list(table["cultivar.class"].iloc[rows]) == [classes[k] for k in stored.argmax(axis=1)]
    # a cell that is not a number: the file, row and column, exit 2, nothing written
    text = (wine.parent / "data" / "wine.csv").read_text().splitlines()
    text[3] = "oops" + text[3][text[3].index(","):]
    (tmp_path / "bad.csv").write_text("\n".join(text) + "\n")
    capsys.readouterr()
    assert cli("predict", wine, "--expert", "cultivar", "--input", tmp_path / "bad.csv", "--out", tmp_path / "n.csv") == 2
    err = capsys.readouterr().err
    assert "bad.csv: row 4, column 'alcohol': 'oops' is not a number" in err, err
    assert not (tmp_path / "n.csv").exists()


@pytest.mark.reliability("code outside the project")
def test_a_version_whose_files_and_manifest_were_rewritten_together_is_refused_by_the_registrys_record(
        trained: Path, tmp_path: Path, registry_uri: str):
    """Someone who can write the artifact store replaces has_loop's weights and the sha256.json
    beside them: `mlflow.pyfunc.load_model("models:/...")` refuses it, the registry's record being
    the authority; is_even, untouched, loads."""
    import hashlib

    from mlflow.tracking import MlflowClient
    from safetensors.torch import load_file, save_file

    client = MlflowClient(registry_uri, registry_uri)
    version = client.get_model_version_by_alias("tiny.has_loop", "current")
    source = Path(version.source[len("file://"):]) if version.source.startswith("file://") else None
    assert source is not None and (source / "weights.safetensors").exists(), version.source
    weights = load_file(str(source / "weights.safetensors"))
    save_file({k: v + 0.5 for k, v in weights.items()}, str(source / "weights.safetensors"))
    manifest = json.loads((source / "sha256.json").read_text())
    manifest["weights.safetensors"] = hashlib.sha256((source / "weights.safetensors").read_bytes()).hexdigest()
    (source / "sha256.json").write_text(json.dumps(manifest))
    script = """
import sys, numpy as np, mlflow.pyfunc
for expert in ("is_even", "has_loop"):
    try:
        mlflow.pyfunc.load_model(f"models:/tiny.{expert}@current")
        print(expert, "loaded")
    except Exception as exc:
        print(expert, "refused:", exc)
"""
    done = subprocess.run([sys.executable, "-c", script], env=env_for(tmp_path, registry_uri), capture_output=True,
                          text=True, timeout=300)
    assert "is_even loaded" in done.stdout, done.stdout + done.stderr[-2000:]
    assert "has_loop refused:" in done.stdout and "does not match its sha256 in the registry's record of " \
        "tiny.has_loop v1" in done.stdout, done.stdout + done.stderr[-2000:]


def test_predict_in_chunks_equals_one_shot(trained: Path, tmp_path: Path, monkeypatch):
    """The forward pass in chunks of 7 rows (the last one partial) answers what one pass over all
    the test rows answers."""
    from moe_pipeline.serve import system

    assert cli("predict", trained, "--split", "test", "--out", tmp_path / "whole.csv") == 0
    monkeypatch.setattr(system, "BATCH", 7)
    assert cli("predict", trained, "--split", "test", "--out", tmp_path / "chunks.csv") == 0
    whole, chunks = pd.read_csv(tmp_path / "whole.csv"), pd.read_csv(tmp_path / "chunks.csv")
    assert len(whole) % 7 and list(whole.columns) == list(chunks.columns)
    numeric = [c for c in whole.columns if not c.endswith(".class")]
    assert np.abs(whole[numeric].to_numpy() - chunks[numeric].to_numpy()).max() <= 1e-6
    assert (whole["digit.class"] == chunks["digit.class"]).all()


@pytest.mark.reliability("signals")
def test_ctrl_c_during_a_long_predict_ends_it_at_once_and_writes_no_output(trained: Path, tmp_path: Path,
                                                                           registry_uri: str):
    """300,000 rows in batches: SIGINT once the first tenth is done ends it (130) promptly, with no
    output file, not even a part of one."""
    import signal

    from tests.integration.test_faults import _signalled

    rng = np.random.default_rng(0)
    np.save(tmp_path / "many.npy", rng.random((300_000, 1, 8, 8), dtype=np.float32))
    out = tmp_path / "many.csv"
    code, waited, err = _signalled(["predict", str(trained), "--input", str(tmp_path / "many.npy"), "--out", str(out)],
                                   env_for(tmp_path, registry_uri), lambda line: line.startswith("predict: "),
                                   signal.SIGINT)
    assert waited < 5.0  # the second itself is measured by hand (README)
    assert code == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not out.exists() and list(tmp_path.glob("many.csv*")) == []
