"""Demo wall time: `moe-pipeline run pipelines/digits.yaml` into an empty registry, as `make demo` does after setup."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time


def run() -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "moe_pipeline", "run", "pipelines/digits.yaml", "--quiet"],
                       env=env, check=True, capture_output=True)
        seconds = time.perf_counter() - started
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "moe_pipeline", "--help"], check=True, capture_output=True)
        help_seconds = time.perf_counter() - started
    return [{"benchmark": "demo wall time (train digits.yaml, 6 experts, empty registry)", "value": round(seconds, 1),
             "unit": "s", "goal": "< 60 s", "met": seconds < 60, "note": f"`moe-pipeline --help` {help_seconds:.2f}s"}]


if __name__ == "__main__":
    for row in run():
        print(row)
