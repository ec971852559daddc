"""Train one expert into a folder of version files: here, or in `run`'s training process.

`train_into` is the torch half of writing a version: train, then write weights, stored
outputs, probe and spec into a scratch folder, and summarise what the record needs
(`TrainingSummary`). The write path (`execute.new_version`) logs and registers that folder
under the expert's lease. It asks a trainer to `prepare` an expert (build its data from the
verified upstream outputs files) and to `train` it: `TrainingHere` in its own process, or
`TrainingProcess`.

`run` with something to train starts a training process (`TrainingProcess`) as soon as its
read-only plan says so. It opens the pipeline `run` validated (`TrainingOpening`, never the
YAML file), then imports torch and loads the sources while `run`'s own process imports mlflow
and opens the registry: on two cores, the two imports overlap. It then builds each expert's
data and trains it when asked (`TrainingJob`), reading upstream outputs only from the verified
artifact files it is handed. Requests and replies are JSON lines on its stdin and stdout (its
own prints go to stderr): no pickle. It dies with its parent (Linux: PR_SET_PDEATHSIG;
elsewhere at its next read).

Must not import mlflow or write to the registry: only the process holding the lease does.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from moe_pipeline import errors
from moe_pipeline.errors import TrainingError
from moe_pipeline.execute.training_contracts import TrainingJob, TrainingOpening, TrainingSummary

Progress = Callable[[int, int, dict[str, float]], None]


Located = Callable[[str], contextlib.AbstractContextManager]  # phase ("target", "model") -> error context


def fitted_transforms(pipeline, store, expert: str) -> dict[str, dict]:
    """Fitted preprocessing of the source fields this expert reads: {source.field: parameters}."""
    from moe_pipeline.state.fingerprint import data_refs

    out = {}
    for ref in data_refs(pipeline, expert):
        owner, _, field = ref.partition(".")
        params = store.described(owner).transforms.get(field)
        if params:
            out[ref] = params
    return out


def train_into(folder: Path, job: TrainingJob, pipeline, store, data, located: Located,
               progress: Progress | None = None) -> TrainingSummary:
    """Train `job` on `data` and write the version's tensors and spec under `folder`; returns
    what the record and the run need. What the model's code or training raises is raised
    inside `located("model")`."""
    from moe_pipeline.registry.artifacts import write_version_files
    from moe_pipeline.state.cutoff import probe_rows
    from moe_pipeline.state.version_spec import VersionSpec
    from moe_pipeline.training.metrics import primary_metric, weakest_class
    from moe_pipeline.training.train import release, train_expert

    from moe_pipeline.data.rowfile import RowFile
    from moe_pipeline.registry.artifacts import PROBE, OutputsWriter, outputs_file, read_rows, write_outputs

    expert_spec = pipeline.experts[job.expert]
    on_disk = isinstance(data.x["train"], RowFile)  # resources.max_host_memory_gb: outputs written a chunk at a time
    outputs_to = (lambda split: lambda rows, shapes: OutputsWriter(folder / outputs_file(split), rows, shapes)) \
        if on_disk else None
    with located("model"):
        result = train_expert(expert_spec.model, expert_spec.train, pipeline.resources_for(job.expert), data,
                              job.init_seed, progress, order_seed=job.order_seed, outputs_to=outputs_to)
    transforms = fitted_transforms(pipeline, store, job.expert)
    saved_spec = VersionSpec(spec=job.spec, in_shape=list(data.in_shape), n_outputs=data.n_outputs, task=data.task,
                             blocks=[(b.ref, b.start, b.stop) for b in data.blocks], micro_batch=result.micro_batch,
                             device=result.device, transforms=transforms, feature_names=data.feature_names,
                             class_names=data.class_names,
                             fields={b.ref: store.field_format(b.ref) for b in data.blocks
                                     if b.ref.partition(".")[0] in pipeline.sources})
    probe = probe_rows(len(data.y["val"]), job.probe_size)
    write_version_files(folder, result.model, result.initial_first_layer, None if on_disk else result.outputs,
                        saved_spec, probe)
    val_logits = read_rows(folder / outputs_file("val"), "logits", 0, len(data.y["val"])) if on_disk else \
        result.outputs["val"]["logits"]
    if on_disk:  # the behaviour reference: the probe rows' probabilities, read back
        probs = read_rows(folder / outputs_file("val"), "probs", 0, len(data.y["val"]))
        write_outputs(folder / PROBE, {"rows": probe, "probs": probs[probe]})
    weakest = (weakest_class(val_logits, data.y["val"], data.class_names)
               if data.task == "classification" and len(data.y["val"]) else None)
    summary = TrainingSummary(task=data.task, metric=primary_metric(data.task), history=result.history,
                              metrics=result.metrics, seconds=result.seconds, peak_memory_mb=result.peak_memory_mb,
                              micro_batch=result.micro_batch, device=result.device, epochs_run=result.epochs_run,
                              baseline=data.baseline(), weakest=weakest)
    del result
    release()
    return summary


class TrainingHere:
    """Training in this process, behind the two calls the training process answers."""

    def __init__(self, pipeline, store):
        self.pipeline, self.store = pipeline, store
        self._data = None
        self._scratch: Path | None = None  # the prepared expert's input rows on disk (max_host_memory_gb)

    def prepare(self, expert: str, upstream: dict[str, dict[str, str]], located: Located) -> None:
        """Build the expert's inputs and target; `upstream`: expert -> split -> verified outputs file."""
        from moe_pipeline.data.inputs import build_expert_data
        from moe_pipeline.data.rowfile import rows_folder
        from moe_pipeline.data.store import SPLITS
        from moe_pipeline.data.streamed_inputs import build_streamed_expert_data, reads_streamed
        from moe_pipeline.registry.artifacts import read_tensors
        from moe_pipeline.training.memory import reset_peak

        reset_peak()  # the expert's peak: from here (its sources already resident) to the end of training
        self._drop_scratch()
        with located("target"):
            if reads_streamed(self.pipeline, expert):
                budget = self.pipeline.resources_for(expert).max_host_memory_gb
                self._scratch = rows_folder(self.store.root or Path.cwd())
                self._data = build_streamed_expert_data(
                    expert, self.pipeline.experts[expert], self.store,
                    {up: {split: Path(files[split]) for split in SPLITS} for up, files in upstream.items()},
                    self._scratch, int(budget * 2**30))
            else:
                outputs = {up: {split: read_tensors(Path(files[split])) for split in SPLITS}
                           for up, files in upstream.items()}
                self._data = build_expert_data(expert, self.pipeline.experts[expert], self.store, outputs)
        with located("model"):  # an unbuildable model, or one over budget, fails before its run is opened
            from moe_pipeline.training.models import check_buildable
            from moe_pipeline.training.train import check_fits

            model = self.pipeline.experts[expert].model
            check_buildable(model, self._data.in_shape, self._data.n_outputs)
            check_fits(model, self._data, self.pipeline.resources_for(expert).max_memory_gb)

    def train(self, job: TrainingJob, folder: Path, located: Located, progress: Progress | None) -> TrainingSummary:
        """Train the prepared expert into `folder`."""
        from moe_pipeline.training.memory import peak_rss_bytes

        data, self._data = self._data, None  # freed with this call: peak memory is one expert's
        try:
            summary = train_into(folder, job, self.pipeline, self.store, data, located, progress)
        finally:
            del data
            self._drop_scratch()
        if summary.device == "cpu":  # the process's real peak (data, model, training); on a GPU, the device's
            summary.peak_memory_mb = max(summary.peak_memory_mb, peak_rss_bytes() / 2**20)
        return summary


    def _drop_scratch(self) -> None:
        import shutil

        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


# ---------------------------------------------------------------- `run`'s side


class TrainingProcess:
    """The training process, seen from `run`: started early, asked to build data and train, stopped."""

    def __init__(self, opening: TrainingOpening):
        """`opening`: the pipeline as `run` read it, and the experts the plan will train (the process
        loads their sources while it waits)."""
        # it imports what `run` would: this very package, the project's code, what a caller added to sys.path
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)}
        self._proc = subprocess.Popen([sys.executable, "-m", "moe_pipeline.execute.training_process"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, env=env)
        self._ready = False
        self.doing = "loading the sources"  # what it was doing, should it die
        self._send(open=opening.to_json())

    def prepare(self, expert: str, upstream: dict[str, dict[str, str]], located: Located) -> None:
        """Build the expert's inputs and target there; `upstream`: expert -> split -> verified outputs file."""
        self.doing = f"preparing {expert}"
        if not self._ready:
            self._reply("ready", located)
            self._ready = True
        self._send(prepare={"expert": expert, "upstream": upstream})
        self._reply("prepared", located)

    def train(self, job: TrainingJob, folder: Path, located: Located, progress: Progress | None) -> TrainingSummary:
        """Train the prepared expert into `folder`; progress arrives epoch by epoch."""
        self.doing = f"training {job.expert}"
        self._send(train={"job": job.to_json(), "folder": str(folder), "progress": progress is not None})
        return TrainingSummary.from_json(self._reply("trained", located, progress))

    def close(self) -> None:
        """Ask it to end (end of input), and make sure it has."""
        with contextlib.suppress(OSError):
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def __enter__(self) -> "TrainingProcess":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is not None:  # interrupted or failed: do not wait for an expert to finish training
            self._proc.kill()
        self.close()

    def _send(self, **message: Any) -> None:
        try:
            self._proc.stdin.write(json.dumps(message) + "\n")
            self._proc.stdin.flush()
        except OSError:
            raise self._died() from None

    def _reply(self, kind: str, located: Located, progress: Progress | None = None) -> Any:
        for line in self._proc.stdout:
            message = json.loads(line)
            if "progress" in message:
                if progress is not None:
                    progress(*message["progress"])
                continue
            if "error" in message:
                raise_as_there(message["error"], located)
            return message[kind]
        raise self._died()

    def _died(self) -> TrainingError:
        import resource
        import signal

        from moe_pipeline.training.memory import killed_message, machine_memory_bytes

        code = self._proc.wait()
        if code == -signal.SIGKILL:  # the largest child reaped so far: this one (Ray's workers are not ours)
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
            return TrainingError(killed_message(self.doing, peak, machine_memory_bytes()))
        return TrainingError(f"the training process ended unexpectedly (exit code {code}); its messages are above")


def raise_as_there(error: dict[str, Any], located: Located) -> None:
    """Raise here the error the training process met, inside the same `located` phase, so the
    message reads exactly as if training had run in this process."""
    cls = getattr(errors, error["type"], None) if error["ours"] else None
    ours = isinstance(cls, type) and issubclass(cls, errors.MoeError)
    if error["phase"] is None and not ours:  # not the model's or the data's: our own failure there
        raise TrainingError(f"the training process failed: {error['type']}: {error['message']}")
    if not ours:
        cls = type(error["type"], (Exception,), {})  # the model's own exception type, by name
    exc = cls.__new__(cls)
    Exception.__init__(exc, error["message"])
    if error.get("placed"):  # a source's data error, already at the source's key
        exc.placed = True
    with located(error["phase"]) if error["phase"] else contextlib.nullcontext():
        raise exc


# ---------------------------------------------------------------- the training process


def _serve(replies) -> None:
    from moe_pipeline.longlived import long_lived

    with long_lived():  # see moe_pipeline.longlived
        import moe_pipeline.training.train  # noqa: F401
        from moe_pipeline.data.statcache import StatCache
        from moe_pipeline.data.store import DataStore
        from moe_pipeline.pipeline.loader import make_importable
        from moe_pipeline.pipeline.paths import project_root
        from moe_pipeline.pipeline.spec import Pipeline
        from moe_pipeline.state.fingerprint import data_refs

    def send(**message: Any) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    def send_error(exc: Exception) -> None:
        send(error={"type": type(exc).__name__, "ours": isinstance(exc, errors.MoeError), "message": str(exc),
                    "phase": getattr(exc, "moe_phase", None), "placed": getattr(exc, "placed", False)})

    try:
        opening = TrainingOpening.from_json(json.loads(sys.stdin.readline())["open"])
        path = Path(opening.path)
        pipeline = Pipeline.model_validate(opening.pipeline)
        make_importable(path)
        root = project_root(path)
        store = DataStore(pipeline, root, StatCache(root / ".moe-cache" / "stat-cache.json"),
                          lambda *loc: opening.source_positions[loc[1]])
    except Exception as exc:  # noqa: BLE001 - not what `run` sends: our own failure, reported there
        send_error(exc)
        return
    send(ready={})
    # `run` is still opening the registry: load the sources of the experts to train meanwhile. A
    # source that fails to load fails again, with its message, when an expert reading it is prepared.
    from moe_pipeline.data.streamed_inputs import reads_streamed

    for name in sorted({ref.partition(".")[0] for expert in opening.experts if expert in pipeline.experts
                        and not reads_streamed(pipeline, expert) for ref in data_refs(pipeline, expert)}):
        with contextlib.suppress(Exception):
            store.source(name)
    here = TrainingHere(pipeline, store)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if "prepare" in request:
                here.prepare(request["prepare"]["expert"], request["prepare"]["upstream"], _phase)
                send(prepared={})
            else:
                job = TrainingJob.from_json(request["train"]["job"])
                progress = (lambda epoch, epochs, record: send(progress=[epoch, epochs, record])) \
                    if request["train"]["progress"] else None
                send(trained=here.train(job, Path(request["train"]["folder"]), _phase, progress).to_json())
        except Exception as exc:  # noqa: BLE001 - every error goes back to `run`, which reports it
            send_error(exc)


@contextlib.contextmanager
def _phase(name: str):
    """Mark an error with the phase it happened in: `run` prefixes the same YAML position."""
    try:
        yield
    except Exception as exc:
        if getattr(exc, "moe_phase", None) is None:
            exc.moe_phase = name
        raise


def main() -> None:
    """The training process's entry point: serve requests on stdin until it ends, then exit at once."""
    import signal

    if sys.platform.startswith("linux"):  # die with `run`, even when it is killed with SIGKILL
        import ctypes

        with contextlib.suppress(Exception):
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    # Ctrl-C reaches the whole process group: `run` handles it and stops this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    replies = os.fdopen(os.dup(1), "w", buffering=1)  # the protocol keeps the real stdout;
    os.dup2(2, 1)  # what the sources' and models' own code prints goes to stderr
    sys.stdout = sys.stderr
    _serve(replies)
    # The end of its input: everything it wrote is in `run`'s folders. Skip the interpreter's
    # teardown of torch (0.3 s or more, which `run` would wait for), as the CLI does.
    replies.close()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
