"""Reading a table source as a user has one: a 500,000-row CSV and the same rows as parquet,
32 float features and a class column, through the project's reader (every cell checked,
class names, errors naming row and column) against a hand-written pyarrow read of the same
file into the same arrays. Interleaved, best of 3, in this process.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

ROWS, FEATURES = 500_000, 32


def _write(folder: Path) -> tuple[Path, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    x = rng.normal(size=(ROWS, FEATURES)).astype(np.float32)
    y = rng.integers(0, 3, size=ROWS)
    csv_path, parquet_path = folder / "t.csv", folder / "t.parquet"
    with open(csv_path, "w") as fh:
        fh.write(",".join([f"f{i}" for i in range(FEATURES)] + ["label"]) + "\n")
        np.savetxt(fh, np.column_stack([x, y]), delimiter=",", fmt=["%.6g"] * FEATURES + ["%d"])
    pq.write_table(pa.table({**{f"f{i}": x[:, i] for i in range(FEATURES)}, "label": y.astype(str)}), parquet_path)
    return csv_path, parquet_path


def _by_hand(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table = pacsv.read_csv(path) if path.suffix == ".csv" else pq.read_table(path)
    x = np.column_stack([table.column(f"f{i}").to_numpy() for i in range(FEATURES)]).astype(np.float32)
    labels = pc.cast(table.column("label"), "string")
    y = pc.index_in(labels, value_set=pc.unique(labels)).to_numpy()
    return x, y


def run() -> list[dict]:
    from moe_pipeline.data.files import read
    from moe_pipeline.pipeline.spec import TableSource

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = _write(Path(tmp))
        for path in paths:
            source = TableSource.model_validate({"loader": path.suffix[1:], "path": path.name, "label": "label"})
            ours, hand = [], []
            for _ in range(3):
                started = time.perf_counter()
                data = read(source, path, "t")
                ours.append(time.perf_counter() - started)
                started = time.perf_counter()
                x, _ = _by_hand(path)
                hand.append(time.perf_counter() - started)
            assert np.array_equal(data.fields["features"], x), "the reader and the reference disagree"
            ratio = min(ours) / min(hand)
            rows.append({"benchmark": f"read a {ROWS:,}-row {path.suffix[1:]} table (32 features + class) vs a "
                                      "hand-written pyarrow read", "value": round(ratio, 2), "unit": "x",
                         "goal": "<= 1.5x", "met": ratio <= 1.5,
                         "note": f"ours {min(ours):.2f} s, by hand {min(hand):.2f} s (best of 3, interleaved)"})
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
