"""`diagnose` and `diff` on the demo as a user runs them: fresh processes, median of 3.

A registry is written through the project's own `run`; then has_loop's seed changes and `run`
retrains it (and what its cutoff check sends on). Timed: `diagnose` (inference only), `diagnose
--retrain` (the reader retrained in memory once per upstream) and `diff` of has_loop's two
versions, each with its page (`--html`), each in a new interpreter with its peak memory.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_commands import _time, demo_project  # benchmarks/ is on sys.path when run.py runs a module

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 10.0


def run() -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        pipeline, env = demo_project(tmp)
        project = pipeline.parent
        text = pipeline.read_text()
        for edit in (text, text.replace("train: {epochs: 15, batch_size: 64, lr: 3.0e-3}",
                                        "train: {epochs: 15, batch_size: 64, lr: 3.0e-3, seed: 7}", 1)):
            pipeline.write_text(edit)
            subprocess.run([sys.executable, "-m", "moe_pipeline", "run", str(pipeline), "--quiet"], env=env,
                           cwd=ROOT, check=True, capture_output=True)
        for name, args in (("diagnose", ["diagnose", str(pipeline), "--html", str(project / "d.html")]),
                           ("diagnose --retrain", ["diagnose", str(pipeline), "--retrain"]),
                           ("diff", ["diff", str(pipeline), "has_loop", "--html", str(project / "f.html")])):
            samples = [_time(args, env) for _ in range(3)]
            seconds = statistics.median(s for s, _ in samples)
            rss = max((r for _, r in samples if r is not None), default=None)
            rows.append({"benchmark": f"`{name}` on the demo after has_loop's seed changed (fresh process, median of 3)",
                         "value": round(seconds, 2), "unit": "s", "goal": f"<= {GOAL_S} s", "met": seconds <= GOAL_S,
                         "note": f"peak RSS {rss:.0f} MB" if rss is not None else "peak RSS not measured"})
    return rows
