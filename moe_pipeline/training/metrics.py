"""An expert's metrics: accuracy and macro-F1 (classification), MSE and R2 (regression), on a
whole split at once or over its chunks of logits (outputs written a chunk at a time), and
which class is found least often. Vectorised; knows nothing of models, files or the registry.
"""
from __future__ import annotations

import torch
from torch import nn


def macro_f1_of(confusion: torch.Tensor) -> torch.Tensor:
    """Macro-F1 from a confusion matrix (rows: true class), over the labels that occur (as sklearn's macro)."""
    tp = confusion.diag().double()
    precision = tp / confusion.sum(0).clamp(min=1)
    recall = tp / confusion.sum(1).clamp(min=1)
    f1 = torch.where(tp > 0, 2 * precision * recall / (precision + recall), torch.zeros_like(tp))
    present = (confusion.sum(1) + confusion.sum(0)) > 0
    return f1[present].mean()


def metrics_of(task: str, logits: torch.Tensor, y: torch.Tensor, prefix: str) -> dict[str, float]:
    """Accuracy and macro-F1 (classification) or MSE and R2 (regression), vectorised."""
    logits = logits.float()
    if task == "classification":
        n_classes = logits.shape[1]
        pred = logits.argmax(dim=1)
        confusion = torch.bincount(y * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
        loss, accuracy, macro_f1 = torch.stack([nn.functional.cross_entropy(logits, y).double(),
                                                (pred == y).double().mean(), macro_f1_of(confusion)]).tolist()
        return {f"{prefix}_loss": loss, f"{prefix}_accuracy": accuracy, f"{prefix}_macro_f1": macro_f1}
    out = logits.reshape(y.shape)
    mse = float(((out - y) ** 2).mean())
    var = float(((y - y.mean()) ** 2).mean())
    return {f"{prefix}_loss": mse, f"{prefix}_mse": mse, f"{prefix}_r2": 1.0 - mse / var if var > 0 else 0.0}


def primary_metric(task: str) -> str:
    """The validation metric reported in tables and used by the cutoff: higher is better."""
    return "accuracy" if task == "classification" else "r2"


class ChunkedMetrics:
    """`metrics_of` over chunks of logits: the confusion matrix and the loss's sum (classification),
    the squared errors' sum (regression), reduced once."""

    def __init__(self, task: str, y: torch.Tensor):
        self.task, self.y, self.at = task, y, 0
        self.loss = torch.zeros((), dtype=torch.float64)
        self.confusion: torch.Tensor | None = None

    def add(self, logits: torch.Tensor) -> None:
        y = self.y[self.at:self.at + len(logits)]
        self.at += len(logits)
        logits = logits.float()
        if self.task == "classification":
            c = logits.shape[1]
            pairs = torch.bincount(y * c + logits.argmax(dim=1), minlength=c * c).reshape(c, c)
            self.confusion = pairs if self.confusion is None else self.confusion + pairs
            self.loss += torch.nn.functional.cross_entropy(logits, y, reduction="sum").double()
        else:
            self.loss += ((logits.reshape(y.shape) - y).double() ** 2).sum()

    def result(self, prefix: str) -> dict[str, float]:
        n = len(self.y)
        if self.task == "classification":
            return {f"{prefix}_loss": float(self.loss) / n, f"{prefix}_accuracy": float(self.confusion.diag().sum()) / n,
                    f"{prefix}_macro_f1": float(macro_f1_of(self.confusion))}
        mse = float(self.loss) / n
        var = float(((self.y.double() - self.y.double().mean()) ** 2).mean())
        return {f"{prefix}_loss": mse, f"{prefix}_mse": mse, f"{prefix}_r2": 1.0 - mse / var if var > 0 else 0.0}


def weakest_class(logits: torch.Tensor, y: torch.Tensor, names: list[str] | None = None) -> str:
    """`loop (recall 0.91)`: of the classes present in y, the one found least often."""
    n = logits.shape[1]
    support = torch.bincount(y, minlength=n)
    hits = torch.bincount(y[logits.argmax(dim=1) == y], minlength=n)
    recall = torch.where(support > 0, hits.double() / support.clamp(min=1), torch.full((n,), float("inf")))
    k = int(recall.argmin())
    return f"{names[k] if names and len(names) == n else f'class {k}'} (recall {float(recall[k]):.2f})"
