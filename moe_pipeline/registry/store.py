"""Everything MLflow: the store, versions, record tags, the `current` alias, staleness tags.

The only module that imports mlflow (lazily, inside methods). One version = one MLflow run
with the weights and stored outputs as safetensors artifacts, registered with
`create_model_version` under `<pipeline>.<expert>`; its record lives in version tags.
Artifacts are verified against their recorded sha256 on every load. Nothing here trains.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator
from urllib.parse import unquote, urlparse

from moe_pipeline.errors import IntegrityError, RegistryError
from moe_pipeline.pipeline.loader import project_root
from moe_pipeline.state.record import NEEDS_RETRAIN, Record, from_tags, to_tags

if TYPE_CHECKING:
    from moe_pipeline.pipeline.spec import Pipeline

CURRENT = "current"
# Two runs writing one registry collide: sqlite's writer lock, and MLflow's tag upserts (read,
# then insert) racing into a unique key. Both leave nothing written, so the request is retried.
_TRANSIENT = re.compile(r"database is locked|UNIQUE constraint failed|duplicate key value|could not serialize|"
                        r"deadlock detected", re.IGNORECASE)
RETRIES = 6
HOST, PID = "moe.host", "moe.pid"  # who trains a run: the next run marks runs of dead processes FAILED
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


def sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class ExpertVersions:
    """Every registered version of one expert, and which one is `current`."""

    name: str
    current: int | None = None
    records: dict[int, Record] = field(default_factory=dict)
    sources: dict[int, str] = field(default_factory=dict)  # version -> artifact URI
    model_tags: dict[str, str] = field(default_factory=dict)  # tags of the registered model itself

    @property
    def current_record(self) -> Record | None:
        return self.records.get(self.current) if self.current is not None else None


class RegistryReader:
    """Reads the store: snapshot, metric history, verified artifacts. Has no method that writes."""

    def __init__(self, tracking_uri: str, pipeline_name: str):
        self.tracking_uri = tracking_uri
        self.pipeline_name = pipeline_name
        self.requests = 0  # registry calls made; the benchmarks report it
        self.tag_writes = 0  # tags set or deleted; `status --record` reports it
        self._client = None
        self._experiment_id: str | None = None
        self._downloads: dict[tuple[str, str], Path] = {}  # artifacts of a remote store, fetched once

    # ------------------------------------------------------------ connection

    def model_name(self, expert: str) -> str:
        return f"{self.pipeline_name}.{expert}"

    def exists(self) -> bool:
        """False only for an sqlite store whose file is not there yet (nothing trained)."""
        path = sqlite_path(self.tracking_uri)
        return path is None or path.exists()

    @property
    def client(self):
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self):
        # An unreachable server should fail in seconds, not after minutes of retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # our own output says what happens
        import logging

        from filelock import FileLock
        from mlflow.tracking import MlflowClient

        for noisy in ("mlflow", "alembic"):  # migrations log at INFO; our tables say what happened
            logging.getLogger(noisy).setLevel(logging.WARNING)

        path = sqlite_path(self.tracking_uri)
        lock: contextlib.AbstractContextManager = contextlib.nullcontext()
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise RegistryError(f"cannot create the registry folder {path.parent}: {exc.strerror}") from None
            # MLflow migrates a new sqlite store on first use; two processes doing that at once race.
            lock = FileLock(str(path) + ".lock", timeout=120)
        with lock:
            try:
                client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
                client.search_experiments(max_results=1)
                self.requests += 1
            except Exception as exc:  # mlflow raises many types; the user needs one clear message
                raise RegistryError(f"cannot reach the MLflow registry at {self.tracking_uri}: {_short(exc)}") from None
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


class Registry(RegistryReader):
    """The store, with the writes: runs, artifacts, model versions, tags, the `current` alias."""

    def experiment_id(self) -> str:
        if self._experiment_id is None:
            from mlflow.exceptions import MlflowException

            experiment = self._call("get experiment", self.client.get_experiment_by_name, self.pipeline_name)
            if experiment is None:
                root = self.artifact_root()
                location = f"{root}/{self.pipeline_name}" if root else None
                try:
                    self.requests += 1
                    self._experiment_id = self.client.create_experiment(self.pipeline_name, artifact_location=location)
                except MlflowException as exc:
                    if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                        raise RegistryError(f"MLflow registry at {self.tracking_uri}: create experiment failed: "
                                            f"{_short(exc)}") from None
                    experiment = None  # a concurrent run created it first: use theirs
            if experiment is None and self._experiment_id is None:
                experiment = self._call("get experiment", self.client.get_experiment_by_name, self.pipeline_name)
            if self._experiment_id is None:
                self._experiment_id = experiment.experiment_id
        return self._experiment_id

    # ------------------------------------------------------------ writing

    @contextlib.contextmanager
    def training_run(self, expert: str, description: str = "") -> Iterator[str]:
        """An MLflow run for one training; marked FAILED (and nothing registered) on any error."""
        run = self._call("create run", self.client.create_run, self.experiment_id(),
                         run_name=f"{expert}-{time.strftime('%Y%m%d-%H%M%S')}",
                         tags={"moe.expert": expert, "moe.pipeline": self.pipeline_name,
                               "mlflow.note.content": description, HOST: socket.gethostname(), PID: str(os.getpid())})
        try:
            yield run.info.run_id
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.set_terminated(run.info.run_id, "FAILED")
            raise
        self._call("finish run", self.client.set_terminated, run.info.run_id, "FINISHED")

    def dead_runs(self) -> dict[str, list[tuple[str, int]]]:
        """Runs of this pipeline still RUNNING whose process (on this host) is gone, with the
        (expert, version) pairs registered from each. Runs of other hosts are left alone."""
        from moe_pipeline.registry.scratch import pid_alive

        runs = self._call("search runs", self.client.search_runs, [self.experiment_id()],
                          filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST}` = '{socket.gethostname()}'",
                          max_results=10_000)
        dead = {r.info.run_id: [] for r in runs if not pid_alive(int(r.data.tags.get(PID, "0") or 0))}
        if dead:
            for mv in self._pages("search model versions", self.client.search_model_versions,
                                  f"name LIKE '{self.pipeline_name}.%'", 10_000):
                if mv.run_id in dead:
                    dead[mv.run_id].append((mv.name[len(self.pipeline_name) + 1:], int(mv.version)))
        return dead

    def run_status(self, run_id: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            self.requests += 1
            return self.client.get_run(run_id).info.status
        except MlflowException:
            return None

    def versions_of_run(self, run_id: str) -> list[tuple[str, int]]:
        """(expert, version) registered from one run."""
        found = self._pages("search model versions", self.client.search_model_versions, f"run_id = '{run_id}'", 1000)
        prefix = f"{self.pipeline_name}."
        return [(mv.name[len(prefix):], int(mv.version)) for mv in found if mv.name.startswith(prefix)]

    def finish_run(self, run_id: str, status: str) -> None:
        self._call("finish run", self.client.set_terminated, run_id, status)

    def log_training(self, run_id: str, params: dict[str, Any], history: list[dict[str, float]],
                     metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        params_list = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        metric_list = [Metric(k, float(v), now, int(row["epoch"])) for row in history for k, v in row.items() if k != "epoch"]
        metric_list += [Metric(f"final_{k}", float(v), now, 0) for k, v in metrics.items()]  # best-epoch weights
        for start in range(0, max(len(params_list), len(metric_list)), 100):  # MLflow's batch limits
            self._call("log metrics", self.client.log_batch, run_id, metrics=metric_list[start:start + 100],
                       params=params_list[start:start + 100])

    def log_artifacts(self, run_id: str, folder: Path, artifact_path: str | None = None) -> None:
        self._call("log artifacts", self.client.log_artifacts, run_id, str(folder), artifact_path)

    def log_files(self, run_id: str, files: list[Path], artifact_path: str) -> None:
        """Upload exactly these files (one request), never the rest of the folder they sit in."""
        import shutil

        from moe_pipeline.registry.scratch import scratch_dir

        with scratch_dir("upload") as folder:
            for path in dict.fromkeys(files):
                shutil.copy2(path, folder / path.name)
            self.log_artifacts(run_id, folder, artifact_path)

    def register(self, record: Record, run_id: str, description: str = "") -> tuple[Record, str]:
        """Create the model version from the run's artifacts, then (last) point `current` at it.

        Returns the record with its version number, and the version's artifact URI.
        """
        from mlflow.exceptions import MlflowException

        name = self.model_name(record.expert)
        try:
            self.requests += 1
            self.client.create_registered_model(name, description=description or None)
        except MlflowException as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                raise RegistryError(f"cannot create registered model {name}: {_short(exc)}") from None
        run = self._call("get run", self.client.get_run, run_id)
        tags = to_tags(record)
        mv = self._call("create model version", self.client.create_model_version, name, run.info.artifact_uri,
                        run_id=run_id, tags=tags, description=description or None)
        self._call("set alias", self.client.set_registered_model_alias, name, CURRENT, mv.version)
        record.version = int(mv.version)
        record.run_id = run_id
        return record, run.info.artifact_uri

    def set_tags(self, expert: str, version: int, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.tag_writes += 1
            self._call("set tag", self.client.set_model_version_tag, self.model_name(expert), str(version), key, value)

    def delete_tag(self, expert: str, version: int, key: str) -> None:
        self.tag_writes += 1
        self._call("delete tag", self.client.delete_model_version_tag, self.model_name(expert), str(version), key)

    def set_model_tag(self, expert: str, key: str, value: str) -> None:
        """A tag of the registered model: what the MLflow UI's model list shows in its Tags column."""
        self.tag_writes += 1
        self._call("set model tag", self.client.set_registered_model_tag, self.model_name(expert), key, value)

    def mark_needs_retrain(self, expert: str, version: int, reason: str | None) -> None:
        if reason is None:
            self.delete_tag(expert, version, NEEDS_RETRAIN)
        else:
            self.set_tags(expert, version, {NEEDS_RETRAIN: reason})

    def delete_version(self, expert: str, version: int) -> None:
        self._call("delete version", self.client.delete_model_version, self.model_name(expert), str(version))


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) < 300 else text[:297] + "..."
