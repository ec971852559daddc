"""One pipeline with its data and registry: status, plan, and training of single experts.

The glue between the pure parts (graph, fingerprint, planner, runner) and the parts with
side effects (data, train, registry). The CLI and inspection go through it; it never
parses argv or prints tables.
"""
from __future__ import annotations

import difflib
import tempfile
from pathlib import Path
from typing import Callable, Hashable, Iterable

from moe_pipeline import graph as g
from moe_pipeline import planner
from moe_pipeline.data import SPLITS, DataStore
from moe_pipeline.errors import SelectionError
from moe_pipeline.fingerprint import Fingerprint, fingerprint, flatten
from moe_pipeline.loader import LoadedPipeline
from moe_pipeline.record import Record, UpstreamRef
from moe_pipeline.registry import ExpertVersions, Registry, resolve_tracking_uri
from moe_pipeline.runner import Outcome, run_plan


class Workspace:
    def __init__(self, loaded: LoadedPipeline, tracking_uri: str | None = None):
        self.loaded = loaded
        self.pipeline = loaded.pipeline
        self.graph = g.expert_graph(self.pipeline)
        self.store = DataStore(self.pipeline)
        self.registry = Registry(tracking_uri or resolve_tracking_uri(self.pipeline, loaded.path), self.pipeline.name)
        self._snapshot: dict[str, ExpertVersions] | None = None
        self._fingerprints: dict[str, Fingerprint] = {}

    # ------------------------------------------------------------ reading state

    def snapshot(self, refresh: bool = False) -> dict[str, ExpertVersions]:
        if self._snapshot is None or refresh:
            self._snapshot = self.registry.snapshot()
        return self._snapshot

    def current(self) -> dict[str, Record | None]:
        snap = self.snapshot()
        return {name: snap[name].current_record if name in snap else None for name in self.pipeline.experts}

    def fingerprint(self, expert: str) -> Fingerprint:
        if expert not in self._fingerprints:
            self._fingerprints[expert] = fingerprint(self.pipeline, expert, self.store.field_hash)
        return self._fingerprints[expert]

    def statuses(self, record_tags: bool = True) -> dict[str, planner.Status]:
        current = self.current()
        fps = {name: self.fingerprint(name) for name in self.pipeline.experts if current[name] is not None}
        result = planner.statuses(self.graph, fps, current)
        if record_tags:
            self._sync_staleness_tags(result, current)
        return result

    def _sync_staleness_tags(self, result: dict[str, planner.Status], current: dict[str, Record | None]) -> None:
        """Make the `moe.needs_retrain` tag of every current version say what status says."""
        for name, status in result.items():
            record = current[name]
            if record is None:
                continue
            wanted = f"{status.status}: {status.summary()}" if status.status in (planner.STALE, planner.PENDING) else None
            if record.needs_retrain != wanted:
                self.registry.mark_needs_retrain(name, record.version, wanted)
                record.needs_retrain = wanted

    def estimates(self) -> dict[str, float | None]:
        snap = self.snapshot()
        out: dict[str, float | None] = {}
        for name in self.pipeline.experts:
            versions = snap.get(name)
            records = sorted(versions.records.values(), key=lambda r: r.version) if versions else []
            out[name] = records[-1].train_seconds if records else None
        return out

    def _check_names(self, names: Iterable[str]) -> None:
        for name in names:
            if name not in self.pipeline.experts:
                close = difflib.get_close_matches(name, list(self.pipeline.experts), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise SelectionError(f"pipeline '{self.pipeline.name}' has no expert '{name}'{hint}; "
                                     f"experts: {', '.join(self.pipeline.experts)}")

    def cutoff_enabled(self) -> dict[str, bool]:
        return {name: spec.cutoff != "off" for name, spec in self.pipeline.experts.items()}

    def plan(self, names: list[str], downstream: str | None = None, force: bool = False) -> planner.Plan:
        self._check_names([*names, *([downstream] if downstream else [])])
        return planner.plan(self.graph, self.statuses(), self.estimates(), names, downstream, force,
                            self.cutoff_enabled())

    def impact(self, expert: str) -> planner.Plan:
        self._check_names([expert])
        return planner.impact(self.graph, expert, self.estimates())

    # ------------------------------------------------------------ stored versions

    def record(self, expert: str, version: int | None = None) -> Record:
        self._check_names([expert])
        versions = self.snapshot().get(expert)
        wanted = version if version is not None else (versions.current if versions else None)
        if versions is None or wanted not in versions.records:
            known = sorted(versions.records) if versions else []
            raise SelectionError(f"expert '{expert}' has no version {wanted if wanted is not None else '(none current)'}"
                                 f"; registered versions: {known or 'none'}. Train it with `moe-pipeline run`.")
        return versions.records[wanted]

    def artifact(self, record: Record, path: str) -> Path:
        """A verified local path of one artifact of a version (sha256 checked)."""
        source = self.snapshot()[record.expert].sources[record.version]
        return self.registry.verified_path(record, source, path)

    def load_outputs(self, record: Record) -> dict[str, dict]:
        from moe_pipeline.artifacts import outputs_file, read_tensors

        return {split: read_tensors(self.artifact(record, outputs_file(split, record.outputs_dir))) for split in SPLITS}

    def load_model(self, record: Record):
        """Rebuild one expert version's model from its verified safetensors weights."""
        from moe_pipeline.artifacts import SPEC, WEIGHTS, read_json, read_tensors
        from moe_pipeline.models import build_model

        saved = read_json(self.artifact(record, SPEC))
        from pydantic import TypeAdapter

        from moe_pipeline.spec import ModelSpec

        model_spec = TypeAdapter(ModelSpec).validate_python(saved["spec"]["model"])
        model = build_model(model_spec, saved["in_shape"], saved["n_outputs"])
        model.load_state_dict(read_tensors(self.artifact(record, WEIGHTS)))
        return model.eval(), saved

    def expert_data(self, expert: str, upstream_versions: dict[str, int] | None = None):
        """Inputs and target of one expert; upstream inputs come from stored outputs.

        By default the upstream experts' current versions; `upstream_versions` pins others
        (inspection reads the versions an expert version was trained or validated on).
        """
        from moe_pipeline.inputs import build_expert_data

        current = self.current()
        if upstream_versions:
            current = {**current, **{u: self.record(u, v) for u, v in upstream_versions.items()}}
        upstream = {}
        for up in g.upstream(self.graph, expert):
            if current[up] is None:
                raise SelectionError(f"expert '{expert}' reads '{up}', which has no version; run `moe-pipeline run` first")
            upstream[up] = self.load_outputs(current[up])
        consumed = {up: UpstreamRef(current[up].version, current[up].outputs_sha) for up in upstream}
        return build_expert_data(expert, self.pipeline.experts[expert], self.store, upstream), consumed

    # ------------------------------------------------------------ training

    def execute(self, plan: planner.Plan, quiet: bool = True,
                on_outcome: Callable[[Outcome], None] | None = None) -> list[Outcome]:
        from moe_pipeline.progress import progress_bar

        with progress_bar(quiet) as bar:
            outcomes = run_plan(plan, lambda step: self._execute(step, bar), on_outcome)
        self.statuses()  # leaves every staleness tag in agreement with the new state
        return outcomes

    def _execute(self, step: planner.Step, bar) -> Outcome:
        """Train, or first re-evaluate: the upstream has trained by now, so decide on the state as it is."""
        if step.action != planner.CHECK:
            return self.train(step.expert, bar)
        now = self.statuses(record_tags=False)[step.expert]
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

        from moe_pipeline import cutoff
        from moe_pipeline.artifacts import PROBE, outputs_sha, read_tensors, write_refreshed_outputs
        from moe_pipeline.record import OUTPUTS, VALIDATED_AGAINST, outputs_tag
        from moe_pipeline.train import infer, metrics_of

        started = time.perf_counter()
        record = self.current()[expert]
        tolerances = self.pipeline.experts[expert].cutoff
        model, saved = self.load_model(record)  # its own weights, never an upstream's
        data, consumed = self.expert_data(expert)
        if list(data.in_shape) != list(saved["in_shape"]):
            return self._retrain(expert, bar, f"input shape {saved['in_shape']} -> {list(data.in_shape)}")
        reference = read_tensors(self.artifact(record, PROBE))
        new = {split: infer(model, data.x[split], data.task) for split in SPLITS}
        new_metric = metrics_of(data.task, new["val"]["logits"], data.y["val"], "val")[f"val_{record.metric_name}"]
        deltas = cutoff.measure(reference["probs"], new["val"]["probs"][reference["rows"]], data.task,
                                record.val_metric, new_metric)
        verdict = cutoff.judge(deltas, tolerances)
        if not verdict.keep:
            return self._retrain(expert, bar, verdict.describe())
        changed = [f"{u} v{ref.version}" for u, ref in consumed.items() if record.upstream.get(u) != ref]
        name = f"outputs-validated-{int(time.time() * 1000)}"
        with tempfile.TemporaryDirectory(prefix=f"moe-{expert}-") as tmp:
            files = write_refreshed_outputs(Path(tmp), name, new)
            self.registry.log_artifacts(record.run_id, Path(tmp))
        record.outputs_dir, record.outputs_files = name, files
        record.outputs_sha = outputs_sha(files, name)
        record.upstream = consumed
        record.validated = {"upstream": {u: {"version": r.version, "outputs": r.outputs} for u, r in consumed.items()},
                            "deltas": deltas.as_dict(), "val_metric": new_metric,
                            "reference": f"v{record.version} as trained", "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.registry.set_tags(expert, record.version, {VALIDATED_AGAINST: json.dumps(record.validated, sort_keys=True),
                                                        OUTPUTS: outputs_tag(record)})
        self._remember(record)
        return Outcome(expert, "kept", record.version, record.metric_name, new_metric, time.perf_counter() - started, 0.0,
                       f"kept (validated against {', '.join(changed) or 'refreshed upstream outputs'}: {verdict.describe()})",
                       deltas=deltas.as_dict())

    def _retrain(self, expert: str, bar, why: str) -> Outcome:
        outcome = self.train(expert, bar)
        outcome.action, outcome.note = "retrained", f"retrained ({why})"
        return outcome

    def train(self, expert: str, bar=None, seed: int | None = None) -> Outcome:
        from moe_pipeline.artifacts import outputs_sha, write_version_files
        from moe_pipeline.cutoff import probe_rows
        from moe_pipeline.train import primary_metric, release, train_expert

        spec = self.pipeline.experts[expert]
        data, consumed = self.expert_data(expert)
        fp = self.fingerprint(expert)
        seed = fp.spec["train"]["seed"] if seed is None else seed
        callback = bar.expert(expert, spec.train.epochs) if bar is not None else None
        with self.registry.training_run(expert, spec.description) as run_id:
            result = train_expert(spec.model, spec.train, self.pipeline.resources_for(expert), data, seed, callback)
            metric = primary_metric(data.task)
            with tempfile.TemporaryDirectory(prefix=f"moe-{expert}-") as tmp:
                folder = Path(tmp)
                saved_spec = {"spec": fp.spec, "in_shape": list(data.in_shape), "n_outputs": data.n_outputs,
                              "task": data.task, "blocks": [[b.ref, b.start, b.stop] for b in data.blocks],
                              "micro_batch": result.micro_batch, "device": result.device}
                probe = probe_rows(len(data.y["val"]), self._probe_size(expert))
                sha = write_version_files(folder, result.model, result.initial_first_layer, result.outputs, saved_spec,
                                          probe)
                params = dict(flatten(fp.spec))
                params.update({"task": data.task, "micro_batch": result.micro_batch, "device": result.device})
                self.registry.log_training(run_id, params, result.history, result.metrics)
                self.registry.log_artifacts(run_id, folder)
            record = Record(expert=expert, version=0, run_id=run_id, spec=fp.spec, spec_hash=fp.spec_hash,
                            code=fp.code, code_hash=fp.code_hash, data=fp.data, data_hash=fp.data_hash,
                            upstream=consumed, train_seconds=round(result.seconds, 3),
                            peak_memory_mb=round(result.peak_memory_mb, 2), metric_name=metric,
                            val_metric=result.metrics[f"val_{metric}"], sha256=sha, outputs_sha=outputs_sha(sha))
            record, source = self.registry.register(record, run_id, spec.description)
        self._remember(record, source)
        release()
        return Outcome(expert, "trained", record.version, metric, record.val_metric, record.train_seconds,
                       record.peak_memory_mb, f"{result.epochs_run} epochs")

    def _probe_size(self, expert: str) -> int:
        from moe_pipeline.spec import CutoffSpec

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
