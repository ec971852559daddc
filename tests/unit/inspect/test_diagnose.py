"""The pure parts of `diagnose`: provenance counts and oracle inputs, against loops by hand."""
from __future__ import annotations

import torch

from moe_pipeline.inspect.diagnose import Diagnosis, UpstreamFinding, oracle_inputs, provenance


def test_provenance_counts_the_reader_errors_each_upstream_shares():
    reader = torch.tensor([1, 1, 0, 1, 0, 1], dtype=torch.bool)
    a = torch.tensor([1, 0, 1, 1, 0, 0], dtype=torch.bool)
    b = torch.tensor([0, 0, 0, 0, 1, 0], dtype=torch.bool)
    assert provenance(reader, {"a": a, "b": b}) == {
        "a": sum(1 for r, u in zip(reader.tolist(), a.tolist()) if r and u), "b": 0}


def test_oracle_inputs_replace_only_that_block_by_the_one_hot_target():
    x = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    out = oracle_inputs(x, 1, 3, torch.tensor([1, 0, 1]), "classification")
    assert out[:, [0, 3]].tolist() == x[:, [0, 3]].tolist()
    assert out[:, 1:3].tolist() == [[0, 1], [1, 0], [0, 1]]
    values = oracle_inputs(x, 3, 4, torch.tensor([0.5, 1.5, 2.5]), "regression")
    assert values[:, 3].tolist() == [0.5, 1.5, 2.5]


def test_fix_first_ranks_by_gain_per_training_second_then_gain():
    def finding(name, gain, seconds):
        return UpstreamFinding(name, f"{name}.probs", 0.1, 1, None, gain, None, seconds)

    d = Diagnosis("r", 1, "test", "accuracy", 0.9, 100, 10, 2,
                  [finding("slow", 0.05, 10.0), finding("cheap", 0.02, 0.1), finding("none", None, 1.0)])
    assert [u.expert for u in d.fix_first()] == ["cheap", "slow"]
    assert d.lines()[1] == "  cheap: +2.0 pt if perfect (wrong on 1 of 10 r errors), 0.1 s to train"
