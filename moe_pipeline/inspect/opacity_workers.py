"""`inspect --opacity` runs in worker processes, where the machine has cores for more than one.

A worker (`python -m moe_pipeline.inspect.opacity_workers`) reads one JSON line: the pipeline
file, the expert and version, the upstream versions inspection reads, the seeds of its runs,
its torch threads and a folder. It builds the expert's data as `inspect` does (a read-only
view), trains its runs (`opacity.one_run`) and answers one JSON line per run, the run's
tensors in a safetensors file in that folder: no pickle crosses. A run in a worker computes
what the same run computes in one process with the same torch threads. A worker dies with its
parent (PR_SET_PDEATHSIG) and leaves Ctrl-C to it. Must not write to the registry.
"""
from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable

TENSORS = ("pred", "embedding", "agop", "eigenvectors")
Seeds = tuple[int, int, "int | None"]


def worker_count(runs: int) -> int:
    """Workers for `runs` trainings: one per core, at most one per run; 1 means in this process."""
    return max(1, min(runs, os.cpu_count() or 1))


class OpacityPool:
    """Opacity runs of one expert version, spread over worker processes."""

    def __init__(self, pipeline_path: Path, expert: str, version: int, upstream: dict[str, int], workers: int):
        self.request = {"pipeline": str(pipeline_path), "expert": expert, "version": version, "upstream": upstream}
        self.workers = workers

    def train(self, seeds: list[Seeds], progress: Callable[[Seeds], None] | None = None) -> dict[Seeds, dict]:
        """{seeds: the run's results} of every run, `progress(seeds)` told as each one ends."""
        import tempfile

        from moe_pipeline.registry.artifacts import read_tensors

        workers = max(1, min(self.workers, len(seeds)))
        threads = max(1, (os.cpu_count() or 1) // workers)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)}
        answers: queue.Queue = queue.Queue()
        out: dict[Seeds, dict] = {}
        with tempfile.TemporaryDirectory(prefix="moe-opacity-") as folder, contextlib.ExitStack() as stack:
            procs = []
            for k in range(workers):
                proc = subprocess.Popen([sys.executable, "-m", "moe_pipeline.inspect.opacity_workers"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
                stack.callback(_stop, proc)
                mine = [list(s) for s in seeds[k::workers]]
                proc.stdin.write(json.dumps({**self.request, "seeds": mine, "threads": threads,
                                             "folder": folder, "worker": k}) + "\n")
                proc.stdin.flush()
                procs.append(proc)
                threading.Thread(target=_relay, args=(proc, answers), daemon=True).start()
            while len(out) < len(seeds):
                try:  # a short wait at a time: Ctrl-C reaches this thread within it
                    answer = answers.get(timeout=0.1)
                except queue.Empty:
                    continue
                if "error" in answer:
                    raise _as_error(answer["error"])
                run = dict(answer["run"])
                run.update(read_tensors(Path(answer["file"])))
                key = tuple(answer["seeds"])
                out[key] = run
                if progress:
                    progress(key)
        return out


def _relay(proc: subprocess.Popen, answers: queue.Queue) -> None:
    for line in proc.stdout:
        answers.put(json.loads(line))
    if proc.wait() != 0:
        answers.put({"error": {"type": "TrainingError", "message": f"an opacity worker ended with exit code "
                                                                   f"{proc.returncode}; its messages are above"}})


def _stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(OSError):
        proc.kill()
    proc.wait()


def _as_error(error: dict[str, str]) -> Exception:
    from moe_pipeline import errors

    cls = getattr(errors, error["type"], None)
    if isinstance(cls, type) and issubclass(cls, errors.MoeError):
        return cls(error["message"])
    return errors.TrainingError(f"an opacity run failed: {error['type']}: {error['message']}")


def _serve(answers) -> None:
    import torch
    from safetensors.torch import save_file

    from moe_pipeline.execute.view import View
    from moe_pipeline.inspect.opacity import one_run
    from moe_pipeline.pipeline.loader import load_pipeline, make_importable

    request = json.loads(sys.stdin.readline())
    torch.set_num_threads(request["threads"])
    make_importable(Path(request["pipeline"]))  # the project's own code, as `inspect` imports it
    view = View(load_pipeline(request["pipeline"]))
    expert = request["expert"]
    data = view.expert_data(expert, upstream_versions=request["upstream"], sample=True)[0]
    spec, resources = view.pipeline.experts[expert], view.pipeline.resources_for(expert)
    for i, seeds in enumerate(request["seeds"]):
        run = one_run(spec, resources, data, (seeds[0], seeds[1], seeds[2]))
        file = Path(request["folder"]) / f"{request['worker']}-{i}.safetensors"
        save_file({k: run[k].contiguous() for k in TENSORS}, str(file))
        answer = {"seeds": seeds, "file": str(file), "run": {k: v for k, v in run.items() if k not in TENSORS}}
        answers.write(json.dumps(answer) + "\n")


def main() -> None:
    """A worker's entry point: one request, its runs' answers, then exit."""
    import signal

    if sys.platform.startswith("linux"):  # die with the inspecting process, even when it is killed
        import ctypes

        with contextlib.suppress(Exception):
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the process group: the parent stops us
    answers = os.fdopen(os.dup(1), "w", buffering=1)  # line-buffered: each answer as it is written
    os.dup2(2, 1)  # what the model's code prints goes to stderr, never into the answers
    sys.stdout = sys.stderr
    try:
        _serve(answers)
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the parent, which reports it
        answers.write(json.dumps({"error": {"type": type(exc).__name__, "message": str(exc)}}) + "\n")
    answers.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
