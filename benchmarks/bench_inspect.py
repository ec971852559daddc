"""Inspection as a user runs it: `inspect` of one demo expert and the `report` overview page,
each in a fresh process (median of 3), after the project's own `run` wrote a registry.

Goal (issue #17): `inspect` of one expert at most 30 s without opacity runs. Also a CNN on 32×32
images (issue #30): every section of `inspect` on 1,780 1×32×32 PNGs (the digits, upsampled),
with its wall time and the process's peak memory; it used to be killed after 46 min at 11.5 GB
in neural collapse, which formed an 8,192 × 8,192 scatter matrix.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _seconds(args: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "moe_pipeline", *args], env=env, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - started


def trained_demo(project: Path) -> tuple[Path, dict]:
    """The demo pipeline in `project`, trained by the project's own `run`; its path and environment."""
    (project / ".git").mkdir()
    pipeline = project / "digits.yaml"
    pipeline.write_text((ROOT / "pipelines" / "digits.yaml").read_text())
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project}/registry/mlflow.db", "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "moe_pipeline", "run", str(pipeline), "--quiet"], env=env, cwd=ROOT,
                   check=True, capture_output=True)
    return pipeline, env


def run() -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        pipeline, env = trained_demo(project)
        for expert, kind in (("has_loop", "CNN on 8x8 images"), ("digit", "MLP on five experts' probabilities")):
            seconds = statistics.median(_seconds(["inspect", str(pipeline), expert], env) for _ in range(3))
            rows.append({"benchmark": f"`inspect` of {expert} ({kind}), every section, fresh process (median of 3)",
                         "value": round(seconds, 2), "unit": "s", "goal": "<= 30 s", "met": seconds <= 30,
                         "note": "no opacity runs"})
        seconds = statistics.median(_seconds(["report", str(pipeline)], env) for _ in range(3))
        rows.append({"benchmark": "`report` overview of the demo (6 expert reports, dependency table), fresh process "
                                  "(median of 3)", "value": round(seconds, 2), "unit": "s", "goal": "—", "met": True,
                     "note": "no weak input on the demo at the default 10%: no ablation"})
    rows.append(_cnn_on_32x32())
    rows.append(_cnn_on_32x32(10_000, "RGB"))  # the goal: 10,000 3x32x32 images
    return rows


def _cnn_on_32x32(n: int = 1780, mode: str = "L") -> dict:
    """`inspect`, every section, of a CNN trained on `n` 32x32 PNGs made from the digits (upsampled;
    in RGB each one tinted at random and a little noise added, so that the channels differ)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        (project / ".git").mkdir()
        digits = load_digits()
        for index in range(n):
            image, label = digits.images[index % len(digits.images)], digits.target[index % len(digits.images)]
            gray = Image.fromarray((image * 255 / 16).astype(np.uint8), mode="L").resize((32, 32), Image.NEAREST)
            if mode == "RGB":
                tint = rng.uniform(0.4, 1.0, size=3)
                pixels = np.asarray(gray, dtype=np.float64)[..., None] * tint + rng.normal(0, 8, size=(32, 32, 3))
                picture = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")
            else:
                picture = gray
            target = project / "pngs" / str(label) / f"{index:05d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            picture.save(target)
        pipeline = project / "img32.yaml"
        pipeline.write_text(f"name: img32\nsources:\n  img: {{loader: imagefolder, path: pngs, size: [32, 32], mode: {mode}}}\n"
                            "experts:\n  loop:\n    inputs: [img.image]\n    target: img.label\n"
                            "    model: {kind: cnn, channels: [8, 16], hidden: 32}\n"
                            "    train: {epochs: 3, batch_size: 64, lr: 3.0e-3}\n")
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project}/registry/mlflow.db", "PYTHONPATH": str(ROOT)}
        subprocess.run([sys.executable, "-m", "moe_pipeline", "run", str(pipeline), "--quiet"], env=env, cwd=ROOT,
                       check=True, capture_output=True)
        # through a process of its own whose only child is `inspect`: its children's peak is inspect's
        measure = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
                   "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", measure, sys.executable, "-m", "moe_pipeline", "inspect",
                               str(pipeline), "loop"], env=env, cwd=ROOT, check=True, capture_output=True, text=True)
        seconds = time.perf_counter() - started
    peak_gb = int(done.stdout.strip()) / 2**20  # ru_maxrss is in KiB on Linux
    channels = 1 if mode == "L" else 3
    note = f"peak RSS {peak_gb:.2f} GB"
    if n == 1780:
        note += "; before the NC1 fix: killed after 46 min at >= 11.5 GB (issue #30)"
    return {"benchmark": f"`inspect` of a CNN (channels 8, 16) on {n:,} {channels}x32x32 PNGs, every section, fresh process",
            "value": round(seconds, 1), "unit": "s", "goal": "<= 120 s and <= 2 GB peak", "met": seconds <= 120
            and peak_gb <= 2.0, "note": note}


if __name__ == "__main__":
    for row in run():
        print(row)
