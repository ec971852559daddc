"""`VersionSpec`: what a version's `spec.json` holds, typed, and its one serialisation.

Written once per version by the training step, beside the weights; read by everything that
rebuilds or applies a version (the cutoff check, inspection, predict, explain, the pyfunc
flavour, export). Pure: no torch, no file I/O beyond the path a caller names.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict


class VersionSpec(BaseModel):
    """How to rebuild and feed one expert version.

    spec: the expert's resolved spec as its fingerprint hashed it (model, train, inputs...);
    in_shape: one row's input shape; n_outputs: logits per row; task: classification or
    regression; blocks: (input reference, first column, end column) of the flattened input;
    micro_batch, device: how it was trained; transforms, feature_names, class_names, fields
    (each source input's shape, dtype, columns): what prediction and inspection need to read
    inputs as training did.
    """

    model_config = ConfigDict(extra="ignore")  # a newer writer's extra keys do not stop an older reader

    spec: dict[str, Any]
    in_shape: list[int]
    n_outputs: int
    task: str
    blocks: list[tuple[str, int, int]] = []
    micro_batch: int | None = None
    device: str | None = None
    transforms: dict[str, dict[str, Any]] = {}
    feature_names: list[str] | None = None
    class_names: list[str] | None = None
    fields: dict[str, dict[str, Any]] = {}  # source input -> `DataStore.field_format` (empty on older versions)

    @property
    def inputs(self) -> list[str]:
        """The input references in the order their columns are concatenated."""
        return [ref for ref, _, _ in self.blocks]

    def model_spec(self):
        """The `model:` part of the spec as the schema's typed model spec."""
        from pydantic import TypeAdapter

        from moe_pipeline.pipeline.spec import ModelSpec

        return TypeAdapter(ModelSpec).validate_python(self.spec["model"])

    def to_json(self) -> str:
        """The spec.json text: sorted keys, indented (its sha256 is recorded, so it is stable)."""
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "VersionSpec":
        """The VersionSpec of a spec.json text."""
        return cls.model_validate(json.loads(text))

    @classmethod
    def read(cls, path: Path) -> "VersionSpec":
        """The VersionSpec of a spec.json file."""
        return cls.from_json(Path(path).read_text())
