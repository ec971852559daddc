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


class RunningFit:
    """`fit` over a field's train rows handed in blocks (a source read a block at a time): the
    same parameters to float64 rounding (means and variances merged as Chan et al. merge them)."""

    def __init__(self, kind: str):
        if kind not in ("standardize", "minmax", "onehot"):
            raise ValueError(f"unknown transform {kind!r}")
        self.kind, self.count = kind, 0
        self._mean = self._m2 = self._low = self._high = None
        self._values: set[int] = set()

    def add(self, train: np.ndarray) -> None:
        flat = train.reshape(len(train), -1).astype(np.float64)
        if not len(flat):
            return
        if self.kind == "onehot":
            self._values.update(int(v) for v in np.unique(flat[:, 0]))
        elif self.kind == "minmax":
            low, high = flat.min(axis=0), flat.max(axis=0)
            self._low = low if self._low is None else np.minimum(self._low, low)
            self._high = high if self._high is None else np.maximum(self._high, high)
        else:
            mean, m2, n = flat.mean(axis=0), ((flat - flat.mean(axis=0)) ** 2).sum(axis=0), len(flat)
            if self._mean is None:
                self._mean, self._m2 = mean, m2
            else:
                delta, total = mean - self._mean, self.count + n
                self._mean = self._mean + delta * (n / total)
                self._m2 = self._m2 + m2 + delta ** 2 * (self.count * n / total)
        self.count += len(flat)

    def params(self) -> dict[str, Any]:
        if self.kind == "onehot":
            return {"kind": self.kind, "values": sorted(self._values)}
        if self.kind == "minmax":
            return {"kind": self.kind, "min": self._low.tolist(),
                    "range": np.where(self._high > self._low, self._high - self._low, 1.0).tolist()}
        std = np.sqrt(self._m2 / self.count)
        return {"kind": self.kind, "mean": self._mean.tolist(), "std": np.where(std > 0, std, 1.0).tolist()}


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
