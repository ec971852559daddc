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
