"""The trainer's per-epoch training metrics against a hand-written loop that computes each one
per batch, the plain way: the trainer reduces them once per epoch, and with micro-batches."""
import math

import pytest
import torch

from moe_pipeline.data.inputs import Block, ExpertData
from moe_pipeline.pipeline.spec import MLPModel, ResourcesSpec, TrainSpec
from moe_pipeline.training.models import build_model
from moe_pipeline.training.train import train_expert


def _data() -> ExpertData:
    gen = torch.Generator().manual_seed(1)
    x = {s: torch.randn(n, 6, generator=gen) for s, n in (("train", 70), ("val", 30), ("test", 20))}
    y = {s: (v[:, 0] + 0.3 * v[:, 1] > 0).long() for s, v in x.items()}
    return ExpertData(x=x, y=y, blocks=[Block("src.features", 0, 6)], task="classification", n_outputs=2)


def _reference_epochs(data: ExpertData, spec: TrainSpec, epochs: int) -> list[dict[str, float]]:
    """Per-batch loss, correct count and total gradient norm, added up in Python floats."""
    torch.manual_seed(spec.seed)
    model = build_model(MLPModel(kind="mlp", hidden=[8]), data.in_shape, data.n_outputs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    generator = torch.Generator().manual_seed(spec.seed)
    x, y = data.x["train"], data.y["train"]
    history = []
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        loss_sum, correct, norms = 0.0, 0, []
        for start in range(0, len(x), spec.batch_size):
            rows = order[start:start + spec.batch_size]
            optimizer.zero_grad()
            out = model(x[rows])
            loss = torch.nn.functional.cross_entropy(out, y[rows])
            loss.backward()
            loss_sum += float(loss.detach()) * len(rows)
            correct += int((out.argmax(dim=1) == y[rows]).sum())
            norms.append(math.sqrt(sum(float((p.grad ** 2).sum()) for p in model.parameters())))
            optimizer.step()
        history.append({"train_loss": loss_sum / len(x), "train_accuracy": correct / len(x),
                        "grad_norm": sum(norms) / len(norms)})
    return history


@pytest.mark.parametrize("micro", [32, 8])  # the whole batch, and four micro-batches of it
def test_training_metrics_match_a_per_batch_loop(micro: int):
    data = _data()
    spec = TrainSpec(epochs=3, batch_size=32, lr=0.01, patience=None, seed=5)
    result = train_expert(MLPModel(kind="mlp", hidden=[8]), spec, ResourcesSpec(device="cpu"), data, seed=5,
                          measure=lambda m: 0.0 if m <= micro else float("inf"))
    assert result.micro_batch == micro
    reference = _reference_epochs(data, spec, 3)
    for ours, theirs in zip(result.history, reference):
        for key in ("train_loss", "train_accuracy", "grad_norm"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-4), key
