"""One expert's input tensors and target, per split, from source fields and stored upstream outputs.

A downstream expert reads its upstream experts' *stored outputs* (handed in as tensors);
this module never loads a model. Inputs are concatenated after flattening, except a single
image field, which keeps its (c, h, w) shape for convolutional experts. It records where
each input's block of columns lies, which inspection uses for the reliance table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

import torch

from moe_pipeline.data.sources import call_user_code, import_object
from moe_pipeline.data.store import SPLITS, DataStore
from moe_pipeline.errors import DataError

if TYPE_CHECKING:
    from moe_pipeline.pipeline.spec import ExpertSpec

# expert -> split -> output name -> (n, k)
UpstreamOutputs = Mapping[str, Mapping[str, Mapping[str, torch.Tensor]]]


@dataclass(frozen=True)
class Block:
    """Columns [start, stop) of the flattened input come from `ref` (e.g. has_loop.embedding)."""

    ref: str
    start: int
    stop: int


@dataclass
class ExpertData:
    """One expert's inputs and target per split, flattened into blocks, with its task and names."""

    x: dict[str, torch.Tensor]  # split -> (n, *in_shape)
    y: dict[str, torch.Tensor]  # split -> (n,) int64 classes or float values
    blocks: list[Block]
    task: str  # classification | regression
    n_outputs: int  # classes, or 1 for regression
    feature_names: list[str] | None = None  # one per flattened input column, where the sources name them
    class_names: list[str] | None = None  # one per class id, where the target's source names them
    split_rows: dict[str, int] | None = None  # each split's rows where x and y hold the first of them only

    def rows_in(self, split: str) -> int:
        """How many rows the split has in the source (x and y may hold a sample of them)."""
        return self.split_rows[split] if self.split_rows else len(self.y[split])

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.x["train"].shape[1:])

    def baseline(self) -> float:
        """The validation metric of the trivial predictor: the train split's majority class
        (accuracy) or its mean (R2). An expert should beat it."""
        train, val = self.y["train"], self.y["val"]
        if not len(val):
            return float("nan")
        if self.task == "classification":
            majority = int(torch.bincount(train).argmax()) if len(train) else 0
            return float((val == majority).double().mean())
        mean = train.float().mean(dim=0)
        var = float(((val - val.mean(dim=0)) ** 2).mean())
        return 1.0 - float(((val - mean) ** 2).mean()) / var if var > 0 else 0.0


def build_expert_data(name: str, expert: ExpertSpec, store: DataStore, upstream: UpstreamOutputs) -> ExpertData:
    parts = {split: [_one_input(name, ref, store, upstream, split) for ref in expert.inputs] for split in SPLITS}
    x = {split: concatenate(name, expert.inputs, parts[split], split) for split in SPLITS}
    blocks, start = [], 0
    for ref, part in zip(expert.inputs, parts["train"]):
        width = part[0].numel()
        blocks.append(Block(ref, start, start + width))
        start += width
    for ref, part in zip(expert.inputs, parts["train"]):
        _finite(name, f"input {ref}", part)
    y, task, n_outputs = _target(name, expert, store)
    return ExpertData(x=x, y=y, blocks=blocks, task=task, n_outputs=n_outputs,
                      feature_names=feature_names(store, blocks, [tuple(p.shape[1:]) for p in parts["train"]]),
                      class_names=class_names(name, expert, store, task, n_outputs))


def class_names(name: str, expert: ExpertSpec, store: DataStore, task: str, n_outputs: int) -> list[str] | None:
    """The names of the target's class ids: the expert's `classes:`, else its source's (a target
    function's ids have none), one per id."""
    if task != "classification":
        return None
    if expert.classes is not None:
        if len(expert.classes) != n_outputs:
            raise DataError(f"expert '{name}': `classes` names {len(expert.classes)} classes but the target has "
                            f"{n_outputs} (ids 0..{n_outputs - 1}); give one name per class id")
        return list(expert.classes)
    owner, _, field = expert.target_field.partition(".")
    return None if expert.target_fn else store.described(owner).classes.get(field)


def feature_names(store: DataStore, blocks: list[Block], shapes: list[tuple[int, ...]]) -> list[str] | None:
    """`radius`, `texture`, ... for named source columns; `digits.image (row 3, col 4)` for a
    pixel; `has_loop.probs[loop]` for an upstream expert's probabilities or logits where its
    YAML names its classes; `has_loop.probs[1]` otherwise."""
    names: list[str] = []
    for block, shape in zip(blocks, shapes):
        owner, _, field = block.ref.partition(".")
        width = block.stop - block.start
        if len(shape) == 3:  # an image (c, h, w): pixels by row and column
            c, h, w = shape
            names += [f"{block.ref} (row {r}, col {col}{f', ch {ch}' if c > 1 else ''})"
                      for ch in range(c) for r in range(h) for col in range(w)]
            continue
        if owner in store.pipeline.sources:
            known = store.described(owner).names.get(field)
        else:
            classes = store.pipeline.experts[owner].classes if field in ("probs", "logits") else None
            known = [f"{block.ref}[{c}]" for c in classes] if classes else None
        names += known if known and len(known) == width else [f"{block.ref}[{i}]" for i in range(width)]
    return names


MAX_CLASSES = 10_000  # a classification head wider than this is a mistake (class ids not 0..C-1)


def _finite(name: str, what: str, values: torch.Tensor) -> None:
    if values.dtype.is_floating_point and not bool(torch.isfinite(values).all()):
        bad = int((~torch.isfinite(values)).reshape(len(values), -1).any(dim=1).nonzero()[0, 0])
        raise DataError(f"expert '{name}': {what} holds NaN or inf (first in row {bad}); clean the data or "
                        f"choose another field")


def _one_input(name: str, ref: str, store: DataStore, upstream: UpstreamOutputs, split: str) -> torch.Tensor:
    owner, _, output = ref.partition(".")
    if owner in store.pipeline.sources:
        return store.source(owner).field(output, split).float()
    if owner not in upstream:
        raise DataError(f"expert '{name}': no stored outputs of upstream expert '{owner}'; train '{owner}' first")
    return upstream[owner][split][output].float()


def concatenate(name: str, inputs: list[str], parts: list[torch.Tensor], split: str) -> torch.Tensor:
    """One expert's input from its parts, in `inputs` order; prediction builds it with this too."""
    if len(parts) == 1 and parts[0].dim() == 4:
        return parts[0]  # one image field: keep (n, c, h, w) for a cnn
    rows = {len(p) for p in parts}
    if len(rows) != 1:
        raise DataError(f"expert '{name}': inputs {inputs} have different row counts {sorted(rows)} on {split}")
    return torch.cat([p.reshape(len(p), -1) for p in parts], dim=1)  # (n, sum of widths)


def _target(name: str, expert: ExpertSpec, store: DataStore) -> tuple[dict[str, torch.Tensor], str, int]:
    owner, _, field = expert.target_field.partition(".")
    source = store.source(owner)
    values, task, n_outputs = target_values(name, expert, source.fields[field])
    return {split: values[source.splits[split]] for split in SPLITS}, task, n_outputs


def target_values(name: str, expert: ExpertSpec, read: torch.Tensor) -> tuple[torch.Tensor, str, int]:
    """The target of every row from the target field's values (the target function applied),
    checked: its task, and class ids 0..C-1 with C, or regression values."""
    values = read
    if expert.target_fn:
        fn = import_object(expert.target_fn)
        returned = call_user_code(expert.target_fn, fn, values)
        try:
            values = torch.as_tensor(returned)
        except (TypeError, ValueError, RuntimeError):
            raise DataError(f"expert '{name}': target function {expert.target_fn} returned "
                            f"{type(returned).__name__}; it must return a tensor with one row per input row") from None
        if values.dim() == 0 or values.shape[0] != read.shape[0]:
            raise DataError(f"expert '{name}': target function {expert.target_fn} returned "
                            f"{values.shape[0] if values.dim() else 'a scalar'} rows for "
                            f"{read.shape[0]}; it must map each row")
    if not (values.dtype.is_floating_point or values.dtype in (torch.int64, torch.int32, torch.int16, torch.int8,
                                                               torch.uint8, torch.bool)):
        raise DataError(f"expert '{name}': the target has dtype {values.dtype}; expected integers or floats")
    _finite(name, f"the target {expert.target_fn or expert.target_field}", values)
    if expert.classes is not None and expert.task != "regression" and values.dtype.is_floating_point \
            and not torch.equal(values, values.round()):
        raise DataError(f"expert '{name}': `classes:` names classes, but the target holds real numbers; return "
                        "integer class ids from the target function, or drop `classes:` and set task: regression")
    task = expert.task or ("regression" if values.dtype.is_floating_point else "classification")
    if task == "classification":
        values, n_outputs = _classes(name, expert, values)
    else:
        if values.dim() > 2:
            raise DataError(f"expert '{name}': a regression target must be (n,) or (n, k); got {tuple(values.shape)}")
        values = values.float().reshape(len(values), -1).squeeze(1)
        n_outputs = 1 if values.dim() == 1 else values.shape[1]
    return values, task, n_outputs


def _classes(name: str, expert: ExpertSpec, values: torch.Tensor) -> tuple[torch.Tensor, int]:
    """1-D integer class ids 0..C-1; anything else is an error, never a silent reshape."""
    if values.dim() == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.dim() != 1:
        raise DataError(f"expert '{name}': a classification target must be one class id per row, shape (n,); got "
                        f"{tuple(values.shape)}. Return class ids (e.g. `.argmax(1)` of a one-hot), or set task: "
                        "regression")
    if values.dtype.is_floating_point and not torch.equal(values, values.round()):
        raise DataError(f"expert '{name}': classification targets must be integer class ids; "
                        f"set task: regression for real-valued targets")
    values = values.long()
    if len(values) and values.min() < 0:
        raise DataError(f"expert '{name}': class ids must be non-negative")
    n_outputs = int(values.max()) + 1 if len(values) else 0
    if n_outputs > MAX_CLASSES:
        distinct = int(values.unique().numel())
        raise DataError(f"expert '{name}': class ids must be 0..C-1 with C at most {MAX_CLASSES}; got largest id "
                        f"{n_outputs - 1} among {distinct} distinct ids. Map them to 0..{distinct - 1} in a target fn")
    return values, n_outputs
