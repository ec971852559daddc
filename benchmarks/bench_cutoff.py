"""Cutoff savings: a behaviour-preserving change at the root of a chain and of a tree.

Root u is a linear regression (well determined: a new seed barely changes it); every other
expert classifies from its parent's output. After changing u's seed, `run` retrains u and
then either checks each downstream expert (cutoff) or retrains it (cutoff: off, what a
hash-based tool does).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODULE = '''
import torch


def make(n: int = 1000):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, generator=g)
    y = x @ torch.tensor([1.0, -0.5, 0.25, 0.0, 0.0])
    return {"x": x, "y": y, "cls": (y > 0).long()}
'''

HEAD = """name: bench_cutoff
sources:
  s: {loader: "bench_cutoff_data:make", fields: [x, y, cls], split: {val: 0.3, test: 0.1}}
experts:
  u:
    inputs: [s.x]
    target: s.y
    model: {kind: linear}
    train: {epochs: 300, batch_size: 1000, lr: 0.05, patience: null, seed: SEED}
"""

EXPERT = """  {name}:
    inputs: [{parent}.probs]
    target: s.cls
    model: {{kind: mlp, hidden: [16]}}
    train: {{epochs: 150, batch_size: 128, lr: 0.01, patience: null}}
    cutoff: {cutoff}
"""


def shape(kind: str) -> list[tuple[str, str]]:
    if kind == "chain":
        return [(f"c{i}", "u" if i == 0 else f"c{i - 1}") for i in range(6)]
    return [("t0", "u"), ("t1", "u"), ("t2", "t0"), ("t3", "t0"), ("t4", "t1"), ("t5", "t1")]


def write(folder: Path, kind: str, cutoff: bool, seed: int) -> Path:
    tol = "{agreement: 0.97, mean_abs: 0.02, metric_drop: 0.02}" if cutoff else "'off'"
    text = HEAD.replace("SEED", str(seed)) + "".join(EXPERT.format(name=n, parent=p, cutoff=tol) for n, p in shape(kind))
    path = folder / f"{kind}_{cutoff}.yaml"
    path.write_text(text)
    return path


def cli(args: list, env: dict) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "moe_pipeline", *map(str, args)], env=env, capture_output=True,
                          text=True, check=True)
    return time.perf_counter() - started, proc.stdout


def run() -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "bench_cutoff_data.py").write_text(MODULE)
        env = {**os.environ, "PYTHONPATH": f"{folder}:{os.getcwd()}", "COLUMNS": "200"}
        for kind in ("chain", "tree"):
            result = {}
            for cutoff in (True, False):
                env["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder}/{kind}_{cutoff}.db"
                cli(["run", write(folder, kind, cutoff, seed=0)], env)
                seconds, out = cli(["run", write(folder, kind, cutoff, seed=1)], env)
                actions = re.findall(r"│ (\w+)\s+│ (trained|retrained|kept|unchanged)", out)
                result[cutoff] = (seconds, sum(a in ("trained", "retrained") for _, a in actions), len(actions))
            (cs, cr, _), (hs, hr, n) = result[True], result[False]
            rows.append({"benchmark": f"cutoff savings, {kind} of 6 below a root (root seed changed)",
                         "value": round(hs / cs, 2), "unit": "x faster", "goal": "retrain root only",
                         "met": cr == 1,
                         "note": f"with cutoff: {cr}/{n} retrained, {cs:.1f}s; without: {hr}/{n} retrained, {hs:.1f}s "
                                 f"(wall time of `moe-pipeline run`, process start included)"})
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
