"""The registry's write path: runs, their metrics and artifacts, model versions, tags, the
`current` alias. `RegistryReader` (reader.py) reads; a `Registry` writes through the reader's
connection (it holds one, it is not one), so a process that writes reads and writes with one
client. Only the write path (`execute/`'s steps, `status --record`, `export --register`,
inspection's uploads) holds a `Registry`. Must not decide what is stale or train.
"""
from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterator

from moe_pipeline.errors import RegistryError
from moe_pipeline.registry.reader import RegistryReader, _short
from moe_pipeline.registry.versions import CURRENT, HOST, PID
from moe_pipeline.state.record import NEEDS_RETRAIN, Record, to_tags

# MLflow's UI reads this experiment tag to choose its pages: model training, not a GenAI app's traces
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"


class Registry:
    """The store's writes: runs, artifacts, model versions, tags, the `current` alias.

    Built over a `RegistryReader` (given, or one of its own for `tracking_uri`): every request
    goes through that reader's client and is counted in its `requests`."""

    def __init__(self, tracking_uri: str, pipeline_name: str, reader: RegistryReader | None = None):
        self.reader = reader or RegistryReader(tracking_uri, pipeline_name)
        self.tracking_uri, self.pipeline_name = self.reader.tracking_uri, self.reader.pipeline_name
        self.tag_writes = 0  # tags set or deleted; `status --record` reports it
        self._experiment_id: str | None = None
        self._artifact_uris: dict[str, str] = {}  # run id -> artifact URI, of the runs this process created

    @classmethod
    def over(cls, reader: RegistryReader) -> "Registry":
        """The writes of the store `reader` reads, through its connection."""
        return cls(reader.tracking_uri, reader.pipeline_name, reader)

    @property
    def client(self):
        """The MLflow client of the reader it writes beside."""
        return self.reader.client

    @property
    def requests(self) -> int:
        return self.reader.requests

    @requests.setter
    def requests(self, value: int) -> None:
        self.reader.requests = value

    def model_name(self, expert: str) -> str:
        """The registered model name of an expert: `<pipeline>.<expert>`."""
        return self.reader.model_name(expert)

    def _call(self, what: str, fn, *args, **kwargs):
        return self.reader._call(what, fn, *args, **kwargs)

    def _pages(self, what: str, search, filter_string: str, page_size: int) -> Iterator:
        return self.reader._pages(what, search, filter_string, page_size)

    def experiment_id(self, create: bool = True) -> str | None:
        """The pipeline's experiment; made on first need (a training run) unless `create` is
        False, which answers None where it does not exist yet: a run that fails before training
        anything leaves no empty experiment behind."""
        if self._experiment_id is None and not create:
            experiment = self._call("get experiment", self.client.get_experiment_by_name, self.pipeline_name)
            return experiment.experiment_id if experiment is not None else None
        if self._experiment_id is None:
            from mlflow.exceptions import MlflowException

            experiment = self._call("get experiment", self.client.get_experiment_by_name, self.pipeline_name)
            if experiment is not None:
                self._experiment_id = experiment.experiment_id
                if EXPERIMENT_KIND not in experiment.tags:  # made before the kind was set: once
                    self._call("tag experiment", self.client.set_experiment_tag, self._experiment_id, EXPERIMENT_KIND,
                               MODEL_TRAINING)
                return self._experiment_id
            root = self.reader.artifact_root()
            try:
                self.requests += 1
                self._experiment_id = self.client.create_experiment(
                    self.pipeline_name, artifact_location=f"{root}/{self.pipeline_name}" if root else None,
                    tags={EXPERIMENT_KIND: MODEL_TRAINING})
            except MlflowException as exc:
                if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                    raise RegistryError(f"MLflow registry at {self.tracking_uri}: create experiment failed: "
                                        f"{_short(exc)}") from None
                # a concurrent run created it first: use theirs
                self._experiment_id = self._call("get experiment", self.client.get_experiment_by_name,
                                                 self.pipeline_name).experiment_id
        return self._experiment_id

    # ------------------------------------------------------------ writing

    @contextlib.contextmanager
    def training_run(self, expert: str, description: str = "", tags: dict[str, str] | None = None) -> Iterator[str]:
        """An MLflow run for one training; marked FAILED (and nothing registered) on any error."""
        run = self._call("create run", self.client.create_run, self.experiment_id(),
                         run_name=f"{expert}-{time.strftime('%Y%m%d-%H%M%S')}",
                         tags={"moe.expert": expert, "moe.pipeline": self.pipeline_name,
                               "mlflow.note.content": description, HOST: socket.gethostname(), PID: str(os.getpid()),
                               **(tags or {})})
        self._artifact_uris[run.info.run_id] = run.info.artifact_uri  # register() needs it: no second request
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

        experiment = self.experiment_id(create=False)
        if experiment is None:  # nothing ever ran here
            return {}
        runs = self._call("search runs", self.client.search_runs, [experiment],
                          filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST}` = '{socket.gethostname()}'",
                          max_results=10_000)
        dead = {r.info.run_id: [] for r in runs if not pid_alive(int(r.data.tags.get(PID, "0") or 0))}
        if dead:
            for mv in self._pages("search model versions", self.client.search_model_versions,
                                  f"name LIKE '{self.pipeline_name}.%'", 10_000):
                if mv.run_id in dead:
                    dead[mv.run_id].append((mv.name[len(self.pipeline_name) + 1:], int(mv.version)))
        return dead

    def running_runs_tagged(self, key: str, value: str) -> list[str]:
        """Ids of this pipeline's RUNNING runs whose tag `key` is `value`."""
        escaped = value.replace("'", "''")
        experiment = self.experiment_id(create=False)
        if experiment is None:
            return []
        runs = self._call("search runs", self.client.search_runs, [experiment],
                          filter_string=f"attributes.status = 'RUNNING' and tags.`{key}` = '{escaped}'", max_results=100)
        return [r.info.run_id for r in runs]

    def versions_of_run(self, run_id: str) -> list[tuple[str, int]]:
        """(expert, version) registered from one run."""
        found = self._pages("search model versions", self.client.search_model_versions, f"run_id = '{run_id}'", 1000)
        prefix = f"{self.pipeline_name}."
        return [(mv.name[len(prefix):], int(mv.version)) for mv in found if mv.name.startswith(prefix)]

    def finish_run(self, run_id: str, status: str) -> None:
        """End an MLflow run with `status` (FINISHED or FAILED)."""
        self._call("finish run", self.client.set_terminated, run_id, status)

    def log_training(self, run_id: str, params: dict[str, Any], history: list[dict[str, float]],
                     metrics: dict[str, float]) -> None:
        """Log a training run's parameters, per-epoch history and final metrics, in one batch."""
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        params_list = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        metric_list = [Metric(k, float(v), now, int(row["epoch"])) for row in history for k, v in row.items() if k != "epoch"]
        # the registered weights are the best epoch's: `best_val_accuracy` beside the per-epoch `val_accuracy`
        metric_list += [Metric(k if k.startswith("best_") else f"best_{k}", float(v), now, 0) for k, v in metrics.items()]
        # as few requests as MLflow's limits allow: 100 params and 1,000 entries in all per batch
        while params_list or metric_list:
            params, params_list = params_list[:100], params_list[100:]
            room = 1000 - len(params)
            metrics, metric_list = metric_list[:room], metric_list[room:]
            self._call("log metrics", self.client.log_batch, run_id, metrics=metrics, params=params)

    def log_report(self, files: list[Path], artifact_path: str) -> str:
        """A run of its own (tag `moe.kind: overview`, no expert) holding a pipeline-level report."""
        run = self._call("create run", self.client.create_run, self.experiment_id(),
                         run_name=f"{artifact_path}-{time.strftime('%Y%m%d-%H%M%S')}",
                         tags={"moe.kind": artifact_path, "moe.pipeline": self.pipeline_name,
                               HOST: socket.gethostname(), PID: str(os.getpid())})
        try:
            self.log_files(run.info.run_id, files, artifact_path)
        finally:
            self._call("finish run", self.client.set_terminated, run.info.run_id, "FINISHED")
        return run.info.run_id

    def log_artifacts(self, run_id: str, folder: Path, artifact_path: str | None = None) -> None:
        """Upload a sealed version folder as the run's artifacts. Into an artifact store on this
        machine's file system the files are hard-linked, not copied (a version's stored outputs
        are 144 bytes a row: copying them cost as much as writing them); where a link cannot be
        made (another file system), MLflow copies them."""
        local = _local_path(self._artifact_uri(run_id))

        def upload() -> None:
            if local is None or not _link_tree(folder, local / artifact_path if artifact_path else local):
                self.client.log_artifacts(run_id, str(folder), artifact_path)
        self._call("log artifacts", upload)

    def log_files(self, run_id: str, files: list[Path], artifact_path: str) -> None:
        """Upload exactly these files (one request), never the rest of the folder they sit in."""
        import shutil

        from moe_pipeline.registry.scratch import scratch_dir

        with scratch_dir("upload") as folder:
            for path in dict.fromkeys(files):
                shutil.copy2(path, folder / path.name)
            self.log_artifacts(run_id, folder, artifact_path)

    def link_report(self, expert: str, version: int, run_id: str, description: str, artifact: str) -> None:
        """The version's description (the MLflow UI's version list shows it) ends with a link to its
        inspect report, an artifact of the version's own run."""
        link = f"#/experiments/{self.experiment_id()}/runs/{run_id}/artifacts/{artifact}"
        text = (f"{description} · " if description else "") + f"inspect report: [{artifact}]({link}) (runs:/{run_id}/{artifact})"
        self._call("describe version", self.client.update_model_version, self.model_name(expert), str(version), text)

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
        artifact_uri = self._artifact_uri(run_id)
        tags = to_tags(record)
        mv = self._call("create model version", self.client.create_model_version, name, artifact_uri,
                        run_id=run_id, tags=tags, description=description or None)
        self._call("set alias", self.client.set_registered_model_alias, name, CURRENT, mv.version)
        record.version = int(mv.version)
        record.run_id = run_id
        return record, artifact_uri

    def _artifact_uri(self, run_id: str) -> str:
        """Where a run's artifacts live: known without a request for the runs this process created."""
        if run_id not in self._artifact_uris:  # a run another process created
            self._artifact_uris[run_id] = self._call("get run", self.client.get_run, run_id).info.artifact_uri
        return self._artifact_uris[run_id]

    def set_tags(self, expert: str, version: int, tags: dict[str, str]) -> None:
        """Set tags on one model version."""
        for key, value in tags.items():
            self.tag_writes += 1
            self._call("set tag", self.client.set_model_version_tag, self.model_name(expert), str(version), key, value)

    def delete_tag(self, expert: str, version: int, key: str) -> None:
        """Delete one tag of one model version."""
        self.tag_writes += 1
        self._call("delete tag", self.client.delete_model_version_tag, self.model_name(expert), str(version), key)

    def set_model_tag(self, expert: str, key: str, value: str) -> None:
        """A tag of the registered model: what the MLflow UI's model list shows in its Tags column."""
        self.tag_writes += 1
        self._call("set model tag", self.client.set_registered_model_tag, self.model_name(expert), key, value)

    def mark_needs_retrain(self, expert: str, version: int, reason: str | None) -> None:
        """Set a version's `moe.needs_retrain` to `reason`, or delete it when `reason` is None."""
        if reason is None:
            self.delete_tag(expert, version, NEEDS_RETRAIN)
        else:
            self.set_tags(expert, version, {NEEDS_RETRAIN: reason})

    def delete_version(self, expert: str, version: int) -> None:
        """Delete one model version (one a killed run registered but never made current)."""
        self._call("delete version", self.client.delete_model_version, self.model_name(expert), str(version))

    def register_system(self, folder: Path, pinned: str, description: str) -> int:
        """Log an exported system as a run's artifacts, register it as model `<pipeline>`, and
        point its `current` alias at the new version; the tag `moe.pinned` names the expert versions."""
        from mlflow.exceptions import MlflowException

        name = self.pipeline_name
        with self.training_run("system", description) as run_id:
            self.log_artifacts(run_id, folder)
            try:
                self.requests += 1
                self.client.create_registered_model(name, description=description)
            except MlflowException as exc:
                if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                    raise RegistryError(f"cannot create registered model {name}: {_short(exc)}") from None
            mv = self._call("create model version", self.client.create_model_version, name, self._artifact_uri(run_id),
                            run_id=run_id, tags={"moe.pinned": pinned}, description=description)
            self._call("set alias", self.client.set_registered_model_alias, name, CURRENT, mv.version)
            self._call("set model tag", self.client.set_registered_model_tag, name, "moe.pinned", pinned)
        return int(mv.version)



def _local_path(uri: str) -> Path | None:
    """The folder of a `file:` (or plain path) artifact URI; None for a remote store."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file") or parsed.netloc not in ("", "localhost"):
        return None
    return Path(unquote(parsed.path))


def _link_tree(folder: Path, target: Path) -> bool:
    """Hard-link every file under `folder` to the same place under `target`; False (and what was
    linked removed again) where a link cannot be made, for MLflow to copy instead."""
    import os

    made: list[Path] = []
    try:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            dest = target / path.relative_to(folder)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, dest)
            made.append(dest)
    except OSError:
        for dest in made:
            dest.unlink(missing_ok=True)
        return False
    return True
