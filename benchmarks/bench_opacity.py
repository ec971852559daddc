"""`inspect --opacity` with its runs in worker processes (one per core, the default) against the
same command with `--workers 1` (every run here, one after another): fresh processes,
interleaved, median of 3, after the project's own `run` wrote the demo's registry.

The runs: has_loop (the demo's CNN on 8x8 images), `--opacity init,order,data --runs 3` (7
trainings: run 0 of init and order is one), with the metrics section only. The goal (issue #30):
the runs train in parallel where the machine has cores for them; on 2 cores at best 2x.
"""
from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path

from bench_inspect import _seconds, trained_demo


def run() -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        pipeline, env = trained_demo(project)
        args = ["inspect", str(pipeline), "has_loop", "--methods", "metrics", "--opacity", "init,order,data",
                "--runs", "3", "--out", str(project / "report")]
        pooled, here = [], []
        for _ in range(3):
            pooled.append(_seconds(args, env))
            here.append(_seconds([*args, "--workers", "1"], env))
    ours, theirs = statistics.median(pooled), statistics.median(here)
    cores = os.cpu_count() or 1
    return [{"benchmark": "`inspect --opacity init,order,data --runs 3` of has_loop (7 trainings): runs in worker "
                          f"processes ({min(cores, 7)} on {cores} cores) against one after another (fresh processes, "
                          "interleaved, median of 3)",
             "value": round(theirs / ours, 2), "unit": "x faster", "goal": "> 1 where there are cores for more than "
             "one run", "met": cores < 2 or theirs / ours > 1.0,
             "note": f"workers {ours:.1f} s, --workers 1 {theirs:.1f} s"}]
