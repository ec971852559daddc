"""Comparing two trained models: linear CKA, prediction churn, eigenspace overlap. Pure."""
from __future__ import annotations

import torch


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Kornblith et al. 2019: ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) on centred (n, p), (n, q).

    Features wider than the rows (a conv layer's) go through the (n, n) Gram matrices instead,
    never a (p, p) one: ||Y^T X||_F^2 = <X X^T, Y Y^T> and ||X^T X||_F = ||X X^T||_F."""
    x = x.double().reshape(len(x), -1)
    y = y.double().reshape(len(y), -1)
    x, y = x - x.mean(0), y - y.mean(0)
    n = len(x)
    if x.shape[1] * y.shape[1] <= n * n:
        cross = torch.linalg.norm(y.T @ x) ** 2
        return float(cross / (torch.linalg.norm(x.T @ x) * torch.linalg.norm(y.T @ y)).clamp(min=1e-300))
    kx, ky = x @ x.T, y @ y.T  # (n, n)
    return float((kx * ky).sum() / (torch.linalg.norm(kx) * torch.linalg.norm(ky)).clamp(min=1e-300))


def churn(pred_a: torch.Tensor, pred_b: torch.Tensor) -> float:
    """Fraction of samples on which two models' predictions differ."""
    return float((pred_a != pred_b).double().mean())


def subspace_overlap(u: torch.Tensor, v: torch.Tensor) -> float:
    """||U^T V||_F^2 / k for orthonormal (d, k) bases: 1 = same top-k eigenspace, ~k/d = random."""
    return float(torch.linalg.norm(u.double().T @ v.double()) ** 2 / u.shape[1])


def pairwise(values: list, fn) -> list[float]:
    return [fn(values[i], values[j]) for i in range(len(values)) for j in range(i + 1, len(values))]
