"""Using the trained demo: predict throughput against a hand-written torch forward of the same
experts, single-row latency of `mlflow models serve`, and what making each version an MLflow
model costs.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
ROWS = 50_000


def _env(registry: Path) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{registry}/mlflow.db",
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}


def _hand_written(system, images: torch.Tensor) -> torch.Tensor:
    """The same experts, called directly: what a user would write without this project."""
    with torch.no_grad():
        outs = {}
        for name in system.order:
            p = system.experts[name]
            parts = [images if ref.endswith(".image") else outs[ref.split(".")[0]] for ref in p.inputs]
            x = parts[0] if len(parts) == 1 and parts[0].dim() == 4 else torch.cat([t.reshape(len(t), -1) for t in parts], 1)
            outs[name] = p.model(x).softmax(dim=1)
        return outs[system.sinks[0]]


def _throughput(system, fields) -> tuple[float, float, float]:
    images = torch.as_tensor(fields["digits.image"])
    ours = min(_timed(lambda: system.outputs(fields, system.sinks)) for _ in range(3))
    hand = min(_timed(lambda: [_hand_written(system, images[s:s + 4096]) for s in range(0, len(images), 4096)])
               for _ in range(3))
    got = system.outputs(fields, system.sinks)[system.sinks[0]]["probs"]
    diff = float((got - _hand_written(system, images)).abs().max())
    return ROWS / ours, ROWS / hand, diff


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _served_latency(registry: Path, row: np.ndarray) -> tuple[float, float]:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/digits@current",
                               "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT,
                              env=_env(registry), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    body = json.dumps({"inputs": {"digits.image": row.tolist()}}).encode()

    def call() -> None:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                call()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        for _ in range(20):
            call()  # warm-up
        times = sorted(_timed(call) * 1000 for _ in range(300))
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    return statistics.median(times), times[int(0.99 * len(times)) - 1]


def _version_cost() -> float:
    from moe_pipeline.registry.mlmodel import write_expert_mlmodel

    folder = Path(tempfile.mkdtemp())
    try:
        write_expert_mlmodel(folder, {"in_shape": [1, 8, 8], "n_outputs": 2}, {"spec.json": "", "weights": ""})
        return min(_timed(lambda: write_expert_mlmodel(folder, {"in_shape": [1, 8, 8], "n_outputs": 2},
                                                       {"spec.json": "", "weights": ""})) for _ in range(20))
    finally:
        shutil.rmtree(folder)


def run() -> list[dict]:
    from moe_pipeline.execute.view import View
    from moe_pipeline.pipeline.loader import load_pipeline
    from moe_pipeline.serve.system import System

    registry = Path(tempfile.mkdtemp(prefix="bench-use-"))
    try:
        env = _env(registry)
        for args in (["run", "pipelines/digits.yaml", "--quiet"],
                     ["export", "pipelines/digits.yaml", "--out", str(registry / "export"), "--register"]):
            subprocess.run([sys.executable, "-m", "moe_pipeline", *args], cwd=ROOT, env=env, check=True,
                           capture_output=True)
        os.environ["MLFLOW_TRACKING_URI"] = env["MLFLOW_TRACKING_URI"]
        try:
            view = View(load_pipeline(ROOT / "pipelines" / "digits.yaml"))
            system = System.from_view(view)
        finally:
            os.environ.pop("MLFLOW_TRACKING_URI")
        test = view.store.source("digits").raw_field("image", "test").numpy()
        fields = {"digits.image": np.resize(test, (ROWS, *test.shape[1:]))}
        ours, hand, diff = _throughput(system, fields)
        p50, p99 = _served_latency(registry, test[:1])
    finally:
        shutil.rmtree(registry, ignore_errors=True)
    cost = _version_cost()
    return [
        {"benchmark": f"predict throughput, demo ({ROWS:,} rows) vs a hand-written torch forward", "value":
         round(ours / hand, 2), "unit": "x", "goal": ">= 0.8", "met": ours / hand >= 0.8,
         "note": f"ours {ours:,.0f} rows/s, hand-written {hand:,.0f} rows/s; max |diff| {diff:.1e}"},
        {"benchmark": "served single-row latency (mlflow models serve, demo system)", "value": round(p50, 1),
         "unit": "ms p50", "goal": "reported", "met": True, "note": f"p99 {p99:.1f} ms over 300 requests"},
        {"benchmark": "cost of making an expert version an MLflow model", "value": round(cost * 1000, 1), "unit": "ms",
         "goal": "<= 100 ms", "met": cost <= 0.1, "note": "MLmodel, signature, requirements, sha256 manifest"},
    ]


if __name__ == "__main__":
    for row in run():
        print(row)
