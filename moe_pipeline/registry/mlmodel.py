"""Make a folder of this project's files a real MLflow model: `MLmodel` (pyfunc flavour),
signature, explicit pip requirements, and a sha256 manifest for the loader.

Written directly (the files `mlflow.pyfunc.log_model` would write, in milliseconds, without
its requirement inference or pickling). The loader it names is `moe_pipeline.serve.pyfunc`,
given as text: this module does not import it. Must not pickle anything.
"""
from __future__ import annotations

import functools
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from moe_pipeline.state.version_spec import VersionSpec

LOADER = "moe_pipeline.serve.pyfunc"
REQUIREMENTS = ("torch", "safetensors", "numpy", "pydantic", "mlflow", "networkx", "pyyaml", "moe-pipeline")


@functools.lru_cache(maxsize=1)  # each lookup scans the installed distributions: ~15 ms for all, once a process
def _pins() -> tuple[str, ...]:
    pins = []
    for name in REQUIREMENTS:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pins.append(name)
    return tuple(pins)


def requirements() -> list[str]:
    """Pinned to what is installed here: the environment that wrote the model."""
    return list(_pins())


def write_expert_mlmodel(folder: Path, saved: VersionSpec, files_sha256: dict[str, str], run_id: str | None = None) -> None:
    """MLmodel for one expert version: input (n, *in_shape) float32, output (n, n_outputs) float32;
    `run_id` (MLflow's own field): the run it was trained in, through which the pyfunc loader
    finds the version's record in the registry."""
    from mlflow.types.schema import Schema, TensorSpec

    (folder / "sha256.json").write_text(json.dumps(files_sha256, indent=2, sort_keys=True))
    inputs = Schema([TensorSpec(np.dtype(np.float32), (-1, *saved.in_shape))])
    outputs = Schema([TensorSpec(np.dtype(np.float32), (-1, saved.n_outputs))])
    _write(folder, inputs, outputs, None, run_id)


def write_system_mlmodel(folder: Path, fields: dict[str, dict], columns: list[tuple[str, str, bool]]) -> None:
    """MLmodel for a whole system: one named tensor per source field in, a table out
    (columns: name, type, required; the sinks' columns are always there, the rest on request)."""
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    inputs = Schema([TensorSpec(np.dtype(spec["dtype"]), (-1, *spec["shape"]), ref) for ref, spec in fields.items()])
    outputs = Schema([ColSpec(kind, name, required) for name, kind, required in columns])
    params = ParamSchema([ParamSpec("all_experts", "boolean", False)])
    _write(folder, inputs, outputs, params)


def _write(folder: Path, inputs, outputs, params, run_id: str | None = None) -> None:
    import mlflow.pyfunc
    from mlflow.models import Model, ModelSignature

    pins = requirements()
    (folder / "requirements.txt").write_text("\n".join(pins) + "\n")
    python = ".".join(map(str, __import__("sys").version_info[:3]))
    (folder / "python_env.yaml").write_text(f"python: {python}\nbuild_dependencies:\n- pip\ndependencies:\n"
                                            "- -r requirements.txt\n")
    model = Model(signature=ModelSignature(inputs=inputs, outputs=outputs, params=params), run_id=run_id)
    mlflow.pyfunc.add_to_model(model, loader_module=LOADER, data=".", python_env="python_env.yaml")
    model.save(str(folder / "MLmodel"))


def registered_from_run(run_id: str):
    """(model name, version, record) of the version registered from `run_id` with our record, in
    the registry this process is set to talk to (MLflow's tracking URI, as for `models:/...`); None
    where no registry is set, none answers, or none holds such a version."""
    import mlflow.tracking
    from mlflow.tracking import MlflowClient

    from moe_pipeline.state.record import from_tags

    if not mlflow.tracking.is_tracking_uri_set():
        return None
    try:
        versions = MlflowClient().search_model_versions(f"run_id = '{run_id}'")
    except Exception:  # noqa: BLE001 - no registry answers here: the caller's manifest check stands
        return None
    for mv in versions:
        record = from_tags(mv.name.partition(".")[2], int(mv.version), run_id, dict(mv.tags or {}))
        if record is not None:
            return mv.name, int(mv.version), record
    return None


def bad_input(message: str) -> Exception:
    """The error a served model raises for input it cannot answer (a NaN, a wrong shape or
    dtype, a missing column): MLflow's scoring server answers it with HTTP 400 and this message,
    not 500 (a server fault). Imported only when there is such an error to raise."""
    from mlflow.exceptions import INVALID_PARAMETER_VALUE, MlflowException

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)
