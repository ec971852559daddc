"""Write and read a version's files: weights, stored outputs, spec, as safetensors and JSON.

safetensors only: loading never unpickles. Every file's sha256 is computed on write so the
registry can record it and verify it on read. torch is imported by the functions that read or
write tensors: the names of the files and `outputs_sha` serve a process that never loads torch
(`run`'s own process, while its experts train in the training process).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from moe_pipeline.data.store import SPLITS
from moe_pipeline.hashing import sha256_file
from moe_pipeline.state.version_spec import VersionSpec

if TYPE_CHECKING:
    import torch

WEIGHTS = "weights.safetensors"
INITIAL = "initial.safetensors"  # first layer before training (Neural Feature Ansatz)
SPEC = "spec.json"
PROBE = "probe.safetensors"  # behaviour reference: outputs on the probe rows, as trained


def outputs_file(split: str, folder: str = "outputs") -> str:
    """The artifact path of one split's stored outputs inside a version's folder."""
    return f"{folder}/{split}.safetensors"


def write_version_files(folder: Path, model: torch.nn.Module, initial_first_layer: torch.Tensor,
                        outputs: dict[str, dict[str, torch.Tensor]], spec: VersionSpec,
                        probe: torch.Tensor) -> None:
    """Write the tensors and the spec of a version under `folder` (`seal_version_files` adds the rest).

    probe: row indices into the validation split whose outputs are the behaviour reference.
    """
    from safetensors.torch import save_file

    (folder / "outputs").mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS))
    save_file({"first_layer": initial_first_layer.contiguous()}, str(folder / INITIAL))
    (folder / SPEC).write_text(spec.to_json())
    for split in SPLITS:
        write_outputs(folder / outputs_file(split), outputs[split])
    write_outputs(folder / PROBE, {"rows": probe, "probs": outputs["val"]["probs"][probe]})


def seal_version_files(folder: Path, run_id: str | None = None) -> dict[str, str]:
    """Make the folder `write_version_files` filled a real MLflow model too (its MLmodel naming
    `run_id`, the run it was trained in), and return every file's sha256 (artifact path ->
    sha256). Needs mlflow, not torch: `run`'s own process does it while the training process,
    which has torch, writes the tensors."""
    from moe_pipeline.registry.mlmodel import write_expert_mlmodel

    # `mlflow.pyfunc.load_model("models:/<pipeline>.<expert>@current")`
    write_expert_mlmodel(folder, VersionSpec.read(folder / SPEC), {name: sha256_file(folder / name) for name in (SPEC, WEIGHTS)},
                         run_id)
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def write_outputs(path: Path, outputs: dict[str, torch.Tensor]) -> None:
    """Write one split's outputs (logits, probabilities, embeddings) as one safetensors file."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in outputs.items()}, str(path))


def write_refreshed_outputs(folder: Path, name: str, outputs: dict[str, dict[str, torch.Tensor]]) -> dict[str, str]:
    """Outputs recomputed after a cutoff check kept the expert, under `folder/name/`."""
    for split in SPLITS:
        write_outputs(folder / outputs_file(split, name), outputs[split])
    return {outputs_file(split, name): sha256_file(folder / outputs_file(split, name)) for split in SPLITS}


def outputs_sha(sha256: dict[str, str], folder: str = "outputs") -> str:
    """One id for a set of stored outputs: the behaviour reference downstream experts record."""
    import hashlib

    joined = "|".join(f"{k}={v}" for k, v in sorted(sha256.items()) if k.startswith(folder + "/"))
    return hashlib.sha256(joined.encode()).hexdigest()


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, by name (no pickle)."""
    from safetensors.torch import load_file

    return load_file(str(path))


