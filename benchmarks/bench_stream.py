"""Data beyond a memory budget: `run` of three experts on a 20,000,000-row x 32-feature parquet
(2.6 GB as float32) with `resources.max_host_memory_gb: 1`, against the same `run` reading the
data whole (the in-memory path), fresh processes, peak RSS from GNU time (the process and the
training process it waits for), medians of MOE_BENCH_REPEATS (default 3).

The pipeline is `bench_scale`'s: two mlp experts each reading 16 of the features, a final mlp
on both experts' probabilities, 2 epochs each, batch 4,096. The file is written in row groups
of 1,000,000 rows (pyarrow's own default is 1,048,576).
"""
from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from bench_scale import PIPELINE, _timed

ROOT = Path(__file__).resolve().parents[1]
ROWS = int(os.environ.get("MOE_BENCH_STREAM_ROWS", "20000000"))
REPEATS = int(os.environ.get("MOE_BENCH_REPEATS", "3"))
BUDGET_GB = 1.0


def _make_data(path: Path, rows: int) -> None:
    """The table, written a million rows at a time (this process never holds it whole)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    writer = None
    for start in range(0, rows, 1_000_000):
        x = rng.normal(size=(min(1_000_000, rows - start), 32)).astype(np.float32)
        table = pa.table({**{f"f{i}": x[:, i] for i in range(32)}, "y": np.where(x[:, 0] + x[:, 16] > 0, "yes", "no")})
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


def run() -> list[dict]:
    with tempfile.TemporaryDirectory(dir=os.environ.get("MOE_BENCH_TMP")) as tmp:
        folder = Path(tmp)
        (folder / ".git").mkdir()
        _make_data(folder / "data.parquet", ROWS)
        text = PIPELINE.replace("FORMAT", "parquet")
        (folder / "whole.yaml").write_text(text)
        (folder / "streamed.yaml").write_text(text + f"resources: {{max_host_memory_gb: {BUDGET_GB}}}\n")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("MLFLOW_TRACKING_URI", None)
        measured: dict[str, list] = {"streamed": [], "whole": []}
        for _ in range(REPEATS):
            for name in measured:  # interleaved
                shutil.rmtree(folder / "registry", ignore_errors=True)
                shutil.rmtree(folder / ".moe-cache", ignore_errors=True)
                measured[name].append(_timed([sys.executable, "-m", "moe_pipeline", "run", f"{name}.yaml", "--quiet"],
                                             folder, env))
                print(name, measured[name][-1], file=sys.stderr)
    seconds = {k: statistics.median(s for s, _ in v) for k, v in measured.items()}
    peak = {k: max(m for _, m in v) for k, v in measured.items()}
    ratio = seconds["streamed"] / seconds["whole"]
    return [{"benchmark": f"`run`, 3 mlp experts, {ROWS:,} rows x 32 features (parquet), max_host_memory_gb: "
                          f"{BUDGET_GB:g}, against the same run reading the data whole (median of {REPEATS})",
             "value": round(peak["streamed"], 2), "unit": "GiB peak RSS",
             "goal": "<= 1.5 GiB peak RSS, <= 1.5x the in-memory time",
             "met": peak["streamed"] <= 1.5 and ratio <= 1.5,
             "note": f"streamed {seconds['streamed']:.1f} s, {peak['streamed']:.2f} GiB; whole {seconds['whole']:.1f} s, "
                     f"{peak['whole']:.2f} GiB ({ratio:.2f}x time)"}]
