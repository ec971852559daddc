"""`resources.max_host_memory_gb` through `run`: a parquet source read a block at a time, each
expert's inputs on disk and shuffled within a buffer, stored outputs written in chunks. A
buffer that holds every row trains exactly what the in-memory path trains (the same bytes of
weights and stored outputs); a smaller one trains too, leaves nothing behind, and predicts."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import cli, status_entries

PIPELINE = """
name: streamed
sources:
  t:
    loader: parquet
    path: data.parquet
    fields:
      left: {columns: [f0, f1, f2, f3]}
      right: {columns: [f4, f5, f6, f7]}
      y: {columns: [y], kind: categorical}
    split: {val: 0.15, test: 0.15}
experts:
  a: {inputs: [t.left], target: t.y, model: {kind: mlp, hidden: [16]}, train: {epochs: 3, batch_size: 128, patience: null}}
  b: {inputs: [t.right], target: t.y, model: {kind: mlp, hidden: [16]}, train: {epochs: 3, batch_size: 128, patience: null}}
  final: {inputs: [a.probs, b.probs], target: t.y, model: {kind: mlp, hidden: [8]}, train: {epochs: 3, batch_size: 128, patience: null}}
registry: {tracking_uri: "sqlite:///REGISTRY"}
"""


def _project(folder: Path, budget: float | None) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6000, 8)).astype(np.float32)
    y = np.where(x[:, 0] + x[:, 5] > 0, "yes", "no")
    pq.write_table(pa.table({**{f"f{i}": x[:, i] for i in range(8)}, "y": y}), folder / "data.parquet",
                   row_group_size=1000)
    text = PIPELINE.replace("REGISTRY", str(folder / "registry" / "mlflow.db"))
    if budget is not None:
        text += f"resources: {{max_host_memory_gb: {budget}}}\n"
    (folder / "p.yaml").write_text(text)
    return folder / "p.yaml"


def _tensor_files(folder: Path) -> list[str]:
    """sha256 of every weights and stored-outputs file the registry holds."""
    return sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in (folder / "registry").rglob("*.safetensors"))


def test_a_buffer_holding_every_row_trains_the_bytes_the_in_memory_path_trains(tmp_path: Path, monkeypatch):
    memory, disk = _project(tmp_path / "memory", None), _project(tmp_path / "disk", 1.0)
    for path in (memory, disk):
        monkeypatch.chdir(path.parent)
        assert cli("run", path, "--quiet") == 0
    assert (tmp_path / "disk" / ".moe-cache" / "rows").is_dir()  # it did train from rows on disk
    assert len(_tensor_files(memory.parent)) == 3 * 6  # weights, initial, probe, three splits' outputs
    assert _tensor_files(disk.parent) == _tensor_files(memory.parent)


def test_a_small_buffer_trains_every_expert_leaves_no_rows_behind_and_predicts(tmp_path: Path, monkeypatch, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    memory, disk = _project(tmp_path / "memory", None), _project(tmp_path / "disk", 0.0002)  # buffers of ~3,300 rows
    for path in (memory, disk):
        monkeypatch.chdir(path.parent)
        assert cli("run", path, "--quiet") == 0
    assert list((disk.parent / ".moe-cache" / "rows").iterdir()) == []
    assert all(e["status"] == "fresh" for e in status_entries(disk, capsys).values())
    trained = _tensor_files(disk.parent)
    assert len(trained) == 18 and trained != _tensor_files(memory.parent)  # another order: other weights
    new = pa.table({f"f{i}": np.random.default_rng(1).normal(size=50).astype(np.float32) for i in range(8)})
    pq.write_table(new, tmp_path / "new.parquet")
    assert cli("predict", disk, "--input", tmp_path / "new.parquet", "--out", tmp_path / "out.csv") == 0
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert len(lines) == 51


@pytest.mark.parametrize("budget", ["0", "-1"])
def test_the_budget_must_be_positive(tmp_path: Path, budget: str, capsys):
    path = _project(tmp_path / "p", None)
    path.write_text(path.read_text() + f"resources: {{max_host_memory_gb: {budget}}}\n")
    assert cli("status", path) == 2
    assert "max_host_memory_gb" in capsys.readouterr().err


def test_a_streamed_expert_is_inspected_on_the_first_rows_of_each_split_and_the_page_says_so(
        tmp_path: Path, monkeypatch):
    from moe_pipeline.data import streamed_inputs

    path = _project(tmp_path / "p", 1.0)
    monkeypatch.chdir(path.parent)
    assert cli("run", path, "--quiet") == 0
    monkeypatch.setattr(streamed_inputs, "INSPECT_ROWS", 500)
    out = tmp_path / "report"
    assert cli("inspect", path, "final", "--out", out, "--methods", "metrics,collapse") == 0
    page = (out / "report.html").read_text()
    assert "the first 500 of 900 test rows (this section&#x27;s budget: 500)" in page or \
        "the first 500 of 900 test rows (this section's budget: 500)" in page
    assert "the first 500 of 4,200 training rows" in page
    assert list((path.parent / ".moe-cache" / "rows").iterdir()) == []  # the sample's rows on disk are gone


def test_predict_reads_a_parquet_input_a_chunk_at_a_time_and_writes_what_the_whole_table_gives(
        tmp_path: Path, monkeypatch, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from moe_pipeline.serve import inputs

    path = _project(tmp_path / "p", None)
    monkeypatch.chdir(path.parent)
    assert cli("run", path, "--quiet") == 0
    values = np.random.default_rng(2).normal(size=(1000, 8)).astype(np.float32)
    pq.write_table(pa.table({f"f{i}": values[:, i] for i in range(8)}), tmp_path / "new.parquet", row_group_size=300)
    capsys.readouterr()
    assert cli("predict", path, "--input", tmp_path / "new.parquet") == 0  # stdout: the whole table at once
    whole = capsys.readouterr().out
    read = []
    real = inputs.parquet_chunks
    monkeypatch.setattr(inputs, "parquet_chunks", lambda p, s: (read.append(1), real(p, s, rows=7))[1])
    assert cli("predict", path, "--input", tmp_path / "new.parquet", "--out", tmp_path / "out.csv") == 0
    assert read and (tmp_path / "out.csv").read_text() == whole and len(whole.splitlines()) == 1001
    values[900, 3] = np.nan  # in a late chunk: one error naming the row, and no output file at all
    pq.write_table(pa.table({f"f{i}": values[:, i] for i in range(8)}), tmp_path / "bad.parquet")
    capsys.readouterr()
    assert cli("predict", path, "--input", tmp_path / "bad.parquet", "--out", tmp_path / "bad.csv") == 2
    assert "row 900, column 'f3': NaN or inf" in capsys.readouterr().err
    assert not (tmp_path / "bad.csv").exists() and not list(tmp_path.glob(".bad.csv*"))
