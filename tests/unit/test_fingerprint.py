"""Code hashes ignore comments, docstrings and formatting but not changed expressions."""
import importlib
import sys
import textwrap

import pytest

from moe_pipeline.state.fingerprint import canonical_json, code_hash, flatten, mapping_diff, spec_diff

BASE = '''
import torch

LOOPED = (0, 6, 8, 9)


def helper(label):
    return torch.isin(label, torch.tensor(LOOPED))


def has_loop(label):
    """1 for looped digits."""
    return helper(label).long()


def unrelated():
    return 1
'''


@pytest.fixture
def module(tmp_path, monkeypatch, request):
    name = f"fp_mod_{abs(hash(request.node.nodeid))}"
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / f"{name}.py"

    def write(text: str) -> str:
        path.write_text(textwrap.dedent(text))
        sys.modules.pop(name, None)
        importlib.invalidate_caches()
        return code_hash(f"{name}:has_loop")

    return write


def test_comments_docstrings_and_formatting_do_not_count(module):
    before = module(BASE)
    edited = BASE.replace('"""1 for looped digits."""', '"""Another docstring."""  # and a comment')
    edited = edited.replace("return helper(label).long()", "return helper( label ).long()   # why")
    edited = "# header comment\n" + edited.replace("def unrelated():\n    return 1", "def unrelated():\n    return 2")
    assert module(edited) == before


def test_changed_body_counts(module):
    before = module(BASE)
    assert module(BASE.replace(".long()", ".float()")) != before


def test_changed_same_module_helper_and_constant_count(module):
    before = module(BASE)
    assert module(BASE.replace("(0, 6, 8, 9)", "(0, 6, 8)")) != before
    assert module(BASE.replace("torch.isin(label", "~torch.isin(label")) != before


def test_missing_object_is_a_clear_error():
    from moe_pipeline.errors import DataError

    with pytest.raises(DataError, match="defines no 'nope'"):
        code_hash("moe_pipeline.training.models:nope")
    with pytest.raises(DataError, match="cannot find the Python source of module 'no_such_module'"):
        code_hash("no_such_module:f")


def test_spec_diff_per_key():
    old = {"train": {"lr": 0.003, "epochs": 15}, "model": {"kind": "mlp"}}
    new = {"train": {"lr": 0.001, "epochs": 15}, "model": {"kind": "mlp", "dropout": 0.1}}
    assert spec_diff(old, new) == ["model.dropout: <absent> -> 0.1", "train.lr: 0.003 -> 0.001"]
    assert flatten(old) == {"train.lr": 0.003, "train.epochs": 15, "model.kind": "mlp"}
    assert canonical_json({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'


def test_mapping_diff():
    assert mapping_diff({"x": "1", "y": "2"}, {"x": "1", "y": "3", "z": "4"}) == ["y changed", "z (new)"]


def test_description_and_tolerances_are_not_behavioural():
    from moe_pipeline.state.fingerprint import resolved_spec
    from moe_pipeline.pipeline.loader import parse_pipeline

    text = """
name: p
seed: 3
sources: {d: {loader: sklearn.digits}}
experts:
  a: {description: one, inputs: [d.image], target: d.label, model: {kind: linear}}
"""
    one = resolved_spec(parse_pipeline(text), "a")
    two = resolved_spec(parse_pipeline(text.replace("description: one", "description: two, cutoff: 'off'")), "a")
    assert one == two
    assert one["train"]["seed"] == 3
    classes = text.replace("description: one", "description: one, classes: [a, b, c, d, e, f, g, h, i, j]")
    assert resolved_spec(parse_pipeline(classes), "a") == one  # class names are labels, not behaviour


def test_init_and_order_seeds_enter_the_spec_only_where_they_differ_from_seed():
    from moe_pipeline.state.fingerprint import resolved_spec
    from moe_pipeline.pipeline.loader import parse_pipeline

    text = """
name: p
seed: 3
sources: {d: {loader: sklearn.digits}}
experts:
  a: {inputs: [d.image], target: d.label, model: {kind: linear}, train: {TRAIN}}
"""
    plain = resolved_spec(parse_pipeline(text.replace("TRAIN", "epochs: 5")), "a")
    assert "init_seed" not in plain["train"] and "order_seed" not in plain["train"]  # today's hashes are kept
    same = resolved_spec(parse_pipeline(text.replace("TRAIN", "epochs: 5, init_seed: 3, order_seed: 3")), "a")
    assert same == plain
    split = resolved_spec(parse_pipeline(text.replace("TRAIN", "epochs: 5, order_seed: 9")), "a")
    assert split["train"]["order_seed"] == 9 and "init_seed" not in split["train"]
    assert spec_diff(plain, split) == ["train.order_seed: <absent> -> 9"]
    from moe_pipeline.state.fingerprint import training_seeds

    assert training_seeds(plain) == (3, 3) and training_seeds(split) == (3, 9)


def test_builtin_model_code_keeps_the_name_it_was_recorded_under():
    """Moving the model zoo into `training/` must not make existing versions stale (CODE)."""
    from moe_pipeline.pipeline.loader import parse_pipeline
    from moe_pipeline.state.fingerprint import fingerprint

    pipeline = parse_pipeline(TINY_FOR_NAMES, "tiny.yaml")
    fp = fingerprint(pipeline, "a", lambda ref: "h")
    assert list(fp.code) == ["moe_pipeline.models:MLP"]


TINY_FOR_NAMES = """
name: t
sources:
  s: {loader: synthetic.planted, n: 64, d: 4, informative: [0], task: signs}
experts:
  a:
    inputs: [s.x]
    target: s.y
    model: {kind: mlp, hidden: [4]}
"""
