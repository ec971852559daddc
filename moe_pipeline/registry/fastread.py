"""The registry snapshot of one pipeline read straight from an sqlite store, without mlflow.

`status`, `dag`, `impact` and `run --dry-run` need every version's tags and each model's
`current` alias: two searches through the MLflow client, after importing mlflow (~1.6 s).
On a local sqlite store the same rows come from a read-only connection in milliseconds.
A test proves the result equal to the client's on a real registry; any surprise in the
schema (another MLflow version) returns None and the caller uses the client. Must not
import mlflow, and never opens the database for writing.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

from moe_pipeline.state.record import from_tags

DELETED = "Deleted_Internal"  # MLflow's mark on a deleted model version (kept as a row)


def snapshot(db: Path, pipeline_name: str, current_alias: str) -> dict | None:
    """{expert: ExpertVersions}, exactly as `RegistryReader.snapshot` builds it, or None."""
    from moe_pipeline.registry.versions import ExpertVersions

    prefix = f"{pipeline_name}."
    try:
        with sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30) as conn:
            conn.execute("BEGIN")  # one read transaction: every SELECT sees the same state under concurrent runs
            scoped = _workspace_clause(conn)
            models = conn.execute(f"SELECT name FROM registered_models WHERE substr(name, 1, ?) = ?{scoped}",
                                  (len(prefix), prefix)).fetchall()
            aliases = dict(conn.execute(f"SELECT name, version FROM registered_model_aliases WHERE alias = ? AND "
                                        f"substr(name, 1, ?) = ?{scoped}", (current_alias, len(prefix), prefix)))
            model_tags: dict[str, dict[str, str]] = {}
            for name, key, value in conn.execute(f"SELECT name, key, value FROM registered_model_tags WHERE "
                                                 f"substr(name, 1, ?) = ?{scoped}", (len(prefix), prefix)):
                model_tags.setdefault(name, {})[key] = value
            versions = conn.execute(f"SELECT name, version, run_id, source FROM model_versions WHERE "
                                    f"substr(name, 1, ?) = ? AND (current_stage IS NULL OR current_stage != ?)"
                                    f"{scoped}", (len(prefix), prefix, DELETED)).fetchall()
            tags: dict[tuple[str, int], dict[str, str]] = {}
            for name, version, key, value in conn.execute(f"SELECT name, version, key, value FROM model_version_tags "
                                                          f"WHERE substr(name, 1, ?) = ?{scoped}", (len(prefix), prefix)):
                tags.setdefault((name, int(version)), {})[key] = value
    except sqlite3.Error:  # a schema this code does not know: the MLflow client reads it instead
        return None
    out = {}
    for (name,) in models:
        current = aliases.get(name)
        out[name[len(prefix):]] = ExpertVersions(name[len(prefix):], int(current) if current is not None else None,
                                                 model_tags=model_tags.get(name, {}))
    for name, version, run_id, source in versions:
        expert = name[len(prefix):]
        entry = out.setdefault(expert, ExpertVersions(expert))
        record = from_tags(expert, int(version), run_id, tags.get((name, int(version)), {}))
        if record is not None:
            entry.records[int(version)] = record
            entry.sources[int(version)] = source
    return out


def _workspace_clause(conn: sqlite3.Connection) -> str:
    """Stores written by an MLflow with workspaces keep every row in workspace 'default'."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(model_versions)")}
    return " AND workspace = 'default'" if "workspace" in columns else ""


def running_runs(db: Path, experiment: str) -> list[tuple[str, str | None, str | None]] | None:
    """(run id, `moe.host`, `moe.pid`) of every RUNNING run of one experiment, or None when the
    schema is not the one this code knows (the caller then asks the MLflow client)."""
    from moe_pipeline.registry.versions import HOST, PID

    try:
        with sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30) as conn:
            rows = conn.execute(
                "SELECT r.run_uuid, "
                "(SELECT value FROM tags t WHERE t.run_uuid = r.run_uuid AND t.key = ?), "
                "(SELECT value FROM tags t WHERE t.run_uuid = r.run_uuid AND t.key = ?) "
                "FROM runs r JOIN experiments e ON r.experiment_id = e.experiment_id "
                "WHERE e.name = ? AND r.status = 'RUNNING' AND r.lifecycle_stage = 'active'",
                (HOST, PID, experiment)).fetchall()
    except sqlite3.Error:
        return None
    return [(run_id, host, pid) for run_id, host, pid in rows]
