"""Fingerprints of an expert, per component: spec, code, data (upstream lives in the record).

- spec: the resolved spec as canonical JSON, cosmetic and run-time-only keys left out
  (description, cutoff tolerances, resources), so the diff is per key;
- code: sha256 of the normalised AST of each referenced object (target function, model
  class, custom loader) and the same-module definitions it uses, docstrings stripped: a
  comment, a docstring or formatting changes nothing, a changed expression does;
- data: the content hash of every source field the expert reads.

Reads Python source files but imports nothing heavy; no torch, no mlflow.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from moe_pipeline.errors import DataError

if TYPE_CHECKING:
    from moe_pipeline.pipeline.spec import Pipeline

# Keys that do not change what an expert learns: editing them must not invalidate it.
NON_BEHAVIOURAL_KEYS = ("description", "cutoff", "resources", "classes")
BUILTIN_MODEL_CLASSES = {"mlp": "moe_pipeline.training.models:MLP", "cnn": "moe_pipeline.training.models:CNN",
                         "linear": "moe_pipeline.training.models:Linear"}
# A record names code by where it lived when the record format was fixed; moving a module
# into a subpackage must not make every existing version stale with a CODE reason.
RECORDED_AS = {path: path.replace(".training.models:", ".models:") for path in BUILTIN_MODEL_CLASSES.values()}


@dataclass(frozen=True)
class Fingerprint:
    """What an expert is made of now: its resolved spec, code and data hashes, per component."""

    spec: dict[str, Any]
    spec_hash: str
    code: dict[str, str]  # object path -> hash
    code_hash: str
    data: dict[str, str]  # source.field -> hash
    data_hash: str


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: the same value always gives the same text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def sha256_text(text: str) -> str:
    """Hex sha256 of a text's UTF-8 bytes."""
    return hashlib.sha256(text.encode()).hexdigest()


def digest(mapping: dict[str, str]) -> str:
    """Hex sha256 of a value's canonical JSON."""
    return sha256_text(canonical_json(mapping))


def resolved_spec(pipeline: Pipeline, expert: str) -> dict[str, Any]:
    """The expert's spec as its fingerprint hashes it: defaults filled, non-behavioural keys left out."""
    spec = pipeline.experts[expert].model_dump(mode="json", by_alias=True, exclude=set(NON_BEHAVIOURAL_KEYS))
    train = spec["train"]
    if train["seed"] is None:
        train["seed"] = pipeline.seed
    # init/order seeds enter the spec only where they differ from `seed`: a pipeline that sets
    # only `seed` keeps its fingerprints (and its weights), and one seed set twice is one seed.
    for key in ("init_seed", "order_seed"):
        if train.get(key) is None or train[key] == train["seed"]:
            train.pop(key, None)
    if isinstance(spec["target"], str):
        spec["target"] = {"from": spec["target"], "fn": None}
    # a source's preprocessing changes what the expert learns: a SPEC change with its own key.
    # Only present when declared, so pipelines without transforms keep their spec hashes.
    transforms = {ref: _transform_of(pipeline, ref) for ref in data_refs(pipeline, expert)}
    transforms = {ref: kind for ref, kind in transforms.items() if kind}
    if transforms:
        spec["transform"] = transforms
    return spec


def training_seeds(spec: dict[str, Any]) -> tuple[int, int]:
    """(initial-weights seed, batch-order seed) of a resolved spec: each is `seed` unless set apart."""
    train = spec["train"]
    return train.get("init_seed", train["seed"]), train.get("order_seed", train["seed"])


def _transform_of(pipeline: Pipeline, ref: str) -> str | None:
    owner, _, field = ref.partition(".")
    return getattr(pipeline.sources[owner], "transform", {}).get(field)


def data_label(pipeline: Pipeline, ref: str) -> str:
    """How a DATA reason names a field: with its file, for a file source (`cancer.features (data/c.csv)`)."""
    source = pipeline.sources[ref.partition(".")[0]]
    return f"{ref} ({source.path})" if getattr(source, "path", None) else ref


def code_objects(pipeline: Pipeline, expert: str) -> list[str]:
    """Import paths of every Python object whose code decides what this expert learns."""
    spec = pipeline.experts[expert]
    objects = [spec.model.cls if spec.model.kind == "custom" else BUILTIN_MODEL_CLASSES[spec.model.kind]]
    if spec.target_fn:
        objects.append(spec.target_fn)
    owners = {ref.partition(".")[0] for ref in [*spec.inputs, spec.target_field]}
    for owner in sorted(owners & set(pipeline.sources)):
        loader = pipeline.sources[owner].loader
        if ":" in loader:
            objects.append(loader)
    return objects


def code_references(pipeline: Pipeline) -> list[tuple[tuple[str, ...], str]]:
    """Every `module:name` the pipeline names, with the YAML key path that names it."""
    refs: list[tuple[tuple[str, ...], str]] = []
    for name, source in pipeline.sources.items():
        if ":" in source.loader:
            refs.append((("sources", name, "loader"), source.loader))
    for name, spec in pipeline.experts.items():
        if spec.target_fn:
            refs.append((("experts", name, "target", "fn"), spec.target_fn))
        if spec.model.kind == "custom":
            refs.append((("experts", name, "model", "class"), spec.model.cls))
    return refs


def unresolved_code(pipeline: Pipeline) -> list[tuple[tuple[str, ...], str]]:
    """References whose module or name cannot be found, found without running any of that code
    (the module's source is parsed, not imported), so `validate` stays fast and side-effect free."""
    problems = []
    for loc, path in code_references(pipeline):
        try:
            code_hash(path)
        except DataError as exc:
            problems.append((loc, f"{exc}"))
    return problems


def data_refs(pipeline: Pipeline, expert: str) -> list[str]:
    """Source fields the expert reads directly (upstream outputs are covered by `upstream`)."""
    spec = pipeline.experts[expert]
    refs = [r for r in spec.inputs if r.partition(".")[0] in pipeline.sources]
    return sorted(set(refs + [spec.target_field]))


def fingerprint(pipeline: Pipeline, expert: str, field_hash: Callable[[str], str]) -> Fingerprint:
    """What an expert's version depends on: its resolved spec, the hashes of its code and of its data fields."""
    spec = resolved_spec(pipeline, expert)
    code = {RECORDED_AS.get(obj, obj): code_hash(obj) for obj in code_objects(pipeline, expert)}
    data = {data_label(pipeline, ref): field_hash(ref) for ref in data_refs(pipeline, expert)}
    return Fingerprint(spec=spec, spec_hash=sha256_text(canonical_json(spec)), code=code, code_hash=digest(code),
                       data=data, data_hash=digest(data))


# ---------------------------------------------------------------- code hashing


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


@lru_cache(maxsize=256)
def _module_definitions(source: str) -> dict[str, ast.AST]:
    """Top-level names of a module's source -> their (docstring-free) definition nodes."""
    tree = _strip_docstrings(ast.parse(source))
    definitions: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            definitions[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        definitions[name.id] = node
    return definitions


def _module_file(module: str) -> str:
    try:
        found = importlib.util.find_spec(module)  # runs a parent package's __init__, nothing else
    except Exception as exc:  # that __init__ may raise anything; say which and why
        raise DataError(f"cannot import the package of module '{module}': {type(exc).__name__}: {exc}") from None
    if found is None or not found.origin or not found.origin.endswith(".py"):
        raise DataError(f"cannot find the Python source of module '{module}' (looked in the project root, the "
                        "pipeline's folder and sys.path)")
    return found.origin


def code_hash(path: str) -> str:
    """sha256 of the normalised AST of `module:name` plus the same-module names it uses."""
    module, _, name = path.partition(":")
    file = _module_file(module)
    try:
        hashed = _definition_hash(Path(file).read_text(encoding="utf-8"), name)
    except (SyntaxError, ValueError, UnicodeDecodeError) as exc:
        where = f" at line {exc.lineno}" if getattr(exc, "lineno", None) else ""
        raise DataError(f"module '{module}' ({file}) cannot be parsed{where}: {exc}") from None
    if hashed is None:
        raise DataError(f"module '{module}' defines no '{name}' (referenced as '{path}')")
    return hashed


@lru_cache(maxsize=1024)
def _definition_hash(source: str, name: str) -> str | None:
    """The hash of `name` in a module's source (None when it defines no such name). Keyed by
    the source text itself: 1,000 experts of one model class hash it once, and an edited
    file is a new key."""
    definitions = _module_definitions(source)
    if name not in definitions:
        return None
    seen: list[str] = []
    pending = [name]
    while pending:  # follow helpers and constants defined in the same module
        current = pending.pop()
        if current in seen or current not in definitions:
            continue
        seen.append(current)
        pending.extend(n.id for n in ast.walk(definitions[current]) if isinstance(n, ast.Name))
    dumped = "\n".join(ast.dump(definitions[n], include_attributes=False) for n in sorted(seen))
    return sha256_text(dumped)


# ---------------------------------------------------------------- diffs


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict as dotted keys (`train.lr`), for MLflow params."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def spec_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`train.lr: 0.003 -> 0.001` for each key that differs (added/removed keys included)."""
    a, b = flatten(old), flatten(new)
    lines = []
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            lines.append(f"{key}: {_show(a.get(key, '<absent>'))} -> {_show(b.get(key, '<absent>'))}")
    return lines


def _show(value: Any) -> str:
    return value if value == "<absent>" else json.dumps(value)


def mapping_diff(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """Keys whose hash changed, appeared or disappeared."""
    lines = []
    for key in sorted(set(old) | set(new)):
        if key not in old:
            lines.append(f"{key} (new)")
        elif key not in new:
            lines.append(f"{key} (no longer used)")
        elif old[key] != new[key]:
            lines.append(f"{key} changed")
    return lines
