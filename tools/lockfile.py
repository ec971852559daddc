"""The lock file's header and its agreement with pyproject.toml.

`requirements.lock` is written by `make lock` (uv resolves, this module writes the header) and
installed by `make setup`. The header records a digest of what the lock was resolved from
(pyproject.toml's `dependencies` and its `dev` extra), so an edit to those ranges without
`make lock` is found; `check` also proves each range is met by its pin. This module only
reads files: it never resolves, downloads or installs anything.

    python tools/lockfile.py header   # print the header for the current pyproject.toml
    python tools/lockfile.py check    # exit 1 with the disagreements, if any
    python tools/lockfile.py runtime  # the lock's lines the wheel needs at run time (install test)
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEFT_OUT = {"torch"}  # installed first from the local CPU wheel (or the index), never from the lock
_DIGEST = re.compile(r"^# inputs sha256: ([0-9a-f]{64})$", re.M)
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", re.M)


def lock_inputs(pyproject: Path) -> list[str]:
    """The requirements the lock is resolved from, in pyproject's order."""
    project = tomllib.loads(pyproject.read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["dev"]]


def inputs_digest(pyproject: Path) -> str:
    return hashlib.sha256(json.dumps(lock_inputs(pyproject)).encode()).hexdigest()


def header(pyproject: Path) -> str:
    return ("# The lock of moe-pipeline's own set-up, CI and README commands. Written by `make lock`\n"
            "# (uv pip compile), installed by `make setup` (pip --require-hashes --no-deps).\n"
            "# CPython 3.11, x86-64 Linux, CPU. torch is left out: it is installed first, from the\n"
            "# local CPU wheel where there is one; its own dependencies are pinned here.\n"
            f"# inputs sha256: {inputs_digest(pyproject)}\n")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lock: Path) -> dict[str, str]:
    """Package name (normalised) -> pinned version."""
    return pins_of(lock.read_text())


def pins_of(text: str) -> dict[str, str]:
    return {normalise(m.group(1)): m.group(2) for m in _PIN.finditer(text)}


def disagreements(pyproject: Path, lock: Path) -> list[str]:
    """What is wrong between the two files; empty when the lock is the lock of this pyproject."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    text = lock.read_text()
    found = _DIGEST.search(text)
    problems = []
    if not found or found.group(1) != inputs_digest(pyproject):
        problems.append("pyproject.toml's dependencies changed since the lock was made; run `make lock`")
    pinned = pins(lock)
    for line in lock_inputs(pyproject):
        req = Requirement(line)
        name = normalise(req.name)
        if name in LEFT_OUT:
            continue
        if name not in pinned:
            problems.append(f"{req.name} is required by pyproject.toml but not in the lock")
        elif not req.specifier.contains(Version(pinned[name]), prereleases=True):
            problems.append(f"{req.name}=={pinned[name]} in the lock does not meet pyproject.toml's '{line}'")
    problems += [f"{name} is in the lock, which leaves it out" for name in LEFT_OUT & pinned.keys()]
    return problems


def entries(lock: Path) -> dict[str, tuple[str, list[str]]]:
    """Package name -> (its requirement lines with hashes, the packages that need it), from uv's
    `# via` comments; `moe-pipeline (pyproject.toml)` stands for the project itself."""
    found: dict[str, tuple[str, list[str]]] = {}
    blocks = re.split(r"\n(?=[A-Za-z0-9])", lock.read_text())
    for block in blocks:
        pin = _PIN.match(block)
        if not pin:
            continue
        requirement = "\n".join(line for line in block.splitlines() if not line.lstrip().startswith("#"))
        vias = re.findall(r"#\s+(?:via\s+)?([A-Za-z0-9][A-Za-z0-9._-]*)(?: \(pyproject\.toml\))?\s*$",
                          block, re.M)
        found[normalise(pin.group(1))] = (requirement.strip(), [normalise(v) for v in vias if v != "via"])
    return found


def runtime_subset(pyproject: Path, lock: Path) -> str:
    """The lock's lines (hashes kept) of what the package itself needs at run time: the closure of
    pyproject's `dependencies` over the lock's `# via` edges, without the dev extra's own."""
    from packaging.requirements import Requirement

    locked = entries(lock)
    needs: dict[str, set[str]] = {}
    for name, (_, vias) in locked.items():
        for parent in vias:
            needs.setdefault(parent, set()).add(name)
    project = tomllib.loads(pyproject.read_text())["project"]
    todo = [normalise(Requirement(r).name) for r in project["dependencies"]]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(needs.get(name, ()))
    return "".join(locked[name][0] + "\n" for name in sorted(seen) if name in locked)


def main(argv: list[str]) -> int:
    pyproject, lock = ROOT / "pyproject.toml", ROOT / "requirements.lock"
    if argv == ["header"]:
        sys.stdout.write(header(pyproject))
        return 0
    if argv == ["runtime"]:
        sys.stdout.write(runtime_subset(pyproject, lock))
        return 0
    if argv == ["check"]:
        problems = disagreements(pyproject, lock)
        for problem in problems:
            print(f"requirements.lock: {problem}", file=sys.stderr)
        return 1 if problems else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
