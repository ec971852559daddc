"""`status` on a synthetic 1,000-expert DAG whose registry holds 3 versions of each expert.

The registry is filled directly through MlflowClient with real record tags (no training).
Then `moe-pipeline status --json` runs as a user runs it, in a fresh process (median of 5),
and, for comparison, `statuses()` in-process through the MLflow client (the write path's
reader, imports not counted).
"""
from __future__ import annotations

import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

N_EXPERTS = 1000
VERSIONS = 3


def pipeline_yaml(n: int) -> str:
    rng = random.Random(0)
    lines = ["name: big", "sources:", "  p: {loader: synthetic.planted, n: 200, d: 8}", "experts:"]
    for i in range(n):
        ups = sorted(rng.sample(range(i), k=min(i, rng.choice([0, 1, 2]))))
        inputs = ", ".join(f"e{u}.probs" for u in ups) or "p.x"
        lines.append(f"  e{i}: {{inputs: [{inputs}], target: p.y, model: {{kind: mlp, hidden: [8]}}}}")
    return "\n".join(lines) + "\n"


def fill_registry(run, client) -> None:
    from moe_pipeline.state.record import Record, UpstreamRef, to_tags

    exp = run.registry.experiment_id()
    run_id = client.create_run(exp).info.run_id
    for name in run.view.pipeline.experts:
        fp = run.view.fingerprint(name)
        client.create_registered_model(f"big.{name}")
        for version in range(1, VERSIONS + 1):
            ups = {u: UpstreamRef(VERSIONS, f"o-{u}") for u in run.view.graph.predecessors(name)}
            record = Record(name, version, run_id, fp.spec, fp.spec_hash, fp.code, fp.code_hash, fp.data,
                            fp.data_hash, ups, 1.0, 1.0, "accuracy", 0.9, {}, outputs_sha=f"o-{name}")
            client.create_model_version(f"big.{name}", "file:///nowhere", run_id=run_id, tags=to_tags(record))
        client.set_registered_model_alias(f"big.{name}", "current", VERSIONS)


def run() -> list[dict]:
    import os

    from mlflow.tracking import MlflowClient

    from moe_pipeline.pipeline.loader import load_pipeline
    from moe_pipeline.execute.run import Run
    from moe_pipeline.execute.view import View

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.yaml"
        path.write_text(pipeline_yaml(N_EXPERTS))
        uri = f"sqlite:///{tmp}/mlflow.db"
        os.environ["MLFLOW_TRACKING_URI"] = uri
        run = Run(load_pipeline(path))
        started = time.perf_counter()
        fill_registry(run, MlflowClient(uri, uri))
        fill_seconds = time.perf_counter() - started

        started = time.perf_counter()
        fresh = View(load_pipeline(path), fast_reads=False)  # the client path, in this process
        statuses = fresh.statuses()
        in_process = time.perf_counter() - started
        assert all(s.status == "fresh" for s in statuses.values()), "benchmark registry is inconsistent"
        cli = []
        for _ in range(5):
            started = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "moe_pipeline", "status", str(path), "--json"],
                                  capture_output=True, text=True, env=dict(os.environ), cwd=ROOT)
            cli.append(time.perf_counter() - started)
            assert proc.returncode == 0 and '"stale"' not in proc.stdout, proc.stderr[-300:]
        seconds = statistics.median(cli)
        del os.environ["MLFLOW_TRACKING_URI"]
    return [
        {"benchmark": "`status --json`, 1000 experts x 3 versions (sqlite; fresh process, median of 5)",
         "value": round(seconds, 3), "unit": "s", "goal": "<= 2 s", "met": seconds <= 2.0,
         "note": f"statuses() in-process through the MLflow client {in_process:.2f} s ({fresh.registry.requests} "
                 f"registry requests); filling the registry took {fill_seconds:.0f} s"},
    ]


if __name__ == "__main__":
    for row in run():
        print(row)
