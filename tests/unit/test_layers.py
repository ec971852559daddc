"""The layer rules each subpackage's docstring states, checked on the code as it is.

Each subpackage is imported, with every module in it, in a fresh interpreter; what got
loaded (`sys.modules`) must not include the heavy libraries or the higher layers the rule
forbids. A static pass checks that only `registry` imports mlflow anywhere, even lazily.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "moe_pipeline"
LAYERS = ["pipeline", "state", "data", "training", "registry", "execute", "inspect", "serve", "cli"]
HEAVY = ("torch", "mlflow", "sklearn", "numpy")

# subpackage -> modules that must not be loaded by importing every module of it
FORBIDDEN = {
    "pipeline": [*HEAVY, *(f"moe_pipeline.{x}" for x in LAYERS if x != "pipeline")],
    "state": ["torch", "mlflow", "sklearn", *(f"moe_pipeline.{x}" for x in LAYERS[2:])],
    "data": ["mlflow", *(f"moe_pipeline.{x}" for x in LAYERS[3:])],
    "training": ["mlflow", *(f"moe_pipeline.{x}" for x in LAYERS[4:])],
    "registry": ["mlflow", *(f"moe_pipeline.{x}" for x in ("training", "execute", "inspect", "cli"))],
    "execute": ["mlflow", "moe_pipeline.inspect", "moe_pipeline.cli"],
    "inspect": ["mlflow", "moe_pipeline.cli"],
    # serve may use inspect's pure numerics (integrated gradients), never the report or training
    "serve": ["mlflow", "moe_pipeline.inspect.report", "moe_pipeline.inspect.opacity", "moe_pipeline.training.train",
              "moe_pipeline.cli"],
    "cli": ["torch", "mlflow", "sklearn", "numpy"],  # cli/app.py imports every command lazily
}

PROBE = """
import importlib, json, pkgutil, sys
pkg = importlib.import_module("moe_pipeline.{layer}")
for info in pkgutil.iter_modules(pkg.__path__, "moe_pipeline.{layer}."):
    importlib.import_module(info.name)
print(json.dumps(sorted(sys.modules)))
"""


def loaded_by(layer: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(layer=layer)], capture_output=True, text=True,
                         check=True).stdout
    return set(json.loads(out))


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_loads_nothing_its_rule_forbids(layer: str):
    loaded = loaded_by(layer)
    bad = sorted(m for m in FORBIDDEN[layer] if m in loaded)
    assert bad == [], f"importing moe_pipeline.{layer} loaded {bad}"


def test_every_layer_says_what_it_must_not_import():
    for layer in LAYERS:
        doc = ast.get_docstring(ast.parse((PACKAGE / layer / "__init__.py").read_text()))
        assert doc and "must not" in doc.lower(), f"moe_pipeline/{layer}/__init__.py has no rule in its docstring"


def test_the_top_level_holds_only_subpackages_and_four_leaves_every_layer_may_use():
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert modules == ["__init__.py", "__main__.py", "errors.py", "hashing.py", "longlived.py", "terminal.py"]
    for leaf in ("errors.py", "hashing.py", "longlived.py", "terminal.py"):  # leaves: they import nothing of the package
        assert not any(name == "moe_pipeline" for name in _imported_names(PACKAGE / leaf)), leaf
    assert sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()) == sorted(LAYERS)


def _imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_registry_imports_mlflow_even_lazily():
    offenders = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if "mlflow" in _imported_names(p) and p.parent.name != "registry"]
    assert offenders == []


def test_no_module_is_past_four_hundred_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_circles_between_the_modules_even_through_lazy_imports():
    """A circle means a helper lives in the wrong place: every import counts, also one inside a
    function (those are how circles hide)."""
    import networkx as nx

    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py") if "templates" not in p.parts}
    graph = nx.DiGraph()
    for name, path in modules.items():
        graph.add_node(name)
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            for target in targets:
                # a package's own __init__ is not an edge back from its modules
                if target in modules and target != name and not name.startswith(target + "."):
                    graph.add_edge(name, target)
    assert sorted(" -> ".join(c) for c in nx.simple_cycles(graph)) == []
