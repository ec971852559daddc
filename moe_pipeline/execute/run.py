"""One `run`'s write path, composed of steps that each do one job.

`Run` holds a read-only `View` (reading through the MLflow client it writes with) and a
`Registry` beside it for the writes, and composes: recovery of what killed runs left
(`recovery`), one step per planned expert under its lease (`step`: re-read, then train a new
version (`new_version`) or check the cutoff (`cutoff_check`)), and publishing the statuses as
tags (`publish`). A runner drives the steps: the sequential one here (`runner.run_plan`), or
a Ray runner the caller passes in (`ray_runner.RayRunner`), whose workers run the same step
through `RemoteStep`. Never parses argv or prints tables; progress bars come in from the caller.
"""
from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from moe_pipeline.errors import StepsFailed
from moe_pipeline.execute import recovery
from moe_pipeline.execute.cutoff_check import NotKept, check_cutoff
from moe_pipeline.execute.new_version import train_new_version
from moe_pipeline.execute.publish import publish_statuses
from moe_pipeline.execute.runner import Outcome, run_plan
from moe_pipeline.execute.view import View
from moe_pipeline.longlived import long_lived
from moe_pipeline.pipeline.loader import LoadedPipeline
from moe_pipeline.registry.writes import Registry
from moe_pipeline.state import planner
from moe_pipeline.state.record import RETRAINED_BECAUSE

# the plan, a callback per outcome
Runner = Callable[[planner.Plan, Callable[[Outcome], None] | None], list[Outcome]]


class Run:
    """The write path of one pipeline for one `run` (or `status --record`)."""

    def __init__(self, loaded: LoadedPipeline, tracking_uri: str | None = None, *, wait: float = 600.0,
                 notify: Callable[[str], None] | None = None, trainer=None):
        """`wait`: seconds to wait for an expert another run is training (`run --wait`);
        `notify`: where "waiting for ..." lines go; `trainer`: `run`'s training process
        (`training_process.TrainingProcess`), or None to train in this process."""
        self.view = View(loaded, tracking_uri, fast_reads=False)
        self.registry = Registry.over(self.view.registry)
        self.wait = wait
        self.notify = notify or (lambda message: None)
        self.trainer = trainer

    def recover(self) -> list[str]:
        """What killed runs left, put right (see `recovery`); one line per thing done."""
        done = recovery.recover_dead_runs(self.view, self.registry)
        recovery.delete_dead_leases(self.view, self.registry, self.notify)
        return done

    def publish(self) -> dict[str, planner.Status]:
        """The statuses as tags, after reading the registry again: concurrent runs (or Ray
        tasks) registered versions meanwhile."""
        self.view.snapshot(refresh=True)
        return publish_statuses(self.view, self.registry)

    def execute(self, plan: planner.Plan, bar=None, on_outcome: Callable[[Outcome], None] | None = None,
                runner: Runner | None = None) -> list[Outcome]:
        """Run the plan's steps (here, one expert at a time, unless a `runner` is given), then
        publish the statuses; also when some steps failed on Ray, since what finished is registered."""
        if plan.steps and runner is None and self.trainer is None:
            with long_lived():  # torch, before the first expert: see moe_pipeline.longlived
                import moe_pipeline.training.train  # noqa: F401
        try:
            if runner is None:
                outcomes = run_plan(plan, lambda step: self.step(step, bar), on_outcome)
            else:
                outcomes = runner(plan, on_outcome)
        except StepsFailed:
            self.publish()
            raise
        self.publish()
        return outcomes

    # ------------------------------------------------------------ one expert

    def step(self, step: planner.Step, bar=None) -> Outcome:
        """One step under the expert's lease: no other run writes this expert meanwhile.

        With the lease taken, the registry is read again: another run may have trained this
        expert (or its upstream) since the plan was made (`step.planned_version`: its current version then).
        What is fresh by now is used as it is."""
        from moe_pipeline.registry.lease import Lease

        expert = str(step.expert)
        # its time to live: MOE_LEASE_TTL; given back on leaving, where a failure to give it back
        # never hides the error that ended the step (see Lease.__exit__)
        with Lease(self.registry, expert) as lease:
            lease.acquire(self.wait, lambda holder: self.notify(
                f"{expert}: being trained by {holder.describe()}; waiting for it (up to {self.wait:.0f} s)"))
            recovery.fail_runs_of_expired_leases(self.view, self.registry, lease, self.notify)
            self.view.snapshot(refresh=True)
            now = self.view.current()[expert]
            if now is not None and now.version != step.planned_version \
                    and self.view.statuses()[expert].status == planner.FRESH:
                return Outcome(expert, "unchanged", now.version, now.metric_name, now.val_metric, 0.0, 0.0,
                               f"trained by another run: v{now.version}")
            return self._decide(step, lease, bar)

    def _decide(self, step: planner.Step, lease, bar) -> Outcome:
        """Train, or first re-evaluate: the upstream has trained by now, so decide on the state as it is."""
        expert = str(step.expert)
        if step.action != planner.CHECK:
            return self._train(expert, lease, bar)
        now = self.view.statuses()[expert]
        if now.status == planner.FRESH:  # its upstream was kept with unchanged outputs
            record = self.view.current()[expert]
            return Outcome(expert, "unchanged", record.version, record.metric_name, record.val_metric, 0.0, 0.0,
                           "upstream behaviour unchanged")
        if now.status == planner.STALE and now.upstream_only:
            checked = check_cutoff(self.view, self.registry, expert)
            if not isinstance(checked, NotKept):
                return checked
            outcome = self._train(expert, lease, bar)
            outcome.action, outcome.note = "retrained", f"retrained ({checked.why})"
            # why the cutoff did not keep the old version, on the new one (the UI shows it beside the record)
            self.registry.set_tags(expert, outcome.version, {RETRAINED_BECAUSE: f"cutoff check failed: {checked.why}"})
            return outcome
        return self._train(expert, lease, bar)

    def _train(self, expert: str, lease, bar) -> Outcome:
        return train_new_version(self.view, self.registry, expert, self.trainer, lease, bar)

    def resources_of(self, expert: str) -> dict[str, float]:
        """What one expert's step asks a Ray cluster for."""
        resources = self.view.pipeline.resources_for(expert)
        return {"num_cpus": float(resources.num_cpus or 1), "num_gpus": float(resources.num_gpus)}


# ---------------------------------------------------------------- in a Ray worker


@dataclass(frozen=True)
class RemoteStep:
    """The step, as a Ray worker runs it: it opens the pipeline itself (its Run is kept for the
    worker's later steps) and runs `Run.step`, so records are the same as the sequential run's.

    root: the project folder, or None when the project was shipped as the task's working
    directory; pipeline: the pipeline file, relative to it."""

    root: str | None
    pipeline: str
    tracking_uri: str
    wait: float = 600.0

    def __call__(self, step: planner.Step) -> Outcome:
        return self.open().step(step)

    def open(self) -> Run:
        """This worker's Run of the pipeline, opened once per Ray job (workers belong to one job,
        so a kept one never outlives the run). Each step re-reads the registry under its lease."""
        from moe_pipeline.pipeline.loader import load_pipeline

        path = Path(self.root or os.getcwd()) / self.pipeline
        key = (str(path), self.tracking_uri, hashlib.sha256(path.read_bytes()).hexdigest())
        if key not in _RUNS:
            _RUNS.clear()
            _RUNS[key] = Run(load_pipeline(path), self.tracking_uri, wait=self.wait,
                             notify=lambda message: print(message, file=sys.stderr))
        return _RUNS[key]

    def warm_up(self) -> None:
        """Before the worker's first step: the imports every step needs, then its Run with the
        sources loaded and fingerprints computed."""
        with long_lived():  # see moe_pipeline.longlived
            import torch  # noqa: F401

            from moe_pipeline.registry.reader import import_client

            import_client()
        try:
            run = self.open()
            for name in run.view.pipeline.sources:
                run.view.store.source(name)
            for name in run.view.pipeline.experts:
                run.view.fingerprint(name)
        except Exception:  # noqa: BLE001 - a warm-up only saves time: the step itself reports any problem
            _RUNS.clear()


_RUNS: dict[tuple[str, str, str], Run] = {}  # one per worker: (path, registry, YAML sha256) -> Run
