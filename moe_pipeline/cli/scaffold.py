"""`moe-pipeline init`: a small project whose first `moe-pipeline run` works at once.

Writes sample data generated from scikit-learn's bundled data sets (nothing is downloaded),
a pipeline YAML that reads it through a file source, and a commented stages module with a
custom target. Writes only inside the target folder, and never overwrites a file.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from moe_pipeline.errors import SelectionError

# The project files of each template, shipped as package data (moe_pipeline/cli/templates/NAME/)
TEMPLATE_FILES = ("pipeline.yaml", "my_stages.py")


def template_text(template: str, name: str) -> str:
    """One file of a template, read from the installed package (a wheel or a checkout alike)."""
    return resources.files("moe_pipeline.cli").joinpath("templates", template, name).read_text(encoding="utf-8")


def scaffold(folder: Path, template: str) -> list[Path]:
    """Write the project; returns the files written. Refuses to overwrite anything."""
    targets = {name: template_text(template, name) for name in TEMPLATE_FILES}
    targets["pyproject.toml"] = '[project]\nname = "my-experts"\nversion = "0.1.0"\n'  # marks the project root
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
