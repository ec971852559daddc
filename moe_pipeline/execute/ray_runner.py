"""Execute a plan on a Ray cluster: each expert a Ray task as soon as its upstream experts are done.

A task opens the pipeline itself and runs the very step the sequential runner runs
(`Workspace._execute`: lease, re-read, train or cutoff check, register), so the records are
the same; with the same `resources.num_cpus` the weights are the same bits. Upstream outputs
come from the registry's artifact store, never from the driver's disk. A failure fails its
descendants (Ray does not start a task whose argument failed) while independent branches
finish. When connecting to an existing cluster (`--address`), the project folder is shipped
as the tasks' working directory.

Must not import ray at module level: it is an optional extra (`pip install moe-pipeline[ray]`).
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Callable, Iterator

import networkx as nx

from moe_pipeline.errors import MoeError
from moe_pipeline.execute.runner import Outcome
from moe_pipeline.pipeline.paths import project_root
from moe_pipeline.state.planner import Plan, Step

SHIP_EXCLUDES = [".git", ".venv", "registry", ".moe-cache", "reports", "__pycache__", "*.pyc", "mlruns"]


class ExecutorError(MoeError):
    """The Ray executor cannot run this plan (Ray missing, a request no node can meet)."""


class StepsFailed(MoeError):
    """Some experts failed on the cluster; the rest finished. Carries what finished."""

    def __init__(self, message: str, outcomes: list[Outcome]):
        super().__init__(message)
        self.outcomes = outcomes


def run_plan_on_ray(ws, plan: Plan, address: str | None,
                    on_outcome: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Submit every step with its upstream steps as dependencies; gather outcomes in plan order.

    Uses the Ray session `cluster()` opened (the CLI opens it early, see there), or opens one."""
    with cluster(address, project_root(ws.loaded.path), len(plan.steps)):
        import ray

        _check_requests(ws, plan, ray.cluster_resources(), address)
        return _submit_and_gather(ray, ws, plan, project_root(ws.loaded.path), bool(address), on_outcome)


@contextlib.contextmanager
def cluster(address: str | None, root: Path, experts: int, pipeline: Path | None = None,
            tracking_uri: str | None = None) -> Iterator[None]:
    """Connect to the cluster at `address`, or start a local one; shut down only what this started.

    Each Ray worker imports torch and mlflow before its first expert (~3 s on
    a small machine), then opens the pipeline: registry client, data, fingerprints. So that
    this overlaps the driver's own start (registry, plan), one warm-up task per core (at most
    one per expert) is submitted as soon as Ray is up; given the pipeline, it opens it too."""
    try:
        import ray
    except ImportError:
        raise ExecutorError("--executor ray needs Ray: pip install 'moe-pipeline[ray]'") from None
    if ray.is_initialized():
        yield
        return
    runtime_env = {"working_dir": str(root), "excludes": SHIP_EXCLUDES} if address else None
    try:
        ray.init(address=address, include_dashboard=False, logging_level="ERROR", log_to_driver=True,
                 runtime_env=runtime_env, configure_logging=True)
    except Exception as exc:  # ConnectionError, a bad address: one line, not Ray's traceback
        raise ExecutorError(f"cannot start or reach a Ray cluster at {address or 'this machine'}: "
                            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    try:
        warm = ray.remote(num_cpus=1, max_retries=0)(_warm_up)
        relative = os.path.relpath(pipeline.resolve(), root) if pipeline is not None else None
        for _ in range(max(1, min(int(ray.cluster_resources().get("CPU", 1)), experts))):
            # not waited for: a task that finds its worker warm simply starts sooner
            warm.remote(None if address else str(root), relative, tracking_uri)
        yield
    finally:
        ray.shutdown()


def _warm_up(root: str | None, pipeline: str | None, tracking_uri: str | None) -> None:
    """In a worker: the imports every expert's step needs, then the pipeline's Workspace with
    its sources loaded and fingerprints computed, kept for this worker's steps."""
    from moe_pipeline.longlived import long_lived

    with long_lived():  # see moe_pipeline.longlived
        import torch  # noqa: F401

        import moe_pipeline.execute.write  # noqa: F401
        from moe_pipeline.registry.store import import_client

        import_client()
    if pipeline is None or tracking_uri is None:
        return
    try:
        ws = _workspace(root, pipeline, tracking_uri)
        for name in ws.pipeline.sources:
            ws.store.source(name)
        for name in ws.pipeline.experts:
            ws.fingerprint(name)
    except Exception:  # noqa: BLE001 - a warm-up only saves time: the step itself reports any problem
        _WORKSPACES.clear()


_WORKSPACES: dict[tuple[str, str, str], object] = {}  # one per worker: (path, registry, YAML sha256) -> Workspace


def _workspace(root: str | None, pipeline: str, tracking_uri: str):
    """This worker's Workspace of the pipeline, opened once per Ray job (workers belong to one
    job, so a cached one never outlives the run). Each step re-reads the registry under its lease."""
    import hashlib

    from moe_pipeline.execute.write import Workspace
    from moe_pipeline.pipeline.loader import load_pipeline

    path = Path(root or os.getcwd()) / pipeline
    key = (str(path), tracking_uri, hashlib.sha256(path.read_bytes()).hexdigest())
    if key not in _WORKSPACES:
        _WORKSPACES.clear()
        _WORKSPACES[key] = Workspace(load_pipeline(path), tracking_uri)
    return _WORKSPACES[key]


def _requests(ws, expert: str) -> dict[str, float]:
    resources = ws.pipeline.resources_for(expert)
    return {"num_cpus": float(resources.num_cpus or 1), "num_gpus": float(resources.num_gpus)}


def _check_requests(ws, plan: Plan, cluster: dict[str, float], address: str | None) -> None:
    """A request no node of the cluster can meet would leave its task pending forever: refuse it now."""
    have = {"num_cpus": cluster.get("CPU", 0.0), "num_gpus": cluster.get("GPU", 0.0)}
    for step in plan.steps:
        for key, wanted in _requests(ws, str(step.expert)).items():
            if wanted > have[key]:
                raise ExecutorError(
                    f"{ws.loaded.where('experts', str(step.expert))}: expert '{step.expert}' asks for "
                    f"{key}={wanted:g}, but the Ray cluster at {address or 'this machine'} has {have[key]:g} "
                    f"in all; lower resources.{key} or add nodes that have them")


def _submit_and_gather(ray, ws, plan: Plan, root: Path, shipped: bool, on_outcome) -> list[Outcome]:
    task = ray.remote(max_retries=0)(run_step)
    current = ws.current()
    relative = os.path.relpath(ws.loaded.path.resolve(), root)
    refs = {}
    for step in plan.steps:  # plan order is topological: a step's upstream refs already exist
        expert = str(step.expert)
        deps = [refs[u] for u in sorted(nx.ancestors(ws.graph, expert)) if u in refs]  # waits for these
        planned = current[expert].version if current[expert] else None
        refs[expert] = task.options(name=f"moe:{expert}", **_requests(ws, expert)).remote(
            None if shipped else str(root), relative, ws.registry.tracking_uri, step, planned, ws.wait, *deps)
    outcomes, failures = [], {}
    for step in plan.steps:
        expert = str(step.expert)
        try:
            outcome = ray.get(refs[expert])
        except Exception as exc:
            failures[expert] = exc
            continue
        outcomes.append(outcome)
        if on_outcome:
            on_outcome(outcome)
    if failures:
        raise StepsFailed(_describe_failures(ws, plan, failures), outcomes)
    return outcomes


def _describe_failures(ws, plan: Plan, failures: dict[str, Exception]) -> str:
    """The experts that failed themselves, with their own message; the ones not run because of them."""
    own, blocked = [], []
    for step in plan.steps:
        expert = str(step.expert)
        if expert not in failures:
            continue
        failed_above = [u for u in nx.ancestors(ws.graph, expert) if u in failures]
        if failed_above:
            blocked.append(f"{expert} (upstream {', '.join(sorted(failed_above))} failed)")
        else:
            cause = getattr(failures[expert], "cause", None) or failures[expert]
            text = str(cause).strip().splitlines()
            own.append(f"{expert}: {text[0] if text else type(cause).__name__}")
    lines = [f"{len(own)} expert(s) failed on the Ray cluster:", *(f"  {line}" for line in own)]
    if blocked:
        lines.append("not run: " + "; ".join(blocked))
    return "\n".join(lines)


def run_step(root: str | None, pipeline: str, tracking_uri: str, step: Step, planned: int | None, wait: float,
             *upstream_done: Outcome) -> Outcome:
    """In a Ray worker: the same step the sequential runner takes, on a Workspace of its own.

    `root` is None when the project was shipped: the task's working directory is its copy."""
    ws = _workspace(root, pipeline, tracking_uri)
    ws.wait = wait
    ws.notify = lambda message: print(message, file=sys.stderr)
    ws._planned = {str(step.expert): planned}
    return ws._execute(step, None)
