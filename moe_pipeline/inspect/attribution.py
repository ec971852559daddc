"""Attributions with captum: integrated gradients (steps until complete) and saliency.

Pure: a model and tensors in, attribution tensors out (the report draws them, `explain`
uses them for one prediction). No I/O, no registry.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


GAP = 0.01  # completeness gap allowed, as a fraction of the output change
FIRST_STEPS, MAX_STEPS = 32, 4096


@dataclass
class IGResult:
    """Integrated gradients of one expert's explained logit: per-input attributions, the steps used and the completeness gap."""
    attributions: torch.Tensor  # (n, *in_shape)
    steps: int
    output_change: float  # sum over rows of |f(x) - f(baseline)| of the explained logit
    gap: float  # sum over rows of |sum of attributions - (f(x) - f(baseline))|

    @property
    def gap_relative(self) -> float:
        return self.gap / self.output_change if self.output_change else 0.0


IG_VALUES = 4_000_000  # input values per integrated-gradients batch (steps x rows x row width)


def integrated_gradients(model: nn.Module, x: torch.Tensor, target: torch.Tensor | int, baseline: torch.Tensor,
                         gap: float = GAP, max_steps: int = MAX_STEPS) -> IGResult:
    """Integrated gradients of the `target` logit from `baseline` to each row of x. The steps
    double from FIRST_STEPS until the completeness gap (summed over rows) is at most `gap` of
    the output change (summed over rows), or max_steps: the result says which it reached."""
    from captum.attr import IntegratedGradients

    model.eval()
    x = x.detach().clone()
    baseline = baseline.expand_as(x).detach().clone()
    rows = torch.arange(len(x))
    index = target if isinstance(target, torch.Tensor) else torch.full((len(x),), int(target))
    with torch.no_grad():
        change = float((model(x)[rows, index] - model(baseline)[rows, index]).abs().sum())
    ig, steps = IntegratedGradients(model), FIRST_STEPS
    # rows per forward/backward: 8,192 narrow ones, fewer as they widen (a 3x32x32 image's
    # activations in a small CNN are ~8x its pixels; 8,192 of them with gradients took 2.3 GB)
    batch = min(8192, max(1, IG_VALUES // x[0].numel()))
    while True:
        attr, delta = ig.attribute(x.requires_grad_(True), baselines=baseline, target=target, n_steps=steps,
                                   method="gausslegendre", return_convergence_delta=True,
                                   internal_batch_size=max(min(len(x) * steps, batch), 1))
        result = IGResult(attr.detach(), steps, change, float(delta.abs().sum()))
        if result.gap <= gap * change or steps >= max_steps:
            return result
        steps *= 2


def saliency(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """|d logit_target / d x| per row."""
    from captum.attr import Saliency

    model.eval()
    return Saliency(model).attribute(x.detach().clone().requires_grad_(True), target=target, abs=True).detach()


def training_mean_baseline(x_train: torch.Tensor, blocks: list, image: bool) -> torch.Tensor:
    """IG's baseline: zero (a black image, or the mean of a standardised feature) except on
    inputs that are another expert's probabilities, where zero is off the data (no class at
    all): there it is the training mean, "the upstream expert's average answer"."""
    base = torch.zeros_like(x_train[:1])
    if image:
        return base
    for ref, start, stop in blocks:
        if ref.endswith(".probs"):
            base[:, start:stop] = x_train[:, start:stop].mean(0)
    return base


def class_averaged(attr: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(C, *in_shape) mean attribution over the rows of each class (zeros where a class is absent)."""
    flat = attr.reshape(len(attr), -1)
    onehot = nn.functional.one_hot(labels, n_classes).to(flat.dtype)  # (n, C)
    means = onehot.T @ flat / onehot.sum(0).clamp(min=1)[:, None]
    return means.reshape(n_classes, *attr.shape[1:])
