"""Read a pipeline YAML file into a validated `Pipeline` and its expert graph.

The only module that reads YAML. It safe-loads, rejects duplicate keys, keeps the line and
column of every key so that each error reads `FILE:LINE:COL: key.path: message`, and
collects all errors of a file before raising one `PipelineError`. A hostile file (binary,
huge, deeply nested, an alias bomb, tags or complex keys) gets the same kind of message,
never a traceback: the limits below are checked on the event stream, before anything is
built. It does no training and no registry calls.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from moe_pipeline.pipeline import spec as spec_module
from moe_pipeline.errors import PipelineError, Problem
from moe_pipeline.pipeline.graph import GraphIssue, check_graph
from moe_pipeline.pipeline.paths import project_root, source_path
from moe_pipeline.pipeline.wording import constraint_message

Loc = tuple[Any, ...]

MAX_BYTES = 1 << 20  # a pipeline file is a page of YAML; 1 MiB is generous
MAX_DEPTH = 64  # the schema nests 5 deep; libyaml's composer recurses on nesting
MAX_VALUES = 100_000  # values after alias expansion: stops a "billion laughs" file
MAX_SCHEMA_PROBLEMS = 50  # then "and N more": each problem costs a schema walk


@dataclass(frozen=True)
class LoadedPipeline:
    path: Path
    pipeline: spec_module.Pipeline
    positions: dict[Loc, tuple[int, int]] = field(default_factory=dict, compare=False, repr=False)

    def where(self, *loc: Any) -> str:
        """`FILE:LINE:COL` of a key path (the nearest key present), for errors found after loading."""
        _, (line, col) = _locate(loc, self.positions)
        return f"{self.path}:{line}:{col}"

    def problem(self, loc: Loc, message: str) -> Problem:
        """A problem found after loading (e.g. code that cannot be found), placed at its key."""
        _, (line, col) = _locate(loc, self.positions)
        return Problem(str(self.path), line, col, _dotted(loc), message)


def make_importable(pipeline_path: Path) -> None:
    """`module:function` references resolve from the project root and the pipeline's own folder,
    as they read in the YAML, without the user setting PYTHONPATH."""
    import sys

    for folder in (project_root(pipeline_path), pipeline_path.resolve().parent):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))


def load_pipeline(path: str | Path) -> LoadedPipeline:
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise PipelineError([Problem(str(path), 1, 1, "", f"cannot read pipeline file: {exc.strerror}")]) from None
    if len(raw) > MAX_BYTES:
        raise PipelineError([Problem(str(path), 1, 1, "", f"the file is larger than {MAX_BYTES >> 20} MiB; "
                                     "a pipeline file is a page of YAML")])
    pipeline, positions = _parse(_decode(raw, str(path)), str(path))
    return LoadedPipeline(path=path, pipeline=pipeline, positions=positions)


def _decode(raw: bytes, filename: str) -> str:
    """UTF-8 text, or a problem at the first byte that is not (a binary file, Latin-1...)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[:exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        raise PipelineError([Problem(filename, line, col, "", f"byte 0x{raw[exc.start]:02x} is not UTF-8; "
                                     "save the file as UTF-8 text")]) from None


def parse_pipeline(text: str, filename: str = "<pipeline>") -> spec_module.Pipeline:
    return _parse(text, filename)[0]


def _parse(text: str, filename: str) -> tuple[spec_module.Pipeline, dict[Loc, tuple[int, int]]]:
    data, positions, problems = _read_yaml(text, filename)
    if data is None and problems:  # a syntax error: nothing further can be checked
        raise PipelineError(problems)
    if not isinstance(data, dict):
        raise PipelineError([Problem(filename, 1, 1, "", "a pipeline file must be a mapping with name, sources, experts")])
    try:
        pipeline = spec_module.Pipeline.model_validate(data)
    except ValidationError as exc:
        # duplicate keys were dropped (first one kept), so schema errors are still worth reporting
        errors = exc.errors()
        shown = [_schema_problem(err, positions, filename) for err in errors[:MAX_SCHEMA_PROBLEMS]]
        raise PipelineError(problems + shown, more=len(errors) - len(shown)) from None
    if problems:
        raise PipelineError(problems)
    pipeline, file_problems = _check_files(pipeline, Path(filename), positions, filename)
    if file_problems:
        raise PipelineError(file_problems)
    issues = check_graph(pipeline)
    if issues:
        raise PipelineError([_graph_problem(issue, positions, filename) for issue in issues])
    return pipeline, positions


# ---------------------------------------------------------------- data files


def _check_files(pipeline: spec_module.Pipeline, pipeline_path: Path, positions: dict,
                 filename: str) -> tuple[spec_module.Pipeline, list[Problem]]:
    """Every file source's path exists (of the right kind); npz sources learn their arrays from
    the file's directory (no array is read); transforms name fields the source has."""
    import zipfile

    problems: list[Problem] = []
    sources = dict(pipeline.sources)

    def problem(loc: Loc, message: str) -> None:
        found, (line, col) = _locate(loc, positions)
        problems.append(Problem(filename, line, col, _dotted(loc), message))

    for name, source in pipeline.sources.items():
        if source.loader not in spec_module.FILE_LOADERS:
            continue
        path = source_path(project_root(pipeline_path), source.path)
        want_dir = source.loader == "imagefolder"
        if not path.exists() or path.is_dir() != want_dir:
            kind = "folder" if want_dir else "file"
            problem(("sources", name, "path"), f"no {kind} {path}" + (" (it is a folder)" if path.is_dir() else "")
                    + f"; `path` is relative to the project root {project_root(pipeline_path)}")
            continue
        if source.loader == "npz" and source.arrays is None:
            try:
                with zipfile.ZipFile(path) as archive:
                    arrays = [n[:-4] for n in archive.namelist() if n.endswith(".npy")]
            except (zipfile.BadZipFile, OSError) as exc:
                problem(("sources", name, "path"), f"{path} is not an npz file: {exc}")
                continue
            source = sources[name] = source.model_copy(update={"arrays": arrays})
        fields = pipeline.source_fields(name) if source.loader != "npz" else tuple(source.arrays or ())
        for wanted in source.transform:
            if wanted not in fields:
                problem(("sources", name, "transform", wanted),
                        f"source '{name}' has no field '{wanted}' (fields: {', '.join(fields)})")
    return pipeline.model_copy(update={"sources": sources}), problems


# ---------------------------------------------------------------- YAML with positions


def _read_yaml(text: str, filename: str) -> tuple[Any, dict[Loc, tuple[int, int]], list[Problem]]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present
    try:
        too_deep = _too_deep(text, loader, filename)
        if too_deep:
            return None, {}, [too_deep]
        node = yaml.compose(text, Loader=loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        return None, {}, [Problem(filename, line, col, "", f"YAML syntax: {exc.problem or exc.context}")]
    except yaml.YAMLError as exc:  # a reader error: a control character or a stray byte order mark
        line, col = _line_col(text, getattr(exc, "position", 0))
        character = getattr(exc, "character", None)
        # libyaml gives the code point, the pure-Python reader the character
        code = ord(character) if isinstance(character, str) and len(character) == 1 else character
        shown = f"U+{code:04X}" if isinstance(code, int) else repr(code)
        return None, {}, [Problem(filename, line, col, "", f"control character {shown} is not allowed "
                                  "in a YAML file; remove it")]
    if node is None:
        return None, {}, [Problem(filename, 1, 1, "", "the file is empty")]
    positions: dict[Loc, tuple[int, int]] = {(): (node.start_mark.line + 1, node.start_mark.column + 1)}
    problems: list[Problem] = []
    builder = _Builder(filename, positions, problems)
    try:
        data = builder.build(node, ())
    except _TooLarge:
        return None, {}, [Problem(filename, 1, 1, "", f"the file holds more than {MAX_VALUES} values once "
                                  "aliases are expanded; a pipeline file holds a few hundred")]
    return data, positions, problems


def _line_col(text: str, index: int) -> tuple[int, int]:
    before = text[:index]
    return before.count("\n") + 1, index - (before.rfind("\n") + 1) + 1


def _too_deep(text: str, loader, filename: str) -> Problem | None:
    """Nesting depth from the event stream (no recursion, no values built).

    libyaml's scanner reads ahead and, from PyYAML 6.0.4 on, stops at a nesting limit of its
    own before our count sees the 65th level; its error is then not taken as the answer: the
    pure-Python parser, which emits events as it reads, counts again, so the limit and the
    message are ours whatever the library's version. A real syntax error still raises there.
    """
    try:
        return _depth_problem(yaml.parse(text, Loader=loader), filename)
    except yaml.YAMLError:
        if loader is yaml.SafeLoader:
            raise
        return _depth_problem(yaml.parse(text, Loader=yaml.SafeLoader), filename)


def _depth_problem(events, filename: str) -> Problem | None:
    depth = 0
    for event in events:
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                return Problem(filename, mark.line + 1, mark.column + 1, "",
                               f"nested more than {MAX_DEPTH} levels deep; a pipeline file nests about 5")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
    return None


class _TooLarge(Exception):
    """Alias expansion passed MAX_VALUES."""


_PLAIN_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:str", "tag:yaml.org,2002:int",
               "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null"}


_SCALAR_KEY_TAGS = {"tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
                    "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null"}


class _Builder:
    """Plain Python values from a composed node tree, with the position of every key."""

    def __init__(self, filename: str, positions: dict, problems: list):
        self.filename, self.positions, self.problems = filename, positions, problems
        self.constructor = yaml.SafeLoader("")  # used only to construct scalars the safe way
        self.values = 0

    def problem(self, node: yaml.Node, loc: Loc, message: str) -> None:
        self.problems.append(Problem(self.filename, node.start_mark.line + 1, node.start_mark.column + 1,
                                     _dotted(loc), message))

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        self.values += 1
        if self.values > MAX_VALUES:
            raise _TooLarge
        if node.tag not in _PLAIN_TAGS:  # never construct python/... or custom tags: pipeline files are plain data
            self.problem(node, loc, f"YAML tag '{node.tag}' is not allowed; pipeline files hold plain values")
            return None
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, loc)
        if isinstance(node, yaml.SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                self.positions[loc + (index,)] = (item.start_mark.line + 1, item.start_mark.column + 1)
                items.append(self.build(item, loc + (index,)))
            return items
        return self.constructor.construct_object(node, deep=True)

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict:
        out: dict[Any, Any] = {}
        seen: dict[str, tuple[int, int]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in _SCALAR_KEY_TAGS:
                self.problem(key_node, loc, "keys must be plain names (no `? [complex]` keys, no tags on keys)")
                continue
            key = self.constructor.construct_object(key_node, deep=True)
            if not isinstance(key, str):  # YAML reads `1:` as an int and `on:` as a bool; 1 == True in a dict
                self.problem(key_node, loc, f"key {key_node.value!r} is read as a {type(key).__name__}; keys are "
                             f"names: quote it ('{key_node.value}') or rename it")
                continue
            where = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if key in seen:
                self.problem(key_node, loc + (key,), f"duplicate key '{key}' (first defined at line {seen[key][0]}); "
                             "remove one")
                continue
            seen[key] = where
            self.positions[loc + (key,)] = where
            out[key] = self.build(value_node, loc + (key,))
        return out


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
    message = constraint_message(kind, err.get("ctx") or {}) or err["msg"]
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
