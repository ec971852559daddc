"""Recovery: what killed runs left behind, found and put right before a run writes anything.

A `run` killed with kill -9 (or a power loss) unwinds nothing: its MLflow runs stay RUNNING,
versions it registered but never made current stay registered, its scratch folders stay on
disk; a run that stalled past its lease leaves the same. These functions mark such runs
FAILED and delete their never-current versions. They never train and never decide staleness.
"""
from __future__ import annotations

from typing import Callable

from moe_pipeline.execute.view import View
from moe_pipeline.registry.scratch import remove_dead_scratch
from moe_pipeline.registry.writes import Registry


def recover_dead_runs(view: View, registry: Registry) -> list[str]:
    """Runs of processes on this host that are gone: FAILED (or FINISHED when their version did
    become current: killed after the last step), their never-current versions deleted, their
    scratch folders removed. Returns what was done, one line each."""
    done = [f"removed scratch folder {p}" for p in remove_dead_scratch()]
    current = {(name, v.current) for name, v in view.snapshot().items()}
    for run_id, versions in registry.dead_runs().items():
        if any((expert, version) in current for expert, version in versions):
            registry.finish_run(run_id, "FINISHED")  # killed after `current` moved: the version is whole
            continue
        registry.finish_run(run_id, "FAILED")
        done.append(f"marked run {run_id} of a dead process FAILED")
        for expert, version in versions:
            registry.delete_version(expert, version)
            view.snapshot()[expert].records.pop(version, None)
            done.append(f"deleted {expert} v{version}: registered by a killed run, never current")
    return done


def fail_runs_of_expired_leases(view: View, registry: Registry, lease, notify: Callable[[str], None]) -> None:
    """Runs that held a lease which expired before `lease` was taken died (or hung): FAILED, and
    the versions they registered that never became current deleted."""
    for holder in lease.reaped:
        _fail_runs_of(view, registry, lease.expert, holder, notify)


def delete_dead_leases(view: View, registry: Registry, notify: Callable[[str], None]) -> None:
    """The leases of any of the pipeline's experts whose holder died (a process of this host that
    is gone, or an expiry nobody renewed): their runs FAILED, their never-current versions
    deleted, the lease itself deleted; not left until the next run that trains that expert."""
    from moe_pipeline.registry.lease import dead_leases, delete_lease

    for expert, holder in dead_leases(registry, view.pipeline.experts):
        _fail_runs_of(view, registry, expert, holder, notify)
        delete_lease(registry, holder.name)
        notify(f"{expert}: deleted the lease {holder.name} of {holder.describe()} (its holder is gone)")


def _fail_runs_of(view: View, registry: Registry, expert_name: str, holder, notify: Callable[[str], None]) -> None:
    from moe_pipeline.registry.lease import TOKEN

    for run_id in registry.running_runs_tagged(TOKEN, holder.token):
        registry.finish_run(run_id, "FAILED")
        notify(f"{expert_name}: marked run {run_id} of {holder.describe()} FAILED (its lease expired)")
        snap = view.snapshot(refresh=True)
        for expert, version in registry.versions_of_run(run_id):
            if expert not in snap or snap[expert].current != version:
                registry.delete_version(expert, version)
