"""The custom model code an exported system carries with it, under `code/`.

An export is loaded where the project is not (`mlflow models serve`, another machine), so the
top-level module of every custom model class its versions name is copied in at export time
(a `.py` file, or a package folder without its caches) and listed with its sha256 in
system.json. Loading checks those files and imports a custom class only from that folder
(`training.rebuild.check_code_origin`), so a spec.json edited to name another module is
refused before it is imported. Must not import the modules it copies.
"""
from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from typing import Iterable

from moe_pipeline.errors import IntegrityError
from moe_pipeline.hashing import sha256_file
from moe_pipeline.state.version_spec import VersionSpec

CODE = "code"


def custom_modules(specs: Iterable[VersionSpec]) -> list[str]:
    """The top-level modules of the custom model classes `specs` name, sorted."""
    tops = set()
    for spec in specs:
        model = spec.model_spec()
        if model.kind == "custom":
            tops.add(model.cls.partition(":")[0].split(".")[0])
    return sorted(tops)


def ship(specs: Iterable[VersionSpec], folder: Path) -> dict[str, str]:
    """Copy the custom classes' top-level modules into `folder / CODE`; relative path -> sha256."""
    shipped: dict[str, str] = {}
    for top in custom_modules(specs):
        found = importlib.util.find_spec(top)  # finds its file, runs none of its code
        package = found is not None and bool(found.submodule_search_locations)  # a namespace one has no origin
        if found is None or (not package and found.origin in (None, "built-in", "frozen")):
            raise IntegrityError(f"cannot export the model code of module {top!r}: its source file is not found")
        target = folder / CODE
        if package:  # its folder
            source = Path(next(iter(found.submodule_search_locations)))
            shutil.copytree(source, target / top, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(found.origin, target / Path(found.origin).name)
    code = folder / CODE
    if code.is_dir():
        for file in sorted(p for p in code.rglob("*") if p.is_file()):
            shipped[file.relative_to(folder).as_posix()] = sha256_file(file)
    return shipped


def enable(folder: Path, shipped: dict[str, str]) -> Path:
    """Check the shipped files against system.json's sha256 and make `folder / CODE` importable;
    the folder a custom class must come from."""
    for name, digest in sorted(shipped.items()):
        path = folder / name
        if not path.is_file() or sha256_file(path) != digest:
            raise IntegrityError(f"exported system {folder}: {name} does not match its sha256 in system.json "
                                 "(modified or missing); export again")
    code = (folder / CODE).resolve()
    if shipped and str(code) not in sys.path:
        sys.path.insert(0, str(code))
    return code
