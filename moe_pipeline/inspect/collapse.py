"""Neural collapse (Papyan, Han and Donoho 2020) on penultimate features, and NC1 per layer.

Class means are centred at the global mean of all features, as Papyan et al. define it (not
at the mean of class means: the two differ when classes are imbalanced). With two classes
the NC2 quantities carry no information (two vectors always have one angle between them and
the simplex condition reduces to their norms), so they are None, never a misleading 0.
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
    global_mean = h.mean(0)  # (p,) the global mean of all features (Papyan et al., eq. 2)
    return h, means, global_mean, present


def nc1(features: torch.Tensor, labels: torch.Tensor, n_classes: int | None = None) -> float:
    """Tr(Sigma_W Sigma_B^+) / C: within-class variability relative to between-class spread.

    Computed in the span of the C centred class means, never with a p x p matrix: a conv layer's
    p is its channels times its pixels (8,192 for 8 channels of 32 x 32), where Sigma_W alone
    would be half a gigabyte and its pseudo-inverse hours. With M the (C, p) centred means,
    Sigma_B = M^T M / C and Sigma_B^+ = C M^T (M M^T)^{+2} M, so the trace is
    tr(Z^T Z (M M^T)^{+2}) / n with Z = (h - mean of h's class) M^T, an (n, C) matrix."""
    n_classes = n_classes or int(labels.max()) + 1
    h, means, global_mean, present = _class_stats(features, labels, n_classes)
    centred = means[present] - global_mean  # (C, p)
    z = h @ centred.T - means[labels] @ centred.T  # (n, C): the within-class deviations, projected
    inverse = torch.linalg.pinv(centred @ centred.T, hermitian=True)  # (C, C)
    return float(torch.trace(z.T @ z @ inverse @ inverse) / len(h))


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
    informative = len(centred) > 2  # see the module docstring
    return {
        "nc1": nc1(features, labels, n_classes),
        "nc2_mean_norm_cv": _norm_cv(centred) if informative else None,
        "nc2_classifier_norm_cv": _norm_cv(w) if informative else None,
        "nc2_equiangularity": float(off.std(unbiased=False)) if informative else None,
        "nc2_max_angle": float((off + 1.0 / (len(centred) - 1)).abs().mean()) if informative else None,
        "nc2_etf_distance_means": _etf_distance(centred) if informative else None,
        "nc2_etf_distance_classifier": _etf_distance(w) if informative else None,
        "nc3_self_duality": float(torch.linalg.norm(w / torch.linalg.norm(w) - centred / torch.linalg.norm(centred)) ** 2),
        "nc4_ncc_mismatch": float((logits.argmax(dim=1) != nearest).double().mean()),
    }


# What each quantity says, for the report: one line each.
MEANINGS = {
    "nc1": ("NC1 within-class variability", "Tr(Σ_W Σ_B⁺)/C; near 0: the rows of a class share one feature vector"),
    "nc2_mean_norm_cv": ("NC2 class-mean norms", "spread of the centred class means' lengths; 0: equal norms"),
    "nc2_classifier_norm_cv": ("NC2 classifier norms", "spread of the classifier rows' lengths; 0: equal norms"),
    "nc2_equiangularity": ("NC2 equiangularity", "spread of the cosines between class means; 0: equal angles"),
    "nc2_max_angle": ("NC2 max-angle gap", "mean |cos + 1/(C-1)|; 0: as far apart as C vectors can be"),
    "nc2_etf_distance_means": ("NC2 simplex distance (means)", "distance of the means' Gram matrix to a simplex ETF"),
    "nc2_etf_distance_classifier": ("NC2 simplex distance (classifier)", "the same for the classifier rows"),
    "nc3_self_duality": ("NC3 self-duality", "distance between the normalised classifier and class means; 0: aligned"),
    "nc4_ncc_mismatch": ("NC4 nearest-mean disagreement", "share of rows where the classifier and the nearest "
                         "class mean disagree"),
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


@torch.no_grad()
def deep_nc1(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, n_classes: int,
             chunk: int = 512) -> dict[str, float]:
    """NC1 after each hidden activation, keyed by a readable layer name (`body.1 ReLU after
    Linear(64→64)`): deep neural collapse decreases it layer by layer.

    Streamed: two passes over `chunk` rows at a time, the first summing each class's features,
    the second the projected within-class deviations Z^T Z (C x C); nothing of size n x p is
    held (a conv layer's 16 x 32 x 32 features for 7,000 rows would be 0.9 GB in float64). The
    same quantity as `nc1` on the whole layer, summed in another order."""
    names = layer_names(model)
    n = len(x)
    onehot = nn.functional.one_hot(labels, n_classes).double()  # (n, C)
    counts = onehot.sum(0)
    sums: dict[str, torch.Tensor] = {}
    for start in range(0, n, chunk):
        for name, h in layer_features(model, x[start:start + chunk]).items():
            part = onehot[start:start + chunk].T @ h.double()  # (C, p)
            sums[name] = part if name not in sums else sums[name] + part
    present = counts > 0
    means = {name: total / counts.clamp(min=1)[:, None] for name, total in sums.items()}
    centred = {name: m[present] - sums[name].sum(0) / n for name, m in means.items()}  # (C', p)
    scatter = {name: torch.zeros(int(present.sum()), int(present.sum()), dtype=torch.float64) for name in sums}
    for start in range(0, n, chunk):
        rows = labels[start:start + chunk]
        for name, h in layer_features(model, x[start:start + chunk]).items():
            z = (h.double() - means[name][rows]) @ centred[name].T  # (b, C'): within-class deviations, projected
            scatter[name] += z.T @ z
    out = {}
    for name in sums:
        inverse = torch.linalg.pinv(centred[name] @ centred[name].T, hermitian=True)
        out[names[name]] = float(torch.trace(scatter[name] @ inverse @ inverse) / n)
    return out


def layer_names(model: nn.Module) -> dict[str, str]:
    """Activation module path -> `body.<path> <Activation> after <the layer before it>`."""
    out, previous = {}, None
    for name, module in model.body.named_modules():
        if isinstance(module, (nn.ReLU, nn.GELU, nn.Tanh)):
            out[name] = f"body.{name} {type(module).__name__}" + (f" after {previous}" if previous else "")
        elif isinstance(module, nn.Linear):
            previous = f"Linear({module.in_features}→{module.out_features})"
        elif isinstance(module, nn.Conv2d):
            previous = f"Conv2d({module.in_channels}→{module.out_channels}, {module.kernel_size[0]}×{module.kernel_size[1]})"
    return out
