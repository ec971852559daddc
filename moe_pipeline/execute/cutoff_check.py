"""The behavioural early cutoff, as a write step: re-evaluate a current version on its
upstream's new outputs, and keep it when it behaves as it did.

The comparison itself (deltas, the verdict) is pure and lives in `state.cutoff`; this step
loads the version's own weights (never an upstream's), runs inference on the new inputs,
and, when kept, stores the refreshed outputs and records what the version was validated
against. When not kept it says why, and the caller retrains. Must not train.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

from moe_pipeline.data.store import SPLITS
from moe_pipeline.execute.located import located
from moe_pipeline.execute.runner import Outcome
from moe_pipeline.execute.view import View
from moe_pipeline.longlived import long_lived
from moe_pipeline.registry.scratch import scratch_dir
from moe_pipeline.registry.writes import Registry


@dataclass(frozen=True)
class NotKept:
    """The check's answer when the version must be retrained: why, in the words of the verdict."""
    why: str


def check_cutoff(view: View, registry: Registry, expert: str) -> Outcome | NotKept:
    """Within tolerance of its *training* reference: keep the current version, refresh its
    stored outputs by inference and record what it was validated against. Beyond: `NotKept`."""
    from moe_pipeline.registry.artifacts import PROBE, outputs_sha, read_tensors, write_refreshed_outputs
    from moe_pipeline.state import cutoff
    from moe_pipeline.state.record import OUTPUTS, VALIDATED_AGAINST, outputs_tag

    with long_lived():  # torch, where the training process has it and this process not yet
        from moe_pipeline.training.metrics import metrics_of
        from moe_pipeline.training.train import infer

    started = time.perf_counter()
    record = view.current()[expert]
    tolerances = view.pipeline.experts[expert].cutoff
    with located(view.loaded, expert, "model"):  # a custom model's forward is user code here too
        model, saved = view.load_model(record)  # its own weights, never an upstream's
        data, consumed = view.expert_data(expert)
    if list(data.in_shape) != list(saved.in_shape):
        return NotKept(f"input shape {saved.in_shape} -> {list(data.in_shape)}")
    reference = read_tensors(view.artifact(record, PROBE))
    with located(view.loaded, expert, "model"):
        new = {split: infer(model, data.x[split], data.task) for split in SPLITS}
    new_metric = metrics_of(data.task, new["val"]["logits"], data.y["val"], "val")[f"val_{record.metric_name}"]
    deltas = cutoff.measure(reference["probs"], new["val"]["probs"][reference["rows"]], data.task,
                            record.val_metric, new_metric)
    verdict = cutoff.judge(deltas, tolerances)
    if not verdict.keep:
        return NotKept(verdict.describe())
    changed = [f"{u} v{ref.version}" for u, ref in consumed.items() if record.upstream.get(u) != ref]
    name = f"outputs-validated-{int(time.time() * 1000)}"
    with scratch_dir(expert) as tmp:
        files = write_refreshed_outputs(tmp, name, new)
        registry.log_artifacts(record.run_id, tmp)
    record.outputs_dir, record.outputs_files = name, files
    record.outputs_sha = outputs_sha(files, name)
    record.upstream = consumed
    record.validated = {"upstream": {u: {"version": r.version, "outputs": r.outputs} for u, r in consumed.items()},
                        "deltas": deltas.as_dict(), "val_metric": new_metric,
                        "reference": f"v{record.version} as trained",
                        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    # Outputs first, the validation last: a kill between the two leaves new outputs under
    # the old validation, which status reads as stale (the upstream moved) and re-checks.
    # The other order would leave "validated against v2" over outputs of v1: fresh, and wrong.
    registry.set_tags(expert, record.version, {OUTPUTS: outputs_tag(record)})
    registry.set_tags(expert, record.version, {VALIDATED_AGAINST: json.dumps(record.validated, sort_keys=True)})
    view.remember(record)
    return Outcome(expert, "kept", record.version, record.metric_name, new_metric, time.perf_counter() - started, 0.0,
                   f"kept (validated against {', '.join(changed) or 'refreshed upstream outputs'}: {verdict.describe()})",
                   deltas=deltas.as_dict())
