"""The model zoo: small experts with a `body` (input -> embedding) and a linear `head`.

Every expert model is `head(body(x))`: the embedding is the penultimate layer, the head
gives the logits. Activations are modules (`nn.ReLU()`) so attribution tools can hook
them. Model classes take plain keyword arguments; `build_model` is the only place that
reads a model spec.
"""
from __future__ import annotations

import math
from typing import Any, Protocol, Sequence

import torch
from torch import nn

from moe_pipeline.errors import TrainingError, UserCodeError


class ExpertModel(Protocol):
    """What every expert network offers: a body that makes the embedding, a head that makes the logits."""

    body: nn.Module  # (n, *in_shape) -> (n, e)
    head: nn.Linear  # (n, e) -> (n, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor: ...


class MLP(nn.Module):
    """The `mlp` model: Linear and ReLU layers, then the head."""

    def __init__(self, in_shape: Sequence[int], out_features: int, hidden: Sequence[int] = (64,), dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(in_shape)
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = size
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class CNN(nn.Module):
    """Same-padded convolutions keep the (small) image size; a linear layer makes the embedding."""

    def __init__(self, in_shape: Sequence[int], out_features: int, channels: Sequence[int] = (8, 16),
                 kernel_size: int = 3, hidden: int = 32):
        super().__init__()
        if len(in_shape) != 3:
            raise TrainingError(f"a cnn expert needs image input (channels, height, width); got shape {tuple(in_shape)}")
        c, h, w = in_shape
        if kernel_size > max(h, w):
            raise TrainingError(f"cnn kernel_size {kernel_size} is larger than the {h}x{w} input; use at most {max(h, w)}")
        layers: list[nn.Module] = []
        for out_c in channels:
            layers += [nn.Conv2d(c, out_c, kernel_size, padding=kernel_size // 2), nn.ReLU()]
            c = out_c
        layers += [nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class Linear(nn.Module):
    """A linear read-out: the embedding is the (flattened) input itself."""

    def __init__(self, in_shape: Sequence[int], out_features: int):
        super().__init__()
        self.body = nn.Flatten()
        self.head = nn.Linear(math.prod(in_shape), out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


BUILTIN = {"mlp": MLP, "cnn": CNN, "linear": Linear}


def model_kwargs(model_spec: Any) -> dict[str, Any]:
    """The plain keyword arguments a model class receives from its spec (minus shapes)."""
    data = model_spec.model_dump(by_alias=False)
    data.pop("kind")
    if model_spec.kind == "custom":
        return dict(model_spec.kwargs)
    return data


def model_class(model_spec: Any) -> type:
    if model_spec.kind == "custom":
        from moe_pipeline.data.sources import import_object

        return import_object(model_spec.cls)
    return BUILTIN[model_spec.kind]


def build_model(model_spec: Any, in_shape: Sequence[int], out_features: int) -> nn.Module:
    cls = model_class(model_spec)
    try:
        model = cls(in_shape=tuple(in_shape), out_features=out_features, **model_kwargs(model_spec))
    except TrainingError:
        raise
    except Exception as exc:  # user code (or kwargs the class does not take): name it, never a traceback
        name = model_spec.cls if model_spec.kind == "custom" else model_spec.kind
        raise UserCodeError(f"building model {name}{tuple(model_kwargs(model_spec))} raised "
                            f"{type(exc).__name__}: {exc}") from None
    if not isinstance(getattr(model, "body", None), nn.Module) or not isinstance(getattr(model, "head", None), nn.Linear):
        raise TrainingError(f"{model_spec.cls if model_spec.kind == 'custom' else model_spec.kind}: an expert model "
                            "must have `body` (an nn.Module giving the embedding) and `head` (an nn.Linear)")
    return model


def check_buildable(model_spec: Any, in_shape: Sequence[int], out_features: int) -> None:
    """Raise what building the model would raise, before a training run is opened for it (a
    failure there would leave a FAILED run for an expert that never trained). Built on the meta
    device, which allocates nothing; a class that fails only there is built for real, and only
    that build's error counts."""
    try:
        parameter_count(model_spec, in_shape, out_features)  # builds it on the meta device
    except (UserCodeError, TrainingError):
        build_model(model_spec, in_shape, out_features)  # raises the real error, if there is one


def first_layer(model: nn.Module) -> nn.Module | None:
    """The first Linear or Conv2d: its weights are what the Neural Feature Ansatz compares with AGOP."""
    return next((m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))), None)


def parameter_count(model_spec: Any, in_shape: Sequence[int], out_features: int) -> int:
    """Parameters of the model a spec describes, counted on the meta device (nothing allocated)."""
    with torch.device("meta"):
        model = build_model(model_spec, in_shape, out_features)
    return sum(p.numel() for p in model.parameters())
