"""A training's params and per-epoch metrics reach the registry whole, in as few requests as
MLflow's batch limits allow (100 params, 1,000 entries per request)."""
from __future__ import annotations

from pathlib import Path

from moe_pipeline.registry.writes import Registry


def test_every_param_and_metric_is_logged_in_the_fewest_requests(tmp_path: Path):
    registry = Registry(f"sqlite:///{tmp_path / 'mlflow.db'}", "p")
    params = {f"p{i:03d}": i for i in range(150)}  # two batches of params
    history = [{"epoch": float(e), **{f"m{k}": e * 10.0 + k for k in range(9)}} for e in range(1, 201)]  # 1,800
    with registry.training_run("e") as run_id:
        before = registry.requests
        registry.log_training(run_id, params, history, {"val_accuracy": 0.5})
        requests = registry.requests - before
    assert requests == 2  # 100 params + 900 metrics, then 50 params + 901 metrics
    run = registry.client.get_run(run_id)
    assert run.data.params == {k: str(v) for k, v in params.items()}
    for k in range(9):
        steps = registry.reader.metric_history(run_id, f"m{k}")
        assert steps == [(e, e * 10.0 + k) for e in range(1, 201)]
    assert run.data.metrics["best_val_accuracy"] == 0.5  # the best epoch's, whose weights are registered
