"""Reading the MLflow store: the snapshot of versions, record tags and `current` aliases,
metric histories, verified artifacts. Writes live in `writes.py` (`Registry`).

mlflow is imported lazily, inside methods (only `registry/` imports it). One version = one MLflow run
with the weights and stored outputs as safetensors artifacts, registered with
`create_model_version` under `<pipeline>.<expert>`; its record lives in version tags.
Artifacts are verified against their recorded sha256 on every load. Nothing here trains.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator
from urllib.parse import unquote, urlparse

from moe_pipeline.errors import IntegrityError, RegistryError
from moe_pipeline.hashing import sha256_file
from moe_pipeline.longlived import long_lived
from moe_pipeline.pipeline.paths import project_root
from moe_pipeline.registry.versions import CURRENT, ExpertVersions
from moe_pipeline.state.record import Record, from_tags

if TYPE_CHECKING:
    from moe_pipeline.pipeline.spec import Pipeline

# Two runs writing one registry collide: sqlite's writer lock, and MLflow's tag upserts (read,
# then insert) racing into a unique key. Both leave nothing written, so the request is retried.
_TRANSIENT = re.compile(r"database is locked|UNIQUE constraint failed|duplicate key value|could not serialize|"
                        r"deadlock detected", re.IGNORECASE)
RETRIES = 6
DEFAULT_URI = "sqlite:///registry/mlflow.db"


def resolve_tracking_uri(pipeline: Pipeline, pipeline_path: Path) -> str:
    """MLFLOW_TRACKING_URI, else the pipeline's registry.tracking_uri, else the default store.

    A relative sqlite path is resolved against the project root, not the current directory,
    so every command finds the same store wherever it is started from.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or pipeline.registry.tracking_uri or DEFAULT_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(project_root(pipeline_path) / uri[len("sqlite:///"):])
    elif "://" not in uri:  # a bare folder path: MLflow's file store is deprecated, so use sqlite in it
        uri = "sqlite:///" + str((project_root(pipeline_path) / uri / "mlflow.db").resolve())
    return uri


def import_client() -> None:
    """Import the MLflow client now (a Ray worker warms up with it before its first expert)."""
    import mlflow.tracking  # noqa: F401


def sqlite_path(uri: str) -> Path | None:
    """The database file of an `sqlite:///` tracking URI, or None for any other store."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


class RegistryReader:
    """Reads the store: snapshot, metric history, verified artifacts. Has no method that writes."""

    def __init__(self, tracking_uri: str, pipeline_name: str):
        self.tracking_uri = tracking_uri
        self.pipeline_name = pipeline_name
        self.requests = 0  # registry calls made; the benchmarks report it
        self._client = None
        self._downloads: dict[tuple[str, str], Path] = {}  # artifacts of a remote store, fetched once

    # ------------------------------------------------------------ connection

    def model_name(self, expert: str) -> str:
        """The registered model name of an expert: `<pipeline>.<expert>`."""
        return f"{self.pipeline_name}.{expert}"

    def exists(self) -> bool:
        """False only for an sqlite store whose file is not there yet (nothing trained)."""
        path = sqlite_path(self.tracking_uri)
        return path is None or path.exists()

    @property
    def client(self):
        """The MLflow client, made (and mlflow imported) on first use."""
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self):
        # An unreachable server should fail in seconds, not after minutes of retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # our own output says what happens
        import logging

        for noisy in ("mlflow", "alembic"):  # migrations log at INFO; our tables say what happened
            logging.getLogger(noisy).setLevel(logging.WARNING)
        # MLflow's SQL store logs every database error it re-raises, traceback and all; we turn the
        # re-raised one into one message (a read-only or full registry would print pages of it)
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)

        path = sqlite_path(self.tracking_uri)
        lock: contextlib.AbstractContextManager = contextlib.nullcontext()
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise RegistryError(f"cannot create the registry folder {path.parent}: {exc.strerror}") from None
            # MLflow migrates a new sqlite store on first use; two processes doing that at once race.
            lock = _creation_lock(path)
        # importing mlflow, and the first request, which imports its SQL store and opens it
        with long_lived():
            from mlflow.tracking import MlflowClient

            with lock:
                if path is not None and not path.exists():
                    from moe_pipeline.registry.empty_store import seed_new_store

                    seed_new_store(path)
                try:
                    client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
                    client.search_experiments(max_results=1)
                    self.requests += 1
                except Exception as exc:  # mlflow raises many types; the user needs one clear message
                    raise RegistryError(f"cannot reach the MLflow registry at {self.tracking_uri}: "
                                        f"{_short(exc)}") from None
        return client

    def _call(self, what: str, fn, *args, **kwargs):
        """One registry request; retried a few times when a concurrent writer collided with it."""
        for attempt in range(RETRIES + 1):
            self.requests += 1
            try:
                return fn(*args, **kwargs)
            except RegistryError:
                raise
            except Exception as exc:
                if attempt < RETRIES and _TRANSIENT.search(str(exc)) and "RESOURCE_ALREADY_EXISTS" not in str(exc):
                    time.sleep(0.05 * 2 ** attempt)
                    continue
                raise RegistryError(f"MLflow registry at {self.tracking_uri}: {what} failed: {_short(exc)}") from None

    def artifact_root(self) -> str | None:
        """Where artifacts go for an sqlite store (`artifacts/` beside the database); None for others."""
        path = sqlite_path(self.tracking_uri)
        return (path.parent / "artifacts").resolve().as_uri() if path else None

    # ------------------------------------------------------------ reading

    def snapshot(self, fast: bool = False) -> dict[str, ExpertVersions]:
        """Every version and alias of this pipeline in two searches, not one request per expert.

        `fast`: on an sqlite store, read the same rows without mlflow (`fastread`); the read-only
        commands use it. The write path keeps the client, through which it also writes.
        """
        if not self.exists():
            return {}
        path = sqlite_path(self.tracking_uri)
        if fast and path is not None:
            from moe_pipeline.registry import fastread

            found = fastread.snapshot(path, self.pipeline_name, CURRENT)
            if found is not None:
                return found
        prefix = f"{self.pipeline_name}."
        pattern = prefix.replace("%", r"\%") + "%"
        out: dict[str, ExpertVersions] = {}
        search = f"name LIKE '{pattern}'"
        for model in self._pages("search registered models", self.client.search_registered_models, search, 1000):
            if model.name.startswith(prefix):
                current = (model.aliases or {}).get(CURRENT)
                out[model.name[len(prefix):]] = ExpertVersions(model.name[len(prefix):],
                                                               int(current) if current is not None else None,
                                                               model_tags=dict(model.tags or {}))
        for mv in self._pages("search model versions", self.client.search_model_versions, search, 200_000):
            if not mv.name.startswith(prefix):
                continue
            expert = mv.name[len(prefix):]
            versions = out.setdefault(expert, ExpertVersions(expert))
            record = from_tags(expert, int(mv.version), mv.run_id, dict(mv.tags or {}))
            if record is not None:
                versions.records[int(mv.version)] = record
                versions.sources[int(mv.version)] = mv.source
        return out

    def _pages(self, what: str, search, filter_string: str, page_size: int) -> Iterator:
        """Every result of a paged MLflow search; one request per page (one in practice)."""
        token = None
        while True:
            page = self._call(what, search, filter_string=filter_string, max_results=page_size, page_token=token)
            yield from page
            token = page.token
            if not token:
                return

    def left_debris(self) -> bool | None:
        """Whether a killed `run` on this host left a run RUNNING whose process is gone (what the
        write path's recovery would mark FAILED); None where only the MLflow client can tell."""
        import socket

        from moe_pipeline.registry import fastread
        from moe_pipeline.registry.scratch import pid_alive

        path = sqlite_path(self.tracking_uri)
        if path is None:
            return None
        if not path.exists():
            return False
        runs = fastread.running_runs(path, self.pipeline_name)
        if runs is None:
            return None
        host = socket.gethostname()
        return any(h == host and not pid_alive(int(pid or 0)) for _, h, pid in runs)

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """(step, value) of one metric of a run, by step."""
        history = self._call("metric history", self.client.get_metric_history, run_id, key)
        return sorted((m.step, m.value) for m in history)

    def local_artifacts(self, record: Record, source: str) -> Path:
        """A local folder holding the version's artifacts (downloaded when the store is remote)."""
        parsed = urlparse(source)
        if parsed.scheme in ("", "file"):
            return Path(unquote(parsed.path))
        # once per version and outputs folder in a process: a cutoff check's refreshed outputs are a new key
        key = (source, record.outputs_dir)
        if key not in self._downloads:
            import atexit
            import shutil

            import mlflow.artifacts

            from moe_pipeline.registry.scratch import prefix

            target = Path(tempfile.mkdtemp(prefix=prefix(f"{record.expert}-v{record.version}")))
            atexit.register(shutil.rmtree, target, True)
            self._downloads[key] = Path(self._call("download artifacts", mlflow.artifacts.download_artifacts,
                                                   artifact_uri=source, dst_path=str(target),
                                                   tracking_uri=self.tracking_uri))
        return self._downloads[key]

    def verify(self, record: Record, source: str) -> str | None:
        """What is wrong with a version's stored artifacts (every file its record lists), or None."""
        wanted = {**record.sha256, **(record.outputs_files or {})}
        if record.outputs_dir != "outputs":  # refreshed outputs replace the ones written at training
            wanted = {k: v for k, v in wanted.items() if not k.startswith("outputs/")}
        folder = self.local_artifacts(record, source)
        problems = (_artifact_problem(folder / name, name, digest) for name, digest in sorted(wanted.items()))
        return next((p for p in problems if p), None)

    def verified_path(self, record: Record, source: str, artifact: str) -> Path:
        """A local path of one artifact, after checking its sha256 against the record."""
        path = self.local_artifacts(record, source) / artifact
        problem = _artifact_problem(path, artifact, record.expected_sha256(artifact))
        if problem:
            raise IntegrityError(f"expert '{record.expert}' v{record.version}: {problem}. Retrain it: "
                                 f"`moe-pipeline run PIPELINE` (it is stale with reason INTEGRITY)")
        return path


def _artifact_problem(path: Path, artifact: str, expected: str | None) -> str | None:
    if expected is None:
        return f"no sha256 recorded for '{artifact}'"
    if not path.exists():
        return f"artifact '{artifact}' is missing from {path.parent}"
    actual = sha256_file(path)
    if actual != expected:
        return f"artifact '{artifact}' has sha256 {actual[:12]}..., its record says {expected[:12]}... (modified)"
    return None


def _creation_lock(path: Path):
    """The lock under which a new sqlite store is created and migrated. A folder this process
    cannot write holds a store nobody creates here (a read-only registry): no lock, and the
    store's own errors say what cannot be done."""
    from filelock import FileLock

    if not os.access(path.parent, os.W_OK):
        if path.exists():
            return contextlib.nullcontext()
        raise RegistryError(f"cannot create the registry {path}: its folder {path.parent} is not writable")
    return FileLock(str(path) + ".lock", timeout=120)


def _short(exc: Exception) -> str:
    """An MLflow or database error as one line, with what it means where the cause is known."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = text if len(text) < 300 else text[:297] + "..."
    if any(word in text for word in ("readonly database", "Read-only file system", "Operation not permitted",
                                     "Permission denied", "unable to open database file")):
        text += " (the registry cannot be written from here: a read-only folder or file system?)"
    elif any(word in text for word in ("database or disk is full", "No space left", "File too large", "disk I/O error")):
        text += " (writing the registry failed: is its disk full? Free space, then run again; what was half-written is not used)"
    return text
