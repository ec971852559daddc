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
                        outputs: dict[str, dict[str, torch.Tensor]] | None, spec: VersionSpec,
                        probe: torch.Tensor) -> None:
    """Write the tensors and the spec of a version under `folder` (`seal_version_files` adds the rest).

    probe: row indices into the validation split whose outputs are the behaviour reference.
    outputs None: the stored outputs and the probe are written by the caller (a chunk at a time).
    """
    from safetensors.torch import save_file

    (folder / "outputs").mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS))
    save_file({"first_layer": initial_first_layer.contiguous()}, str(folder / INITIAL))
    (folder / SPEC).write_text(spec.to_json())
    if outputs is None:
        return
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




class OutputsWriter:
    """One split's stored outputs written a chunk of rows at a time: the very bytes `write_outputs`
    writes for the whole tensors (safetensors' own writer takes whole tensors only, and a split
    of 20 million rows does not fit in memory). float32 tensors of (rows, *shape) each."""

    def __init__(self, path: Path, rows: int, shapes: dict[str, tuple[int, ...]]):
        import json
        import math

        self.rows, self._row, self._row_bytes, self._begin = rows, 0, {}, {}
        header, offset = {}, 0
        for name in sorted(shapes):  # safetensors' order for tensors of one dtype: by name
            self._row_bytes[name] = 4 * math.prod(shapes[name])
            size = rows * self._row_bytes[name]
            header[name] = {"dtype": "F32", "shape": [rows, *shapes[name]], "data_offsets": [offset, offset + size]}
            self._begin[name], offset = offset, offset + size
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)  # the header padded to 8 bytes, as safetensors pads it
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "wb")
        self._file.write(len(text).to_bytes(8, "little") + text)
        self._data = 8 + len(text)
        self._file.truncate(self._data + offset)

    def write(self, chunk: dict[str, torch.Tensor]) -> None:
        """The next rows of every tensor."""
        rows = None
        for name, values in chunk.items():
            array = values.detach().cpu().contiguous().float().numpy()
            rows = len(array)
            self._file.seek(self._data + self._begin[name] + self._row * self._row_bytes[name])
            self._file.write(array.tobytes())
        self._row += rows or 0

    def close(self) -> None:
        self._file.close()
        if self._row != self.rows:
            raise RuntimeError(f"{self._row} rows of stored outputs written, {self.rows} expected")


def read_rows(path: Path, name: str, start: int, stop: int) -> torch.Tensor:
    """Rows [start, stop) of one float32 tensor of a safetensors file, by explicit reads: no memory
    map, whose pages would stay in this process's resident memory once read."""
    import json
    import math

    import numpy as np
    import torch

    with open(path, "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        entry = json.loads(handle.read(size))[name]
    if entry["dtype"] != "F32":
        raise ValueError(f"{path}: {name} is {entry['dtype']}, not F32")
    shape = entry["shape"]
    width = math.prod(shape[1:])
    stop = min(stop, shape[0])
    values = np.fromfile(path, dtype="<f4", count=max(0, stop - start) * width,
                         offset=8 + size + entry["data_offsets"][0] + start * width * 4)
    return torch.from_numpy(values.reshape(max(0, stop - start), *shape[1:]))


def tensor_rows(path: Path, name: str) -> int:
    """How many rows one tensor of a safetensors file has, from its header."""
    import json

    with open(path, "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        return int(json.loads(handle.read(size))[name]["shape"][0])
