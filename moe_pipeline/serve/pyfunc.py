"""MLflow's pyfunc loader for what this project writes: one expert version, or a whole system.

Every expert version's artifacts carry an `MLmodel` naming this module (written by
`registry.mlmodel`), so `mlflow.pyfunc.load_model("models:/digits.has_loop@current")` and
`mlflow models serve` work; so does an exported system (`moe-pipeline export`). Loading
rebuilds the network from spec.json and weights.safetensors after checking their sha256:
no pickle, no cloudpickle.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST = "sha256.json"  # an expert version's own check: sha256 of spec.json and weights.safetensors


def _load_pyfunc(path: str):
    """MLflow calls this with the model's data folder."""
    from moe_pipeline.serve.system import SYSTEM_JSON, System

    folder = Path(path)
    if (folder / SYSTEM_JSON).exists():
        return SystemModel(System.load(folder))
    return ExpertVersionModel(folder)


def check_against_registry(folder: Path, files: tuple[str, ...]) -> None:
    """The registry is the authority: where the folder's MLmodel names the run it was trained in
    and the registry this process talks to (MLflow's tracking URI, set as for `models:/...`) holds
    a version registered from that run with our record, each file's sha256 must be the record's
    (a manifest beside the files can be rewritten along with them). Where no registry is set or
    none answers (a copied folder), the manifest is the only check."""
    import yaml

    from moe_pipeline.errors import IntegrityError
    from moe_pipeline.hashing import sha256_file

    try:
        run_id = (yaml.safe_load((folder / "MLmodel").read_text()) or {}).get("run_id")
    except (OSError, yaml.YAMLError):
        return
    if not run_id:
        return
    from moe_pipeline.registry.mlmodel import registered_from_run

    found = registered_from_run(run_id)
    if found is None:
        return
    name, version, record = found
    for file in files:
        if sha256_file(folder / file) != record.expected_sha256(file):
            raise IntegrityError(f"{folder / file} does not match its sha256 in the registry's record of "
                                 f"{name} v{version} (modified, along with {MANIFEST}?)")


class ExpertVersionModel:
    """One expert version: its input tensor in, its probabilities (or values) out."""

    def __init__(self, folder: Path):
        from moe_pipeline.errors import IntegrityError
        from moe_pipeline.registry.artifacts import SPEC, WEIGHTS
        from moe_pipeline.hashing import sha256_file
        from moe_pipeline.state.version_spec import VersionSpec
        from moe_pipeline.training.rebuild import load_version_model

        expected = json.loads((folder / MANIFEST).read_text())
        for file in (SPEC, WEIGHTS):
            if sha256_file(folder / file) != expected[file]:
                raise IntegrityError(f"{folder / file} does not match its sha256 in {MANIFEST} (modified)")
        check_against_registry(folder, (SPEC, WEIGHTS))
        self.saved = VersionSpec.read(folder / SPEC)
        self.model = load_version_model(self.saved, folder / WEIGHTS)

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        import torch

        from moe_pipeline.training.train import infer

        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32)).reshape(-1, *self.saved.in_shape)
        return infer(self.model, x, self.saved.task)["probs"].numpy()


class SystemModel:
    """The whole graph: raw source fields in (a dict of arrays), the sinks' outputs out (a table);
    `params={"all_experts": True}` returns every expert's."""

    def __init__(self, system):
        self.system = system

    def predict(self, model_input: Any, params: dict[str, Any] | None = None):
        from moe_pipeline.errors import MoeError

        experts = None if (params or {}).get("all_experts") else self.system.sinks
        try:
            fields = _as_fields(model_input, self.system)
            return self.system.table(self.system.outputs(fields, experts, keys=("probs",)))
        except MoeError as exc:  # the caller's input, not the server: HTTP 400 with our message
            from moe_pipeline.registry.mlmodel import bad_input

            raise bad_input(str(exc)) from None


def _as_fields(model_input: Any, system) -> dict[str, np.ndarray]:
    """A dict of arrays named like the source fields; or a DataFrame, either with one column per
    field (a cell per row) or, for table sources, the table's own columns matched by name as
    `predict` matches a CSV's."""
    if isinstance(model_input, dict):
        return {k: np.asarray(v) for k, v in model_input.items()}
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        if set(map(str, model_input.columns)) <= set(system.fields):
            return {c: np.stack([np.asarray(v) for v in model_input[c]]) for c in model_input.columns}
        import pyarrow as pa

        from moe_pipeline.serve.inputs import table_fields

        return table_fields(pa.Table.from_pandas(model_input, preserve_index=False), system, "the input DataFrame")
    raise TypeError(f"a system model takes a dict of arrays named like its source fields, or a DataFrame, "
                    f"not {type(model_input)}")
