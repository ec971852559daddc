"""Stage-wise memory: peak memory training pipelines/digits.yaml stage by stage (each expert
through the trainer: training, per-epoch validation, stored outputs) vs its largest expert's
training alone, written by hand: the loop of bench_train doing the same work (per-epoch
validation, the best epoch's weights, the kept model's outputs), and a bare loop (forward,
backward, AdamW step, nothing else); and vs training all experts jointly as one network.

Each measurement runs in a fresh process (a process's allocator keeps freed memory, so a
second measurement in the same process would read low). On CPU the figure is the growth of
resident memory during training, sampled; data loading is excluded from all three, and so is
the runtime's first use of each op (see `_warm_up`; BENCH_MEMORY_COLD=1 counts it, and the
note reports that figure for the largest expert).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

import torch


def _data(expert: str):
    from moe_pipeline.data.store import DataStore
    from moe_pipeline.data.inputs import build_expert_data
    from moe_pipeline.pipeline.loader import load_pipeline

    pipeline = load_pipeline("pipelines/digits.yaml").pipeline
    store = DataStore(pipeline)
    return pipeline, store, build_expert_data


def _expert(expert: str):
    """The pipeline, the expert's spec and its data; a downstream expert gets upstream-shaped inputs."""
    pipeline, store, build = _data(expert)
    spec = pipeline.experts[expert]
    n = {s: len(store.source("digits").splits[s]) for s in ("train", "val", "test")}
    upstream = {u.split(".")[0]: {s: {"probs": torch.rand(n[s], 2)} for s in n} for u in spec.inputs if "probs" in u}
    return pipeline, spec, build(expert, spec, store, upstream)


def _warm_up() -> None:
    """The same throwaway training before every measurement: a tiny MLP and CNN on 16 random
    rows, once through the trainer, once through the hand-written loop and once through the
    bare loop. A process pays once for the runtime's start-up (thread pools, autograd engine,
    each kernel's first use: the trainer's first macro-F1 alone grows RSS by ~2 MiB), and a
    stage-by-stage run pays it with its first expert only; this measures what training an
    expert holds, for all three alike."""
    from bench_train import minimal_loop
    from moe_pipeline.data.inputs import Block, ExpertData
    from moe_pipeline.pipeline.spec import CNNModel, MLPModel, ResourcesSpec, TrainSpec
    from moe_pipeline.training.models import build_model
    from moe_pipeline.training.train import train_expert

    if os.environ.get("BENCH_MEMORY_COLD"):  # only the runtime's start-up: one step of a conv and a linear layer
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(72, 2))
        optimizer = torch.optim.AdamW(net.parameters())
        optimizer.zero_grad()
        net(torch.randn(4, 1, 8, 8)).sum().backward()
        optimizer.step()
        return
    gen = torch.Generator().manual_seed(0)
    x = {s: torch.rand(16, 1, 8, 8, generator=gen) for s in ("train", "val", "test")}
    y = {s: torch.randint(0, 2, (16,), generator=gen) for s in x}
    data = ExpertData(x=x, y=y, blocks=[Block("warm.up", 0, 64)], task="classification", n_outputs=2)
    for spec in (MLPModel(kind="mlp", hidden=[4]), CNNModel(kind="cnn", channels=[2], hidden=4)):
        train_expert(spec, TrainSpec(epochs=2, batch_size=8, patience=None), ResourcesSpec(device="cpu"), data, 0)
        minimal_loop(spec, data, 8, 1e-3, 0, 2)
        net = build_model(spec, data.in_shape, 2)
        optimizer = torch.optim.AdamW(net.parameters())
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x["train"]), y["train"]).backward()
        optimizer.step()


def one(expert: str) -> float:
    """Peak RSS growth (MiB) training one expert; a downstream one gets upstream-shaped inputs."""
    from moe_pipeline.training.memory import PeakRSS
    from moe_pipeline.training.train import train_expert

    pipeline, spec, data = _expert(expert)
    _warm_up()
    with PeakRSS(interval=0.002) as rss:
        train_expert(spec.model, spec.train.model_copy(update={"patience": None}), pipeline.resources, data, 0)
    return rss.peak_growth / 2**20


def same_work(expert: str) -> float:
    """Peak RSS growth (MiB) of bench_train's hand-written loop, which does the trainer's work."""
    from bench_train import minimal_loop
    from moe_pipeline.training.memory import PeakRSS

    pipeline, spec, data = _expert(expert)
    _warm_up()
    with PeakRSS(interval=0.002) as rss:
        minimal_loop(spec.model, data, spec.train.batch_size, spec.train.lr, 0, spec.train.epochs)
    return rss.peak_growth / 2**20


def training_only(expert: str) -> float:
    """Peak RSS growth (MiB) of a bare loop on the same model, data, batch size and epochs:
    what training the expert needs, without validation or stored outputs."""
    from moe_pipeline.training.memory import PeakRSS
    from moe_pipeline.training.models import build_model

    pipeline, spec, data = _expert(expert)
    x, y = data.x["train"], data.y["train"]
    _warm_up()
    with PeakRSS(interval=0.002) as rss:  # from the model's creation on, as the trainer is measured
        torch.manual_seed(0)
        model = build_model(spec.model, data.in_shape, data.n_outputs)
        opt = torch.optim.AdamW(model.parameters(), lr=spec.train.lr)
        for _ in range(spec.train.epochs):
            for rows in torch.randperm(len(x)).split(spec.train.batch_size):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x[rows]), y[rows]).backward()
                opt.step()
    return rss.peak_growth / 2**20


def joint() -> float:
    """All six experts as one network: the image experts' probs feed `digit` in-graph."""
    from moe_pipeline.training.memory import PeakRSS
    from moe_pipeline.training.models import build_model

    pipeline, store, build = _data("digit")
    src = store.source("digits")
    x, label = src.field("image", "train"), src.field("label", "train")
    leaves = [e for e in pipeline.experts if e != "digit"]
    from moe_pipeline.data.sources import import_object

    targets = {e: import_object(pipeline.experts[e].target_fn)(label) for e in leaves}
    models = torch.nn.ModuleDict({e: build_model(pipeline.experts[e].model, (1, 8, 8), 2) for e in leaves})
    models["digit"] = build_model(pipeline.experts["digit"].model, (2 * len(leaves),), 10)
    opt = torch.optim.AdamW(models.parameters(), lr=3e-3)
    epochs = max(s.train.epochs for s in pipeline.experts.values())
    _warm_up()
    with PeakRSS(interval=0.002) as rss:
        for _ in range(epochs):
            for rows in torch.randperm(len(x)).split(64):
                opt.zero_grad()
                logits = {e: models[e](x[rows]) for e in leaves}
                probs = torch.cat([logits[e].softmax(1) for e in leaves], dim=1)
                loss = sum(torch.nn.functional.cross_entropy(logits[e], targets[e][rows]) for e in leaves)
                loss = loss + torch.nn.functional.cross_entropy(models["digit"](probs), label[rows])
                loss.backward()
                opt.step()
    return rss.peak_growth / 2**20


def _fresh(arg: str, repeats: int = 3, cold: bool = False) -> float:
    """Median over fresh processes: one process's figure moves by a MiB with the allocator's luck."""
    values = []
    env = {**os.environ, "BENCH_MEMORY_COLD": "1"} if cold else None
    for _ in range(repeats):
        out = subprocess.run([sys.executable, __file__, arg], capture_output=True, text=True, check=True,
                             env=env).stdout
        values.append(float(out.strip().splitlines()[-1]))
    return statistics.median(values)


def run() -> list[dict]:
    from moe_pipeline.pipeline.loader import load_pipeline

    experts = list(load_pipeline("pipelines/digits.yaml").pipeline.experts)
    peaks = {e: _fresh(e) for e in experts}
    same = {e: _fresh(f"--same-work={e}") for e in experts}
    alone = {e: _fresh(f"--training-only={e}") for e in experts}
    joint_peak = _fresh("--joint")
    stage, largest, bare = max(peaks.values()), max(same.values()), max(alone.values())
    biggest = max(peaks, key=peaks.get)  # the first expert of a process also pays the runtime's first use of each op
    cold, cold_same = _fresh(biggest, cold=True), _fresh(f"--same-work={biggest}", cold=True)
    return [{"benchmark": "peak memory, digits stage by stage vs its largest expert's training alone",
             "value": round(stage / largest, 2), "unit": "x", "goal": "<= 1.1", "met": stage <= 1.1 * largest,
             "note": f"median of 3 fresh processes each, after the same throwaway training; the first expert of a "
                     f"process, without it: {biggest} {cold:.1f} MiB vs {cold_same:.1f} MiB ({cold / cold_same:.2f}x); "
                     f"stage by stage {stage:.1f} MiB (trainer: training, validation, "
                     f"stored outputs); largest expert alone, hand-written loop doing the same work {largest:.1f} MiB, "
                     f"bare loop (no validation, no outputs) {bare:.1f} MiB ({stage / bare:.2f}x); joint network "
                     f"{joint_peak:.1f} MiB; per expert, trainer: {json.dumps({k: round(v, 1) for k, v in peaks.items()})}"
                     f"; same work: {json.dumps({k: round(v, 1) for k, v in same.items()})}; bare: "
                     f"{json.dumps({k: round(v, 1) for k, v in alone.items()})}"}]


if __name__ == "__main__":
    if len(sys.argv) > 1:
        arg = sys.argv[1]
        if arg == "--joint":
            print(joint())
        elif arg.startswith("--training-only="):
            print(training_only(arg.split("=", 1)[1]))
        elif arg.startswith("--same-work="):
            print(same_work(arg.split("=", 1)[1]))
        else:
            print(one(arg))
    else:
        for row in run():
            print(row)
