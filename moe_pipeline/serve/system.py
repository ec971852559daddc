"""The trained system as one function: raw source fields in, every expert's outputs out.

A `System` holds pinned expert versions (spec.json + weights, sha256-checked) and applies
them in graph order, reading inputs exactly as training did: the source field, its fitted
transform from the version's spec.json, upstream experts' outputs, concatenated the same way
(`data.inputs.concatenate`). It is built from the registry (`from_view`) or from an export
folder (`load`), and written as an MLflow pyfunc model (`save`). Never trains.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from moe_pipeline.errors import IntegrityError, SelectionError
from moe_pipeline.hashing import sha256_file
from moe_pipeline.serve import shipped_code
from moe_pipeline.state.version_spec import VersionSpec
from moe_pipeline.training.rebuild import load_version_model

SYSTEM_JSON = "system.json"
BATCH = 4096  # rows per forward pass: bounds memory on long inputs


@dataclass
class Pinned:
    """One expert version inside a system."""

    name: str
    version: int
    saved: VersionSpec  # its spec.json
    model: torch.nn.Module
    sha256: dict[str, str]  # spec.json and weights.safetensors

    @property
    def inputs(self) -> list[str]:
        return self.saved.inputs

    @property
    def class_names(self) -> list[str] | None:
        return self.saved.class_names


class System:
    """The whole graph as one model: pinned expert versions in topological order and the fields they read."""

    def __init__(self, pipeline: str, experts: dict[str, Pinned], order: list[str], fields: dict[str, dict]):
        self.pipeline = pipeline
        self.experts = experts
        self.order = order  # topological
        self.fields = fields  # "source.field" -> `DataStore.field_format`: {"shape": [...] per row, "dtype": ...}
        consumed = {ref.partition(".")[0] for p in experts.values() for ref in p.inputs}
        self.sinks = [name for name in order if name not in consumed]

    # ------------------------------------------------------------ building

    @classmethod
    def from_view(cls, view, experts: Iterable[str] | None = None, allow_stale: bool = False) -> "System":
        """The current versions of `experts` (default: all) and everything they read, from the registry."""
        from moe_pipeline.pipeline import graph as g
        from moe_pipeline.registry.artifacts import SPEC, WEIGHTS

        import networkx as nx

        wanted = set(experts or view.pipeline.experts)
        view._check_names(wanted)
        needed = set(wanted)
        for name in wanted:
            needed |= nx.ancestors(view.graph, name)
        statuses = view.statuses()
        bad = sorted(n for n in needed if statuses[n].status != "fresh")
        missing = [n for n in bad if statuses[n].status == "missing"]
        if missing or (bad and not allow_stale):
            detail = ", ".join(f"{n} ({statuses[n].status})" for n in bad)
            raise SelectionError(f"cannot use pipeline '{view.pipeline.name}': {detail}. Run `moe-pipeline run` "
                                 f"first{'' if missing else ', or pass --allow-stale'}")
        order = [n for n in g.order(view.graph) if n in needed]
        pinned = {}
        for name in order:
            record = view.current()[name]
            model, saved = view.load_model(record)
            pinned[name] = Pinned(name, record.version, saved, model,
                                  {SPEC: record.sha256[SPEC], WEIGHTS: record.sha256[WEIGHTS]})
        fields = {}
        for p in pinned.values():
            for ref in p.inputs:
                if ref.partition(".")[0] in view.pipeline.sources:
                    # from the version's record; only a version trained before it was kept loads the data
                    fields[ref] = p.saved.fields.get(ref) or view.store.field_format(ref)
        return cls(view.pipeline.name, pinned, order, fields)

    def save(self, folder: Path) -> Path:
        """Write the system as files: system.json, experts/<name>/{spec.json, weights.safetensors}, and
        code/ with the custom model classes' modules (`shipped_code`)."""
        from safetensors.torch import save_file

        from moe_pipeline.registry.artifacts import SPEC, WEIGHTS

        folder.mkdir(parents=True, exist_ok=True)
        for name, p in self.experts.items():
            target = folder / "experts" / name
            target.mkdir(parents=True, exist_ok=True)
            (target / SPEC).write_text(p.saved.to_json())
            save_file({k: v.detach().cpu().contiguous() for k, v in p.model.state_dict().items()}, str(target / WEIGHTS))
            p.sha256 = {SPEC: sha256_file(target / SPEC), WEIGHTS: sha256_file(target / WEIGHTS)}
        meta = {"pipeline": self.pipeline, "order": self.order, "sinks": self.sinks, "fields": self.fields,
                "experts": {n: {"version": p.version, "sha256": p.sha256} for n, p in self.experts.items()},
                "code": shipped_code.ship((p.saved for p in self.experts.values()), folder)}
        (folder / SYSTEM_JSON).write_text(json.dumps(meta, indent=2, sort_keys=True))
        return folder

    @classmethod
    def load(cls, folder: Path) -> "System":
        """Read an exported system; every file's sha256 is checked against system.json, and a custom
        model class is imported only from the system's own code/ folder."""
        from moe_pipeline.registry.artifacts import SPEC, WEIGHTS

        meta = json.loads((folder / SYSTEM_JSON).read_text())
        code_root = shipped_code.enable(folder, meta.get("code", {}))
        pinned = {}
        for name in meta["order"]:
            entry = meta["experts"][name]
            base = folder / "experts" / name
            for file in (SPEC, WEIGHTS):
                if sha256_file(base / file) != entry["sha256"][file]:
                    raise IntegrityError(f"exported system {folder}: experts/{name}/{file} does not match its sha256 "
                                         "in system.json (modified); export again")
            saved = VersionSpec.read(base / SPEC)
            pinned[name] = Pinned(name, entry["version"], saved, load_version_model(saved, base / WEIGHTS, code_root),
                                  entry["sha256"])
        return cls(meta["pipeline"], pinned, meta["order"], meta["fields"])

    # ------------------------------------------------------------ applying

    def check_inputs(self, fields: dict[str, np.ndarray]) -> int:
        """The rows of `fields`, after checking every field the system reads: name, shape, dtype."""
        rows = set()
        for ref, want in self.fields.items():
            if ref not in fields:
                raise SelectionError(f"input field '{ref}' is missing (got {sorted(fields) or 'none'}); the system "
                                     f"reads {sorted(self.fields)}")
            value = fields[ref]
            if list(value.shape[1:]) != want["shape"]:
                raise SelectionError(f"input field '{ref}' has shape {list(value.shape)}; expected "
                                     f"[n, {', '.join(map(str, want['shape']))}]")
            if not (np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_):
                raise SelectionError(f"input field '{ref}' has dtype {value.dtype}; expected numbers ({want['dtype']})")
            if np.issubdtype(value.dtype, np.complexfloating):
                raise SelectionError(f"input field '{ref}' has dtype {value.dtype}; a complex value would lose its "
                                     f"imaginary part: expected {want['dtype']}")
            if np.issubdtype(np.dtype(want["dtype"]), np.floating) and np.issubdtype(value.dtype, np.integer):
                # uint8 images (0..255) are not the [0, 1] floats the source loader made: never guess a scale
                raise SelectionError(f"input field '{ref}' has dtype {value.dtype}; the system reads {want['dtype']} "
                                     "as the source loader gives it (images: floats in [0, 1]); convert it first")
            if len(value) == 0:
                raise SelectionError(f"input field '{ref}' has 0 rows")
            if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
                row = int(np.argwhere(~np.isfinite(value.reshape(len(value), -1)))[0, 0])
                raise SelectionError(f"input field '{ref}' holds NaN or inf (first in row {row}); the experts answer "
                                     "finite inputs only")
            rows.add(len(value))
        if len(rows) > 1:
            raise SelectionError(f"input fields have different row counts {sorted(rows)}")
        return rows.pop() if rows else 0

    @torch.no_grad()
    def outputs(self, fields: dict[str, np.ndarray], experts: Iterable[str] | None = None,
                progress=None, keys: Iterable[str] = ("logits", "probs", "embedding")) -> dict[str, dict[str, torch.Tensor]]:
        """{expert: {logits, probs, embedding}} on every row, in batches of BATCH rows; `keys`: the
        outputs to keep (`table` reads only probs: a sink's embedding of a million rows is 128 MB)."""
        n = self.check_inputs(fields)
        keep = list(experts or self.order)
        parts: dict[str, dict[str, list[torch.Tensor]]] = {e: {k: [] for k in keys} for e in keep}
        for start in range(0, n, BATCH):
            batch = {ref: value[start:start + BATCH] for ref, value in fields.items()}
            out = self._forward(batch)
            for e in keep:
                for key in parts[e]:
                    parts[e][key].append(out[e][key])
            if progress:
                progress(min(n, start + BATCH), n)
        return {e: {k: torch.cat(v) if v else torch.empty(0) for k, v in parts[e].items()} for e in keep}

    def _forward(self, batch: dict[str, np.ndarray]) -> dict[str, dict[str, torch.Tensor]]:
        from moe_pipeline.training.train import infer

        done: dict[str, dict[str, torch.Tensor]] = {}
        for name in self.order:
            p = self.experts[name]
            x = self.expert_input(p, batch, done)
            done[name] = infer(p.model, x, p.saved.task)
        return done

    def expert_input(self, p: Pinned, batch: dict[str, np.ndarray], done: dict[str, dict[str, torch.Tensor]]):
        """One expert's input tensor, built as training built it."""
        from moe_pipeline.data.inputs import concatenate
        from moe_pipeline.data.transforms import apply

        parts = []
        for ref in p.inputs:
            owner, _, output = ref.partition(".")
            if ref in self.fields:  # a source field: the version's fitted transform, then float32
                value = np.asarray(batch[ref])
                value = value.astype(value.dtype.newbyteorder("="), copy=False)  # a big-endian file: same values
                params = p.saved.transforms.get(ref)
                value = apply(params, value) if params else value
                parts.append(torch.as_tensor(np.ascontiguousarray(value)).float())
            else:
                parts.append(done[owner][output].float())
        return concatenate(p.name, p.inputs, parts, "input")

    def table(self, outputs: dict[str, dict[str, torch.Tensor]]):
        """A pandas DataFrame: per expert its probabilities (or values) and its predicted class."""
        import pandas as pd

        columns: dict[str, Any] = {}
        for name, out in outputs.items():
            p = self.experts[name]
            probs = out["probs"].numpy()
            if p.saved.task == "classification":
                names = p.class_names or [str(k) for k in range(probs.shape[1])]
                for k, label in enumerate(names):
                    columns[f"{name}.p[{label}]"] = probs[:, k]
                columns[f"{name}.class"] = pd.Categorical.from_codes(probs.argmax(axis=1), names)  # no str per row
            else:
                for k in range(probs.shape[1]):
                    columns[f"{name}.value[{k}]" if probs.shape[1] > 1 else f"{name}.value"] = probs[:, k]
        return pd.DataFrame(columns)
