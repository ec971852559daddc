"""Everyday commands as a user runs them: fresh processes, median of 5, on the demo pipeline.

A registry is written through the project's own `run`, then `status`, `dag`, `impact`,
`run --dry-run` and `validate` are timed with everything fresh and after a change (an lr
edit), each in a new interpreter, with its peak memory (GNU time's maximum RSS); and a `run`
with nothing to do against `status`, interleaved.
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOALS = {"status": (1.0, 150), "dag": (1.0, None), "run --dry-run": (1.5, None), "impact": (1.5, None),
         "validate": (0.5, None)}


def _time(args: list[str], env: dict) -> tuple[float, float | None]:
    gnu_time = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").exists() else None)
    prefix = [gnu_time, "-f", "%M"] if gnu_time else []
    started = time.perf_counter()
    proc = subprocess.run([*prefix, sys.executable, "-m", "moe_pipeline", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{args}: {proc.stderr[-500:]}")
    rss = float(proc.stderr.strip().splitlines()[-1]) / 1024 if gnu_time else None
    return seconds, rss


def demo_project(tmp: str) -> tuple[Path, dict]:
    """The demo pipeline copied into `tmp` (a project root of its own), and the environment that
    gives it a registry there: (pipeline file, env)."""
    project = Path(tmp)
    (project / ".git").mkdir()  # the project root of the copied pipeline
    pipeline = project / "digits.yaml"
    pipeline.write_text((ROOT / "pipelines" / "digits.yaml").read_text())
    return pipeline, {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project}/registry/mlflow.db",
                      "PYTHONPATH": str(ROOT)}


def run() -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        pipeline, env = demo_project(tmp)
        subprocess.run([sys.executable, "-m", "moe_pipeline", "run", str(pipeline), "--quiet"], env=env, cwd=ROOT,
                       check=True, capture_output=True)
        rows.append(_noop_run_vs_status(pipeline, env))
        for case in ("all fresh", "after an lr change"):
            if case != "all fresh":
                pipeline.write_text(pipeline.read_text().replace("lr: 3.0e-3", "lr: 1.0e-3", 1))
            for name, args in (("status", ["status", str(pipeline), "--json"]), ("dag", ["dag", str(pipeline)]),
                               ("run --dry-run", ["run", str(pipeline), "--dry-run"]),
                               ("impact", ["impact", str(pipeline), "has_loop"]),
                               ("validate", ["validate", str(pipeline)])):
                samples = [_time(args, env) for _ in range(5)]
                seconds = statistics.median(s for s, _ in samples)
                rss = max((r for _, r in samples if r is not None), default=None)
                goal_s, goal_mb = GOALS[name]
                met = seconds <= goal_s and (goal_mb is None or rss is None or rss <= goal_mb)
                rows.append({"benchmark": f"`{name}` on the demo, {case} (fresh process, median of 5)",
                             "value": round(seconds, 2), "unit": "s",
                             "goal": f"<= {goal_s} s" + (f", <= {goal_mb} MB" if goal_mb else ""), "met": met,
                             "note": f"peak RSS {rss:.0f} MB" if rss is not None else "peak RSS not measured"})
    return rows


def _noop_run_vs_status(pipeline: Path, env: dict) -> dict:
    """`run` with nothing to train against `status`, interleaved in 7 rounds (the machine's drift
    hits both alike); the goal is on the ratio of the medians."""
    runs, statuses = [], []
    for _ in range(7):
        runs.append(_time(["run", str(pipeline)], env)[0])
        statuses.append(_time(["status", str(pipeline)], env)[0])
    run_s, status_s = statistics.median(runs), statistics.median(statuses)
    ratio = run_s / status_s
    return {"benchmark": "no-op `run` on the demo vs `status` (fresh processes, interleaved, median of 7)",
            "value": round(ratio, 2), "unit": "x", "goal": "<= 1.2x", "met": ratio <= 1.2,
            "note": f"run {run_s:.2f} s, status {status_s:.2f} s"}


if __name__ == "__main__":
    for row in run():
        print(row)
