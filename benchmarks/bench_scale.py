"""`run` and `predict` at 1,000,000 rows against a hand-written PyTorch script doing the same work,
interleaved, each a fresh process with its peak RSS (GNU time), medians of 3.

The data: a parquet and a CSV of N rows x 32 float features and a 2-class label. The pipeline:
two mlp experts (hidden 32) each reading 16 of the features, and a final mlp reading both
experts' probabilities; 2 epochs each, batch 4,096, Adam, no early stopping. The hand-written
script reads the same file with pyarrow into float32, splits the rows the same way (70/15/15),
trains the same three networks the same way (the final one on the first two's probabilities),
and computes the validation accuracy. `predict` of the trained system on 1,000,000 new rows
(parquet) against a hand-written load + forward of the three networks.
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
ROWS = int(os.environ.get("MOE_BENCH_ROWS", "1000000"))

PIPELINE = """name: scale
sources:
  t: {loader: FORMAT, path: data.FORMAT, fields: {left: {columns: ["f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9", "f10", "f11", "f12", "f13", "f14", "f15"]}, right: {columns: ["f16", "f17", "f18", "f19", "f20", "f21", "f22", "f23", "f24", "f25", "f26", "f27", "f28", "f29", "f30", "f31"]}, y: {columns: [y], kind: categorical}}, split: {val: 0.15, test: 0.15}}
experts:
  a: {inputs: [t.left], target: t.y, model: {kind: mlp, hidden: [32]}, train: {epochs: 2, batch_size: 4096, lr: 1.0e-2, patience: null}}
  b: {inputs: [t.right], target: t.y, model: {kind: mlp, hidden: [32]}, train: {epochs: 2, batch_size: 4096, lr: 1.0e-2, patience: null}}
  final: {inputs: [a.probs, b.probs], target: t.y, model: {kind: mlp, hidden: [32]}, train: {epochs: 2, batch_size: 4096, lr: 1.0e-2, patience: null}}
registry: {tracking_uri: "sqlite:///registry/mlflow.db"}
"""

BY_HAND = r'''
import sys, numpy as np, torch, pyarrow.csv as pacsv, pyarrow.parquet as pq
path = sys.argv[1]
table = pq.read_table(path) if path.endswith(".parquet") else pacsv.read_csv(path)
x = np.column_stack([table.column(f"f{i}").to_numpy() for i in range(32)]).astype(np.float32)
y = torch.from_numpy(np.unique(table.column("y").to_numpy(zero_copy_only=False), return_inverse=True)[1].astype(np.int64))
del table
x = torch.from_numpy(x)
order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
n_val = n_test = int(0.15 * len(x))
train, val = order[n_val + n_test:], order[:n_val]
def mlp(d):
    return torch.nn.Sequential(torch.nn.Linear(d, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
def fit(inputs):
    torch.manual_seed(0)
    model = mlp(inputs.shape[1]); opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt = inputs[train], y[train]
    for _ in range(2):
        for batch in torch.randperm(len(xt)).split(4096):
            opt.zero_grad(); torch.nn.functional.cross_entropy(model(xt[batch]), yt[batch]).backward(); opt.step()
    with torch.no_grad():
        return model, torch.cat([model(c).softmax(1) for c in inputs.split(65536)])
_, pa_ = fit(x[:, :16]); _, pb_ = fit(x[:, 16:])
final, out = fit(torch.cat([pa_, pb_], 1))
print(float((out[val].argmax(1) == y[val]).double().mean()))
'''

PREDICT_BY_HAND = r'''
import sys, numpy as np, torch, pyarrow.parquet as pq
table = pq.read_table(sys.argv[1])
x = torch.from_numpy(np.column_stack([table.column(f"f{i}").to_numpy() for i in range(32)]).astype(np.float32))
del table
def mlp(d):
    return torch.nn.Sequential(torch.nn.Linear(d, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2)).eval()
a, b, final = mlp(16), mlp(16), mlp(4)
with torch.no_grad():
    out = torch.cat([final(torch.cat([a(l).softmax(1), b(r).softmax(1)], 1)).softmax(1)
                     for l, r in zip(x[:, :16].split(65536), x[:, 16:].split(65536))])
np.savetxt(sys.argv[2], out.numpy(), delimiter=",", fmt="%.6g")
'''


def _make_data(folder: Path, rows: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 32)).astype(np.float32)
    y = np.where(x[:, 0] + x[:, 16] > 0, "yes", "no")
    table = pa.table({**{f"f{i}": x[:, i] for i in range(32)}, "y": y})
    pq.write_table(table, folder / "data.parquet")
    pacsv.write_csv(table, folder / "data.csv")
    pq.write_table(pa.table({f"f{i}": x[:, i] for i in range(32)}), folder / "new.parquet")


def _timed(args: list[str], cwd: Path, env: dict) -> tuple[float, float]:
    gnu_time = shutil.which("time") or "/usr/bin/time"
    started = time.perf_counter()
    proc = subprocess.run([gnu_time, "-f", "%M", *args], cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{args}: {proc.stderr[-800:]}")
    return seconds, float(proc.stderr.strip().splitlines()[-1]) / 2**20  # GiB


def run() -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / ".git").mkdir()
        _make_data(folder, ROWS)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("MLFLOW_TRACKING_URI", None)
        for fmt in ("parquet", "csv"):
            (folder / f"{fmt}.yaml").write_text(PIPELINE.replace("FORMAT", fmt))
            ours, theirs = [], []
            for _ in range(3):
                shutil.rmtree(folder / "registry", ignore_errors=True)
                shutil.rmtree(folder / ".moe-cache", ignore_errors=True)
                ours.append(_timed([sys.executable, "-m", "moe_pipeline", "run", f"{fmt}.yaml", "--quiet"], folder, env))
                theirs.append(_timed([sys.executable, "-c", BY_HAND, f"data.{fmt}"], folder, env))
            rows.append(_row(f"`run`, 3 mlp experts, {ROWS:,} rows x 32 features, {fmt}", ours, theirs, 1.3, 1.3))
        ours, theirs = [], []
        for _ in range(3):
            ours.append(_timed([sys.executable, "-m", "moe_pipeline", "predict", "csv.yaml", "--input", "new.parquet",
                                "--out", "p.csv"], folder, env))
            theirs.append(_timed([sys.executable, "-c", PREDICT_BY_HAND, "new.parquet", "h.csv"], folder, env))
        rows.append(_row(f"`predict`, {ROWS:,} new rows (parquet), 3 mlp experts", ours, theirs, 1.5, 1.3))
    return rows


def _row(what: str, ours: list, theirs: list, time_goal: float, memory_goal: float) -> dict:
    seconds, peak = statistics.median(s for s, _ in ours), max(m for _, m in ours)
    ref_s, ref_peak = statistics.median(s for s, _ in theirs), max(m for _, m in theirs)
    ratio, memory = seconds / ref_s, peak / ref_peak
    met = ratio <= time_goal and memory <= memory_goal
    return {"benchmark": f"{what}, against a hand-written script (fresh processes, interleaved, median of 3)",
            "value": round(ratio, 2), "unit": "x time", "goal": f"<= {time_goal}x time, <= {memory_goal}x peak RSS",
            "met": met,
            "note": f"moe-pipeline {seconds:.1f} s, {peak:.2f} GiB; by hand {ref_s:.1f} s, {ref_peak:.2f} GiB "
                    f"(peak RSS {memory:.2f}x)" + ("" if met or what.startswith("`predict`") else WHY)}


WHY = ("; where the time goes beyond the script's: `run`'s own process parses the whole table to hash its fields while the training process parses it too, and on 2 cores the two compete (a parquet table is hashed a block at a time, a CSV whole), then the registry's writes")
