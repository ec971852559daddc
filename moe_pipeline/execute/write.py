"""The write path of one pipeline: train an expert, check it against new upstream outputs, record staleness.

`Workspace` is a `View` with a registry that writes. Only `run`, `status --record`-style
publishing and inspection's artifact upload use it; the read-only commands get a `View`.
It never parses argv or prints tables; progress bars come in from the caller.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from moe_pipeline.data.store import SPLITS
from moe_pipeline.errors import DataError, MoeError, RegistryError, TrainingError, UserCodeError
from moe_pipeline.execute.runner import Outcome, run_plan
from moe_pipeline.execute.view import View
from moe_pipeline.longlived import long_lived
from moe_pipeline.registry.scratch import remove_dead_scratch, scratch_dir
from moe_pipeline.registry.versions import ExpertVersions
from moe_pipeline.registry.writes import Registry
from moe_pipeline.state import planner
from moe_pipeline.state.fingerprint import flatten
from moe_pipeline.state.record import NEEDS_RETRAIN, RETRAINED_BECAUSE, Record


class Workspace(View):
    registry: Registry
    fast_reads = False
    wait = 600.0  # seconds to wait for an expert another run is training (`run --wait`)
    notify: Callable[[str], None] = staticmethod(lambda message: None)  # "waiting for ..." lines
    _lease = None  # the lease of the expert being written, while one is
    _planned: dict[str, int | None] = {}  # each planned expert's current version when the plan was made
    trainer = None  # `run`'s training process (execute.trainer.TrainingProcess), where it started one

    def _registry(self, tracking_uri: str) -> Registry:
        return Registry(tracking_uri, self.pipeline.name)

    # ------------------------------------------------------------ debris of killed runs

    def clean_up_debris(self) -> list[str]:
        """What a killed `run` (kill -9, power loss) left: its MLflow runs still RUNNING, versions
        registered from them but never made current, its scratch folders. Returns what was done."""
        done = [f"removed scratch folder {p}" for p in remove_dead_scratch()]
        current = {(name, v.current) for name, v in self.snapshot().items()}
        for run_id, versions in self.registry.dead_runs().items():
            if any((expert, version) in current for expert, version in versions):
                self.registry.finish_run(run_id, "FINISHED")  # killed after `current` moved: the version is whole
                continue
            self.registry.finish_run(run_id, "FAILED")
            done.append(f"marked run {run_id} of a dead process FAILED")
            for expert, version in versions:
                self.registry.delete_version(expert, version)
                self.snapshot()[expert].records.pop(version, None)
                done.append(f"deleted {expert} v{version}: registered by a killed run, never current")
        return done

    # ------------------------------------------------------------ staleness tags

    def record_statuses(self, verify: bool = False) -> dict[str, planner.Status]:
        """Statuses, with every current version's `moe.needs_retrain` tag made to agree with them."""
        result = self.statuses(verify)
        self._sync_staleness_tags(result, self.current())
        return result

    def _sync_staleness_tags(self, result: dict[str, planner.Status], current: dict[str, Record | None]) -> None:
        """Make the `moe.needs_retrain` tag of every current version, and the `moe.status` tag of
        its registered model (the MLflow UI's model list), say what status says. Writes only what differs."""
        snap = self.snapshot()
        for change in self.tag_changes(result):
            if change.version is None:
                self.registry.set_model_tag(change.expert, change.key, change.value)
                snap[change.expert].model_tags[change.key] = change.value
            else:
                self.registry.mark_needs_retrain(change.expert, change.version, change.value)
                current[change.expert].needs_retrain = change.value

    # ------------------------------------------------------------ training

    def execute(self, plan: planner.Plan, bar=None, on_outcome: Callable[[Outcome], None] | None = None,
                executor: str = "local", address: str | None = None) -> list[Outcome]:
        """Run the plan, here one expert at a time (`bar` hands out a progress callback per expert),
        or on a Ray cluster (`executor="ray"`, `address` of an existing cluster or None for a local one)."""
        if plan.steps and executor == "local" and self.trainer is None:
            with long_lived():  # torch, before the first expert: see moe_pipeline.longlived
                import moe_pipeline.training.train  # noqa: F401
        current = self.current()
        self._planned = {str(s.expert): current[s.expert].version if current[s.expert] else None for s in plan.steps}
        if executor == "ray" and plan.steps:
            from moe_pipeline.execute.ray_runner import StepsFailed, run_plan_on_ray

            try:
                outcomes = run_plan_on_ray(self, plan, address, on_outcome)
            except StepsFailed:  # what finished is registered: its tags must say so too
                self._publish()
                raise
        else:
            outcomes = run_plan(plan, lambda step: self._execute(step, bar), on_outcome)
        self._publish()
        return outcomes

    def _publish(self) -> None:
        self.snapshot(refresh=True)  # concurrent runs (or Ray tasks) registered versions meanwhile
        self.record_statuses()  # leaves every staleness tag in agreement with the new state

    def _execute(self, step: planner.Step, bar) -> Outcome:
        """One step under the expert's lease: no other run writes this expert meanwhile.

        With the lease taken, the registry is read again: another run may have trained this
        expert (or its upstream) since the plan was made. What is fresh by now is used as it is."""
        from moe_pipeline.registry.lease import Lease

        expert = str(step.expert)
        lease = Lease(self.registry, expert)  # its time to live: MOE_LEASE_TTL
        try:
            lease.acquire(self.wait, lambda holder: self.notify(
                f"{expert}: being trained by {holder.describe()}; waiting for it (up to {self.wait:.0f} s)"))
            self._fail_runs_of_expired(lease)
            self._lease = lease
            self.snapshot(refresh=True)
            now = self.current()[expert]
            if now is not None and now.version != self._planned.get(expert):
                if self.statuses()[expert].status == planner.FRESH:
                    return Outcome(expert, "unchanged", now.version, now.metric_name, now.val_metric, 0.0, 0.0,
                                   f"trained by another run: v{now.version}")
            return self._decide(step, bar)
        finally:
            self._lease = None
            lease.release()

    def _fail_runs_of_expired(self, lease) -> None:
        """Runs that held an expired lease died (or hung): FAILED, and their never-current versions deleted."""
        from moe_pipeline.registry.lease import TOKEN

        for holder in lease.reaped:
            for run_id in self.registry.running_runs_tagged(TOKEN, holder.token):
                self.registry.finish_run(run_id, "FAILED")
                self.notify(f"{lease.expert}: marked run {run_id} of {holder.describe()} FAILED (its lease expired)")
                snap = self.snapshot(refresh=True)
                for expert, version in self.registry.versions_of_run(run_id):
                    if expert not in snap or snap[expert].current != version:
                        self.registry.delete_version(expert, version)

    def _decide(self, step: planner.Step, bar) -> Outcome:
        """Train, or first re-evaluate: the upstream has trained by now, so decide on the state as it is."""
        if step.action != planner.CHECK:
            return self.train(step.expert, bar)
        now = self.statuses()[step.expert]
        if now.status == planner.FRESH:  # its upstream was kept with unchanged outputs
            record = self.current()[step.expert]
            return Outcome(step.expert, "unchanged", record.version, record.metric_name, record.val_metric, 0.0, 0.0,
                           "upstream behaviour unchanged")
        if now.status == planner.STALE and now.upstream_only:
            return self.check(step.expert, bar)
        return self.train(step.expert, bar)

    def check(self, expert: str, bar=None) -> Outcome:
        """Behavioural early cutoff: re-evaluate the current version on the new upstream outputs.

        Within tolerance of its *training* reference: keep it, refresh its stored outputs by
        inference and record what it was validated against. Beyond: retrain.
        """
        import json
        import time

        from moe_pipeline.state import cutoff
        from moe_pipeline.registry.artifacts import PROBE, outputs_sha, read_tensors, write_refreshed_outputs
        from moe_pipeline.state.record import OUTPUTS, VALIDATED_AGAINST, outputs_tag

        with long_lived():  # torch, where the training process has it and this process not yet
            from moe_pipeline.training.train import infer, metrics_of

        started = time.perf_counter()
        record = self.current()[expert]
        tolerances = self.pipeline.experts[expert].cutoff
        with self._located(expert, "model"):  # a custom model's forward is user code here too
            model, saved = self.load_model(record)  # its own weights, never an upstream's
            data, consumed = self.expert_data(expert)
        if list(data.in_shape) != list(saved["in_shape"]):
            return self._retrain(expert, bar, f"input shape {saved['in_shape']} -> {list(data.in_shape)}")
        reference = read_tensors(self.artifact(record, PROBE))
        with self._located(expert, "model"):
            new = {split: infer(model, data.x[split], data.task) for split in SPLITS}
        new_metric = metrics_of(data.task, new["val"]["logits"], data.y["val"], "val")[f"val_{record.metric_name}"]
        deltas = cutoff.measure(reference["probs"], new["val"]["probs"][reference["rows"]], data.task,
                                record.val_metric, new_metric)
        verdict = cutoff.judge(deltas, tolerances)
        if not verdict.keep:
            return self._retrain(expert, bar, verdict.describe())
        changed = [f"{u} v{ref.version}" for u, ref in consumed.items() if record.upstream.get(u) != ref]
        name = f"outputs-validated-{int(time.time() * 1000)}"
        with scratch_dir(expert) as tmp:
            files = write_refreshed_outputs(tmp, name, new)
            self.registry.log_artifacts(record.run_id, tmp)
        record.outputs_dir, record.outputs_files = name, files
        record.outputs_sha = outputs_sha(files, name)
        record.upstream = consumed
        record.validated = {"upstream": {u: {"version": r.version, "outputs": r.outputs} for u, r in consumed.items()},
                            "deltas": deltas.as_dict(), "val_metric": new_metric,
                            "reference": f"v{record.version} as trained", "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        # Outputs first, the validation last: a kill between the two leaves new outputs under
        # the old validation, which status reads as stale (the upstream moved) and re-checks.
        # The other order would leave "validated against v2" over outputs of v1: fresh, and wrong.
        self.registry.set_tags(expert, record.version, {OUTPUTS: outputs_tag(record)})
        self.registry.set_tags(expert, record.version, {VALIDATED_AGAINST: json.dumps(record.validated, sort_keys=True)})
        self._remember(record)
        return Outcome(expert, "kept", record.version, record.metric_name, new_metric, time.perf_counter() - started, 0.0,
                       f"kept (validated against {', '.join(changed) or 'refreshed upstream outputs'}: {verdict.describe()})",
                       deltas=deltas.as_dict())

    def _retrain(self, expert: str, bar, why: str) -> Outcome:
        outcome = self.train(expert, bar)
        outcome.action, outcome.note = "retrained", f"retrained ({why})"
        # why the cutoff did not keep the old version, on the new one (the UI shows it beside the record)
        self.registry.set_tags(expert, outcome.version, {RETRAINED_BECAUSE: f"cutoff check failed: {why}"})
        return outcome

    def train(self, expert: str, bar=None) -> Outcome:
        """Train a new version, here or in `run`'s training process (`self.trainer`), then log
        and register its files under the expert's lease."""
        from moe_pipeline.execute.trainer import TrainingHere, TrainingJob
        from moe_pipeline.execute.view import consumed
        from moe_pipeline.registry.artifacts import outputs_sha, seal_version_files
        from moe_pipeline.state.fingerprint import training_seeds

        spec = self.pipeline.experts[expert]
        fp = self.fingerprint(expert)
        job = TrainingJob(expert, fp.spec, *training_seeds(fp.spec), self._probe_size(expert))

        def located(phase: str):
            return self._located(expert, phase)

        upstream = self.upstream_records(expert)
        trainer = self.trainer or TrainingHere(self.pipeline, self.store)
        trainer.prepare(expert, {up: {split: str(path) for split, path in self.outputs_files(record).items()}
                                 for up, record in upstream.items()}, located)
        callback = bar.expert(expert, spec.train.epochs) if bar is not None else None
        run_tags = self._lease.run_tags() if self._lease is not None else None
        with self.registry.training_run(expert, spec.description, run_tags) as run_id:
            with scratch_dir(expert) as folder:
                trained = trainer.train(job, folder, located, callback)
                sha = seal_version_files(folder)
                params = dict(flatten(fp.spec))
                params.update({key: trained[key] for key in ("task", "micro_batch", "device")})
                self.registry.log_training(run_id, params, trained["history"], trained["metrics"])
                self.registry.log_artifacts(run_id, folder)
            metric = trained["metric"]
            record = Record(expert=expert, version=0, run_id=run_id, spec=fp.spec, spec_hash=fp.spec_hash,
                            code=fp.code, code_hash=fp.code_hash, data=fp.data, data_hash=fp.data_hash,
                            upstream=consumed(upstream), train_seconds=round(trained["seconds"], 3),
                            peak_memory_mb=round(trained["peak_memory_mb"], 2), metric_name=metric,
                            val_metric=trained["metrics"][f"val_{metric}"], sha256=sha, outputs_sha=outputs_sha(sha),
                            baseline=trained["baseline"])
            previous = self.current()[expert]
            if self._lease is not None and not self._lease.holds():  # stalled past the lease's expiry
                raise RegistryError(f"expert '{expert}': this run lost its lease while training (stalled longer "
                                    f"than {self._lease.ttl:.0f} s?); nothing registered, another run owns it now")
            record, source = self.registry.register(record, run_id, spec.description)
        if previous is not None and previous.needs_retrain is not None:  # no stale mark on history
            self.registry.set_tags(expert, previous.version, {NEEDS_RETRAIN: f"superseded by v{record.version}"})
        self._remember(record, source)
        note = f"{trained['epochs_run']} epochs"
        if trained["weakest"]:
            note += f"; weakest on val: {trained['weakest']}"
        if record.below_baseline:
            note += f"; NOT better than the trivial predictor ({record.baseline_text()})"
        return Outcome(expert, "trained", record.version, metric, record.val_metric, record.train_seconds,
                       record.peak_memory_mb, note)

    @contextlib.contextmanager
    def _located(self, expert: str, key: str) -> Iterator[None]:
        """Errors of user code, data or training, prefixed with the YAML position that caused them.

        Anything else a model's own forward/backward raises (a custom model's bug, a shape
        mismatch) becomes a UserCodeError too: one message, the run FAILED, nothing registered.
        """
        where = self.loaded.where("experts", expert, key)
        try:
            yield
        except (UserCodeError, TrainingError, DataError) as exc:
            raise type(exc)(f"{where}: expert '{expert}': {exc}") from None
        except MoeError:
            raise
        except Exception as exc:  # a model's forward or backward: user code for custom models
            raise UserCodeError(f"{where}: expert '{expert}': training raised {type(exc).__name__}: {exc}") from None

    def _probe_size(self, expert: str) -> int:
        from moe_pipeline.pipeline.spec import CutoffSpec

        tolerances = self.pipeline.experts[expert].cutoff
        return (CutoffSpec() if tolerances == "off" else tolerances).probe_size

    def _remember(self, record: Record, source: str | None = None) -> None:
        """Update the in-memory snapshot instead of searching the registry again."""
        snap = self.snapshot()
        versions = snap.setdefault(record.expert, ExpertVersions(record.expert))
        versions.records[record.version] = record
        versions.current = record.version
        if source is not None:
            versions.sources[record.version] = source
