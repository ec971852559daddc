"""A new sqlite registry starts from a copy of MLflow's migrated, empty schema.

MLflow creates a new sqlite store by running every alembic migration from its first one
(about 2 s here, more than the demo's experts take to train together). The result is the
same for every store of one MLflow version, so the first store made on a machine leaves a
copy of it in the user's cache (`$MOE_PIPELINE_CACHE`, else `$XDG_CACHE_HOME/moe-pipeline`,
else `~/.cache/moe-pipeline`), keyed by MLflow's version and migration scripts and checked by
sha256; later stores start from that copy in milliseconds.

What this module must not do: put anything specific to one store in the copy (MLflow's
default experiment and its artifact location are created afterwards, by MLflow, for the real
path); use a copy made by another MLflow version; fail a command because the cache cannot be
written (it is an optimisation: without it MLflow migrates as it always does). Callers hold
the store's creation lock.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from moe_pipeline.hashing import sha256_file


def cache_dir() -> Path:
    explicit = os.environ.get("MOE_PIPELINE_CACHE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "moe-pipeline"


def _template_paths() -> tuple[Path, Path]:
    """Named by MLflow's version and its set of migration scripts, so that a copy made by
    another MLflow (a development build of the same version included) is never used."""
    import mlflow

    versions = Path(mlflow.__file__).parent / "store" / "db_migrations" / "versions"
    scripts = sorted(p.name for p in versions.glob("*.py")) if versions.is_dir() else []
    stem = f"mlflow-{mlflow.__version__}-{hashlib.sha256(' '.join(scripts).encode()).hexdigest()[:12]}-empty-store"
    return cache_dir() / f"{stem}.db", cache_dir() / f"{stem}.json"


def seed_new_store(path: Path) -> bool:
    """Copy the cached empty schema to `path` (which must not exist yet); True when it did.

    Where there is no valid copy yet, make one by running MLflow's own migrations on a
    temporary file, so that this store and every later one start from it.
    """
    template, checksum = _template_paths()
    if not _valid(template, checksum):
        # Any failure here leaves the store to MLflow, whose own migration then reports it.
        with contextlib.suppress(Exception):
            _make_template(template, checksum)
    if not _valid(template, checksum):
        return False
    partial = path.with_name(path.name + ".seeding")
    shutil.copyfile(template, partial)
    os.replace(partial, path)  # the store appears whole or not at all
    return True


def _valid(template: Path, checksum: Path) -> bool:
    try:
        expected = json.loads(checksum.read_text())["sha256"]
        return sha256_file(template) == expected
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _make_template(template: Path, checksum: Path) -> None:
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables

    template.parent.mkdir(parents=True, exist_ok=True)
    # A temporary file in the cache folder, then os.replace: two machines sharing a home
    # folder, or two stores created at once, never see half a template.
    handle, scratch = tempfile.mkstemp(dir=template.parent, suffix=".db")
    os.close(handle)
    os.unlink(scratch)  # MLflow creates the database file itself
    engine = sqlalchemy.create_engine(f"sqlite:///{scratch}")
    try:
        _initialize_tables(engine)  # exactly what MLflow runs on a new store
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(scratch)
        raise
    finally:
        engine.dispose()
    digest = sha256_file(Path(scratch))
    os.replace(scratch, template)
    partial = checksum.with_name(checksum.name + ".partial")
    partial.write_text(json.dumps({"sha256": digest}))
    os.replace(partial, checksum)
