"""Average gradient outer product of the logits: which input features an expert's logits depend on.

AGOP = (1/n) sum_i J(x_i)^T J(x_i), J(x) = d logits / d input, (c, d). The Jacobians come
from one forward and c backward passes per chunk of independent samples (the gradient of
sum_i f_c(x_i) w.r.t. the batch is J_c(x_i) row by row): no per-sample loop. Sums are
accumulated in float64. Above `dense_limit` input dimensions the d x d matrix is never
formed: the diagonal is exact, the top-k eigenpairs come from randomised subspace
iteration on Jacobian products, run until their residuals are below 1e-3 (and reported). Pure functions of a model and tensors; no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

DENSE_LIMIT = 4096


def jacobian_chunks(model: nn.Module, x: torch.Tensor, chunk: int = 512) -> Iterator[torch.Tensor]:
    """Yields J for consecutive chunks of x: (b, c, d) with d = prod(input shape)."""
    model.eval()
    for start in range(0, len(x), chunk):
        xb = x[start:start + chunk].detach().clone().requires_grad_(True)
        out = model(xb)  # (b, c)
        out = out.reshape(len(xb), -1)
        rows = []
        for c in range(out.shape[1]):
            (grad,) = torch.autograd.grad(out[:, c].sum(), xb, retain_graph=c < out.shape[1] - 1)
            rows.append(grad.reshape(len(xb), -1))
        yield torch.stack(rows, dim=1)  # (b, c, d)


@dataclass
class AGOPResult:
    """The AGOP of a model on inputs: its diagonal, top eigenpairs and how well they were resolved."""

    diagonal: torch.Tensor  # (d,) float64: feature importance
    eigenvalues: torch.Tensor  # (k,) descending
    eigenvectors: torch.Tensor  # (d, k)
    matrix: torch.Tensor | None  # (d, d), only when d <= dense_limit
    class_diagonals: torch.Tensor | None  # (c, d): each output's AGOP diagonal, summing to `diagonal` (dense only)
    n: int
    spectrum: torch.Tensor | None = None  # every eigenvalue, descending (dense only)
    residuals: torch.Tensor | None = None  # ||Gv - λv|| / λ of each matrix-free pair; None = exact (dense)
    passes: int = 0  # Jacobian passes of the matrix-free eigen-iteration

    @property
    def rank95(self) -> int:
        """Effective rank: eigenvalues holding 95% of the trace (of those computed, when matrix-free)."""
        return effective_rank(self.spectrum if self.spectrum is not None else self.eigenvalues, self.trace)

    @property
    def trace(self) -> float:
        return float(self.diagonal.sum())


def agop(model: nn.Module, x: torch.Tensor, chunk: int = 512, per_class: bool | str = False) -> torch.Tensor | tuple:
    """Dense AGOP (d, d) in float64; with per_class, also the (c, d, d) per-output parts, or with
    per_class="diagonal" only their diagonals (c, d): c full d x d parts of a wide input would
    take c times the AGOP's memory, and the report draws only their diagonals."""
    total, parts = None, None
    for j in jacobian_chunks(model, x, chunk):  # (b, c, d)
        # Each chunk's product runs in the model's dtype (float32 matmuls are several times
        # faster on CPU); the sum over chunks, where rounding would accumulate, is float64.
        flat = j.reshape(-1, j.shape[-1])  # (b*c, d)
        product = (flat.T @ flat).double()
        total = product if total is None else total + product
        if per_class:
            contrib = (j.double() ** 2).sum(0) if per_class == "diagonal" else torch.einsum("bcd,bce->cde", j, j).double()
            parts = contrib if parts is None else parts + contrib
    total = total / len(x)
    return (total, parts / len(x)) if per_class else total


def agop_diagonal(model: nn.Module, x: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    diag = None
    for jac in jacobian_chunks(model, x, chunk):
        contrib = (jac.double() ** 2).sum(dim=(0, 1))  # (d,)
        diag = contrib if diag is None else diag + contrib
    return diag / len(x)


def agop_matvec(model: nn.Module, x: torch.Tensor, v: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """AGOP @ v for v (d, k), never forming AGOP: (1/n) sum J^T (J v)."""
    out = torch.zeros_like(v, dtype=torch.float64)
    for jac in jacobian_chunks(model, x, chunk):
        j = jac.double().reshape(-1, jac.shape[-1])  # (b*c, d)
        out += j.T @ (j @ v)
    return out / len(x)


RESIDUAL = 1e-3  # matrix-free eigenpairs iterate until ||Gv - λv|| / λ is at most this
MAX_ITERATIONS = 100


def top_eigen_matrix_free(model: nn.Module, x: torch.Tensor, k: int, tol: float = RESIDUAL,
                          max_iterations: int = MAX_ITERATIONS, oversample: int = 5, seed: int = 0,
                          chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Randomised subspace iteration (Halko et al.) with a Rayleigh-Ritz step each iteration;
    AGOP is PSD. Stops when every one of the top k Ritz pairs has relative residual
    ||Gv - λv|| / λ <= tol (or after max_iterations). Returns values, vectors, residuals and
    the passes over the Jacobians it took: the residuals say how approximate the pairs are,
    and the report shows them."""
    d = x[0].numel()
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, min(k + oversample, d), generator=gen, dtype=torch.float64))
    for iteration in range(1, max_iterations + 1):
        z = agop_matvec(model, x, q, chunk)  # G q: one pass over the Jacobians serves both steps
        values, small_vectors = torch.linalg.eigh((q.T @ z + z.T @ q) / 2)
        order = values.argsort(descending=True)[:k]
        values, small_vectors = values[order], small_vectors[:, order]
        vectors, g_vectors = q @ small_vectors, z @ small_vectors
        scale = values.abs().clamp(min=torch.finfo(torch.float64).tiny)
        residuals = torch.linalg.vector_norm(g_vectors - vectors * values, dim=0) / scale
        if bool((residuals <= tol).all()):
            break
        q, _ = torch.linalg.qr(z)
    return values, vectors, residuals, iteration


def compute(model: nn.Module, x: torch.Tensor, k: int = 8, dense_limit: int = DENSE_LIMIT,
            chunk: int = 512, per_class: bool = True) -> AGOPResult:
    """The top k eigenpairs and the diagonal; dense (every eigenvalue, and with `per_class` each
    output's diagonal) up to `dense_limit` features, matrix-free beyond."""
    d = x[0].numel()
    if d <= dense_limit:
        matrix, parts = agop(model, x, chunk, per_class="diagonal") if per_class else (agop(model, x, chunk), None)
        values, vectors = torch.linalg.eigh(matrix)
        order = values.argsort(descending=True)[:k]
        return AGOPResult(matrix.diagonal().clone(), values[order], vectors[:, order], matrix, parts, len(x),
                          spectrum=values.flip(0).clamp(min=0))
    values, vectors, residuals, passes = top_eigen_matrix_free(model, x, k, chunk=chunk)
    return AGOPResult(agop_diagonal(model, x, chunk), values, vectors, None, None, len(x), residuals=residuals,
                      passes=passes)


def effective_rank(spectrum: torch.Tensor, trace: float, share: float = 0.95) -> int:
    """The smallest k whose top-k eigenvalues hold `share` of the trace (at most len(spectrum)):
    how many feature directions the expert really uses."""
    if trace <= 0 or not len(spectrum):
        return 1
    held = torch.cumsum(spectrum.double().sort(descending=True).values, 0) / trace
    reached = torch.nonzero(held >= share - 1e-12)
    return int(reached[0, 0]) + 1 if len(reached) else len(spectrum)


def agop_per_sample(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The brute-force reference: one full Jacobian per sample in a Python loop. Slow on
    purpose; tests check `agop` against it and benchmarks time it."""
    total = torch.zeros(x[0].numel(), x[0].numel(), dtype=torch.float64)
    for xi in x:
        jac = torch.autograd.functional.jacobian(lambda v: model(v.unsqueeze(0)).squeeze(0), xi)
        jac = jac.reshape(jac.shape[0], -1).double()
        total += jac.T @ jac
    return total / len(x)


def sqrtm_psd(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frobenius cosine similarity: the correlation the Neural Feature Ansatz reports."""
    a, b = a.double().flatten(), b.double().flatten()
    return float(a @ b / (a.norm() * b.norm()).clamp(min=1e-300))


def neural_feature_ansatz(weight: torch.Tensor, initial: torch.Tensor, matrix: torch.Tensor) -> dict[str, float]:
    """Correlation of the first layer's W^T W with AGOP^(1/2) and AGOP, with and without W0."""
    w = weight.double().reshape(weight.shape[0], -1)  # (h, d)
    w0 = initial.double().reshape(initial.shape[0], -1)
    gram, gram_delta = w.T @ w, (w - w0).T @ (w - w0)
    root = sqrtm_psd(matrix)
    return {"wtw_vs_agop_sqrt": cosine(gram, root), "wtw_vs_agop": cosine(gram, matrix),
            "delta_wtw_vs_agop_sqrt": cosine(gram_delta, root), "delta_wtw_vs_agop": cosine(gram_delta, matrix)}


def reliance(diagonal: torch.Tensor, blocks: list[tuple[str, int, int]]) -> list[dict]:
    """Share of AGOP mass (trace) in each input block: how much the expert relies on each input."""
    total = float(diagonal.sum()) or 1.0
    return [{"input": ref, "columns": stop - start, "share": float(diagonal[start:stop].sum()) / total}
            for ref, start, stop in blocks]
