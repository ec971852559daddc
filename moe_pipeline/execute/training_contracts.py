"""What goes to `run`'s training process and what comes back: typed, each serialised here only.

`TrainingOpening` (the pipeline `run` validated, first on the process's input), `TrainingJob`
(what to train, as the process holding the lease decided it) and `TrainingSummary` (what
training tells the write path). Plain dataclasses over JSON: no pickle crosses the pipe.
Must not import torch or mlflow, nor start or talk to a process (`training_process` does).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class TrainingJob:
    """What to train, as the process holding the lease decided it; goes to the training
    process as JSON (`to_json`/`from_json`, here only)."""

    expert: str
    spec: dict[str, Any]  # the resolved spec its fingerprint hashed
    init_seed: int
    order_seed: int
    probe_size: int

    def to_json(self) -> dict[str, Any]:
        """The job as JSON-ready data."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TrainingJob":
        """The job `to_json` wrote."""
        return cls(**data)


@dataclass
class TrainingSummary:
    """What training one version tells the write path, from this process or the training
    process alike (comes back as JSON: `to_json`/`from_json`, here only)."""

    task: str  # classification | regression
    metric: str  # the primary metric's name: accuracy | r2
    history: list[dict[str, float]]  # one row per epoch run
    metrics: dict[str, float]  # final metrics of the kept (best-epoch) weights, `val_<metric>` among them
    seconds: float
    peak_memory_mb: float
    micro_batch: int  # the batch that fit the memory budget (gradients accumulate to the spec's)
    device: str
    epochs_run: int
    baseline: float  # the trivial predictor's validation metric
    weakest: str | None  # the class with the lowest validation recall, for classification

    def to_json(self) -> dict[str, Any]:
        """The summary as JSON-ready data."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TrainingSummary":
        """The summary `to_json` wrote."""
        return cls(**data)


@dataclass
class TrainingOpening:
    """What the training process opens instead of the pipeline file: the pipeline exactly as `run`
    read and validated it, so it never parses the YAML again and cannot train from a file edited
    meanwhile. The first line on its input (`to_json`/`from_json`, here only)."""

    path: str  # the pipeline file, never read there: its folder and project root resolve code and data
    pipeline: dict[str, Any]  # `Pipeline.model_dump(mode="json", by_alias=True)`, validated again there
    source_positions: dict[str, str]  # source name -> `FILE:LINE:COL` of its key, where its data errors start
    experts: list[str]  # those the plan will train: their sources load while `run` opens the registry

    @classmethod
    def of(cls, loaded, experts: list[str]) -> "TrainingOpening":
        """The opening for a `LoadedPipeline`."""
        return cls(str(loaded.path), loaded.pipeline.model_dump(mode="json", by_alias=True),
                   {name: loaded.where("sources", name) for name in loaded.pipeline.sources}, list(experts))

    def to_json(self) -> dict[str, Any]:
        """The opening as JSON-ready data."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TrainingOpening":
        """The opening `to_json` wrote."""
        return cls(**data)
