"""PNG figures of an inspection report (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import torch


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def heatmap(matrix: torch.Tensor, path: Path, title: str, labels: Sequence[str] | None = None, fmt: str = "d",
            signed: bool = False, colorbar: str = "rows") -> Path:
    """A confusion matrix (rows true, columns predicted) with its numbers in the cells; `signed`: a
    change of counts, on a diverging scale centred at 0 (red more, blue fewer). `colorbar`
    names what the colour counts."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(1.0 + 0.45 * matrix.shape[1], 4.2), max(0.8 + 0.45 * matrix.shape[0], 3.4)))
    limit = float(matrix.abs().max()) or 1.0
    im = ax.imshow(matrix.double().numpy(), cmap="RdBu_r" if signed else "Blues",
                   vmin=-limit if signed else None, vmax=limit if signed else None)
    for (i, j), value in zip(((i, j) for i in range(matrix.shape[0]) for j in range(matrix.shape[1])),
                             matrix.flatten().tolist()):
        strong = abs(value) > 0.6 * limit if signed else value > 0.6 * float(matrix.max())
        ax.text(j, i, format(value, "+d" if signed and fmt == "d" and value else fmt), ha="center", va="center",
                fontsize=7, color="white" if strong else "black")
    ticks = labels or [str(i) for i in range(matrix.shape[0])]
    ax.set_xticks(range(matrix.shape[1]), ticks, rotation=45 if max(len(t) for t in ticks) > 2 else 0, ha="right"
                  if max(len(t) for t in ticks) > 2 else "center")
    ax.set_yticks(range(matrix.shape[0]), ticks)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046).set_label(colorbar)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _pixel_ticks(ax, height: int, width: int) -> None:
    """0-based row and column numbers on a map, every one up to 16, else every k-th: a feature
    named `digits.image (row 2, col 5)` can be found on it."""
    for size, set_ticks in ((width, ax.set_xticks), (height, ax.set_yticks)):
        step = 1 if size <= 16 else -(-size // 8)
        set_ticks(range(0, size, step), [str(i) for i in range(0, size, step)], fontsize=6)
    ax.set_xlabel("col", fontsize=6, labelpad=1)
    ax.set_ylabel("row", fontsize=6, labelpad=1)
    ax.tick_params(length=2, pad=1)


def image_grid(images: Sequence[torch.Tensor], titles: Sequence[str], path: Path, suptitle: str,
               cmap: str = "viridis", symmetric: bool = False, cols: int | None = None,
               colorbar: str | Sequence[str] = "", shared: bool = True) -> Path:
    """One small panel per (h, w) map, `cols` to a row, with 0-based row and column ticks.
    `shared`: the panels are compared, so one colour scale spans them all (one colour bar,
    labelled `colorbar`); otherwise each has its own, labelled by `colorbar` (one label for all,
    or one per panel). `symmetric`: a diverging scale centred at 0 (red positive, blue negative)."""
    plt = _plt()
    n = len(images)
    cols = cols or min(n, 6)
    rows = (n + cols - 1) // cols
    width = max(2.4 * cols + (0.8 if shared else 0), 5.5)
    fig, axes = plt.subplots(rows, cols, figsize=(width, 2.4 * rows + 0.7), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    arrays = [image.double().numpy() for image in images]
    top = max(float(abs(a).max()) for a in arrays) or 1.0
    low = min(float(a.min()) for a in arrays)
    shown = None
    labels = [colorbar] * n if isinstance(colorbar, str) else list(colorbar)
    for ax, data, title, label in zip(axes.flat, arrays, titles, labels):
        ax.axis("on")
        if symmetric:
            limit = top if shared else (float(abs(data).max()) or 1.0)
            vmin, vmax = -limit, limit
        else:
            vmin, vmax = (low, top) if shared else (None, None)
        shown = ax.imshow(data, cmap="RdBu_r" if symmetric else cmap, vmin=vmin, vmax=vmax)
        ax.set_title(title, fontsize=8)
        _pixel_ticks(ax, *data.shape)
        if not shared:
            bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03)
            bar.ax.tick_params(labelsize=6)
            if label:
                bar.set_label(label, fontsize=6)
    fig.suptitle(textwrap.fill(suptitle, int(width * 11)), fontsize=10)  # ~11 characters per inch at 10 pt
    fig.tight_layout()
    if shared and shown is not None:
        fig.subplots_adjust(right=0.88)
        bar = fig.colorbar(shown, cax=fig.add_axes([0.9, 0.15, 0.015, 0.65]))
        bar.ax.tick_params(labelsize=7)
        if labels[0]:
            bar.set_label(labels[0], fontsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _overlay(ax, image, attribution, low: float, high: float, limit: float) -> None:
    """An image in grayscale with signed attributions over it, each as opaque as it is large
    (red raises, blue lowers; near 0 the image shows through)."""
    import numpy as np
    from matplotlib import colors

    ax.imshow(image.double().numpy(), cmap="gray", vmin=low, vmax=high)
    values = attribution.double().numpy()
    painted = _plt().get_cmap("RdBu_r")(colors.Normalize(-limit, limit)(values))
    painted[..., 3] = np.clip(np.abs(values) / limit, 0, 1) ** 0.6
    ax.imshow(painted)


def _attribution_bar(fig, limit: float, where: list[float]) -> None:
    from matplotlib import cm, colors

    bar = fig.colorbar(cm.ScalarMappable(colors.Normalize(-limit, limit), _plt().get_cmap("RdBu_r")),
                       cax=fig.add_axes(where))
    bar.ax.tick_params(labelsize=7)
    bar.set_label("attribution (red raises, blue lowers)", fontsize=7)


def input_attributions(image: torch.Tensor, maps: dict[str, torch.Tensor], path: Path, title: str) -> Path:
    """One input in grayscale, then the same input under each expert's attributions (one scale),
    four panels to a row so that a page shows them at a readable size."""
    plt = _plt()
    n = 1 + len(maps)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols + 0.9, 2.8 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    low, high = float(image.min()), float(image.max())
    limit = max([float(m.abs().max()) for m in maps.values()] + [0.0]) or 1.0
    panels = list(axes.flat)
    panels[0].imshow(image.double().numpy(), cmap="gray", vmin=low, vmax=high)
    panels[0].set_title("the input", fontsize=9)
    for ax, (name, attribution) in zip(panels[1:], maps.items()):
        _overlay(ax, image, attribution, low, high, limit)
        ax.set_title(textwrap.fill(f"{name}: attributions", 24), fontsize=9)
    for ax in panels[:n]:
        ax.axis("on")
        _pixel_ticks(ax, *image.shape)
    fig.suptitle(textwrap.fill(title, int((2.6 * cols + 0.9) * 11)), fontsize=10)
    fig.tight_layout()
    if maps:
        fig.subplots_adjust(right=0.9)
        _attribution_bar(fig, limit, [0.92, 0.15, 0.012, 0.65])
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def examples(images: Sequence[torch.Tensor], attributions: Sequence[torch.Tensor], titles: Sequence[str],
             path: Path, suptitle: str) -> Path:
    """Examples as the expert saw them (grayscale, top row) and, below each, its signed
    attributions over the same image (red raises the explained logit, blue lowers it), one
    attribution scale for all the examples."""
    plt = _plt()
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(2.5 * n + 0.9, 5.6), squeeze=False)
    limit = max(float(a.abs().max()) for a in attributions) or 1.0
    low = min(float(i.min()) for i in images)
    high = max(float(i.max()) for i in images)
    for k, (image, attribution, title) in enumerate(zip(images, attributions, titles)):
        top, bottom = axes[0, k], axes[1, k]
        top.imshow(image.double().numpy(), cmap="gray", vmin=low, vmax=high)
        top.set_title(textwrap.fill(title, 24), fontsize=8)
        _overlay(bottom, image, attribution, low, high, limit)
        bottom.set_title("attributions over it", fontsize=8)
        for ax in (top, bottom):
            _pixel_ticks(ax, *image.shape)
    fig.suptitle(textwrap.fill(suptitle, int((2.5 * n + 0.9) * 11)), fontsize=10)
    fig.tight_layout()
    fig.subplots_adjust(right=0.9)
    _attribution_bar(fig, limit, [0.92, 0.08, 0.012, 0.36])
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bars(values: torch.Tensor, path: Path, title: str, labels: Sequence[str] | None = None, top: int = 30,
         highlight: Sequence[int] = (), xlabel: str = "value") -> Path:
    """The largest `top` values as horizontal bars, labelled by feature name (or index); `xlabel`
    says what the bars' length is."""
    plt = _plt()
    order = values.argsort(descending=True)[:top].tolist()
    names = [labels[i] if labels else f"x{i}" for i in order]
    fig, ax = plt.subplots(figsize=(7, 0.25 * len(order) + 1))
    colors = ["tab:red" if i in highlight else "tab:blue" for i in order]
    ax.barh(range(len(order))[::-1], [float(values[i]) for i in order], color=colors)
    ax.set_yticks(range(len(order))[::-1], names, fontsize=7)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def training_curves(train_loss: list[tuple[int, float]], val_loss: list[tuple[int, float]],
                    grad_norm: list[tuple[int, float]], best_epoch: int | None, path: Path) -> Path:
    """Train and validation loss on one axis with the best epoch marked; gradient norm beside."""
    plt = _plt()
    fig, (loss_ax, grad_ax) = plt.subplots(1, 2, figsize=(9.5, 3.2))
    for points, label in ((train_loss, "train loss"), (val_loss, "validation loss")):
        if points:
            loss_ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=label)
    if best_epoch:
        loss_ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"best epoch ({best_epoch}): kept")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    loss_ax.legend(fontsize=7)
    loss_ax.set_title("loss", fontsize=9)
    if grad_norm:
        grad_ax.plot([p[0] for p in grad_norm], [p[1] for p in grad_norm], marker=".", color="tab:green")
    grad_ax.set_xlabel("epoch")
    grad_ax.set_ylabel("mean gradient 2-norm")
    grad_ax.set_title("gradient norm", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def opacity_chart(result: dict, metric: str, path: Path) -> Path:
    """Learning opacity by source as four panels, one bar per source in each: prediction churn
    (or, for regression, the metric's spread), embedding CKA, AGOP correlation and eigenspace
    overlap, with the verdict's thresholds drawn where they apply."""
    from moe_pipeline.inspect.opacity import DIFFERENT_FEATURES, HIGH_CHURN, HIGH_SPREAD, LOW_CHURN, LOW_SPREAD, SAME_FEATURES

    plt = _plt()
    sources = list(result)
    classification = all("prediction_churn_mean" in v for v in result.values())
    first = (("prediction churn (%)", [100 * result[s]["prediction_churn_mean"] for s in sources],
              [(100 * LOW_CHURN, "low"), (100 * HIGH_CHURN, "high")]) if classification else
             (f"val {metric} spread", [result[s][f"val_{metric}_spread"] for s in sources],
              [(LOW_SPREAD, "low"), (HIGH_SPREAD, "high")]))
    panels = [first,
              ("embedding CKA", [result[s]["embedding_cka_mean"] for s in sources], []),
              ("AGOP correlation", [result[s]["agop_correlation_mean"] for s in sources],
               [(SAME_FEATURES, "same features"), (DIFFERENT_FEATURES, "different below")]),
              ("eigenspace overlap", [result[s]["eigenspace_overlap_mean"] for s in sources], [])]
    fig, axes = plt.subplots(1, 4, figsize=(11, 2.8))
    for ax, (title, values, lines) in zip(axes, panels):
        ax.bar(sources, values, color=["tab:blue", "tab:orange", "tab:green"][:len(sources)])
        for value, label in lines:
            ax.axhline(value, color="grey", linestyle="--", linewidth=1)
            ax.text(-0.45, value, label, fontsize=7, va="bottom", ha="left", color="grey")
        if title in ("embedding CKA", "AGOP correlation", "eigenspace overlap"):
            ax.set_ylim(0, 1.05)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("source varied", fontsize=8)
        ax.tick_params(labelsize=8)
    fig.suptitle("Learning opacity by source (mean over pairs of runs)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
