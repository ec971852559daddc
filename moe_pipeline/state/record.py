"""The record of one expert version: what it was trained from, as registry tags.

Pure data: converting a `Record` to and from a flat `{tag: str}` mapping. The registry
stores these as model-version tags (visible in the MLflow UI); the planner reads them.
No mlflow and no torch here.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from moe_pipeline.errors import RegistryError

PREFIX = "moe."
NEEDS_RETRAIN = PREFIX + "needs_retrain"
VALIDATED_AGAINST = PREFIX + "validated_against"
RETRAINED_BECAUSE = PREFIX + "retrained_because"  # on a version the cutoff check did not keep the old one for
MODEL_STATUS = PREFIX + "status"  # on the registered model: "v3 stale: SPEC train.lr: 0.003 -> 0.001"
# on each version, its first tag (the MLflow UI's version list shows tags in the order they were
# set): fresh | stale | pending for the current version, "superseded by v4" for the ones before
STATE = PREFIX + "state"


@dataclass
class UpstreamRef:
    """Which upstream version a version consumed, and which stored outputs (behaviour reference)."""

    version: int
    outputs: str  # sha256 over the upstream's stored output files

    def label(self) -> str:
        """`vN`: the version, as status shows it."""
        return f"v{self.version}"


@dataclass
class Record:
    """What one expert version was trained from and how it did: spec, code, data and upstream
    fingerprints, its files' sha256, its metric; and what changed since (refreshed outputs,
    a staleness mark, the last cutoff validation).

    `upstream` is what the version consumes *now* (a cutoff check that kept it moves it to the
    new upstream versions); `trained_upstream` is what it was trained on, and never moves.
    """

    expert: str
    version: int
    run_id: str
    spec: dict[str, Any]
    spec_hash: str
    code: dict[str, str]
    code_hash: str
    data: dict[str, str]
    data_hash: str
    upstream: dict[str, UpstreamRef]
    train_seconds: float
    peak_memory_mb: float
    metric_name: str
    val_metric: float
    sha256: dict[str, str]  # artifact path -> sha256
    outputs_dir: str = "outputs"  # artifact folder of the stored outputs now in use
    outputs_sha: str = ""  # sha256 over those output files: what downstream experts record consuming
    outputs_files: dict[str, str] | None = None  # sha256 of refreshed output files (not in the immutable record)
    needs_retrain: str | None = None  # staleness mark written when an upstream's current moves
    validated: dict[str, Any] | None = None  # last cutoff check: upstreams validated against, deltas
    trained_upstream: dict[str, UpstreamRef] | None = None  # what it was trained on; `upstream` may move on
    baseline: float | None = None  # validation metric of the trivial predictor (majority class / mean)
    state: str | None = None  # the `moe.state` tag; None on versions registered before it existed

    @classmethod
    def from_training(cls, expert: str, run_id: str, fp, upstream: dict[str, UpstreamRef], trained,
                      sha256: dict[str, str], outputs_sha: str) -> "Record":
        """The record of a version just trained (number 0 until the registry gives it one), from
        its fingerprint (`state.fingerprint.Fingerprint`) and the training's summary
        (`execute.training_process.TrainingSummary`)."""
        return cls(expert=expert, version=0, run_id=run_id, spec=fp.spec, spec_hash=fp.spec_hash, code=fp.code,
                   code_hash=fp.code_hash, data=fp.data, data_hash=fp.data_hash, upstream=upstream,
                   train_seconds=round(trained.seconds, 3), peak_memory_mb=round(trained.peak_memory_mb, 2),
                   metric_name=trained.metric, val_metric=trained.metrics[f"val_{trained.metric}"], sha256=sha256,
                   outputs_sha=outputs_sha, baseline=trained.baseline, state="fresh")

    def __post_init__(self) -> None:
        if self.trained_upstream is None:
            self.trained_upstream = dict(self.upstream)

    def expected_sha256(self, artifact: str) -> str | None:
        """The sha256 the record holds for one of the version's files, stored outputs included (None if not recorded)."""
        return self.sha256.get(artifact) or (self.outputs_files or {}).get(artifact)

    @property
    def below_baseline(self) -> bool:
        # equal counts as not better: a model answering the majority class every time ties it exactly
        """Whether the version is no better than the trivial predictor on validation (a tie counts)."""
        return self.baseline is not None and self.val_metric <= self.baseline + 1e-9

    def baseline_text(self) -> str:
        """The version's validation metric beside the trivial predictor's, in words."""
        trivial = "majority class" if self.metric_name == "accuracy" else "predicting the mean"
        return f"val {self.metric_name} {self.val_metric:.4f} vs {trivial} {self.baseline:.4f}"

    @property
    def upstream_versions(self) -> dict[str, int]:
        """Upstream expert -> the version this one was trained from."""
        return {name: ref.version for name, ref in self.upstream.items()}


# The immutable part of a record is one JSON tag: a search then loads one tag row per
# version rather than fifteen, which keeps `status` on 1,000 experts fast. What changes
# after registration (stored outputs refreshed by the cutoff, staleness, validations) has
# its own tag, so updating it never rewrites the record.
RECORD = PREFIX + "record"
OUTPUTS = PREFIX + "outputs"
_IMMUTABLE = ("spec", "spec_hash", "code", "code_hash", "data", "data_hash", "train_seconds", "peak_memory_mb",
              "metric_name", "val_metric", "sha256")


def to_tags(record: Record) -> dict[str, str]:
    """A record as its model version's tags: state, short summary tags, the whole record as JSON, its outputs."""
    body = {name: getattr(record, name) for name in _IMMUTABLE}
    body["upstream"] = {k: asdict(v) for k, v in (record.trained_upstream or {}).items()}
    if record.baseline is not None:  # absent on versions recorded before the baseline check
        body["baseline"] = record.baseline
    # short tags first, the whole record last: the MLflow UI's version list shows them in this order
    tags = {STATE: record.state} if record.state is not None else {}
    tags.update(summary_tags(record))
    if record.needs_retrain is not None:
        tags[NEEDS_RETRAIN] = record.needs_retrain
    tags.update({RECORD: json.dumps(body, sort_keys=True), OUTPUTS: outputs_tag(record)})
    if record.validated is not None:
        tags[VALIDATED_AGAINST] = json.dumps(record.validated, sort_keys=True)
    return tags


def summary_tags(record: Record) -> dict[str, str]:
    """The record's key fields as short tags of their own, readable in the MLflow UI's version
    list (`moe.record` keeps the whole record; these are never read back)."""
    upstream = ", ".join(f"{name} v{ref.version}" for name, ref in sorted((record.trained_upstream or {}).items()))
    return {"moe.spec_hash": record.spec_hash[:12], "moe.code_hash": record.code_hash[:12],
            "moe.data_hash": record.data_hash[:12], "moe.upstream": upstream or "-",
            f"moe.val_{record.metric_name}": f"{record.val_metric:.4f}",
            "moe.train_seconds": f"{record.train_seconds:.2f}"}


def outputs_tag(record: Record) -> str:
    """The `moe.outputs` tag: the stored outputs' folder, their sha256 and each file's."""
    return json.dumps({"dir": record.outputs_dir, "sha": record.outputs_sha, "files": record.outputs_files or {}},
                      sort_keys=True)


def upstream_refs(raw: dict[str, Any]) -> dict[str, UpstreamRef]:
    """The `upstream` part of a `moe.record` tag as UpstreamRefs (version and outputs hash per expert)."""
    return {k: UpstreamRef(int(v["version"]), v["outputs"]) for k, v in raw.items()}


def from_tags(expert: str, version: int, run_id: str, tags: dict[str, str]) -> Record | None:
    """A record from a version's tags; None for a version this project did not write."""
    if RECORD not in tags:
        return None
    try:
        body = json.loads(tags[RECORD])
        outputs = json.loads(tags.get(OUTPUTS, "{}"))
        validated = json.loads(tags[VALIDATED_AGAINST]) if VALIDATED_AGAINST in tags else None
        trained = upstream_refs(body["upstream"])
        # after a cutoff check kept it, a version stands for the upstream outputs it was validated against
        current = upstream_refs(validated["upstream"]) if validated else trained
        return Record(
            expert=expert, version=int(version), run_id=run_id or "", upstream=current, trained_upstream=trained,
            outputs_dir=outputs.get("dir", "outputs"), outputs_sha=outputs.get("sha", ""),
            outputs_files=outputs.get("files") or None, needs_retrain=tags.get(NEEDS_RETRAIN), validated=validated,
            baseline=body.get("baseline"), state=tags.get(STATE),
            **{name: body[name] for name in _IMMUTABLE})
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # a tag edited by hand, or cut short
        what = f"{type(exc).__name__}: {exc}" if not isinstance(exc, KeyError) else f"no field {exc}"
        raise RegistryError(f"expert '{expert}' v{version}: its record tags ({RECORD}, {OUTPUTS}, "
                            f"{VALIDATED_AGAINST}) cannot be read ({what}); delete that version in the MLflow UI "
                            "or retrain the expert with `moe-pipeline run PIPELINE EXPERT --force`") from None
