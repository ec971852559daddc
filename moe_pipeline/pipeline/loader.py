"""Read a pipeline YAML file into a validated `Pipeline` and its expert graph.

The only module that reads pipeline files (through `yamltree`, its YAML reader). It keeps
the line and column of every key so that each error reads `FILE:LINE:COL: key.path: message`,
and collects all errors of a file before raising one `PipelineError`. A hostile file
(binary, huge, deeply nested, an alias bomb or a recursive one, tags or complex keys, a
5,000-digit number) gets the same kind of message, never a traceback. It does no training
and no registry calls.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from moe_pipeline.pipeline import spec as spec_module
from moe_pipeline.errors import PipelineError, Problem
from moe_pipeline.pipeline.graph import GraphIssue, check_graph
from moe_pipeline.pipeline.paths import project_root, source_path
from moe_pipeline.pipeline.wording import constraint_message, did_you_mean
from moe_pipeline.pipeline.yamltree import Loc, dotted as _dotted, read_yaml


MAX_BYTES = 1 << 20  # a pipeline file is a page of YAML; 1 MiB is generous
MAX_SCHEMA_PROBLEMS = 50  # then "and N more": each problem costs a schema walk


@dataclass(frozen=True)
class LoadedPipeline:
    """A validated pipeline with its file and the position of every key (for later errors)."""

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
    """Read, check and validate a pipeline file: every problem of the file in one `PipelineError`."""
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
    data, positions, problems = read_yaml(text, filename)
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
            for wanted in getattr(source, "transform", {}):
                if wanted not in pipeline.source_fields(name):
                    problem(("sources", name, "transform", wanted),
                            f"source '{name}' has no field '{wanted}' (fields: {', '.join(pipeline.source_fields(name))})")
            continue
        path = source_path(project_root(pipeline_path), source.path)
        want_dir = source.loader == "imagefolder"
        if path.exists() and not want_dir and not path.is_dir() and not path.is_file():  # a FIFO, /dev/zero
            problem(("sources", name, "path"), f"{path} is not a regular file (a FIFO or a device would never "
                    "end); a source reads a file")
            continue
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
        if source.loader == "csv":
            mistake = _header_mistake(source, path)
            if mistake:
                key = "fields" if source.groups is not None else ("columns" if source.columns else "label")
                problem(("sources", name, key), mistake)
                continue
        fields = pipeline.source_fields(name) if source.loader != "npz" else tuple(source.arrays or ())
        for wanted in source.transform:
            if wanted not in fields:
                problem(("sources", name, "transform", wanted),
                        f"source '{name}' has no field '{wanted}' (fields: {', '.join(fields)})")
    for expert, spec in pipeline.experts.items():  # a target is class ids or values, never a transformed field
        owner, _, field = spec.target_field.partition(".")
        kind = getattr(sources.get(owner), "transform", {}).get(field)
        if kind:
            problem(("experts", expert, "target"), f"the target '{spec.target_field}' has a `{kind}` transform "
                    f"(sources.{owner}.transform); a target must stay class ids or values: remove the transform "
                    "from that field")
    return pipeline.model_copy(update={"sources": sources}), problems


def _header_mistake(source, path: Path) -> str | None:
    """What is wrong with a CSV source's columns, read from its first line alone (`validate` stays
    cheap): a column or pattern the header lacks, a duplicated name, a column in two fields."""
    import csv
    import io

    from moe_pipeline.errors import DataError
    from moe_pipeline.pipeline.columns import groups_of

    try:
        with open(path, "rb") as fh:
            first = fh.readline(1 << 20).decode("utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return None  # reading the data says what is wrong, with the row
    header = next(csv.reader(io.StringIO(first), delimiter=source.delimiter), [])
    if len(header) < 2 or len(set(header)) != len(header):
        return None  # one column (a wrong delimiter) or a duplicated name: the reader's message names it
    try:
        groups_of(source, header, path)
    except DataError as exc:
        return str(exc)
    return None


# ---------------------------------------------------------------- YAML with positions


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
        if key in allowed:  # a key of another loader or model kind at this place: say so, never "did you mean" it
            return Problem(filename, line, col, _dotted(found), f"unknown key '{key}' here: it belongs to another "
                           "kind (another `loader:` or `kind:`) at this place")
        hint = did_you_mean(str(key), allowed)
        listing = f" (allowed: {', '.join(sorted(allowed))})" if allowed and not hint else ""
        return Problem(filename, line, col, _dotted(found), f"unknown key '{key}'{hint}{listing}")
    if kind == "missing":
        return Problem(filename, line, col, _dotted(found), f"missing required key '{loc[-1]}'")
    message = constraint_message(kind, err.get("ctx") or {}) or err["msg"]
    if kind == "value_error" and "error" in (err.get("ctx") or {}):  # our validators' own words, without pydantic's prefix
        message = str(err["ctx"]["error"])
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
