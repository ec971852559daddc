"""Learning opacity by source: how much an expert's behaviour depends on its initial weights,
on the order the optimiser saw the batches in, and on the data.

`init`: K runs with new initial weights, the same batch order and the same data;
`order`: K runs with the same initial weights, new batch orders, the same data;
`data`: K runs on bootstrap resamples of the training rows, same initial weights and order.
Run 0 of `init` and `order` is the recorded version's own setting (its seeds), so those two
modes share it. Runs are compared pairwise: metric spread, prediction churn, linear CKA of
embeddings, AGOP correlation, and AGOP eigenspace overlap at the effective rank (the smallest
k whose eigenvalues hold 95% of the trace; a fixed k would compare noise directions of a
low-rank AGOP). Each run also records digests of its initial weights, batch order and data,
so what a mode held fixed is checked, not assumed. Training happens here, in memory:
nothing is registered, nothing is written.
"""
from __future__ import annotations

import dataclasses
import statistics
from typing import Any, Callable

import torch

from moe_pipeline.inspect import agop as A
from moe_pipeline.inspect.similarity import churn, linear_cka, pairwise, subspace_overlap
from moe_pipeline.data.inputs import ExpertData
from moe_pipeline.training.metrics import metrics_of, primary_metric
from moe_pipeline.training.train import tensor_digest, infer, train_expert

AGOP_ROWS = 500  # rows of the training split used for each run's AGOP
MODES = ("init", "order", "data")
WHAT = {"init": "new initial weights; same batch order, same data",
        "order": "new batch order; same initial weights, same data",
        "data": "bootstrap resamples of the training rows; same initial weights, same batch order"}
SOURCE = {"init": "initialisation", "order": "the optimisation's feedback (batch order)", "data": "the data"}


def _bootstrap(data: ExpertData, seed: int) -> ExpertData:
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, len(data.y["train"]), (len(data.y["train"]),), generator=gen)
    return dataclasses.replace(data, x={**data.x, "train": data.x["train"][rows]}, y={**data.y, "train": data.y["train"][rows]})


def _seeds(mode: str, i: int, init: int, order: int) -> tuple[int, int, int | None]:
    """(init seed, order seed, bootstrap seed or None) of run i of a mode."""
    step = 1000 * i
    if mode == "init":
        return (init + step) % 2**32, order, None
    if mode == "order":
        return init, (order + step) % 2**32, None
    return init, order, i + 1


def one_run(spec: Any, resources: Any, data: ExpertData, seeds: tuple[int, int, int | None]) -> dict[str, Any]:
    init, order, boot = seeds
    run_data = data if boot is None else _bootstrap(data, boot)
    result = train_expert(spec.model, spec.train, resources, run_data, init, order_seed=order)
    val = infer(result.model, data.x["val"], data.task)
    res = A.compute(result.model, data.x["train"][:AGOP_ROWS], k=min(64, data.x["train"][0].numel()))
    metric = primary_metric(data.task)
    return {
        "metric": metrics_of(data.task, val["logits"], data.y["val"], "val")[f"val_{metric}"],
        "pred": val["logits"].argmax(dim=1), "embedding": val["embedding"],
        "agop": res.matrix if res.matrix is not None else res.diagonal, "eigenvectors": res.eigenvectors,
        "rank": res.rank95,
        "digests": {"initial weights": result.init_digest, "batch order": result.order_digest,
                    "data": tensor_digest([run_data.x["train"], run_data.y["train"]])},
    }


def _overlap_at_rank(a: dict[str, Any], b: dict[str, Any]) -> float:
    k = min(max(a["rank"], b["rank"]), a["eigenvectors"].shape[1])
    return subspace_overlap(a["eigenvectors"][:, :k], b["eigenvectors"][:, :k])


def _summarise(mode: str, runs: list[dict[str, Any]], task: str) -> dict[str, Any]:
    metric = primary_metric(task)
    values = [r["metric"] for r in runs]
    summary: dict[str, Any] = {
        "varied": WHAT[mode], "runs": len(runs), f"val_{metric}_mean": statistics.fmean(values),
        f"val_{metric}_spread": max(values) - min(values),
        f"val_{metric}_std": statistics.pstdev(values),
        "embedding_cka_mean": statistics.fmean(pairwise([r["embedding"] for r in runs], linear_cka)),
        "agop_correlation_mean": statistics.fmean(pairwise([r["agop"] for r in runs], A.cosine)),
        "effective_rank": [r["rank"] for r in runs],
        "eigenspace_overlap_mean": statistics.fmean(pairwise(runs, _overlap_at_rank)),
        # what the runs really shared: True where every run's digest is the same
        "shared": {what: len({r["digests"][what] for r in runs}) == 1 for what in runs[0]["digests"]},
        "digests": [r["digests"] for r in runs],
    }
    if task == "classification":
        summary["prediction_churn_mean"] = statistics.fmean(pairwise([r["pred"] for r in runs], churn))
    summary["verdict"] = verdict(mode, summary, metric)
    return summary


# The verdict's thresholds, stated on the page beside it
LOW_CHURN, HIGH_CHURN = 0.02, 0.10  # share of validation predictions two runs disagree on
SAME_FEATURES, DIFFERENT_FEATURES = 0.95, 0.80  # AGOP correlation between runs
LOW_SPREAD, HIGH_SPREAD = 0.01, 0.05  # regression: max − min of the validation metric
CRITERIA = (f"Low sensitivity: churn at most {LOW_CHURN:.0%} (regression: metric spread at most {LOW_SPREAD}) and "
            f"AGOP correlation at least {SAME_FEATURES}; high: churn above {HIGH_CHURN:.0%} (spread above "
            f"{HIGH_SPREAD}) or AGOP correlation below {DIFFERENT_FEATURES}; moderate: in between. The same input "
            f"features: AGOP correlation at least {SAME_FEATURES}; partly different: at least {DIFFERENT_FEATURES}.")


def verdict(mode: str, s: dict[str, Any], metric: str) -> str:
    """One line in words, by the thresholds above (CRITERIA says them in words)."""
    churn_ = s.get("prediction_churn_mean")
    spread = s[f"val_{metric}_spread"]
    agree = s["agop_correlation_mean"]
    if churn_ is not None:
        level = "low" if churn_ <= LOW_CHURN and agree >= SAME_FEATURES else "high" \
            if churn_ > HIGH_CHURN or agree < DIFFERENT_FEATURES else "moderate"
        behaviour = f"runs disagree on {100 * churn_:.1f}% of validation predictions (val {metric} spread {spread:.4f})"
    else:
        level = "low" if spread <= LOW_SPREAD and agree >= SAME_FEATURES else "high" \
            if spread > HIGH_SPREAD or agree < DIFFERENT_FEATURES else "moderate"
        behaviour = f"validation {metric} varies by {spread:.4f}"
    features = "use the same input features" if agree >= SAME_FEATURES else "use partly different input features" \
        if agree >= DIFFERENT_FEATURES else "use different input features"
    return (f"{level} sensitivity to {SOURCE[mode]}: {behaviour}, and they "
            f"{features} (AGOP correlation {agree:.3f}, eigenspace overlap {s['eigenspace_overlap_mean']:.3f} at "
            f"the effective rank)")


def sensitivity(spec: Any, resources: Any, data: ExpertData, init_seed: int, order_seed: int, modes: list[str],
                runs: int, progress: Callable[[str, int], None] | None = None, pool: Any = None) -> dict[str, Any]:
    """Retrain `runs` times per mode and compare; {mode: summary} for the modes asked.
    `progress(what, k)` is told before the k-th training of all (`init run 2 of 3`), or, with a
    `pool` (`opacity_workers.OpacityPool`, the runs in worker processes), as the k-th ends."""
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise ValueError(f"unknown opacity source(s) {unknown}; choose from {', '.join(MODES)}")
    cache: dict[tuple, dict[str, Any]] = {}  # run 0 of init and order is the same training
    if pool is not None:
        wanted = list(dict.fromkeys(_seeds(mode, i, init_seed, order_seed) for mode in modes for i in range(runs)))
        done = [0]

        def ended(seeds) -> None:
            done[0] += 1
            if progress:
                progress(f"{done[0]} of {len(wanted)} runs done", done[0] - 1)
        cache = pool.train(wanted, ended)
    out: dict[str, Any] = {}
    for mode in modes:
        trained = []
        for i in range(runs):
            if progress and pool is None:
                progress(f"{mode} run {i + 1} of {runs}", modes.index(mode) * runs + i)
            seeds = _seeds(mode, i, init_seed, order_seed)
            if seeds not in cache:
                cache[seeds] = one_run(spec, resources, data, seeds)
            trained.append(cache[seeds])
        out[mode] = _summarise(mode, trained, data.task)
    return out
