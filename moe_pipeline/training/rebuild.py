"""Rebuild one expert version's network from its `VersionSpec` and safetensors weights.

The one place a stored version becomes an `nn.Module` again: the cutoff check, inspection,
predict, export and the pyfunc flavour all call `load_version_model`. Checking the files'
sha256 is the caller's job (against the registry's record or an export's manifest), done
before this runs. Where the caller names the project (`code_root`), a custom class that the
version's spec.json names is imported only from the project's own code (an exported system
passes its own `code/` folder), or when the pipeline file itself names it: a spec.json edited
to name some other module is refused before that module is imported. Must not unpickle anything and must not train.
"""
from __future__ import annotations

from pathlib import Path

import torch

from moe_pipeline.state.version_spec import VersionSpec


def load_version_model(spec: VersionSpec, weights: Path, code_root: Path | None = None,
                       named: frozenset[str] = frozenset()) -> torch.nn.Module:
    """The version's model in eval mode, on the CPU, with its stored weights. `code_root` and
    `named`: the project folder and the custom classes its pipeline file names (see above)."""
    from safetensors.torch import load_file

    from moe_pipeline.training.models import build_model

    model_spec = spec.model_spec()
    if model_spec.kind == "custom" and code_root is not None and model_spec.cls not in named:
        check_code_origin(model_spec.cls, code_root)
    model = build_model(model_spec, spec.in_shape, spec.n_outputs)
    model.load_state_dict(load_file(str(weights)))
    return model.eval()


def check_code_origin(path: str, code_root: Path) -> None:
    """Refuse a `module:Class` whose top-level module lies outside `code_root`, before importing it
    (finding a top-level module's file runs none of its code)."""
    import importlib.util

    from moe_pipeline.errors import IntegrityError

    top = path.partition(":")[0].split(".")[0]
    try:
        found = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        found = None
    if found is None:
        return  # nothing to import: building the model says the module is missing
    places = [found.origin] if found.origin not in (None, "built-in", "frozen") else []
    places += list(found.submodule_search_locations or [])
    root = code_root.resolve()
    if not places or not all(Path(p).resolve().is_relative_to(root) for p in places):
        where = places[0] if places else found.origin
        raise IntegrityError(f"the version names the model class {path!r}, from {where}, outside {root}: a stored "
                             "version's custom class is imported only from its project's own code (an exported "
                             "system's: its code/ folder) or when the pipeline file names it (was its spec.json "
                             "edited?)")
