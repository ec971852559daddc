"""Learning opacity: how much an expert depends on its random seed and on its data.

`--seeds K` retrains K times on the same data with different seeds (sensitivity to
initialisation and batch order); `--bootstrap K` retrains K times on bootstrap resamples
of the training rows with the same seed (sensitivity to data). Both are then compared
pairwise: metric spread, prediction churn, linear CKA of embeddings, AGOP correlation and
top-k eigenspace overlap. Training happens here, in memory: nothing is registered.
"""
from __future__ import annotations

import dataclasses
import statistics
from typing import Any

import torch

from moe_pipeline.inspect import agop as A
from moe_pipeline.inspect.similarity import churn, linear_cka, pairwise, subspace_overlap
from moe_pipeline.data.inputs import ExpertData
from moe_pipeline.training.train import infer, metrics_of, primary_metric, train_expert

AGOP_ROWS = 500  # rows of the training split used for each run's AGOP


def _bootstrap(data: ExpertData, seed: int) -> ExpertData:
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, len(data.y["train"]), (len(data.y["train"]),), generator=gen)
    return dataclasses.replace(data, x={**data.x, "train": data.x["train"][rows]}, y={**data.y, "train": data.y["train"][rows]})


def _summarise(runs: list[dict[str, Any]], task: str) -> dict[str, Any]:
    metric = primary_metric(task)
    values = [r["metric"] for r in runs]
    summary = {
        "runs": len(runs), f"val_{metric}_mean": statistics.fmean(values),
        f"val_{metric}_std": statistics.pstdev(values) if len(values) > 1 else 0.0,
        "embedding_cka_mean": statistics.fmean(pairwise([r["embedding"] for r in runs], linear_cka)),
        "agop_correlation_mean": statistics.fmean(pairwise([r["agop"] for r in runs], A.cosine)),
        "topk_eigenspace_overlap_mean": statistics.fmean(pairwise([r["eigenvectors"] for r in runs], subspace_overlap)),
    }
    if task == "classification":
        summary["prediction_churn_mean"] = statistics.fmean(pairwise([r["pred"] for r in runs], churn))
    return summary


def sensitivity(spec: Any, resources: Any, data: ExpertData, base_seed: int, seeds: int, bootstrap: int,
                k: int = 4) -> dict[str, Any]:
    """Retrain and compare; returns {'seeds': {...}, 'bootstrap': {...}} for the modes asked."""
    out: dict[str, Any] = {}
    for mode, count in (("seeds", seeds), ("bootstrap", bootstrap)):
        if count < 2:
            continue
        runs = []
        for i in range(count):
            seed = base_seed + 1000 * (i + 1) if mode == "seeds" else base_seed
            run_data = data if mode == "seeds" else _bootstrap(data, base_seed + i + 1)
            result = train_expert(spec.model, spec.train, resources, run_data, seed)
            val = infer(result.model, data.x["val"], data.task)
            probe = data.x["train"][:AGOP_ROWS]
            res = A.compute(result.model, probe, k=k)
            runs.append({
                "metric": metrics_of(data.task, val["logits"], data.y["val"], "val")[f"val_{primary_metric(data.task)}"],
                "pred": val["logits"].argmax(dim=1), "embedding": val["embedding"],
                "agop": res.matrix if res.matrix is not None else res.diagonal, "eigenvectors": res.eigenvectors,
            })
        out[mode] = _summarise(runs, data.task)
    return out
