"""The project's own words for schema errors, keyed by pydantic's error types, and the one
"did you mean" of every message (keys, references, columns).

pydantic's error *types* (`greater_than`, `string_too_long`...) are stable identifiers in its
documentation; its *messages* are prose that a release may reword. The loader turns each type
it knows into a sentence of ours, so a pipeline file's errors (and the tests that read them)
do not change with pydantic's wording; a type not listed keeps pydantic's text. Pure: no
YAML, no I/O.
"""
from __future__ import annotations

_CONSTRAINTS = {
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "multiple_of": "must be a multiple of {multiple_of}",
    "finite_number": "must be a finite number",
    "string_too_short": "must have at least {min_length} character(s)",
    "string_too_long": "must have at most {max_length} characters",
    "too_short": "must have at least {min_length} item(s)",
    "too_long": "must have at most {max_length} item(s)",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be text",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "literal_error": "must be one of {expected}",
}


def constraint_message(kind: str, ctx: dict) -> str | None:
    template = _CONSTRAINTS.get(kind)
    if template is None:
        return None
    try:
        return template.format(**ctx)
    except (KeyError, IndexError):  # a context without the expected value: keep pydantic's text
        return None


def did_you_mean(word: str, choices) -> str:
    """` (did you mean 'x'?)` for the closest of `choices`, never the word itself; else ""."""
    import difflib

    close = difflib.get_close_matches(word, [c for c in choices if c != word], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
