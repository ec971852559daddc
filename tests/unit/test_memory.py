import os

import pytest

from moe_pipeline.errors import MemoryBudgetError
from moe_pipeline.training.memory import PeakRSS, accumulation_steps, fit_micro_batch

GB = 2**30


def test_fits_at_full_batch():
    assert fit_micro_batch(64, lambda b: 0.5 * GB, 1 * GB) == 64


def test_halves_until_it_fits():
    calls = []

    def measure(batch):
        calls.append(batch)
        return batch * 0.1 * GB  # linear in the micro-batch

    assert fit_micro_batch(64, measure, 1 * GB) == 8
    assert calls == [64, 32, 16, 8]
    assert accumulation_steps(64, 8) == 8
    assert accumulation_steps(60, 8) == 8


def test_batch_one_over_budget_is_a_clear_error():
    with pytest.raises(MemoryBudgetError, match="micro-batch of 1 needs 2.00 GiB"):
        fit_micro_batch(16, lambda b: 2 * GB, 1 * GB)


def test_out_of_memory_counts_as_over_budget():
    assert fit_micro_batch(8, lambda b: float("inf") if b > 2 else 1.0, 1 * GB) == 2


def test_peak_rss_sees_a_large_allocation():
    import numpy as np

    with PeakRSS() as rss:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        del block
    assert rss.peak_growth > 32 * 2**20


def test_step_bytes_counts_parameter_state_input_and_every_layer_output():
    import torch

    from moe_pipeline.training.models import MLP
    from moe_pipeline.training.train import step_bytes

    model = MLP((1, 8, 8), 10, hidden=[32, 16])
    batch = torch.zeros(5, 1, 8, 8)
    params = (64 * 32 + 32) + (32 * 16 + 16) + (16 * 10 + 10)
    # leaf outputs: flatten 5x64, linear 5x32, relu 5x32, linear 5x16, relu 5x16, head 5x10
    activations = 5 * (64 + 32 + 32 + 16 + 16 + 10)
    assert step_bytes(model, batch) == 4.0 * (4 * params + batch.numel() + activations)


def test_weakest_class_is_the_lowest_recall_against_a_loop():
    import torch

    from moe_pipeline.training.metrics import weakest_class

    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (200,), generator=gen)
    logits = torch.randn(200, 5, generator=gen)  # class 4 never occurs: not a candidate
    logits[torch.arange(200), y] += torch.rand(200, generator=gen) * 3
    recalls = {}
    for c in range(4):
        rows = [i for i in range(200) if int(y[i]) == c]
        recalls[c] = sum(int(logits[i].argmax()) == c for i in rows) / len(rows)
    worst = min(recalls, key=recalls.get)
    names = ["a", "b", "c", "d", "e"]
    assert weakest_class(logits, y, names) == f"{names[worst]} (recall {recalls[worst]:.2f})"
    assert weakest_class(logits, y).startswith(f"class {worst} ")


def test_the_peak_is_the_kernels_high_water_mark_since_the_reset():
    """Against /proc/self/statm read by hand: holding 300 MiB raises the peak at least that far
    above where it was reset; releasing it and resetting brings it back down."""
    from moe_pipeline.training.memory import peak_rss_bytes, reset_peak

    def resident() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    reset_peak()
    before = resident()
    block = bytearray(300 << 20)
    block[::4096] = b"x" * len(block[::4096])  # touch every page: resident, not only reserved
    assert peak_rss_bytes() >= before + (300 << 20) - (8 << 20)
    del block
    reset_peak()
    assert peak_rss_bytes() < before + (100 << 20)


def test_a_kill_near_the_machines_memory_is_called_out_of_memory_and_one_far_below_is_not():
    from moe_pipeline.training.memory import killed_message

    oom = killed_message("training has_loop", 21 << 30, 24 << 30)
    assert "training has_loop" in oom and "21.0 GiB resident of this machine's 24.0 GiB" in oom
    assert "out-of-memory killer" in oom and "train on a sample" in oom
    other = killed_message("preparing digit", 1 << 30, 24 << 30)
    assert "out-of-memory" not in other and "1.0 GiB resident" in other
