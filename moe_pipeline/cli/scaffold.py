"""`moe-pipeline init`: a small project whose first `moe-pipeline run` works at once.

Writes sample data generated from scikit-learn's bundled data sets (nothing is downloaded),
a pipeline YAML that reads it through a file source, and a commented stages module with a
custom target. Writes only inside the target folder, and never overwrites a file.
"""
from __future__ import annotations

from pathlib import Path

from moe_pipeline.errors import SelectionError

TABULAR_YAML = """\
# A pipeline on your own CSV file: edit `path`, `label` and the experts, then `moe-pipeline run pipeline.yaml`.
name: wine
seed: 0
sources:
  wine:
    loader: csv
    path: data/wine.csv            # relative to this project's root
    label: cultivar                # -> field `label`; class names are the column's values
    transform: {features: standardize}   # fitted on the train split, stored with each version
    split: {val: 0.15, test: 0.15}
experts:
  is_first:
    description: is it the first cultivar?
    inputs: [wine.features]
    target: {from: wine.label, fn: "my_stages:is_first"}
    model: {kind: mlp, hidden: [16]}
    train: {epochs: 60, batch_size: 32, lr: 1.0e-2}
  is_last:
    description: is it the last cultivar?
    inputs: [wine.features]
    target: {from: wine.label, fn: "my_stages:is_last"}
    model: {kind: mlp, hidden: [16]}
    train: {epochs: 60, batch_size: 32, lr: 1.0e-2}
  cultivar:
    description: three-way classifier that reads only the two experts' answers
    inputs: [is_first.probs, is_last.probs]
    target: wine.label
    model: {kind: mlp, hidden: [8]}
    train: {epochs: 80, batch_size: 32, lr: 1.0e-2}
"""

TABULAR_STAGES = '''"""Custom targets: a function from a source field (a tensor, one row per sample) to the target.

Each takes the `from:` field and returns one value per row: integer class ids for a
classification expert, floats for regression. Editing a function's code (not its comments
or docstring) makes the experts that use it stale with reason CODE.
"""
import torch


def is_first(label: torch.Tensor) -> torch.Tensor:
    return (label == 0).long()


def is_last(label: torch.Tensor) -> torch.Tensor:
    return (label == label.max()).long()
'''

IMAGES_YAML = """\
# A pipeline on a folder of images: data/digits/<class>/<image>.png. Run `moe-pipeline run pipeline.yaml`.
name: digit_images
seed: 0
sources:
  digits:
    loader: imagefolder
    path: data/digits              # one subfolder per class; the folder name is the class name
    size: [8, 8]                   # [height, width] every image must have
    mode: L                        # L (grey) or RGB
    split: {val: 0.15, test: 0.15}
experts:
  has_loop:
    description: contains a closed loop (0, 6, 8, 9)
    inputs: [digits.image]
    target: {from: digits.label, fn: "my_stages:has_loop"}
    model: {kind: cnn, channels: [8], hidden: 32}
    train: {epochs: 8, batch_size: 64, lr: 3.0e-3}
  is_even:
    inputs: [digits.image]
    target: {from: digits.label, fn: "my_stages:is_even"}
    model: {kind: mlp, hidden: [32]}
    train: {epochs: 8, batch_size: 64, lr: 3.0e-3}
  digit:
    description: ten-way classifier that reads only the experts' outputs
    inputs: [has_loop.embedding, is_even.probs]
    target: digits.label
    model: {kind: mlp, hidden: [32]}
    train: {epochs: 15, batch_size: 64, lr: 3.0e-3}
"""

IMAGES_STAGES = '''"""Custom targets: a function from a source field (a tensor, one row per sample) to the target.

`label` holds class ids: the index of each subfolder name in sorted order (0..9 here).
"""
import torch

LOOPED = (0, 6, 8, 9)


def has_loop(label: torch.Tensor) -> torch.Tensor:
    return torch.isin(label, torch.tensor(LOOPED)).long()


def is_even(label: torch.Tensor) -> torch.Tensor:
    return (label % 2 == 0).long()
'''


def scaffold(folder: Path, template: str) -> list[Path]:
    """Write the project; returns the files written. Refuses to overwrite anything."""
    targets = {"pipeline.yaml": TABULAR_YAML if template == "tabular" else IMAGES_YAML,
               "my_stages.py": TABULAR_STAGES if template == "tabular" else IMAGES_STAGES,
               "pyproject.toml": '[project]\nname = "my-experts"\nversion = "0.1.0"\n'}
    existing = [name for name in [*targets, "data"] if (folder / name).exists()]
    if existing:
        raise SelectionError(f"{folder} already has {', '.join(existing)}; choose an empty folder")
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in targets.items():
        (folder / name).write_text(text)
        written.append(folder / name)
    written += _wine_csv(folder / "data") if template == "tabular" else _digit_pngs(folder / "data" / "digits")
    return written


def _wine_csv(folder: Path) -> list[Path]:
    import csv

    from sklearn.datasets import load_wine

    bunch = load_wine()
    folder.mkdir(parents=True)
    path = folder / "wine.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*bunch.feature_names, "cultivar"])
        for row, target in zip(bunch.data, bunch.target):
            writer.writerow([*(f"{v:g}" for v in row), bunch.target_names[target]])
    return [path]


def _digit_pngs(folder: Path) -> list[Path]:
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    bunch = load_digits()
    written = []
    for index, (image, label) in enumerate(zip(bunch.images, bunch.target)):
        target = folder / str(label) / f"{index:04d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255 / 16).round().astype(np.uint8), mode="L").save(target)
        written.append(target)
    return written
