"""Preprocessing declared in the YAML: standardize, minmax, onehot.

Fitted on the train split only (nothing of val or test leaks into training), kept as plain
JSON parameters that are stored with each version, and applied identically wherever the
source is read: training, cutoff checks, inspection. Pure: arrays in, arrays out; no I/O.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def fit(kind: str, train: np.ndarray) -> dict[str, Any]:
    """Parameters of one transform from the train rows of one field (n, ...)."""
    flat = train.reshape(len(train), -1).astype(np.float64)
    if kind == "standardize":
        std = flat.std(axis=0)
        return {"kind": kind, "mean": flat.mean(axis=0).tolist(), "std": np.where(std > 0, std, 1.0).tolist()}
    if kind == "minmax":
        low, high = flat.min(axis=0), flat.max(axis=0)
        return {"kind": kind, "min": low.tolist(), "range": np.where(high > low, high - low, 1.0).tolist()}
    if kind == "onehot":
        return {"kind": kind, "values": sorted({int(v) for v in flat[:, 0]})}
    raise ValueError(f"unknown transform {kind!r}")


def apply(params: dict[str, Any], values: np.ndarray) -> np.ndarray:
    """The fitted transform on every row: (n, ...) -> same shape, float32; onehot: (n,) -> (n, k)."""
    kind = params["kind"]
    if kind == "onehot":
        index = {v: i for i, v in enumerate(params["values"])}
        out = np.zeros((len(values), len(index)), dtype=np.float32)  # a value unseen in train: all zeros
        for row, value in enumerate(values.reshape(len(values), -1)[:, 0]):
            if int(value) in index:
                out[row, index[int(value)]] = 1.0
        return out
    flat = values.reshape(len(values), -1).astype(np.float64)
    if kind == "standardize":
        flat = (flat - np.asarray(params["mean"])) / np.asarray(params["std"])
    else:
        flat = (flat - np.asarray(params["min"])) / np.asarray(params["range"])
    return flat.astype(np.float32).reshape(values.shape)
