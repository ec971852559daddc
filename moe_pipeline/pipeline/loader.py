"""Read a pipeline YAML file into a validated `Pipeline` and its expert graph.

The only module that reads YAML. It safe-loads, rejects duplicate keys, keeps the line and
column of every key so that each error reads `FILE:LINE:COL: key.path: message`, and
collects all errors of a file before raising one `PipelineError`. It does no training
and no registry calls.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from moe_pipeline.pipeline import spec as spec_module
from moe_pipeline.errors import PipelineError, Problem
from moe_pipeline.pipeline.graph import GraphIssue, check_graph

Loc = tuple[Any, ...]


@dataclass(frozen=True)
class LoadedPipeline:
    path: Path
    pipeline: spec_module.Pipeline


def load_pipeline(path: str | Path) -> LoadedPipeline:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PipelineError([Problem(str(path), 1, 1, "", f"cannot read pipeline file: {exc.strerror}")]) from None
    return LoadedPipeline(path=path, pipeline=parse_pipeline(text, str(path)))


def parse_pipeline(text: str, filename: str = "<pipeline>") -> spec_module.Pipeline:
    data, positions, problems = _read_yaml(text, filename)
    if data is None and problems:  # a syntax error: nothing further can be checked
        raise PipelineError(problems)
    if not isinstance(data, dict):
        raise PipelineError([Problem(filename, 1, 1, "", "a pipeline file must be a mapping with name, sources, experts")])
    try:
        pipeline = spec_module.Pipeline.model_validate(data)
    except ValidationError as exc:
        # duplicate keys were dropped (first one kept), so schema errors are still worth reporting
        raise PipelineError(problems + [_schema_problem(err, positions, filename) for err in exc.errors()]) from None
    if problems:
        raise PipelineError(problems)
    issues = check_graph(pipeline)
    if issues:
        raise PipelineError([_graph_problem(issue, positions, filename) for issue in issues])
    return pipeline


# ---------------------------------------------------------------- YAML with positions


def _read_yaml(text: str, filename: str) -> tuple[Any, dict[Loc, tuple[int, int]], list[Problem]]:
    try:
        node = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml when present
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        return None, {}, [Problem(filename, line, col, "", f"YAML syntax: {exc.problem or exc.context}")]
    if node is None:
        return None, {}, [Problem(filename, 1, 1, "", "the file is empty")]
    positions: dict[Loc, tuple[int, int]] = {(): (node.start_mark.line + 1, node.start_mark.column + 1)}
    problems: list[Problem] = []
    constructor = yaml.SafeLoader("")  # used only to construct scalars the safe way
    data = _build(node, (), positions, problems, filename, constructor)
    return data, positions, problems


_PLAIN_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:str", "tag:yaml.org,2002:int",
               "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null"}


def _build(node: yaml.Node, loc: Loc, positions: dict, problems: list, filename: str, constructor) -> Any:
    if node.tag not in _PLAIN_TAGS:  # never construct python/... or custom tags: pipeline files are plain data
        problems.append(Problem(filename, node.start_mark.line + 1, node.start_mark.column + 1, _dotted(loc),
                                f"YAML tag '{node.tag}' is not allowed; pipeline files hold plain values"))
        return None
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = constructor.construct_object(key_node, deep=True)
            where = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if key in out:
                first = positions[loc + (key,)]
                problems.append(Problem(filename, *where, _dotted(loc + (key,)),
                                        f"duplicate key '{key}' (first defined at line {first[0]}); remove one"))
                continue
            positions[loc + (key,)] = where
            out[key] = _build(value_node, loc + (key,), positions, problems, filename, constructor)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            positions[loc + (index,)] = (item.start_mark.line + 1, item.start_mark.column + 1)
            items.append(_build(item, loc + (index,), positions, problems, filename, constructor))
        return items
    return constructor.construct_object(node, deep=True)


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _locate(loc: Loc, positions: dict[Loc, tuple[int, int]]) -> tuple[Loc, tuple[int, int]]:
    """The longest prefix of `loc` present in the file; pydantic adds union tags we skip."""
    found: Loc = ()
    for part in loc:
        if found + (part,) in positions:
            found = found + (part,)
    return found, positions.get(found, (1, 1))


# ---------------------------------------------------------------- messages


def _schema_problem(err: dict, positions: dict, filename: str) -> Problem:
    loc = tuple(err["loc"])
    found, (line, col) = _locate(loc, positions)
    kind = err["type"]
    if kind == "extra_forbidden":
        key = loc[-1]
        allowed = _allowed_keys(found[:-1])
        hint = _did_you_mean(str(key), allowed)
        listing = f" (allowed: {', '.join(sorted(allowed))})" if allowed and not hint else ""
        return Problem(filename, line, col, _dotted(found), f"unknown key '{key}'{hint}{listing}")
    if kind == "missing":
        return Problem(filename, line, col, _dotted(found), f"missing required key '{loc[-1]}'")
    message = err["msg"]
    if kind == "union_tag_invalid":
        ctx = {k: str(v).strip("'") for k, v in err["ctx"].items()}
        return Problem(filename, line, col, _dotted(found),
                       f"unknown {ctx['discriminator']} '{ctx['tag']}'; expected one of {err['ctx']['expected_tags']}")
    if kind == "string_pattern_mismatch":
        pattern = err["ctx"]["pattern"]
        message = ("expected `module:name`, e.g. stages.digits:has_loop" if pattern == spec_module.IMPORT_PATH_PATTERN
                   else "names may use letters, digits and '_' and must not start with a digit")
    return Problem(filename, line, col, _dotted(found), f"{message} (got {_short(err.get('input'))})")


def _graph_problem(issue: GraphIssue, positions: dict, filename: str) -> Problem:
    found, (line, col) = _locate(issue.loc, positions)
    return Problem(filename, line, col, _dotted(issue.loc), issue.message)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _did_you_mean(word: str, choices: list[str] | set[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _allowed_keys(parent: Loc) -> list[str]:
    """Keys the schema allows at `parent`, found by walking the pydantic models."""
    candidates: list[Any] = [spec_module.Pipeline]
    for part in parent:
        following: list[Any] = []
        for cand in candidates:
            if isinstance(cand, tuple):  # ("dict", values): `part` is a user-chosen name
                following.extend(cand[1])
            elif isinstance(cand, type) and issubclass(cand, BaseModel):
                field = next((f for n, f in cand.model_fields.items() if part in (n, f.alias)), None)
                if field is not None:
                    following.extend(_model_types(field.annotation))
        candidates = following
    keys = {f.alias or n for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)
            for n, f in c.model_fields.items()}
    return sorted(keys)


def _model_types(annotation: Any) -> list[Any]:
    """Flatten an annotation into the models it may hold; dicts become ('dict', [values])."""
    import typing

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _model_types(args[0])
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return [t for a in args for t in _model_types(a)]
    if origin is dict:
        return [("dict", _model_types(args[1]))]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []
