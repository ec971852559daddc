"""Confusion matrix (counts and row-normalised) and regression residuals. Pure, vectorised."""
from __future__ import annotations

import torch


def confusion_matrix(true: torch.Tensor, pred: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(C, C) int64 counts; rows are true classes, columns predictions (scikit-learn's layout)."""
    return torch.bincount(true.long() * n_classes + pred.long(), minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def row_normalised(counts: torch.Tensor) -> torch.Tensor:
    return counts.double() / counts.sum(dim=1, keepdim=True).clamp(min=1)


def residual_summary(true: torch.Tensor, pred: torch.Tensor) -> dict[str, float]:
    r = (pred.reshape(true.shape) - true).double()
    return {"mean": float(r.mean()), "std": float(r.std()), "max_abs": float(r.abs().max()),
            "mse": float((r ** 2).mean())}


def per_class(counts: torch.Tensor) -> list[dict[str, float]]:
    """Precision, recall, F1 and support of each class from (C, C) counts (0 where undefined,
    as scikit-learn's zero_division=0)."""
    c = counts.double()
    hits = c.diagonal()
    predicted, actual = c.sum(dim=0), c.sum(dim=1)
    precision = torch.where(predicted > 0, hits / predicted.clamp(min=1), torch.zeros_like(hits))
    recall = torch.where(actual > 0, hits / actual.clamp(min=1), torch.zeros_like(hits))
    both = precision + recall
    f1 = torch.where(both > 0, 2 * precision * recall / both.clamp(min=1e-300), torch.zeros_like(hits))
    return [{"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
            for p, r, f, n in zip(precision, recall, f1, actual)]
