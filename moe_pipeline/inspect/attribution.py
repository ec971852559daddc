"""Attributions with captum: integrated gradients and saliency, per class and per example.

Pure: a model and tensors in, attribution tensors out (the report draws them).
"""
from __future__ import annotations

import torch
from torch import nn


def attributions(model: nn.Module, x: torch.Tensor, target: torch.Tensor, method: str, steps: int = 32) -> torch.Tensor:
    """(n, *in_shape) attribution of the logit of `target` for each row of x."""
    from captum.attr import IntegratedGradients, Saliency

    model.eval()
    x = x.detach().clone().requires_grad_(True)
    if method == "integrated_gradients":
        return IntegratedGradients(model).attribute(x, baselines=torch.zeros_like(x), target=target, n_steps=steps,
                                                    internal_batch_size=max(len(x) * steps // 4, 1)).detach()
    if method == "saliency":
        return Saliency(model).attribute(x, target=target, abs=True).detach()
    raise ValueError(f"unknown attribution method {method}")


def class_averaged(attr: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(C, *in_shape) mean attribution over the rows of each class (zeros where a class is absent)."""
    flat = attr.reshape(len(attr), -1)
    onehot = nn.functional.one_hot(labels, n_classes).to(flat.dtype)  # (n, C)
    means = onehot.T @ flat / onehot.sum(0).clamp(min=1)[:, None]
    return means.reshape(n_classes, *attr.shape[1:])
