import pytest
import torch

from moe_pipeline.state.cutoff import judge, measure, probe_rows
from moe_pipeline.pipeline.spec import CutoffSpec


def test_identical_outputs_are_kept():
    probs = torch.softmax(torch.randn(50, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    verdict = judge(measure(probs, probs.clone(), "classification", 0.9, 0.9), CutoffSpec())
    assert verdict.keep and verdict.deltas.max_abs == 0.0 and verdict.deltas.agreement == 1.0


def test_deltas_match_a_brute_force_computation():
    gen = torch.Generator().manual_seed(1)
    ref = torch.softmax(torch.randn(40, 3, generator=gen), dim=1)
    new = torch.softmax(torch.randn(40, 3, generator=gen), dim=1)
    d = measure(ref, new, "classification", 0.8, 0.75)
    diffs = [abs(float(new[i, j]) - float(ref[i, j])) for i in range(40) for j in range(3)]
    agree = sum(int(new[i].argmax() == ref[i].argmax()) for i in range(40)) / 40
    assert d.max_abs == pytest.approx(max(diffs)) and d.mean_abs == pytest.approx(sum(diffs) / len(diffs))
    assert d.agreement == pytest.approx(agree) and d.metric_drop == pytest.approx(0.05)


def test_each_tolerance_can_reject():
    ref = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    flipped = torch.tensor([[0.3, 0.7], [0.2, 0.8]])
    verdict = judge(measure(ref, flipped, "classification", 0.9, 0.7), CutoffSpec())
    assert not judge(measure(ref, flipped, "classification", 0.9, 0.9), CutoffSpec(max_abs=0.5, mean_abs=1, agreement=0)).keep
    assert not verdict.keep
    text = verdict.describe()
    assert "agreement 50.0% < 98.0%" in text and "max delta" not in text
    assert "mean delta 0.3000 > 0.01" in text and "validation metric dropped by 0.2000" in text
    close = torch.tensor([[0.85, 0.15], [0.2, 0.8]])
    assert judge(measure(ref, close, "classification", 0.9, 0.9), CutoffSpec(mean_abs=0.05)).keep


def test_comparison_is_never_chained():
    """Three drifts, each within tolerance of the previous, together beyond it: judged against the reference."""
    tol = CutoffSpec(max_abs=0.15, mean_abs=1.0, agreement=0.0, metric_drop=1.0)
    ref = torch.full((10, 1), 0.5)
    steps = [ref + 0.1 * k for k in (1, 2, 3)]  # each step moves 0.1 from the previous one
    chained = [judge(measure(a, b, "regression", 0, 0), tol).keep for a, b in zip([ref, *steps], steps)]
    against_reference = [judge(measure(ref, s, "regression", 0, 0), tol).keep for s in steps]
    assert chained == [True, True, True]
    assert against_reference == [True, False, False]


def test_probe_rows_are_a_fixed_prefix():
    assert probe_rows(100, 10).tolist() == list(range(10))
    assert len(probe_rows(5, 256)) == 5
