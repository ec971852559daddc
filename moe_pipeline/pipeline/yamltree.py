"""YAML text to plain Python values, with the line and column of every key: the loader's reader.

It safe-loads, rejects duplicate keys, tags and complex keys, and checks the limits of a
hostile file on the event stream before anything is built: nesting depth, values after alias
expansion, recursive aliases, the digits of an integer. Plain scalars are read by YAML 1.2's
core schema. Every problem is a `Problem` at its position, never a traceback. Only
`pipeline.loader` uses it; it knows nothing of the pipeline schema.
"""
from __future__ import annotations

import re
from typing import Any

import yaml

from moe_pipeline.errors import Problem

Loc = tuple[Any, ...]

MAX_DEPTH = 64  # the schema nests 5 deep; libyaml's composer recurses on nesting
MAX_VALUES = 100_000  # values after alias expansion: stops a "billion laughs" file
MAX_DIGITS = 30  # digits of an integer: every count or size in a pipeline file is far smaller


def read_yaml(text: str, filename: str) -> tuple[Any, dict[Loc, tuple[int, int]], list[Problem]]:
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


# YAML 1.2's core schema for plain scalars: `1:30` stays text (YAML 1.1 reads 90), `no`, `on`
# and `off` stay text (1.1 reads booleans), `0b1`, `017`'s octal and `1_000` are 1.1's only.
_NULL = {"", "~", "null", "Null", "NULL"}
_TRUE, _FALSE = {"true", "True", "TRUE"}, {"false", "False", "FALSE"}
_INT = re.compile(r"[-+]?[0-9]+")
_OCT, _HEX = re.compile(r"0o[0-7]+"), re.compile(r"0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_INF, _NAN = re.compile(r"[-+]?\.(inf|Inf|INF)"), re.compile(r"\.(nan|NaN|NAN)")


class _Builder:
    """Plain Python values from a composed node tree, with the position of every key.

    Plain scalars are read by YAML 1.2's core schema (PyYAML implements 1.1); an explicit tag
    (`!!str 1`) is honoured. A recursive alias and an integer of more than MAX_DIGITS digits
    are problems at their position, never a RecursionError or ValueError."""

    def __init__(self, filename: str, positions: dict, problems: list):
        self.filename, self.positions, self.problems = filename, positions, problems
        self.constructor = yaml.SafeLoader("")  # used only to construct scalars the safe way
        self.resolver = yaml.resolver.Resolver()  # what PyYAML would tag a plain scalar without a tag
        self.values = 0
        self.open: set[int] = set()  # collections being built: an alias back into one is a cycle

    def problem(self, node: yaml.Node, loc: Loc, message: str) -> None:
        self.problems.append(Problem(self.filename, node.start_mark.line + 1, node.start_mark.column + 1,
                                     dotted(loc), message))

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        self.values += 1
        if self.values > MAX_VALUES:
            raise _TooLarge
        if node.tag not in _PLAIN_TAGS:  # never construct python/... or custom tags: pipeline files are plain data
            self.problem(node, loc, f"YAML tag '{node.tag}' is not allowed; pipeline files hold plain values")
            return None
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, loc)
        if id(node) in self.open:
            self.problem(node, loc, "an alias refers to a collection that holds it (a recursive alias); "
                         "pipeline files hold finite values")
            return None
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, loc)
            items = []
            for index, item in enumerate(node.value):
                self.positions[loc + (index,)] = (item.start_mark.line + 1, item.start_mark.column + 1)
                items.append(self.build(item, loc + (index,)))
            return items
        finally:
            self.open.discard(id(node))

    def _scalar(self, node: yaml.ScalarNode, loc: Loc) -> Any:
        text = node.value
        digits = len(text.lstrip("+-"))
        plain = node.style in (None, "")  # libyaml marks a plain scalar "", PyYAML None
        explicit = node.tag != self.resolver.resolve(yaml.ScalarNode, text, (plain, not plain))
        if not plain and not explicit:  # quoted, literal or folded: text
            return text
        if explicit:
            if node.tag == "tag:yaml.org,2002:int" and digits > MAX_DIGITS:
                self.problem(node, loc, f"a number of {digits} digits; a pipeline file's numbers are far smaller")
                return None
            try:
                return self.constructor.construct_object(node, deep=True)
            except (ValueError, yaml.YAMLError) as exc:
                self.problem(node, loc, f"{text[:40]!r} is not a valid {node.tag.rsplit(':', 1)[-1]}: "
                             f"{str(exc).splitlines()[0]}")
                return None
        if text in _NULL:
            return None
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        if _INT.fullmatch(text) or _OCT.fullmatch(text) or _HEX.fullmatch(text):
            if digits > MAX_DIGITS:
                self.problem(node, loc, f"a number of {digits} digits; a pipeline file's numbers are far smaller")
                return None
            return int(text, 8) if text.startswith("0o") else int(text, 16) if text.startswith("0x") else int(text)
        if _FLOAT.fullmatch(text) or _INF.fullmatch(text):
            return float(text.replace(".inf", "inf").replace(".Inf", "inf").replace(".INF", "inf"))
        if _NAN.fullmatch(text):
            return float("nan")
        return text

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict:
        out: dict[Any, Any] = {}
        seen: dict[str, tuple[int, int]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in _SCALAR_KEY_TAGS:
                self.problem(key_node, loc, "keys must be plain names (no `? [complex]` keys, no tags on keys)")
                continue
            key = self._scalar(key_node, loc)
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


def dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
