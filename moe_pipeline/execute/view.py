"""The read-only view of one pipeline: its registry snapshot, statuses, plan, impact, stored versions.

The glue between the pure parts (graph, fingerprint, planner) and what they read (data,
registry). Everything here only reads: `status`, `dag`, `impact` and `run --dry-run` get a
`View`, which holds a `RegistryReader` and so cannot reach a method that writes. The write
path (`execute.run.Run`) holds a View for its reads and a `Registry` beside it for its writes.
Never parses argv or prints tables.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from moe_pipeline.pipeline import graph as g
from moe_pipeline.state import planner
from moe_pipeline.data.store import SPLITS, DataStore
from moe_pipeline.errors import SelectionError
from moe_pipeline.state.fingerprint import Fingerprint, data_label, data_refs, fingerprint
from moe_pipeline.data.statcache import StatCache
from moe_pipeline.pipeline.loader import LoadedPipeline, make_importable
from moe_pipeline.pipeline.paths import project_root
from moe_pipeline.state.record import Record, UpstreamRef
from moe_pipeline.registry.reader import RegistryReader, resolve_tracking_uri
from moe_pipeline.registry.versions import ExpertVersions


@dataclass(frozen=True)
class TagChange:
    """One staleness tag that does not say what status says: on version `version` of `expert`
    (`moe.needs_retrain`, `moe.state`), or on its registered model when `version` is None (`moe.status`).
    `value` None deletes the tag."""
    expert: str
    version: int | None
    key: str
    value: str | None


class View:
    """The read-only view of one pipeline: what its registry, code and data say, never a write.

    Holds the loaded pipeline, its expert graph, its data store and a `RegistryReader`; reads
    the registry once (`snapshot`) and computes fingerprints, statuses, plans and impact from it.
    """
    registry: RegistryReader

    def __init__(self, loaded: LoadedPipeline, tracking_uri: str | None = None, *, fast_reads: bool = True):
        """`fast_reads`: read an sqlite store without mlflow (`registry.fastread`); the write path
        passes False, to read through the client it writes with."""
        self.fast_reads = fast_reads
        make_importable(loaded.path)
        self.loaded = loaded
        self.pipeline = loaded.pipeline
        self.graph = g.expert_graph(self.pipeline)
        root = self.project_root = project_root(loaded.path)
        self.store = DataStore(self.pipeline, root, StatCache(root / ".moe-cache" / "stat-cache.json"), loaded.where)
        self.registry = RegistryReader(tracking_uri or resolve_tracking_uri(self.pipeline, loaded.path), self.pipeline.name)
        self._snapshot: dict[str, ExpertVersions] | None = None
        self._fingerprints: dict[str, Fingerprint] = {}
        self._integrity: tuple[dict, dict[str, str]] | None = None  # (the snapshot it verified, problems)

    # ------------------------------------------------------------ reading state

    def snapshot(self, refresh: bool = False) -> dict[str, ExpertVersions]:
        """The registry's state, read once; `refresh` reads it again (the write path does, under a lease,
        through the fast read where the store allows: other runs may have written meanwhile)."""
        if self._snapshot is None or refresh:
            self._snapshot = self.registry.snapshot(fast=self.fast_reads or refresh)
        return self._snapshot

    def current(self) -> dict[str, Record | None]:
        """Each expert's current version's record (None where it has none), from the snapshot."""
        snap = self.snapshot()
        return {name: snap[name].current_record if name in snap else None for name in self.pipeline.experts}

    def remember(self, record: Record, source: str | None = None) -> None:
        """Put a version the write path just registered or updated into the snapshot read
        earlier, instead of searching the registry again (`source`: its artifact URI, when new)."""
        snap = self.snapshot()
        versions = snap.setdefault(record.expert, ExpertVersions(record.expert))
        versions.records[record.version] = record
        versions.current = record.version
        if source is not None:
            versions.sources[record.version] = source

    def fingerprint(self, expert: str) -> Fingerprint:
        """The expert's fingerprint as the pipeline, its code and its data say now; computed once per View."""
        if expert not in self._fingerprints:
            self._fingerprints[expert] = fingerprint(self.pipeline, expert, self.store.field_hash)
        return self._fingerprints[expert]

    def pipeline_state(self) -> str:
        """12 hex digits naming what the pipeline file, its code and its data say now: a staleness
        tag carries it, so a reader sees which state (which branch) a stale mark was computed for."""
        import hashlib
        import json

        fps = {name: self.fingerprint(name) for name in self.pipeline.experts}
        body = {name: [fp.spec_hash, fp.code, fp.data] for name, fp in sorted(fps.items())}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]

    def statuses(self, verify: bool = False) -> dict[str, planner.Status]:
        """Every expert's status; `verify` also checks every current artifact's sha256 (reads every file)."""
        current = self.current()
        fps = {name: self.fingerprint(name) for name in self.pipeline.experts if current[name] is not None}
        return planner.statuses(self.graph, fps, current, self.integrity() if verify else None, self._changed_files)

    def _changed_files(self, key: str, old_hash: str) -> str | None:
        refs = {data_label(self.pipeline, ref): ref for name in self.pipeline.experts
                for ref in data_refs(self.pipeline, name)}
        return self.store.changed_files(refs[key], old_hash) if key in refs else None

    def tag_changes(self, statuses: dict[str, planner.Status]) -> list[TagChange]:
        """The staleness tags to write so that the registry says what `statuses` say: every current
        version's `moe.needs_retrain`, every registered model's `moe.status`. Empty when they agree."""
        from moe_pipeline.state.record import MODEL_STATUS, NEEDS_RETRAIN, STATE

        snap, current = self.snapshot(), self.current()
        state = self.pipeline_state() if any(s.status in (planner.STALE, planner.PENDING)
                                             for s in statuses.values()) else None
        changes = []
        for name, status in statuses.items():
            record = current[name]
            if record is None:
                continue
            wanted = (f"{status.status}: {status.summary()} (pipeline state {state})"
                      if status.status in (planner.STALE, planner.PENDING) else None)
            if record.needs_retrain != wanted:
                changes.append(TagChange(name, record.version, NEEDS_RETRAIN, wanted))
            if record.state != status.status:
                changes.append(TagChange(name, record.version, STATE, status.status))
            short = f"v{record.version} {status.status}" + (f": {status.reasons[0]}"[:80] if status.reasons else "")
            if snap[name].model_tags.get(MODEL_STATUS) != short:
                changes.append(TagChange(name, None, MODEL_STATUS, short))
        return changes

    def settled(self, statuses: dict[str, planner.Status]) -> bool:
        """Whether a `run` with nothing to train would write nothing: no debris of a killed run
        to recover, every current artifact whole, every staleness tag already right. Only a
        store that can answer without the MLflow client (sqlite) is ever settled."""
        return (self.registry.left_debris() is False and not self.integrity()
                and not self.tag_changes(statuses))

    def integrity(self) -> dict[str, str]:
        """Expert -> what is wrong with its current version's artifacts, for those with a problem;
        verified once per snapshot (`run` asks for its plan and again whether it is settled)."""
        snap = self.snapshot()
        if self._integrity is not None and self._integrity[0] is snap:
            return self._integrity[1]
        problems = {}
        for name, record in self.current().items():
            if record is not None:
                problem = self.registry.verify(record, snap[name].sources[record.version])
                if problem:
                    problems[name] = problem
        self._integrity = (snap, problems)
        return problems

    def estimates(self) -> dict[str, float | None]:
        """Each expert's training seconds as its latest version recorded them (None if never trained)."""
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
        """Each expert: whether its behavioural cutoff is on (`cutoff:` not `off`)."""
        return {name: spec.cutoff != "off" for name, spec in self.pipeline.experts.items()}

    def plan(self, names: list[str], downstream: str | None = None, force: bool = False,
             verify: bool = False, statuses: dict[str, planner.Status] | None = None) -> planner.Plan:
        """What `run` would train or check, in order; `statuses` when the caller has them already."""
        self._check_names([*names, *([downstream] if downstream else [])])
        return planner.plan(self.graph, statuses if statuses is not None else self.statuses(verify),
                            self.estimates(), names, downstream, force, self.cutoff_enabled())

    def impact(self, expert: str) -> planner.Plan:
        """What a change to `expert` would retrain: it and everything downstream, with estimates."""
        self._check_names([expert])
        return planner.impact(self.graph, expert, self.estimates())

    # ------------------------------------------------------------ stored versions

    def record(self, expert: str, version: int | None = None) -> Record:
        """One version's record (default: the current one); a SelectionError naming what exists otherwise."""
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

    def outputs_files(self, record: Record) -> dict[str, Path]:
        """Verified local paths of one version's stored outputs, per split."""
        from moe_pipeline.registry.artifacts import outputs_file

        return {split: self.artifact(record, outputs_file(split, record.outputs_dir)) for split in SPLITS}

    def load_outputs(self, record: Record) -> dict[str, dict]:
        """One version's stored outputs, per split, read from their verified files."""
        from moe_pipeline.registry.artifacts import read_tensors

        return {split: read_tensors(path) for split, path in self.outputs_files(record).items()}

    def load_model(self, record: Record):
        """One expert version's model, rebuilt from its verified spec and safetensors weights,
        and its `VersionSpec`."""
        from moe_pipeline.registry.artifacts import SPEC, WEIGHTS
        from moe_pipeline.state.version_spec import VersionSpec
        from moe_pipeline.training.rebuild import load_version_model

        saved = VersionSpec.read(self.artifact(record, SPEC))
        named = frozenset(e.model.cls for e in self.pipeline.experts.values() if e.model.kind == "custom")
        return load_version_model(saved, self.artifact(record, WEIGHTS), self.project_root, named), saved

    def expert_data(self, expert: str, upstream_versions: dict[str, int] | None = None, sample: bool = False):
        """Inputs and target of one expert; upstream inputs come from stored outputs.

        By default the upstream experts' current versions; `upstream_versions` pins others
        (inspection reads the versions an expert version was trained or validated on).
        `sample`: an expert trained from data on disk (`resources.max_host_memory_gb`) is read on
        the first rows of each split (`streamed_inputs.sampled_expert_data`), not whole.
        """
        from moe_pipeline.data.inputs import build_expert_data
        from moe_pipeline.data.streamed_inputs import reads_streamed, sampled_expert_data

        records = self.upstream_records(expert, upstream_versions)
        if sample and reads_streamed(self.pipeline, expert):
            budget = self.pipeline.resources_for(expert).max_host_memory_gb
            files = {up: self.outputs_files(record) for up, record in records.items()}
            return (sampled_expert_data(expert, self.pipeline.experts[expert], self.store, files, int(budget * 2**30)),
                    consumed(records))
        upstream = {up: self.load_outputs(record) for up, record in records.items()}
        return build_expert_data(expert, self.pipeline.experts[expert], self.store, upstream), consumed(records)

    def upstream_records(self, expert: str, upstream_versions: dict[str, int] | None = None) -> dict[str, Record]:
        """The versions of its upstream experts whose stored outputs an expert reads (see `expert_data`)."""
        current = self.current()
        if upstream_versions:
            current = {**current, **{u: self.record(u, v) for u, v in upstream_versions.items()}}
        for up in g.upstream(self.graph, expert):
            if current[up] is None:
                raise SelectionError(f"expert '{expert}' reads '{up}', which has no version; run `moe-pipeline run` first")
        return {up: current[up] for up in g.upstream(self.graph, expert)}


def consumed(records: dict[str, Record]) -> dict[str, UpstreamRef]:
    """What a version records of the upstream versions it read: their version and outputs."""
    return {up: UpstreamRef(record.version, record.outputs_sha) for up, record in records.items()}
