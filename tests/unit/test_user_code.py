"""User code gets the arguments it names, and a target that would be silently turned into
regression is an error."""
from __future__ import annotations

from pathlib import Path

import pytest

from moe_pipeline.data.sources import call_user_code
from moe_pipeline.errors import DataError
from tests.conftest import unique_module


def test_a_loaders_kwargs_may_be_named_path_or_fn():
    def loader(path, fn="x", scale=1):
        return (path, fn, scale)

    assert call_user_code("m:loader", loader, path="data/a.csv", fn="y", scale=3) == ("data/a.csv", "y", 3)


LOADER = """
import torch

def load(path, n=30):
    x = torch.arange(n * 2, dtype=torch.float32).reshape(n, 2)
    return {"x": x, "y": torch.arange(n) % 3}

def halves(y):
    return y.float() / 2
"""


def _pipeline(tmp_path: Path, module: str, expert_extra: str) -> Path:
    (tmp_path / "pyproject.toml").write_text("")
    path = tmp_path / "p.yaml"
    path.write_text(f"""name: p
sources:
  s: {{loader: "{module}:load", fields: [x, y], kwargs: {{path: ignored.csv, n: 40}}, transform: {{x: standardize}}}}
experts:
  e:
    inputs: [s.x]
    model: {{kind: mlp}}
{expert_extra}
""")
    return path


def test_custom_sources_take_kwargs_named_path_and_a_transform(tmp_path: Path, monkeypatch, request):
    from moe_pipeline.execute.view import View
    from moe_pipeline.pipeline.loader import load_pipeline

    module = unique_module("custom_src", request, tmp_path, monkeypatch, LOADER)
    view = View(load_pipeline(_pipeline(tmp_path, module, "    target: s.y")))
    source = view.store.source("s")
    assert len(source.fields["x"]) == 40  # n from kwargs, beside `path`
    train = source.fields["x"][source.splits["train"]]
    assert abs(float(train.mean())) < 1e-5  # standardized on the train rows


def test_a_float_target_with_classes_declared_is_an_error_not_a_regression(tmp_path: Path, monkeypatch, request):
    from moe_pipeline.execute.view import View
    from moe_pipeline.pipeline.loader import load_pipeline

    module = unique_module("custom_cls", request, tmp_path, monkeypatch, LOADER)
    pipeline = _pipeline(tmp_path, module, f"    target: {{from: s.y, fn: '{module}:halves'}}\n    classes: [a, b, c]")
    view = View(load_pipeline(pipeline))
    with pytest.raises(DataError, match="`classes:` names classes, but the target holds real numbers"):
        view.expert_data("e")
