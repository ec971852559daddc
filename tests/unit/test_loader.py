"""Every shipped pipeline validates; every invalid one fails at the right FILE:LINE with a useful message."""
from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from moe_pipeline.errors import PipelineError
from moe_pipeline.pipeline.loader import load_pipeline, parse_pipeline
from moe_pipeline.pipeline.spec import Pipeline, json_schema

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "pipelines").glob("*.yaml"))
INVALID = sorted((ROOT / "tests" / "invalid").glob("*.yaml"))


def expectations(path: Path) -> list[tuple[int, str]]:
    found = re.findall(r"^# expect: (\d+): (.+)$", path.read_text(), flags=re.M)
    assert found, f"{path.name} has no '# expect: LINE: message' header"
    return [(int(line), message) for line, message in found]


def test_enough_invalid_pipelines():
    assert len(INVALID) >= 15


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_pipelines_validate(path: Path):
    loaded = load_pipeline(path)
    assert loaded.pipeline.experts


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_pipeline_reports_file_line_col(path: Path):
    with pytest.raises(PipelineError) as info:
        load_pipeline(path)
    lines = str(info.value).splitlines()
    for line, message in expectations(path):
        matching = [text for text in lines if text.startswith(f"{path}:{line}:") and message in text]
        assert matching, f"expected '{path}:{line}:COL: ...{message}...' in:\n" + "\n".join(lines)
    for text in lines:
        assert re.match(rf"^{re.escape(str(path))}:\d+:\d+: ", text), text


def test_all_errors_of_a_file_at_once():
    text = (ROOT / "tests/invalid/duplicate_keys_and_typo.yaml").read_text()
    with pytest.raises(PipelineError) as info:
        parse_pipeline(text, "x.yaml")
    assert len(info.value.problems) == 2


def test_column_points_at_the_offending_item():
    text = "name: p\nsources: {d: {loader: sklearn.digits}}\nexperts:\n  a: {inputs: [d.image, d.lable], target: d.label, model: {kind: linear}}\n"
    with pytest.raises(PipelineError) as info:
        parse_pipeline(text, "f.yaml")
    (problem,) = info.value.problems
    assert (problem.line, problem.col) == (4, 25)
    assert problem.path == "experts.a.inputs[1]"
    assert "did you mean 'label'" in problem.message


def test_yaml_is_safe_loaded():
    text = "name: !!python/object/apply:os.system ['echo hi']\nsources: {}\nexperts: {}\n"
    with pytest.raises(PipelineError) as info:
        parse_pipeline(text, "evil.yaml")
    assert "evil.yaml:1:7: name: YAML tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed" in str(info.value)


def test_json_schema_round_trip():
    schema = json_schema()
    assert json.loads(json.dumps(schema)) == schema
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in SHIPPED:
        data = yaml.safe_load(path.read_text())
        assert not list(validator.iter_errors(data)), path.name
        assert Pipeline.model_validate(data) == load_pipeline(path).pipeline


def test_json_schema_rejects_what_pydantic_rejects():
    validator = jsonschema.Draft202012Validator(json_schema())
    data = yaml.safe_load((ROOT / "pipelines/digits.yaml").read_text())
    data["experts"]["has_loop"]["model"]["chanels"] = [1]
    assert list(validator.iter_errors(data))
