"""The record of one expert version: what it was trained from, as registry tags.

Pure data: converting a `Record` to and from a flat `{tag: str}` mapping. The registry
stores these as model-version tags (visible in the MLflow UI); the planner reads them.
No mlflow and no torch here.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

PREFIX = "moe."
NEEDS_RETRAIN = PREFIX + "needs_retrain"
VALIDATED_AGAINST = PREFIX + "validated_against"


@dataclass
class UpstreamRef:
    """Which upstream version a version consumed, and which stored outputs (behaviour reference)."""

    version: int
    outputs: str  # sha256 over the upstream's stored output files

    def label(self) -> str:
        return f"v{self.version}"


@dataclass
class Record:
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
    outputs_sha: str = ""  # sha256 over those output files: this version's behaviour reference id
    needs_retrain: str | None = None  # staleness mark written when an upstream's current moves
    validated: dict[str, Any] | None = None  # last cutoff check: upstreams, deltas
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def upstream_versions(self) -> dict[str, int]:
        return {name: ref.version for name, ref in self.upstream.items()}


_JSON_FIELDS = ("spec", "code", "data", "sha256", "validated")
_FLOAT_FIELDS = ("train_seconds", "peak_memory_mb", "val_metric")
_STR_FIELDS = ("spec_hash", "code_hash", "data_hash", "metric_name", "outputs_dir", "outputs_sha", "needs_retrain")


def to_tags(record: Record) -> dict[str, str]:
    tags = {PREFIX + "expert": record.expert}
    for name in _JSON_FIELDS:
        value = getattr(record, name)
        if value is not None:
            tags[PREFIX + name] = json.dumps(value, sort_keys=True)
    for name in _FLOAT_FIELDS:
        tags[PREFIX + name] = repr(float(getattr(record, name)))
    for name in _STR_FIELDS:
        if getattr(record, name) is not None:
            tags[PREFIX + name] = getattr(record, name)
    tags[PREFIX + "upstream"] = json.dumps({k: asdict(v) for k, v in record.upstream.items()}, sort_keys=True)
    return tags


def from_tags(expert: str, version: int, run_id: str, tags: dict[str, str]) -> Record | None:
    """A record from a version's tags; None for a version this project did not write."""
    if PREFIX + "spec_hash" not in tags:
        return None
    kwargs: dict[str, Any] = {"expert": expert, "version": int(version), "run_id": run_id or ""}
    for name in _JSON_FIELDS:
        raw = tags.get(PREFIX + name)
        kwargs[name] = json.loads(raw) if raw else ({} if name != "validated" else None)
    for name in _FLOAT_FIELDS:
        kwargs[name] = float(tags.get(PREFIX + name, "nan"))
    for name in _STR_FIELDS:
        if PREFIX + name in tags:
            kwargs[name] = tags[PREFIX + name]
    kwargs.setdefault("metric_name", "")
    upstream = json.loads(tags.get(PREFIX + "upstream", "{}"))
    kwargs["upstream"] = {k: UpstreamRef(int(v["version"]), v["outputs"]) for k, v in upstream.items()}
    return Record(**kwargs)
