"""Ray executor against the sequential runner, as a user runs them (fresh processes, fresh registries).

1. Eight independent experts of about 20 s each (the issue asks for >= 2 s; BENCH_RAY_EPOCHS=500 gives ~10 s, 250 ~5 s): `run` against `run --executor ray`
   (Ray started by the run itself, its start-up counted). On this 2-core machine Ray runs
   two at a time; the goal is >= 1.6x faster.
2. Ray's fixed overhead on the demo (six experts, mostly a chain): the same two commands.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# ~20 s per expert here; fixed costs weigh less as it grows. (400 gave ~20 s before the trainer
# used torch's fused optimiser; with it, 400 epochs take ~8 s.)
EPOCHS = int(os.environ.get("BENCH_RAY_EPOCHS", "1000"))
TARGETS = ["has_loop", "is_even", "is_large", "is_prime", "above_six"]

WIDE = """name: wide
sources:
  digits: {{loader: sklearn.digits, split: {{val: 0.15, test: 0.15}}}}
experts:
{experts}
resources: {{num_cpus: 1}}
"""
EXPERT = """  e{i}:
    inputs: [digits.image]
    target: {{from: digits.label, fn: "stages.digits:{fn}"}}
    model: {{kind: mlp, hidden: [256, 256]}}
    train: {{epochs: {epochs}, batch_size: 32, lr: 1.0e-3, patience: null, seed: {i}}}
"""


def _run(pipeline: Path, registry: Path, *args: str) -> float:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{registry}/mlflow.db", "RAY_USAGE_STATS_ENABLED": "0"}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "moe_pipeline", "run", str(pipeline), "--quiet", *args], cwd=ROOT, env=env,
                   check=True, capture_output=True)
    return time.perf_counter() - started


def _train_seconds(registry: Path, name: str) -> list[float]:
    from moe_pipeline.registry.reader import RegistryReader

    snap = RegistryReader(f"sqlite:///{registry}/mlflow.db", name).snapshot()
    return sorted(v.current_record.train_seconds for v in snap.values())


def _span(registry: Path, name: str) -> float:
    """Seconds from the first expert's MLflow run start to the last one's end."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{registry}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    return (max(r.info.end_time for r in runs) - min(r.info.start_time for r in runs)) / 1000


def run() -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="bench-ray-", dir=ROOT / "benchmarks"))  # under the root: stages imports
    try:
        wide = work / "wide.yaml"
        wide.write_text(WIDE.format(experts="".join(EXPERT.format(i=i, fn=TARGETS[i % 5], epochs=EPOCHS) for i in range(1, 9))))
        seq = _run(wide, work / "seq")
        on_ray = _run(wide, work / "ray", "--executor", "ray")
        seconds = _train_seconds(work / "seq", "wide")
        spans = _span(work / "seq", "wide"), _span(work / "ray", "wide")
        demo = ROOT / "pipelines" / "digits.yaml"
        demo_seq = _run(demo, work / "demo-seq")
        demo_ray = _run(demo, work / "demo-ray", "--executor", "ray")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return [
        {"benchmark": "Ray vs sequential, 8 independent experts (2 cores)", "value": round(seq / on_ray, 2), "unit": "x",
         "goal": ">= 1.6", "met": seq / on_ray >= 1.6,
         "note": f"sequential {seq:.1f}s, --executor ray {on_ray:.1f}s (Ray's start-up included); each expert trains "
                 f"{seconds[0]:.1f}-{seconds[-1]:.1f}s on one core; from the first expert's start to the last one's "
                 f"end {spans[0]:.1f}s sequential vs {spans[1]:.1f}s on Ray ({spans[0] / spans[1]:.2f}x): the rest is "
                 f"fixed start-up (Ray {on_ray - spans[1]:.1f}s, sequential {seq - spans[0]:.1f}s)"},
        {"benchmark": "Ray's fixed overhead on the demo (6 experts, mostly a chain)", "value": round(demo_ray - demo_seq, 1),
         "unit": "s", "goal": "reported", "met": True,
         "note": f"sequential {demo_seq:.1f}s, --executor ray {demo_ray:.1f}s"},
    ]


if __name__ == "__main__":
    for row in run():
        print(row)
