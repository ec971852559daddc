"""PNG figures of an inspection report (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

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
    ax.set_xticks(range(matrix.shape[1]), ticks)
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
               cmap: str = "viridis", symmetric: bool = False, cols: int | None = None) -> Path:
    """One small panel per (h, w) map, `cols` to a row."""
    plt = _plt()
    n = len(images)
    cols = cols or min(n, 6)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(max(1.9 * cols, 4.8), 2.0 * rows + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        data = image.double().numpy()
        limit = abs(data).max() or 1.0
        ax.imshow(data, cmap="RdBu_r" if symmetric else cmap, vmin=-limit if symmetric else None,
                  vmax=limit if symmetric else None)
        ax.set_title(title, fontsize=8)
    fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bars(values: torch.Tensor, path: Path, title: str, labels: Sequence[str] | None = None, top: int = 30,
         highlight: Sequence[int] = ()) -> Path:
    """The largest `top` values as horizontal bars, labelled by feature index or name."""
    plt = _plt()
    order = values.argsort(descending=True)[:top].tolist()
    names = [labels[i] if labels else f"x{i}" for i in order]
    fig, ax = plt.subplots(figsize=(6, 0.25 * len(order) + 1))
    colors = ["tab:red" if i in highlight else "tab:blue" for i in order]
    ax.barh(range(len(order))[::-1], [float(values[i]) for i in order], color=colors)
    ax.set_yticks(range(len(order))[::-1], names, fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def curves(series: dict[str, list[tuple[int, float]]], path: Path, title: str) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, len(series), figsize=(4.2 * len(series), 3), squeeze=False)
    for ax, (name, points) in zip(axes.flat, series.items()):
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker=".")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
