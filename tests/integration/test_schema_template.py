"""A new sqlite registry starts from the cached copy of MLflow's migrated empty schema: the
store it gives is the one MLflow's own migration gives, and a damaged copy is never used."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from moe_pipeline.registry.empty_store import _template_paths, seed_new_store
from moe_pipeline.registry.reader import RegistryReader


def _clauses(sql: str | None) -> list[str]:
    # MLflow's own migrations list a table's constraints in varying order from one run to the
    # next (alembic's batch mode iterates a set), so a table is compared clause by clause
    return sorted(line.strip().rstrip(",") for line in (sql or "").splitlines())


def _schema(path: Path) -> tuple[list, list]:
    with sqlite3.connect(path) as db:
        tables = sorted((kind, name, _clauses(sql))
                        for kind, name, sql in db.execute("SELECT type, name, sql FROM sqlite_master"))
        revision = db.execute("SELECT version_num FROM alembic_version").fetchall()
    return tables, revision


def _experiments_in_file(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT * FROM experiments").fetchall()


def _experiments(uri: str) -> list[tuple]:
    client = RegistryReader(uri, "p").client
    return [(e.experiment_id, e.name, e.artifact_location, e.lifecycle_stage) for e in client.search_experiments()]


def test_a_seeded_store_is_the_store_mlflow_migrates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MOE_PIPELINE_CACHE", str(tmp_path / "cache"))
    plain = tmp_path / "plain" / "mlflow.db"
    plain.parent.mkdir()
    monkeypatch.chdir(tmp_path / "plain")  # MLflow's default artifact root is relative to the current folder
    MlflowClient(tracking_uri=f"sqlite:///{plain}").search_experiments()  # MLflow's own migration
    first, second = tmp_path / "a" / "mlflow.db", tmp_path / "b" / "mlflow.db"
    RegistryReader(f"sqlite:///{first}", "p").client  # makes the template, then copies it
    template, checksum = _template_paths()
    assert template.exists() and checksum.exists()
    before = template.stat().st_mtime_ns
    RegistryReader(f"sqlite:///{second}", "p").client  # copies the template made above
    assert template.stat().st_mtime_ns == before
    assert _schema(first) == _schema(second) == _schema(plain)
    # what is specific to one store is made by MLflow for that store, not copied
    assert not _experiments_in_file(template)
    monkeypatch.chdir(tmp_path / "plain")
    assert _experiments(f"sqlite:///{second}") == _experiments(f"sqlite:///{plain}")


def test_a_damaged_template_is_made_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MOE_PIPELINE_CACHE", str(tmp_path / "cache"))
    assert seed_new_store(tmp_path / "one.db")
    template, _ = _template_paths()
    data = bytearray(template.read_bytes())
    data[200] ^= 0xFF  # a flipped byte inside the schema
    template.write_bytes(bytes(data))
    assert seed_new_store(tmp_path / "two.db")
    assert _schema(tmp_path / "two.db") == _schema(tmp_path / "one.db")
    assert template.read_bytes() != bytes(data)


def test_an_unwritable_cache_leaves_the_store_to_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("MOE_PIPELINE_CACHE", str(blocker / "cache"))
    store = tmp_path / "r" / "mlflow.db"
    assert not seed_new_store(store)
    RegistryReader(f"sqlite:///{store}", "p").client  # MLflow migrates as it always does
    assert _schema(store)[1]
