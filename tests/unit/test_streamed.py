"""Data beyond a memory budget, each mechanism against the whole-in-memory computation it stands
for: parquet and npy read a block at a time, a table's field hashes over blocks, transforms
fitted over blocks, stored outputs written a chunk at a time, metrics over chunks, the shuffle
buffer's epochs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from moe_pipeline.data.blocks import NpyBlocks, ParquetBlocks, table_digests
from moe_pipeline.data.rowfile import RowFile
from moe_pipeline.errors import DataError
from moe_pipeline.pipeline.spec import Pipeline


def _table(tmp_path: Path, n: int = 5003, row_group: int = 700, bad_row: int | None = None) -> tuple[Path, object]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 5))
    if bad_row is not None:
        x[bad_row, 2] = np.nan
    table = pa.table({**{f"f{i}": x[:, i] for i in range(5)},
                      "kind": np.array(["10", "9", "c"], dtype=object)[rng.integers(0, 3, n)],
                      "r": rng.normal(size=n)})
    path = tmp_path / "t.parquet"
    pq.write_table(table, path, row_group_size=row_group)
    pipeline = Pipeline.model_validate({
        "name": "p", "sources": {"t": {"loader": "parquet", "path": "t.parquet", "fields": {
            "x": {"columns": ["f*"]}, "kind": {"columns": ["kind"], "kind": "categorical"},
            "r": {"columns": ["r"], "kind": "numeric"}}}},
        "experts": {"e": {"inputs": ["t.x"], "target": "t.kind", "model": {"kind": "mlp", "hidden": [4]}}}})
    return path, pipeline.sources["t"]


def _whole_digests(source, path: Path) -> dict[str, str]:
    """The hash of each field as of the whole file read at once (`files.read`), as a CSV is hashed."""
    from moe_pipeline.data.files import read
    from moe_pipeline.data.store import whole_table_digests

    return whole_table_digests(read(source, path, ""))


def test_a_parquet_table_read_in_blocks_gives_the_whole_files_values_classes_and_hashes(tmp_path: Path):
    from moe_pipeline.data.files import read

    path, source = _table(tmp_path)
    whole = read(source, path, "")
    reader = ParquetBlocks(source, path)
    assert reader.classes == whole.classes == {"kind": ["10", "9", "c"]}  # over the whole file, not a block
    assert reader.names == whole.names
    blocks = list(reader.blocks(333))
    assert [start for start, _ in blocks][:3] == [0, 333, 666] and len(blocks) > 10
    for field, values in whole.fields.items():
        joined = np.concatenate([fields[field] for _, fields in blocks])
        assert joined.dtype == values.dtype and np.array_equal(joined, values)
    assert table_digests(reader, rows=333) == _whole_digests(source, path)
    assert table_digests(reader) == _whole_digests(source, path)


def test_a_bad_cell_in_a_later_block_is_named_by_its_row_in_the_file(tmp_path: Path):
    from moe_pipeline.data.files import read

    path, source = _table(tmp_path, bad_row=4321)
    with pytest.raises(DataError) as whole:
        read(source, path, "")
    with pytest.raises(DataError) as blocks:
        list(ParquetBlocks(source, path).blocks(1000))
    assert "row 4321" in str(blocks.value) and str(blocks.value) == str(whole.value)


def test_an_npy_read_in_blocks_equals_the_array_and_a_damaged_one_is_refused(tmp_path: Path):
    values = np.random.default_rng(1).normal(size=(1001, 3, 4))
    np.save(tmp_path / "a.npy", values)
    reader = NpyBlocks(tmp_path / "a.npy", "x")
    joined = np.concatenate([fields["x"] for _, fields in reader.blocks(97)])
    assert joined.dtype == np.float32 and np.array_equal(joined, values.astype(np.float32))
    np.save(tmp_path / "f.npy", np.asfortranarray(values[:, :, 0]))
    with pytest.raises(DataError, match="Fortran"):
        NpyBlocks(tmp_path / "f.npy", "x")
    (tmp_path / "short.npy").write_bytes((tmp_path / "a.npy").read_bytes()[:-8])
    with pytest.raises(DataError, match="truncated"):
        NpyBlocks(tmp_path / "short.npy", "x")
    values[500, 1, 2] = np.inf
    np.save(tmp_path / "inf.npy", values)
    with pytest.raises(DataError, match="first in row 500"):
        list(NpyBlocks(tmp_path / "inf.npy", "x").blocks(97))


@pytest.mark.parametrize("kind", ["standardize", "minmax", "onehot"])
def test_a_transform_fitted_over_blocks_equals_the_one_fitted_on_all_rows(kind: str):
    from moe_pipeline.data.transforms import RunningFit, fit

    rng = np.random.default_rng(2)
    rows = rng.integers(0, 7, size=(3001, 1)).astype(np.float32) if kind == "onehot" else \
        (rng.normal(size=(3001, 4)) * 1e3 + 5e3).astype(np.float32)
    running = RunningFit(kind)
    for block in np.array_split(rows, [5, 6, 900, 901, 2000]):  # uneven blocks, one empty
        running.add(block)
    whole, merged = fit(kind, rows), running.params()
    assert whole.keys() == merged.keys()
    for key in whole:
        if key != "kind":
            np.testing.assert_allclose(merged[key], whole[key], rtol=1e-12)


def test_outputs_written_a_chunk_at_a_time_are_the_bytes_safetensors_writes_and_read_back_as_slices(tmp_path: Path):
    from safetensors.torch import save_file

    from moe_pipeline.registry.artifacts import OutputsWriter, read_rows

    outputs = {"logits": torch.randn(53, 3), "probs": torch.rand(53, 3), "embedding": torch.randn(53, 7)}
    save_file(outputs, str(tmp_path / "whole.safetensors"))
    writer = OutputsWriter(tmp_path / "chunks.safetensors", 53, {k: tuple(v.shape[1:]) for k, v in outputs.items()})
    for start in range(0, 53, 10):
        writer.write({k: v[start:start + 10] for k, v in outputs.items()})
    writer.close()
    assert (tmp_path / "chunks.safetensors").read_bytes() == (tmp_path / "whole.safetensors").read_bytes()
    assert torch.equal(read_rows(tmp_path / "chunks.safetensors", "embedding", 11, 40), outputs["embedding"][11:40])
    short = OutputsWriter(tmp_path / "short.safetensors", 53, {"probs": (3,)})
    short.write({"probs": outputs["probs"][:10]})
    with pytest.raises(RuntimeError, match="10 rows"):
        short.close()


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_metrics_over_chunks_equal_the_metrics_of_the_whole_split(task: str):
    from moe_pipeline.training.metrics import ChunkedMetrics, metrics_of

    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(1000, 4 if task == "classification" else 1, generator=gen)
    y = torch.randint(0, 3, (1000,), generator=gen) if task == "classification" else torch.randn(1000, generator=gen)
    chunked = ChunkedMetrics(task, y)
    for chunk in logits.split(77):
        chunked.add(chunk)
    whole, parts = metrics_of(task, logits, y, "val"), chunked.result("val")
    assert whole.keys() == parts.keys()
    for key in whole:
        assert parts[key] == pytest.approx(whole[key], rel=1e-6), key


def _row_file(tmp_path: Path, x: torch.Tensor) -> RowFile:
    file = RowFile(tmp_path / "x.f32", tuple(x.shape[1:]))
    for block in x.split(13):
        file.append(block.numpy())
    file.close()
    return file


def test_a_buffer_holding_every_row_is_exactly_the_in_memory_epoch(tmp_path: Path):
    from moe_pipeline.training.batches import epoch_batches, epoch_steps

    x = torch.randn(101, 3)
    file = _row_file(tmp_path, x)
    assert torch.equal(file.read(0, 101), x)
    memory = list(epoch_batches(x, 16, torch.Generator().manual_seed(5), None))
    for buffer in (None, 101, 1000):
        disk = list(epoch_batches(file, 16, torch.Generator().manual_seed(5), buffer))
        assert len(disk) == len(memory) == epoch_steps(file, 16, buffer)
        for (rows_m, x_m), (rows_d, x_d) in zip(memory, disk):
            assert torch.equal(rows_m, rows_d) and torch.equal(x_m, x_d)


def test_a_smaller_buffer_visits_every_row_once_an_epoch_a_buffer_at_a_time(tmp_path: Path):
    from moe_pipeline.training.batches import epoch_batches, epoch_steps

    x = torch.arange(101, dtype=torch.float32)[:, None].repeat(1, 2)
    file = _row_file(tmp_path, x)
    gen = torch.Generator().manual_seed(6)
    orders = []
    for _ in range(2):
        batches = list(epoch_batches(file, 8, gen, 30))
        assert len(batches) == epoch_steps(file, 8, 30) == 3 * 4 + 2  # buffers of 30, 30, 30, 11
        for rows, values in batches:
            assert torch.equal(values[:, 0].long(), rows)  # each batch's inputs are its rows'
            assert len(rows) <= 8 and len({int(r) // 30 for r in rows}) == 1  # from one buffer
        order = torch.cat([rows for rows, _ in batches])
        assert sorted(order.tolist()) == list(range(101))
        orders.append(order)
    assert not torch.equal(orders[0], orders[1])  # each epoch its own order
