"""Training a new version, as a write step: train (here or in the training process), seal the
version's files, log the run, register the version and make it current.

Runs under the expert's lease (the caller holds it): the lease's token goes on the MLflow run,
and a lease lost while training (a stall past its expiry) registers nothing. Must not decide
whether to train (the run step does) and must not publish staleness tags (publish does).
"""
from __future__ import annotations

from moe_pipeline.errors import RegistryError
from moe_pipeline.execute.located import located
from moe_pipeline.execute.runner import Outcome
from moe_pipeline.execute.view import View, consumed
from moe_pipeline.registry.scratch import scratch_dir
from moe_pipeline.registry.writes import Registry
from moe_pipeline.state.fingerprint import flatten
from moe_pipeline.state.record import NEEDS_RETRAIN, STATE, Record


def probe_size(view: View, expert: str) -> int:
    """Rows of the validation split whose outputs are the version's behaviour reference."""
    from moe_pipeline.pipeline.spec import CutoffSpec

    tolerances = view.pipeline.experts[expert].cutoff
    return (CutoffSpec() if tolerances == "off" else tolerances).probe_size


def train_new_version(view: View, registry: Registry, expert: str, trainer=None, lease=None, bar=None) -> Outcome:
    """Train `expert` from its current upstream outputs, then log and register the version.

    `trainer`: `run`'s training process, or None to train in this process; `lease`: the
    expert's lease, held by the caller; `bar` hands out a progress callback per expert."""
    from moe_pipeline.execute.training_contracts import TrainingJob
    from moe_pipeline.execute.training_process import TrainingHere
    from moe_pipeline.registry.artifacts import outputs_sha, seal_version_files
    from moe_pipeline.state.fingerprint import training_seeds

    spec = view.pipeline.experts[expert]
    fp = view.fingerprint(expert)
    job = TrainingJob(expert, fp.spec, *training_seeds(fp.spec), probe_size(view, expert))

    def here(phase: str):
        return located(view.loaded, expert, phase)

    upstream = view.upstream_records(expert)
    trainer = trainer or TrainingHere(view.pipeline, view.store)
    trainer.prepare(expert, {up: {split: str(path) for split, path in view.outputs_files(record).items()}
                             for up, record in upstream.items()}, here)
    callback = bar.expert(expert, spec.train.epochs) if bar is not None else None
    run_tags = lease.run_tags() if lease is not None else None
    with registry.training_run(expert, spec.description, run_tags) as run_id:
        with scratch_dir(expert) as folder:
            trained = trainer.train(job, folder, here, callback)
            sha = seal_version_files(folder, run_id)
            params = dict(flatten(fp.spec))
            params.update({"task": trained.task, "micro_batch": trained.micro_batch, "device": trained.device})
            registry.log_training(run_id, params, trained.history, trained.metrics)
            registry.log_artifacts(run_id, folder)
        record = Record.from_training(expert, run_id, fp, consumed(upstream), trained, sha, outputs_sha(sha))
        previous = view.current()[expert]
        if lease is not None and not lease.holds():  # stalled past the lease's expiry
            raise RegistryError(f"expert '{expert}': this run lost its lease while training (stalled longer "
                                f"than {lease.ttl:.0f} s?); nothing registered, another run owns it now")
        record, source = registry.register(record, run_id, spec.description)
    if previous is not None:  # no stale mark on history: the version list says which one replaced it
        superseded = f"superseded by v{record.version}"
        registry.set_tags(expert, previous.version, {STATE: superseded, **(
            {NEEDS_RETRAIN: superseded} if previous.needs_retrain is not None else {})})
        previous.state = superseded
    view.remember(record, source)
    note = f"{trained.epochs_run} epochs"
    if trained.weakest:
        note += f"; weakest on val: {trained.weakest}"
    if record.below_baseline:
        note += f"; NOT better than the trivial predictor ({record.baseline_text()})"
    return Outcome(expert, "trained", record.version, trained.metric, record.val_metric, record.train_seconds,
                   record.peak_memory_mb, note)
