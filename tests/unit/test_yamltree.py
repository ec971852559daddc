"""Plain scalars read by YAML 1.2's core schema, whatever PyYAML (a YAML 1.1 parser) would say."""
from __future__ import annotations

import math

import pytest

from moe_pipeline.pipeline.yamltree import read_yaml

READINGS = [  # plain scalar -> what a YAML 1.2 core-schema reader gives
    ("1:30", "1:30"),  # YAML 1.1: 90 (base 60)
    ("on", "on"), ("off", "off"), ("no", "no"), ("yes", "yes"),  # YAML 1.1: booleans
    ("1_000", "1_000"), ("0b101", "0b101"),  # YAML 1.1 only
    ("017", 17), ("0o17", 15), ("0x1F", 31), ("-3", -3), ("+4", 4),
    ("true", True), ("False", False), ("~", None), ("null", None),
    ("1.5e-3", 0.0015), ("-.5", -0.5), ("3.", 3.0), (".inf", math.inf), ("-.Inf", -math.inf),
    ("'3'", "3"), ('"on"', "on"), ("!!str 3", "3"), ("!!int '7'", 7),
]


@pytest.mark.parametrize("text,want", READINGS)
def test_a_plain_scalar_reads_as_yaml_1_2_says(text, want):
    data, _, problems = read_yaml(f"x: {text}\n", "f.yaml")
    assert problems == [] and data["x"] == want and type(data["x"]) is type(want)


def test_nan_reads_as_nan():
    assert math.isnan(read_yaml("x: .nan\n", "f.yaml")[0]["x"])


def test_a_recursive_alias_and_a_huge_integer_are_problems_at_their_place():
    _, _, problems = read_yaml("a: &r [1, *r]\nb: " + "9" * 400 + "\n", "f.yaml")
    assert [(p.line, p.path) for p in problems] == [(1, "a[1]"), (2, "b")]
    assert "recursive alias" in problems[0].message and "400 digits" in problems[1].message
