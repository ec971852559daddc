"""`inspect` end to end: one version, its stored inputs, every section, files logged to MLflow."""
from __future__ import annotations

import json
from pathlib import Path

from mlflow.tracking import MlflowClient

from moe_pipeline.pipeline.loader import load_pipeline
from moe_pipeline.execute.view import View
from tests.conftest import cli


def test_inspect_image_expert_writes_every_section(tiny: Path, registry_uri: str, tmp_path: Path, capsys):
    assert cli("run", tiny) == 0
    out = tmp_path / "report"
    capsys.readouterr()
    assert cli("inspect", tiny, "has_loop", "--out", out) == 0
    captured = capsys.readouterr()
    printed = captured.out
    # where it is, step by step, on stderr (not a terminal here: one line per section)
    assert captured.err.splitlines() == [f"inspect has_loop: [{k}/5] {what}" for k, what in enumerate(
        ["metrics and confusion matrix", "AGOP", "neural collapse", "attributions", "training curves"], 1)]
    summary = json.loads((out / "summary.json").read_text())
    names = summary["agop"]["top_feature_names"]
    assert f"AGOP: the top {len(names)} features hold" in printed and str(out / "report.html") in printed
    assert "; ".join(names) in " ".join(printed.split()) and "['" not in printed  # names, not a list's repr
    assert {"metrics", "confusion", "agop", "collapse", "attribution", "dynamics"} <= set(summary)
    assert sum(map(sum, summary["confusion"])) == len(View(load_pipeline(tiny), fast_reads=False).store.source("digits").splits["test"])
    assert summary["agop"]["input_dim"] == 64 and summary["agop"]["dense"]
    assert len(summary["dynamics"]["train_loss"]) == 3
    for png in ("confusion_counts.png", "agop.png", "agop_eigenvectors.png", "integrated_gradients_per_class.png",
                "saliency_per_class.png", "examples.png", "dynamics.png"):
        assert (out / png).stat().st_size > 1000, png
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 7  # self-contained
    store = View(load_pipeline(tiny), fast_reads=False).store.source("digits").splits
    n_train, n_val = len(store["train"]), len(store["val"])
    assert f"Computed over all {n_train:,} training rows (this section's budget: 2,000)" in html  # each section's rows
    assert f"Over all {n_train:,} training rows, streamed" in html
    assert f"the first 200 of {n_val:,} validation rows (this section's budget: 200)" in html
    mv = MlflowClient(registry_uri, registry_uri).get_model_version_by_alias("tiny.has_loop", "current")
    logged = {a.path for a in MlflowClient(registry_uri, registry_uri).list_artifacts(mv.run_id, "inspect")}
    assert "inspect/report.html" in logged and "inspect/summary.json" in logged


def test_inspect_downstream_expert_shows_reliance_without_upstream_weights(tiny: Path, tmp_path: Path, monkeypatch):
    assert cli("run", tiny) == 0
    loaded_models = []
    original = View.load_model

    def spy(self, record):
        loaded_models.append(record.expert)
        return original(self, record)

    monkeypatch.setattr(View, "load_model", spy)
    out = tmp_path / "digit"
    assert cli("inspect", tiny, "digit", "--out", out, "--methods", "agop") == 0
    assert loaded_models == ["digit"]
    summary = json.loads((out / "summary.json").read_text())
    reliance = {r["input"]: r["share"] for r in summary["agop"]["reliance"]}
    assert set(reliance) == {"has_loop.probs", "is_even.embedding"}
    assert abs(sum(reliance.values()) - 1.0) < 1e-9
    assert "collapse" not in summary


def planted_quadrant(folder: Path, name: str, rows: int, hidden: int, epochs: int) -> Path:
    """A one-expert pipeline whose labels are the signs of x0 and x1 among 30 coordinates."""
    path = folder / f"{name}.yaml"
    path.write_text(f"""
name: {name}
sources:
  p: {{loader: synthetic.planted, n: {rows}, d: 30, informative: [0, 1], task: signs}}
experts:
  quadrant:
    inputs: [p.x]
    target: p.y
    model: {{kind: mlp, hidden: [{hidden}]}}
    train: {{epochs: {epochs}, batch_size: 128, lr: 3.0e-3, patience: null}}
""")
    return path


def test_inspect_planted_pipeline_recovers_the_planted_coordinates(tmp_path: Path, registry_uri: str, capsys):
    path = planted_quadrant(tmp_path, "planted_small", rows=2000, hidden=64, epochs=30)
    assert cli("run", path) == 0
    out = tmp_path / "q"
    assert cli("inspect", path, "quadrant", "--out", out, "--methods", "agop", "--opacity", "init,order,data",
               "--runs", "2") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["agop"]["top_features"][:2]) == {0, 1}
    assert summary["agop"]["planted_share"] >= 0.9
    assert summary["agop"]["neural_feature_ansatz"]["wtw_vs_agop_sqrt"] > 0.5
    assert summary["agop"]["effective_rank"] <= 4  # two planted directions (and a little noise), not 30
    opacity = summary["opacity"]
    # what each source held fixed, from digests of the initial weights, every epoch's batch order and the rows
    assert opacity["init"]["shared"] == {"initial weights": False, "batch order": True, "data": True}
    assert opacity["order"]["shared"] == {"initial weights": True, "batch order": False, "data": True}
    assert opacity["data"]["shared"] == {"initial weights": True, "batch order": True, "data": False}
    # run 0 of init and order is the registered version's own setting: one training, shared
    assert opacity["init"]["digests"][0] == opacity["order"]["digests"][0]
    for mode in ("init", "order", "data"):
        assert opacity[mode]["runs"] == 2 and 0.0 <= opacity[mode]["prediction_churn_mean"] < 0.2
        assert opacity[mode]["agop_correlation_mean"] > 0.8
        assert opacity[mode]["verdict"].split()[0] in ("low", "moderate", "high")


def test_matrix_free_eigenpairs_and_ig_gap_are_shown_within_their_tolerances(tmp_path: Path, monkeypatch):
    """Above the dense limit the report iterates the eigenpairs to residual 1e-3 and shows it;
    integrated gradients take steps until the completeness gap is at most 1%."""
    from moe_pipeline.inspect import agop

    path = planted_quadrant(tmp_path, "planted_free", rows=1200, hidden=32, epochs=10)
    assert cli("run", path) == 0
    monkeypatch.setattr(agop, "DENSE_LIMIT", 10)  # 30 inputs: the matrix-free path
    out = tmp_path / "free"
    assert cli("inspect", path, "quadrant", "--out", out, "--methods", "agop,attribution") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert not summary["agop"]["dense"] and not summary["agop"]["eigenpairs_exact"]
    assert 0 < max(summary["agop"]["eigen_residuals"]) <= 1e-3
    assert summary["attribution"]["ig_completeness_gap"] <= 0.01
    page = (out / "report.html").read_text()
    assert f"{max(summary['agop']['eigen_residuals']):.1e}" in page
    assert f"completeness gap {100 * summary['attribution']['ig_completeness_gap']:.2f}%" in page


def test_inspect_unknown_version_is_a_clear_error(tiny: Path, capsys):
    assert cli("run", tiny, "is_even") == 0
    capsys.readouterr()
    assert cli("inspect", tiny, "is_even", "--version", "7") == 2
    assert "expert 'is_even' has no version 7; registered versions: [1]" in capsys.readouterr().err


def test_inspect_uploads_only_its_own_files_and_writes_under_the_project_root(tiny: Path, registry_uri: str,
                                                                               tmp_path: Path, monkeypatch):
    assert cli("run", tiny) == 0
    out = tmp_path / "shared_folder"
    (out / "private").mkdir(parents=True)
    (out / "private" / "secrets.txt").write_text("not for the registry")
    (out / "notes.md").write_text("mine")
    assert cli("inspect", tiny, "is_even", "--out", out, "--methods", "metrics") == 0
    c = MlflowClient(registry_uri, registry_uri)
    mv = c.get_model_version_by_alias("tiny.is_even", "current")
    logged = {a.path for a in c.list_artifacts(mv.run_id, "inspect")}
    assert "inspect/report.html" in logged and "inspect/summary.json" in logged
    assert not {"inspect/private", "inspect/notes.md"} & logged
    (tmp_path / ".git").mkdir()  # tmp_path is the project root; run from somewhere else
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert cli("inspect", tiny, "is_even", "--methods", "metrics") == 0
    assert (tmp_path / "reports" / "tiny" / "is_even" / "v1" / "report.html").exists()
    assert not (elsewhere / "reports").exists()


def test_opacity_runs_in_worker_processes_compute_what_the_same_runs_compute_here(tmp_path: Path, monkeypatch):
    """With a core per worker, the runs train in worker processes (one torch thread each); the
    summary is exactly the one of the same runs trained here one after another with one thread."""
    import torch

    from moe_pipeline.inspect import opacity_workers

    path = planted_quadrant(tmp_path, "planted_pool", rows=600, hidden=16, epochs=4)
    assert cli("run", path, "--quiet") == 0
    started = []
    real = opacity_workers.OpacityPool.train
    monkeypatch.setattr(opacity_workers.OpacityPool, "train",
                        lambda self, seeds, progress=None: (started.append(len(seeds)), real(self, seeds, progress))[1])
    monkeypatch.setattr(opacity_workers.os, "cpu_count", lambda: 2)  # two workers, one thread each
    assert cli("inspect", path, "quadrant", "--out", tmp_path / "pool", "--methods", "metrics",
               "--opacity", "init,order,data", "--runs", "2", "--workers", "2") == 0
    assert started == [5]  # 2 + 2 + 2 runs, run 0 of init and order shared
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli("inspect", path, "quadrant", "--out", tmp_path / "here", "--methods", "metrics",
                   "--opacity", "init,order,data", "--runs", "2", "--workers", "1") == 0
        assert started == [5]  # here: no pool
    finally:
        torch.set_num_threads(threads)
    pool = json.loads((tmp_path / "pool" / "summary.json").read_text())["opacity"]
    here = json.loads((tmp_path / "here" / "summary.json").read_text())["opacity"]
    assert pool == here
