"""Inspection as a user runs it: `inspect` of one demo expert and the `report` overview page,
each in a fresh process (median of 3), after the project's own `run` wrote a registry.

Goal (issue #17): `inspect` of one expert at most 30 s without opacity runs.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _seconds(args: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "moe_pipeline", *args], env=env, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - started


def run() -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        (project / ".git").mkdir()
        pipeline = project / "digits.yaml"
        pipeline.write_text((ROOT / "pipelines" / "digits.yaml").read_text())
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project}/registry/mlflow.db", "PYTHONPATH": str(ROOT)}
        subprocess.run([sys.executable, "-m", "moe_pipeline", "run", str(pipeline), "--quiet"], env=env, cwd=ROOT,
                       check=True, capture_output=True)
        for expert, kind in (("has_loop", "CNN on 8x8 images"), ("digit", "MLP on five experts' probabilities")):
            seconds = statistics.median(_seconds(["inspect", str(pipeline), expert], env) for _ in range(3))
            rows.append({"benchmark": f"`inspect` of {expert} ({kind}), every section, fresh process (median of 3)",
                         "value": round(seconds, 2), "unit": "s", "goal": "<= 30 s", "met": seconds <= 30,
                         "note": "no opacity runs"})
        seconds = statistics.median(_seconds(["report", str(pipeline)], env) for _ in range(3))
        rows.append({"benchmark": "`report` overview of the demo (6 expert reports, dependency table), fresh process "
                                  "(median of 3)", "value": round(seconds, 2), "unit": "s", "goal": "—", "met": True,
                     "note": "no weak input on the demo at the default 10%: no ablation"})
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
