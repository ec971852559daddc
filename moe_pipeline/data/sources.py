"""Sources become named tensors, split deterministically, with a content hash per field.

Built-in loaders: `sklearn.digits` (the bundled data set: nothing is downloaded) and
`synthetic.planted`; custom loaders are `module:function` returning a dict of tensors.
This module must not train, and must not touch the registry.
"""
from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from moe_pipeline.errors import DataError, MoeError, UserCodeError
from moe_pipeline.pipeline.paths import source_path
from moe_pipeline.pipeline.spec import FILE_LOADERS

if TYPE_CHECKING:
    from moe_pipeline.pipeline.spec import Split


@dataclass(frozen=True)
class SourceData:
    """All rows of one source, and which rows belong to which split."""

    name: str
    fields: dict[str, torch.Tensor]  # each (n, ...), transforms applied
    splits: dict[str, torch.Tensor]  # split -> int64 row indices
    names: dict[str, list[str]] = dataclass_field(default_factory=dict)  # field -> feature names
    classes: dict[str, list[str]] = dataclass_field(default_factory=dict)  # field -> class names
    transforms: dict[str, dict[str, Any]] = dataclass_field(default_factory=dict)  # field -> fitted parameters
    raw: dict[str, torch.Tensor] = dataclass_field(default_factory=dict)  # transformed fields as read

    def raw_field(self, field: str, split: str) -> torch.Tensor:
        """A field's rows of one split before its transform: what a user hands to `predict`."""
        return self.raw.get(field, self.fields[field])[self.splits[split]]

    def field(self, field: str, split: str) -> torch.Tensor:
        return self.fields[field][self.splits[split]]


def import_object(path: str) -> Any:
    """`package.module:name` -> the object. Errors name the path and what is missing."""
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DataError(f"cannot import module '{module_name}' for '{path}': {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise DataError(f"module '{module_name}' has no '{attr}' (referenced as '{path}')") from None


def call_user_code(path: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Call a function the pipeline references; whatever it raises becomes one clear error naming it.
    `path` and `fn` are positional only: a loader's own `kwargs` may use any names, `path` among them."""
    try:
        return fn(*args, **kwargs)
    except MoeError:
        raise
    except Exception as exc:  # user code may raise anything; the user needs its name and its message
        raise UserCodeError(f"{path} raised {type(exc).__name__}: {exc}") from None


def field_hash(tensor: torch.Tensor) -> str:
    """sha256 over dtype, shape and bytes: a content hash that ignores where data came from."""
    array = tensor.detach().cpu().contiguous().numpy()
    digest = hashlib.sha256(f"{array.dtype}|{tuple(array.shape)}|".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def split_indices(n: int, split: Split, seed: int) -> dict[str, torch.Tensor]:
    """A seeded permutation cut into train/val/test; the same seed gives the same rows."""
    order = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    n_val, n_test = int(round(n * split.val)), int(round(n * split.test))
    return {
        "val": order[:n_val].sort().values,
        "test": order[n_val:n_val + n_test].sort().values,
        "train": order[n_val + n_test:].sort().values,
    }


# ---------------------------------------------------------------- loaders


def _load_digits() -> dict[str, torch.Tensor]:
    table = _digits_table()
    images = torch.tensor(table[:, :-1].reshape(-1, 8, 8), dtype=torch.float32).unsqueeze(1) / 16.0  # in [0, 1]
    return {"image": images, "label": torch.tensor(table[:, -1].astype(np.int64), dtype=torch.int64)}


def _digits_table() -> np.ndarray:
    """scikit-learn's bundled digits file (64 pixel columns, then the label), read as
    `load_digits` reads it but without importing scikit-learn (1.3 s of every `run`)."""
    import gzip
    import importlib.util

    found = importlib.util.find_spec("sklearn")  # locates the package; runs none of it
    path = Path(found.origin).parent / "datasets" / "data" / "digits.csv.gz" if found and found.origin else None
    if path is None or not path.is_file():  # another layout: let scikit-learn read it
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return np.column_stack([bunch.data, bunch.target])
    with gzip.open(path, "rt") as handle:
        return np.loadtxt(handle, delimiter=",")


def planted(n: int, d: int, informative: list[int], task: str, noise: float, seed: int) -> dict[str, torch.Tensor]:
    """Gaussian inputs; the target reads only the `informative` coordinates."""
    if max(informative) >= d:
        raise DataError(f"synthetic.planted: informative index {max(informative)} is out of range for d={d}")
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen)
    inf = x[:, informative]  # (n, k)
    if task == "signs":
        bits = (inf > 0).long()
        y = (bits * (2 ** torch.arange(len(informative)))).sum(dim=1)  # (n,) in [0, 2^k)
    else:  # gated_product
        y = inf[:, :-1].prod(dim=1) * (inf[:, -1] > 0).float() if len(informative) > 1 else inf[:, 0]
        y = y + noise * torch.randn(n, generator=gen)
    return {"x": x, "y": y}


def load_source(name: str, source: Any, pipeline_seed: int, root: Path | None = None) -> SourceData:
    names: dict[str, list[str]] = {}
    classes: dict[str, list[str]] = {}
    if source.loader == "sklearn.digits":
        fields = _load_digits()
        classes = {"label": [str(d) for d in range(10)]}  # the digit each class id is
    elif source.loader == "synthetic.planted":
        fields = planted(source.n, source.d, list(source.informative), source.task, source.noise, source.seed)
    elif source.loader in FILE_LOADERS:
        from moe_pipeline.data import files

        path = source_path(root, source.path)
        data = files.read(source, path, name)
        fields = {f: torch.from_numpy(np.ascontiguousarray(a)) for f, a in data.fields.items()}
        fields = {f: t.float() if t.dtype.is_floating_point else t.long() for f, t in fields.items()}
        names, classes = data.names, data.classes
    else:
        fields, names, classes = _load_custom(name, source)
    n = len(next(iter(fields.values())))
    splits = split_indices(n, source.split, pipeline_seed)
    for field, class_names in classes.items():
        _check_classes_in_train(name, source, field, fields[field], splits, class_names)
    transforms = _fit_transforms(source, fields, splits)
    raw = {field: fields[field] for field in transforms}
    for field, params in transforms.items():
        from moe_pipeline.data.transforms import apply

        fields[field] = torch.from_numpy(apply(params, fields[field].numpy()))
    return SourceData(name=name, fields=fields, splits=splits, names=names, classes=classes, transforms=transforms,
                      raw=raw)


def _fit_transforms(source: Any, fields: dict[str, torch.Tensor], splits: dict[str, torch.Tensor]) -> dict:
    from moe_pipeline.data.transforms import fit

    return {field: fit(kind, fields[field][splits["train"]].numpy())
            for field, kind in sorted(getattr(source, "transform", {}).items())}


def _check_classes_in_train(name: str, source: Any, field: str, ids: torch.Tensor, splits: dict[str, torch.Tensor],
                            class_names: list[str]) -> None:
    """A class the model never sees in training cannot be learned; say which and where."""
    seen = set(ids[splits["train"]].tolist())
    for split in ("val", "test"):
        missing = sorted(set(ids[splits[split]].tolist()) - seen)
        if missing:
            raise class_only_in(getattr(source, "path", source.loader), name, field, class_names[missing[0]], split,
                                int((ids == missing[0]).sum()))


def class_only_in(where: str, name: str, field: str, class_name: str, split: str, rows: int) -> DataError:
    """The error of a class that appears outside the train split only."""
    return DataError(f"{where}: source '{name}', field '{field}': class {class_name!r} appears only in the {split} "
                     f"split ({rows} row(s)); add rows of it or remove them")


def _load_custom(name: str, source: Any) -> tuple[dict[str, torch.Tensor], dict[str, list[str]], dict[str, list[str]]]:
    """A `module:function` returns {field: tensor or array}, and optionally `feature_names`
    ({field: [name per column]}) and `class_names` ({field: [name per class id]})."""
    loader: Callable[..., Any] = import_object(source.loader)
    try:
        raw = call_user_code(source.loader, loader, **source.kwargs)
    except UserCodeError as exc:
        raise UserCodeError(f"source '{name}': {exc}") from None
    if not isinstance(raw, dict):
        raise DataError(f"source '{name}': {source.loader} must return a dict of tensors, got {type(raw).__name__}")
    missing = [f for f in source.fields if f not in raw]
    if missing:
        raise DataError(f"source '{name}': {source.loader} returned no field(s) {', '.join(missing)} "
                        f"(it returned {', '.join(map(str, raw))})")
    fields = {}
    for field in source.fields:
        value = raw[field]
        tensor = torch.as_tensor(np.asarray(value)) if not isinstance(value, torch.Tensor) else value
        if not (tensor.dtype.is_floating_point or tensor.dtype in (torch.int64, torch.int32, torch.bool, torch.uint8)):
            raise DataError(f"source '{name}': field '{field}' has dtype {tensor.dtype}; expected a float or int tensor")
        if tensor.dim() == 0:
            raise DataError(f"source '{name}': field '{field}' is a scalar; expected one row per sample")
        fields[field] = tensor.float() if tensor.dtype.is_floating_point else tensor.long()
    lengths = {f: len(t) for f, t in fields.items()}
    if len(set(lengths.values())) > 1:
        raise DataError(f"source '{name}': fields have different lengths {lengths}; every field needs one row per sample")
    names, classes = raw.get("feature_names") or {}, raw.get("class_names") or {}
    if not isinstance(names, dict) or not isinstance(classes, dict):
        raise DataError(f"source '{name}': feature_names and class_names must map a field to a list of names")
    return fields, {k: [str(n) for n in v] for k, v in names.items()}, {k: [str(n) for n in v] for k, v in classes.items()}
