"""`make gpu-check`: what only a CUDA machine can show, written to benchmarks/results-gpu.json.

1. The demo trains with `device: cuda` through the CLI, into a fresh registry, and every
   training run records that it ran on the GPU.
2. The micro-batch path keeps `max_memory_gb` a promise: a CNN whose full batch needs more
   than the budget trains in micro-batches, its measured CUDA peak stays under the budget,
   and its effective batch is kept (the weights equal, to float tolerance, those of the same
   training with the full batch at once).
3. AGOP on the GPU: this project's implementation against vmap(jacrev) and the limit (C
   forward+backward passes), as bench_agop does on the CPU.

Not a test: the suite passes without a GPU. This exits 2 on a machine without CUDA and 1
when a check fails, after writing what it measured.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]


def demo_on_cuda() -> dict:
    work = Path(tempfile.mkdtemp(prefix="gpu-check-", dir=HERE))  # under the project root: stages/ imports
    try:
        text = (ROOT / "pipelines" / "digits.yaml").read_text()
        text = text.replace("device: auto", "device: cuda")
        text = re.sub(r'tracking_uri: "[^"]*"', f'tracking_uri: "sqlite:///{work}/mlflow.db"', text)
        pipeline = work / "digits-cuda.yaml"
        pipeline.write_text(text)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "moe_pipeline", "run", str(pipeline), "--quiet"], cwd=ROOT,
                              capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            return {"check": "demo trains on cuda", "ok": False, "detail": done.stdout[-2000:] + done.stderr[-2000:]}
        import mlflow

        client = mlflow.MlflowClient(f"sqlite:///{work}/mlflow.db")
        runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
        devices = {r.data.tags.get("mlflow.runName", r.info.run_id): r.data.params.get("device") for r in runs}
        ok = len(devices) == 6 and all(str(d).startswith("cuda") for d in devices.values())
        return {"check": "demo trains on cuda", "ok": ok, "seconds": round(seconds, 1), "devices": devices}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def micro_batching() -> dict:
    from moe_pipeline.data.inputs import Block, ExpertData
    from moe_pipeline.pipeline.spec import CNNModel, ResourcesSpec, TrainSpec
    from moe_pipeline.training.train import release, train_expert

    generator = torch.Generator().manual_seed(0)
    shape, n = (3, 64, 64), {"train": 1024, "val": 256, "test": 256}
    x = {s: torch.randn(k, *shape, generator=generator) for s, k in n.items()}
    y = {s: (x[s][:, 0].mean(dim=(1, 2)) > 0).long() for s in n}
    data = ExpertData(x=x, y=y, blocks=[Block("synthetic.image", 0, 3 * 64 * 64)], task="classification", n_outputs=2)
    model = CNNModel(kind="cnn", channels=[32, 64], hidden=64)
    train = TrainSpec(epochs=2, batch_size=256, lr=1e-3)

    def fit(max_memory_gb: float):
        release()
        torch.cuda.reset_peak_memory_stats()
        return train_expert(model, train, ResourcesSpec(device="cuda", precision="fp32", max_memory_gb=max_memory_gb),
                            data, seed=0)

    # strict float32 here: TF32 convolutions would make the two trainings differ by more than summation order
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    whole = fit(64.0)  # the full batch fits: one step per batch
    budget_gb = whole.peak_memory_mb / 1024 / 3  # a third of what the full batch needed
    micro = fit(budget_gb)
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    diff = max(float((a - b).abs().max()) for a, b in
               zip(whole.model.state_dict().values(), micro.model.state_dict().values()))
    ok = (micro.micro_batch < train.batch_size and micro.peak_memory_mb <= budget_gb * 1024
          and whole.micro_batch == train.batch_size and diff <= 1e-4)
    return {"check": "micro-batches keep max_memory_gb and the effective batch", "ok": ok,
            "batch_size": train.batch_size, "full_batch_peak_mib": round(whole.peak_memory_mb, 1),
            "budget_mib": round(budget_gb * 1024, 1), "micro_batch": micro.micro_batch,
            "micro_peak_mib": round(micro.peak_memory_mb, 1), "max_weight_diff_vs_full_batch": diff,
            "seconds_full_vs_micro": [round(whole.seconds, 2), round(micro.seconds, 2)]}


def agop_on_gpu() -> list[dict]:
    import bench_agop as B
    from moe_pipeline.inspect import agop as A
    from moe_pipeline.training.models import CNN

    rows = []
    for name, shape in (("digits CNN", (1, 8, 8)), ("3x32x32 CNN", (3, 32, 32))):
        torch.manual_seed(0)
        model = CNN(shape, 10, channels=(8, 16), hidden=32).cuda().eval()
        x = torch.randn(B.N, *shape, device="cuda")

        def timed(fn):
            fn()  # warm-up: kernels and the allocator
            torch.cuda.synchronize()
            started = time.perf_counter()
            out = fn()
            torch.cuda.synchronize()
            return time.perf_counter() - started, out

        ours_s, _ = timed(lambda: A.agop(model, x))
        vmap_s, _ = timed(lambda: B.vmap_jacrev(model, x))
        limit_s, _ = timed(lambda: B.limit(model, x, 10))
        # correctness in float64: float32 convolutions on the GPU use TF32 (10-bit mantissa)
        model64, x64 = model.double(), x.double()
        ours = A.agop(model64, x64).detach()
        reference = B.vmap_jacrev(model64, x64).detach()
        diff = float((ours - reference).abs().max() / reference.abs().max())
        rows.append({"check": f"AGOP on cuda, {name} (n={B.N}, C=10)", "ok": diff <= 1e-10,
                     "ours_s": round(ours_s, 4), "vmap_jacrev_s": round(vmap_s, 4), "limit_s": round(limit_s, 4),
                     "time_over_limit": round(ours_s / limit_s, 2), "relative_diff_vs_vmap_float64": diff})
    return rows


def main() -> int:
    if not torch.cuda.is_available():
        print("make gpu-check needs a CUDA GPU; this machine has none (torch.cuda.is_available() is False)")
        return 2
    os.chdir(ROOT)
    started = time.perf_counter()
    checks = [demo_on_cuda(), micro_batching(), *agop_on_gpu()]
    result = {"machine": {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
                          "cuda": torch.version.cuda, "python": sys.version.split()[0]},
              "seconds": round(time.perf_counter() - started, 1), "checks": checks}
    out = HERE / "results-gpu.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    for check in checks:
        print(("ok   " if check["ok"] else "FAIL ") + check["check"])
    print(f"wrote {out}")
    return 0 if all(c["ok"] for c in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
