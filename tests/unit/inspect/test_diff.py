"""The paired tests of `diff` against references: McNemar's exact test against scipy's binomial
test, the paired bootstrap against a loop."""
from __future__ import annotations

import pytest
import torch

from moe_pipeline.inspect.diff import mcnemar_exact, paired_bootstrap


@pytest.mark.parametrize("only_a, only_b, both, neither", [(0, 0, 10, 2), (3, 1, 50, 5), (12, 30, 400, 9),
                                                           (7, 7, 3, 0), (0, 25, 100, 1)])
def test_mcnemar_exact_is_the_two_sided_binomial_test_of_the_discordant_rows(only_a, only_b, both, neither):
    from scipy.stats import binomtest

    a = torch.tensor([True] * only_a + [False] * only_b + [True] * both + [False] * neither)
    b = torch.tensor([False] * only_a + [True] * only_b + [True] * both + [False] * neither)
    got_a, got_b, p = mcnemar_exact(a, b)
    assert (got_a, got_b) == (only_a, only_b)
    want = 1.0 if only_a + only_b == 0 else binomtest(only_a, only_a + only_b, 0.5).pvalue
    assert p == pytest.approx(want, rel=1e-12)


def _r2(pred, y):
    return 1 - float(((pred - y) ** 2).sum()) / float(((y - y.mean()) ** 2).sum())


def test_the_paired_bootstrap_resamples_the_same_rows_for_both_as_a_loop_does():
    gen = torch.Generator().manual_seed(1)
    y = torch.randn(60, generator=gen, dtype=torch.float64)
    a = y + 0.5 * torch.randn(60, generator=gen, dtype=torch.float64)
    b = y + 0.1 * torch.randn(60, generator=gen, dtype=torch.float64)
    low, high = paired_bootstrap(a, b, y, rounds=300, seed=4)
    rows = torch.randint(0, 60, (300, 60), generator=torch.Generator().manual_seed(4))
    deltas = torch.tensor([_r2(b[r], y[r]) - _r2(a[r], y[r]) for r in rows], dtype=torch.float64)
    want = torch.quantile(deltas, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    assert (low, high) == pytest.approx(want, rel=1e-9)
    assert low > 0  # B is clearly better
    same = paired_bootstrap(a, a, y, rounds=50)
    assert same == (0.0, 0.0)
