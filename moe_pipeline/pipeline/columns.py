"""Which columns each field of a table holds: names and glob patterns resolved over a header.

Pure and cheap: a header (a list of column names) in, the fields as column groups out, or a
`DataError` naming the file and the column or pattern (with "did you mean"). `validate` runs
it on a CSV's first line; the table reader runs it on every read. Must not read a file nor
import numpy.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moe_pipeline.errors import DataError
from moe_pipeline.pipeline.wording import did_you_mean


@dataclass(frozen=True)
class Group:
    """One field of a table: its columns (resolved, file order) and kind."""

    name: str
    columns: list[str]
    kind: str


def groups_of(source: Any, header: list[str], path: Path) -> list[Group]:
    """The source's fields as column groups, each pattern resolved against the header."""
    declared = getattr(source, "groups", None)
    if not declared:  # the shorthand: `columns` (default: all but the label) and `label`
        if source.label is not None and source.label not in header:
            raise DataError(f"{path}: no column {source.label!r} (the label){did_you_mean(source.label, header)}; "
                            f"columns: {_listing(header)}")
        for wanted in source.columns or []:
            if wanted not in header:
                raise DataError(f"{path}: no column {wanted!r}{did_you_mean(wanted, header)}; columns: {_listing(header)}")
        if source.label is not None and source.columns and source.label in source.columns:
            raise DataError(f"{path}: column {source.label!r} is the label and also listed in `columns:`; a label "
                            "among the features would give the answer away: remove it from `columns:`")
        features = list(source.columns or [c for c in header if c != source.label])
        out = [Group("features", features, "features")] if features else []
        if source.label is not None:
            out.append(Group("label", [source.label], "categorical"))
        return out
    out, owner = [], {}
    for name, spec in declared.items():
        columns: list[str] = []
        for pattern in spec.columns:
            found = [c for c in header if fnmatch.fnmatchcase(c, pattern)] if _is_glob(pattern) else \
                ([pattern] if pattern in header else [])
            if not found:
                raise DataError(f"{path}: field '{name}': no column matches {pattern!r}{did_you_mean(pattern, header)}; "
                                f"columns: {_listing(header)}")
            columns += [c for c in found if c not in columns]
        for column in columns:
            if column in owner:
                raise DataError(f"{path}: column {column!r} is in two fields, '{owner[column]}' and '{name}'; "
                                "give each column to one field")
            owner[column] = name
        if spec.kind == "categorical" and len(columns) != 1:
            raise DataError(f"{path}: field '{name}' is categorical but has {len(columns)} columns "
                            f"({_listing(columns)}); a categorical field is one column of class values")
        out.append(Group(name, columns, spec.kind))
    return out


def _is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")




def _listing(names: list[str]) -> str:
    return ", ".join(names[:30]) + (f" and {len(names) - 30} more" if len(names) > 30 else "")
