"""Rebuild one expert version's network from its `VersionSpec` and safetensors weights.

The one place a stored version becomes an `nn.Module` again: the cutoff check, inspection,
predict, export and the pyfunc flavour all call `load_version_model`. Checking the files'
sha256 is the caller's job (against the registry's record or an export's manifest), done
before this runs. Must not unpickle anything and must not train.
"""
from __future__ import annotations

from pathlib import Path

import torch

from moe_pipeline.state.version_spec import VersionSpec


def load_version_model(spec: VersionSpec, weights: Path) -> torch.nn.Module:
    """The version's model in eval mode, on the CPU, with its stored weights."""
    from safetensors.torch import load_file

    from moe_pipeline.training.models import build_model

    model = build_model(spec.model_spec(), spec.in_shape, spec.n_outputs)
    model.load_state_dict(load_file(str(weights)))
    return model.eval()
