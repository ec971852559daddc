"""Neural collapse (Papyan, Han and Donoho 2020) on penultimate features, and NC1 per layer.

Pure functions of feature tensors, labels and classifier weights; no I/O.
"""
from __future__ import annotations

import torch
from torch import nn


def _class_stats(features: torch.Tensor, labels: torch.Tensor, n_classes: int):
    h = features.double().reshape(len(features), -1)  # (n, p)
    onehot = nn.functional.one_hot(labels, n_classes).double()  # (n, C)
    counts = onehot.sum(0).clamp(min=1)  # (C,)
    means = (onehot.T @ h) / counts[:, None]  # (C, p)
    present = onehot.sum(0) > 0
    global_mean = means[present].mean(0)  # (p,) mean of class means, as in Papyan et al.
    return h, means, global_mean, present


def nc1(features: torch.Tensor, labels: torch.Tensor, n_classes: int | None = None) -> float:
    """Tr(Sigma_W Sigma_B^+) / C: within-class variability relative to between-class spread."""
    n_classes = n_classes or int(labels.max()) + 1
    h, means, global_mean, present = _class_stats(features, labels, n_classes)
    within = h - means[labels]  # (n, p)
    sigma_w = within.T @ within / len(h)
    centred = means[present] - global_mean  # (C, p)
    sigma_b = centred.T @ centred / len(centred)
    return float(torch.trace(sigma_w @ torch.linalg.pinv(sigma_b, hermitian=True)) / len(centred))


def _etf_distance(vectors: torch.Tensor) -> float:
    """|| G/||G|| - (I - 11^T/C)/sqrt(C-1) ||_F for the Gram matrix G of C vectors."""
    c = len(vectors)
    gram = vectors @ vectors.T
    target = (torch.eye(c, dtype=gram.dtype) - 1.0 / c) / (c - 1) ** 0.5
    return float(torch.linalg.norm(gram / torch.linalg.norm(gram) - target))


def _norm_cv(vectors: torch.Tensor) -> float:
    norms = vectors.norm(dim=1)
    return float(norms.std(unbiased=False) / norms.mean())


def collapse_metrics(features: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     n_classes: int) -> dict[str, float]:
    """NC1-NC4. features (n, p) penultimate; weight (C, p) and bias (C,) of the classifier."""
    h, means, global_mean, present = _class_stats(features, labels, n_classes)
    centred = means[present] - global_mean  # (C', p)
    w = weight.double()[present]  # (C', p)
    cos = nn.functional.normalize(centred, dim=1) @ nn.functional.normalize(centred, dim=1).T
    off = cos[~torch.eye(len(cos), dtype=torch.bool)]
    logits = h @ weight.double().T + (bias.double() if bias is not None else 0.0)  # (n, C)
    nearest = torch.cdist(h, means[present]).argmin(dim=1)
    nearest = torch.nonzero(present).flatten()[nearest]
    return {
        "nc1": nc1(features, labels, n_classes),
        "nc2_mean_norm_cv": _norm_cv(centred),
        "nc2_classifier_norm_cv": _norm_cv(w),
        "nc2_equiangularity": float(off.std(unbiased=False)) if len(off) else 0.0,
        "nc2_max_angle": float((off + 1.0 / (len(centred) - 1)).abs().mean()) if len(off) else 0.0,
        "nc2_etf_distance_means": _etf_distance(centred),
        "nc2_etf_distance_classifier": _etf_distance(w),
        "nc3_self_duality": float(torch.linalg.norm(w / torch.linalg.norm(w) - centred / torch.linalg.norm(centred)) ** 2),
        "nc4_ncc_mismatch": float((logits.argmax(dim=1) != nearest).double().mean()),
    }


@torch.no_grad()
def layer_features(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Output of every activation module in the expert's body, flattened: (n, width) per layer."""
    captured: dict[str, torch.Tensor] = {}
    hooks = [module.register_forward_hook(lambda m, i, o, name=name: captured.__setitem__(name, o.reshape(len(o), -1)))
             for name, module in model.body.named_modules() if isinstance(module, (nn.ReLU, nn.GELU, nn.Tanh))]
    try:
        model.eval()
        model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return captured


def deep_nc1(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, n_classes: int) -> dict[str, float]:
    """NC1 after each hidden activation: deep neural collapse decreases it layer by layer."""
    return {name: nc1(feat, labels, n_classes) for name, feat in layer_features(model, x).items()}
