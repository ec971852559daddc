"""AGOP against brute force and against planted structure."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from moe_pipeline.inspect import agop as A
from moe_pipeline.training.models import CNN, MLP, Linear


def test_linear_model_agop_is_w_transpose_w():
    model = Linear(in_shape=(7,), out_features=3).double()
    x = torch.randn(20, 7, dtype=torch.float64)
    w = model.head.weight.detach()
    torch.testing.assert_close(A.agop(model, x), w.T @ w, rtol=0, atol=1e-12)


@pytest.mark.parametrize("build", [lambda: MLP((12,), 4, hidden=(16, 8)),
                                   lambda: CNN((1, 5, 5), 3, channels=(2,), hidden=6)])
def test_vectorised_agop_equals_per_sample_loop(build):
    torch.manual_seed(0)
    model = build().double()
    x = torch.randn(33, *((12,) if isinstance(model, MLP) else (1, 5, 5)), dtype=torch.float64)
    fast, parts = A.agop(model, x, chunk=8, per_class=True)
    slow = A.agop_per_sample(model, x)
    assert torch.max(torch.abs(fast - slow)) < 1e-8
    torch.testing.assert_close(parts.sum(0), fast, rtol=0, atol=1e-10)  # per-class AGOPs sum to the AGOP


def test_matrix_free_path_matches_dense_diagonal_and_top_eigenvectors():
    torch.manual_seed(1)
    model = MLP((40,), 5, hidden=(16,)).double()
    x = torch.randn(200, 40, dtype=torch.float64)
    dense = A.compute(model, x, k=3)
    free = A.compute(model, x, k=3, dense_limit=10)
    assert free.matrix is None
    torch.testing.assert_close(free.diagonal, dense.diagonal, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(free.eigenvalues, dense.eigenvalues, rtol=1e-4, atol=1e-10)  # iterative: converged, not exact
    overlap = (free.eigenvectors.T @ dense.eigenvectors).abs().diagonal()
    assert torch.all(overlap > 0.999)
    assert free.residuals is not None and dense.residuals is None


def test_matrix_free_residuals_are_below_the_tolerance_and_true():
    """The residual it reports is ||Gv - λv|| / λ recomputed here with the dense AGOP."""
    torch.manual_seed(2)
    model = MLP((60,), 4, hidden=(24,)).double()
    x = torch.randn(300, 60, dtype=torch.float64)
    free = A.compute(model, x, k=4, dense_limit=10)
    assert torch.all(free.residuals <= A.RESIDUAL)
    dense = A.agop(model, x)
    true = torch.linalg.vector_norm(dense @ free.eigenvectors - free.eigenvectors * free.eigenvalues, dim=0)
    torch.testing.assert_close(true / free.eigenvalues, free.residuals, rtol=1e-6, atol=1e-12)
    # fewer iterations than it needs leave a larger residual, reported as such
    _, _, early, passes = A.top_eigen_matrix_free(model, x, 4, max_iterations=1)
    assert passes == 1
    assert early.max() > A.RESIDUAL


def test_effective_rank_is_the_smallest_k_holding_95_percent_of_the_trace():
    spectrum = torch.tensor([158.0, 144.0, 1.4, 0.7, 0.1])
    assert A.effective_rank(spectrum, float(spectrum.sum())) == 2
    assert A.effective_rank(spectrum, float(spectrum.sum()), share=0.999) == 4
    assert A.effective_rank(torch.ones(10), 10.0) == 10


def _train(model: nn.Module, x, y, loss, epochs: int, lr: float = 3e-3):
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for rows in torch.randperm(len(x), generator=gen).split(128):
            opt.zero_grad()
            loss(model(x[rows]), y[rows]).backward()
            opt.step()
    return model


def trace_share(matrix_diag: torch.Tensor, coords: list[int]) -> float:
    return float(matrix_diag[coords].sum() / matrix_diag.sum())


def test_planted_sign_task_agop_concentrates_on_the_planted_coordinates():
    from moe_pipeline.data.sources import planted

    torch.manual_seed(0)
    data = planted(n=3000, d=30, informative=[0, 1], task="signs", noise=0.0, seed=0)
    model = MLP((30,), 4, hidden=(64,))
    before = trace_share(A.agop_diagonal(model, data["x"][:500]), [0, 1])
    _train(model, data["x"], data["y"], nn.functional.cross_entropy, epochs=30)
    after = trace_share(A.agop_diagonal(model, data["x"][:1000]), [0, 1])
    assert before < 0.2  # about 2/30 at initialisation
    assert after >= 0.9


def test_gated_product_regression_diagonal_on_the_planted_coordinates():
    from moe_pipeline.data.sources import planted

    torch.manual_seed(0)
    data = planted(n=4000, d=30, informative=[0, 1, 5], task="gated_product", noise=0.0, seed=0)
    model = MLP((30,), 1, hidden=(128, 64))
    _train(model, data["x"], data["y"], lambda o, y: nn.functional.mse_loss(o.squeeze(1), y), epochs=60)
    assert trace_share(A.agop_diagonal(model, data["x"][:1000]), [0, 1, 5]) >= 0.85


def test_neural_feature_ansatz_and_reliance():
    w = torch.randn(6, 4, dtype=torch.float64)
    agop_matrix = w.T @ w
    nfa = A.neural_feature_ansatz(w, torch.zeros_like(w), agop_matrix)
    assert nfa["wtw_vs_agop"] == pytest.approx(1.0) and nfa["delta_wtw_vs_agop"] == pytest.approx(1.0)
    assert nfa["wtw_vs_agop_sqrt"] < 1.0
    table = A.reliance(torch.tensor([1.0, 1.0, 2.0, 0.0]), [("a.probs", 0, 2), ("b.probs", 2, 4)])
    assert [round(r["share"], 6) for r in table] == [0.5, 0.5]


def test_each_outputs_diagonal_is_the_diagonal_of_its_full_part():
    """compute() keeps only each output's AGOP diagonal (c, d), never the (c, d, d) parts: they
    equal the full parts' diagonals, and sum to the AGOP's diagonal."""
    torch.manual_seed(2)
    model = MLP((12,), 4, hidden=(16,)).double()
    x = torch.randn(40, 12, dtype=torch.float64)
    _, parts = A.agop(model, x, chunk=8, per_class=True)
    result = A.compute(model, x, k=3)
    torch.testing.assert_close(result.class_diagonals, parts.diagonal(dim1=1, dim2=2), rtol=0, atol=1e-12)
    torch.testing.assert_close(result.class_diagonals.sum(0), result.diagonal, rtol=0, atol=1e-12)
