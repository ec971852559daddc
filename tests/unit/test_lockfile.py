"""The lock is the lock of this pyproject.toml, and this environment is exactly the lock."""
from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import lockfile  # noqa: E402

PYPROJECT, LOCK = ROOT / "pyproject.toml", ROOT / "requirements.lock"


def test_the_lock_agrees_with_pyproject():
    assert lockfile.disagreements(PYPROJECT, LOCK) == []


def test_an_edited_range_or_a_lost_pin_is_found(tmp_path: Path):
    edited = tmp_path / "pyproject.toml"
    edited.write_text(PYPROJECT.read_text().replace('"networkx>=3"', '"networkx>=99"'))
    problems = lockfile.disagreements(edited, LOCK)
    assert any("run `make lock`" in p for p in problems)
    assert any(p.startswith("networkx==") and "does not meet" in p for p in problems), problems
    thinner = tmp_path / "requirements.lock"
    text = LOCK.read_text()
    start = text.index("\nrich==")
    thinner.write_text(text[:start] + text[text.index("\n", text.index("# via", start) + 1):])
    assert "rich is required by pyproject.toml but not in the lock" in lockfile.disagreements(PYPROJECT, thinner)


def test_this_environment_holds_exactly_the_lock_torch_and_the_project_aside():
    installed = {lockfile.normalise(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    for aside in ("torch", "moe-pipeline", "pip"):
        installed.pop(aside, None)
    assert installed == lockfile.pins(LOCK)


def test_the_runtime_subset_is_the_closure_of_the_runtime_dependencies():
    subset = lockfile.pins_of(lockfile.runtime_subset(PYPROJECT, LOCK))
    assert {"mlflow", "pydantic", "captum", "sympy", "pydantic-core"} <= subset.keys()  # sympy: torch's own
    assert not {"pytest", "ray", "hypothesis", "psycopg", "jsonschema"} & subset.keys()
    assert subset.items() <= lockfile.pins(LOCK).items()
