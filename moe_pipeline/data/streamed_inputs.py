"""One expert's inputs written to disk a block at a time, and its target held, for training
under `resources.max_host_memory_gb`: the same `ExpertData` as `build_expert_data` builds, but
each split's inputs a `RowFile` holding exactly the rows the in-memory tensor would hold.

The expert's source fields come from its target's source (validation makes them share its
rows), read a block at a time; its upstream inputs are read as row slices of the upstream
experts' verified stored-outputs files (a split's stored outputs are that split's rows in file
order, as the source's blocks are). The target (one value a row) is held in memory. Must not
train, load a model or touch the registry.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import torch

from moe_pipeline.data.blocks import BLOCK_BYTES
from moe_pipeline.data.inputs import Block, ExpertData, class_names, concatenate, feature_names, target_values
from moe_pipeline.data.rowfile import RowFile
from moe_pipeline.data.store import SPLITS, DataStore
from moe_pipeline.errors import DataError

if TYPE_CHECKING:
    from moe_pipeline.pipeline.spec import ExpertSpec

UpstreamFiles = Mapping[str, Mapping[str, Path]]  # expert -> split -> its verified stored-outputs file


def reads_streamed(pipeline, expert: str) -> bool:
    """Whether the expert trains from its data a block at a time: `resources.max_host_memory_gb`
    is set and every source it reads is a parquet or npy file (any other is read whole)."""
    from moe_pipeline.data.streamed import STREAMED_LOADERS
    from moe_pipeline.state.fingerprint import data_refs

    if pipeline.resources_for(expert).max_host_memory_gb is None:
        return False
    owners = {ref.partition(".")[0] for ref in data_refs(pipeline, expert)}
    return bool(owners) and all(pipeline.sources[o].loader in STREAMED_LOADERS for o in owners)


INSPECT_ROWS = 100_000  # a streamed expert is inspected on the first rows of each split, at most these


def sampled_expert_data(name: str, expert: ExpertSpec, store: DataStore, upstream: UpstreamFiles,
                        budget_bytes: int) -> ExpertData:
    """The expert's data in memory on a sample: the first rows of each split in file order
    (`INSPECT_ROWS`, or fewer where a quarter of the budget holds fewer), its task and class ids
    from every row's target; `split_rows` says how many rows each split has."""
    import shutil

    from moe_pipeline.data.rowfile import rows_folder

    folder = rows_folder(store.root or Path.cwd())
    try:
        data = build_streamed_expert_data(name, expert, store, upstream, folder, budget_bytes, max_rows=INSPECT_ROWS)
        data.split_rows = {split: len(data.y[split]) for split in SPLITS}
        data.x = {split: file.read(0, len(file)) for split, file in data.x.items()}
        data.y = {split: data.y[split][:len(data.x[split])] for split in SPLITS}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return data


def build_streamed_expert_data(name: str, expert: ExpertSpec, store: DataStore, upstream: UpstreamFiles,
                               folder: Path, budget_bytes: int, max_rows: int | None = None) -> ExpertData:
    """The expert's data with each split's inputs in `folder/<split>.f32`, written in blocks
    that fit `budget_bytes` together with their parts; with `max_rows`, only each split's first
    rows (at most that many, and what a quarter of the budget holds), the target of every row."""
    from moe_pipeline.registry.artifacts import read_rows

    owner, _, field = expert.target_field.partition(".")  # its inputs' source too: validation says so
    source = store.streamed(owner)
    widths = sum(4 * math.prod(source.formats[ref.partition(".")[2]][0]) for ref in expert.inputs
                 if ref.partition(".")[0] == owner)
    # a block is read, its split's rows cut out, then joined: about four copies of its rows; and
    # blocks of more than BLOCK_BYTES make nothing faster
    rows = max(1, min(budget_bytes // 8, BLOCK_BYTES) // (4 * widths + 8))
    fields = sorted({ref.partition(".")[2] for ref in expert.inputs if ref.partition(".")[0] == owner} | {field})
    if max_rows is not None:
        max_rows = max(1, min(max_rows, budget_bytes // 4 // max(1, widths)))
    x, targets, blocks, shapes = {}, {}, None, None
    for split in SPLITS:
        file, parts, at = None, [], 0
        for block in source.blocks(split, rows, fields):
            if max_rows is not None:
                if at >= max_rows:
                    break
                block = {f: v[:max_rows - at] for f, v in block.items()}
            m = len(block[field])
            pieces = [torch.from_numpy(block[ref.partition(".")[2]]).float() if ref.partition(".")[0] == owner
                      else _upstream(name, ref, upstream, split, at, m, read_rows) for ref in expert.inputs]
            for ref, piece in zip(expert.inputs, pieces):
                if not bool(torch.isfinite(piece).all()):
                    bad = at + int((~torch.isfinite(piece)).reshape(m, -1).any(dim=1).nonzero()[0, 0])
                    raise DataError(f"expert '{name}': input {ref} holds NaN or inf (first in row {bad} of the "
                                    f"{split} split); clean the data or choose another field")
            joined = concatenate(name, expert.inputs, pieces, split)
            if file is None:
                file = RowFile(folder / f"{split}.f32", tuple(joined.shape[1:]))
                if blocks is None:
                    blocks, shapes = _blocks(expert.inputs, pieces), [tuple(p.shape[1:]) for p in pieces]
            file.append(joined.numpy())
            parts.append(torch.from_numpy(block[field]))
            at += m
        if file is None:  # an empty split: its shape is the train split's
            file = RowFile(folder / f"{split}.f32", x["train"].row_shape)
        file.close()
        x[split] = file
        if max_rows is not None:  # every row's target: the task and the class ids are the whole split's
            parts = [torch.from_numpy(block[field]) for block in source.blocks(split, rows, [field])]
        targets[split] = torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)
    y, task, n_outputs = _targets(name, expert, targets)
    return ExpertData(x=x, y=y, blocks=blocks, task=task, n_outputs=n_outputs,
                      feature_names=feature_names(store, blocks, shapes),
                      class_names=class_names(name, expert, store, task, n_outputs))


def _upstream(name: str, ref: str, upstream: UpstreamFiles, split: str, start: int, rows: int, read_rows) -> torch.Tensor:
    owner, _, output = ref.partition(".")
    if owner not in upstream:
        raise DataError(f"expert '{name}': no stored outputs of upstream expert '{owner}'; train '{owner}' first")
    piece = read_rows(Path(upstream[owner][split]), output, start, start + rows)
    if len(piece) != rows:
        raise DataError(f"expert '{name}': the stored outputs of '{owner}' have fewer {split} rows than its source")
    return piece


def _blocks(inputs: list[str], pieces: list[torch.Tensor]) -> list[Block]:
    out, start = [], 0
    for ref, piece in zip(inputs, pieces):
        width = piece[0].numel() if len(piece) else math.prod(piece.shape[1:])
        out.append(Block(ref, start, start + width))
        start += width
    return out


def _targets(name: str, expert: ExpertSpec, targets: dict[str, torch.Tensor]):
    """Each split's target, checked as the in-memory target is (on every row at once)."""
    lengths = [len(targets[split]) for split in SPLITS]
    values, task, n_outputs = target_values(name, expert, torch.cat([targets[split] for split in SPLITS]))
    return dict(zip(SPLITS, values.split(lengths))), task, n_outputs
