"""Execute a plan on a Ray cluster: each expert a Ray task as soon as its upstream experts are done.

A runner: it takes a plan and a step to run per expert (`execute.run.RemoteStep`, which opens
the pipeline in the worker and runs the very step the sequential runner runs: lease, re-read,
train or cutoff check, register), so the records are the same; with the same
`resources.num_cpus` the weights are the same bits. It knows nothing of YAML paths or of what
a step does. Upstream outputs come from the registry's artifact store, never from the
driver's disk. A failure fails its descendants (Ray does not start a task whose argument
failed) while independent branches finish. When connecting to an existing cluster
(`--address`), the project folder is shipped as the tasks' working directory.

Must not import ray at module level: it is an optional extra (`pip install moe-pipeline[ray]`).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import networkx as nx

from moe_pipeline.errors import ExecutorError, StepsFailed
from moe_pipeline.execute.runner import Outcome
from moe_pipeline.state.planner import Plan, Step

SHIP_EXCLUDES = [".git", ".venv", "registry", ".moe-cache", "reports", "__pycache__", "*.pyc", "mlruns"]


@dataclass
class RayRunner:
    """Run a plan's steps as Ray tasks, each after the tasks of its upstream experts.

    step: called in a worker as `step(plan_step)` (picklable); graph: the
    expert graph; resources: what an expert's task asks for (`{"num_cpus": .., "num_gpus": ..}`);
    where: `FILE:LINE:COL` of an expert, for a request no node can meet; address: the cluster."""

    step: Callable[[Step], Outcome]
    graph: nx.DiGraph
    resources: Callable[[str], dict[str, float]]
    where: Callable[[str], str]
    address: str | None = None

    def __call__(self, plan: Plan, on_outcome: Callable[[Outcome], None] | None = None) -> list[Outcome]:
        """Submit every step with its upstream steps as dependencies; gather outcomes in plan order.

        Uses the Ray session `cluster()` opened (the CLI opens it early, see there)."""
        import ray

        if not ray.is_initialized():
            raise ExecutorError("the Ray runner needs a cluster: open one with ray_runner.cluster() first")
        self._check_requests(plan, ray.cluster_resources())
        task = ray.remote(max_retries=0)(_run_step)
        refs = {}
        for step in plan.steps:  # plan order is topological: a step's upstream refs already exist
            expert = str(step.expert)
            deps = [refs[u] for u in sorted(nx.ancestors(self.graph, expert)) if u in refs]  # waits for these
            refs[expert] = task.options(name=f"moe:{expert}", **self.resources(expert)).remote(
                self.step, step, *deps)
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
            raise StepsFailed(_describe_failures(self.graph, plan, failures), outcomes)
        return outcomes

    def _check_requests(self, plan: Plan, cluster: dict[str, float]) -> None:
        """A request no node of the cluster can meet would leave its task pending forever: refuse it now."""
        have = {"num_cpus": cluster.get("CPU", 0.0), "num_gpus": cluster.get("GPU", 0.0)}
        for step in plan.steps:
            for key, wanted in self.resources(str(step.expert)).items():
                if wanted > have[key]:
                    raise ExecutorError(
                        f"{self.where(str(step.expert))}: expert '{step.expert}' asks for "
                        f"{key}={wanted:g}, but the Ray cluster at {self.address or 'this machine'} has "
                        f"{have[key]:g} in all; lower resources.{key} or add nodes that have them")


def _run_step(step_fn: Callable[[Step], Outcome], step: Step, *upstream_done: Outcome) -> Outcome:
    """The task: `upstream_done` only orders it after its upstream experts' tasks."""
    return step_fn(step)


@contextlib.contextmanager
def cluster(address: str | None, root: Path, experts: int,
            warm_up: Callable[[], None] | None = None) -> Iterator[None]:
    """Connect to the cluster at `address`, or start a local one; shut down only what this started.

    Each Ray worker imports torch and mlflow before its first expert, then opens the pipeline:
    registry client, data, fingerprints. So that this overlaps the driver's own start (registry,
    plan), `warm_up` (picklable) runs as one task per core (at most one per expert) as soon as
    Ray is up."""
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
        if warm_up is not None:
            warm = ray.remote(num_cpus=1, max_retries=0)(_warm)
            for _ in range(max(1, min(int(ray.cluster_resources().get("CPU", 1)), experts))):
                warm.remote(warm_up)  # not waited for: a task that finds its worker warm simply starts sooner
        yield
    finally:
        ray.shutdown()


def _warm(warm_up: Callable[[], None]) -> None:
    warm_up()


def _describe_failures(graph: nx.DiGraph, plan: Plan, failures: dict[str, Exception]) -> str:
    """The experts that failed themselves, with their own message; the ones not run because of them."""
    own, blocked = [], []
    for step in plan.steps:
        expert = str(step.expert)
        if expert not in failures:
            continue
        failed_above = [u for u in nx.ancestors(graph, expert) if u in failures]
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
