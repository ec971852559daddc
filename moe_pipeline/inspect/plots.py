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


def heatmap(matrix: torch.Tensor, path: Path, title: str, labels: Sequence[str] | None = None, fmt: str = "d") -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(1.0 + 0.45 * matrix.shape[1], 4.2), max(0.8 + 0.45 * matrix.shape[0], 3.4)))
    im = ax.imshow(matrix.double().numpy(), cmap="Blues")
    for (i, j), value in zip(((i, j) for i in range(matrix.shape[0]) for j in range(matrix.shape[1])),
                             matrix.flatten().tolist()):
        ax.text(j, i, format(value, fmt), ha="center", va="center", fontsize=7,
                color="white" if value > 0.6 * float(matrix.max()) else "black")
    ticks = labels or [str(i) for i in range(matrix.shape[0])]
    ax.set_xticks(range(matrix.shape[1]), ticks, rotation=45 if max(len(t) for t in ticks) > 2 else 0, ha="right"
                  if max(len(t) for t in ticks) > 2 else "center")
    ax.set_yticks(range(matrix.shape[0]), ticks)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def image_grid(images: Sequence[torch.Tensor], titles: Sequence[str], path: Path, suptitle: str,
               cmap: str = "viridis", symmetric: bool = False, cols: int | None = None,
               colorbar: str = "") -> Path:
    """One small panel per (h, w) map, `cols` to a row, each with its colour bar labelled
    `colorbar`. `symmetric`: a diverging scale centred at 0 (red positive, blue negative)."""
    plt = _plt()
    n = len(images)
    cols = cols or min(n, 6)
    rows = (n + cols - 1) // cols
    width = max(2.3 * cols, 5.5)
    fig, axes = plt.subplots(rows, cols, figsize=(width, 2.2 * rows + 0.7), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        data = image.double().numpy()
        limit = abs(data).max() or 1.0
        im = ax.imshow(data, cmap="RdBu_r" if symmetric else cmap, vmin=-limit if symmetric else None,
                       vmax=limit if symmetric else None)
        ax.set_title(title, fontsize=8)
        bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        bar.ax.tick_params(labelsize=6)
        if colorbar:
            bar.set_label(colorbar, fontsize=6)
    fig.suptitle(textwrap.fill(suptitle, int(width * 11)), fontsize=10)  # ~11 characters per inch at 10 pt
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bars(values: torch.Tensor, path: Path, title: str, labels: Sequence[str] | None = None, top: int = 30,
         highlight: Sequence[int] = ()) -> Path:
    """The largest `top` values as horizontal bars, labelled by feature name (or index)."""
    plt = _plt()
    order = values.argsort(descending=True)[:top].tolist()
    names = [labels[i] if labels else f"x{i}" for i in order]
    fig, ax = plt.subplots(figsize=(7, 0.25 * len(order) + 1))
    colors = ["tab:red" if i in highlight else "tab:blue" for i in order]
    ax.barh(range(len(order))[::-1], [float(values[i]) for i in order], color=colors)
    ax.set_yticks(range(len(order))[::-1], names, fontsize=7)
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
