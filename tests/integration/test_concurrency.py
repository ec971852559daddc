"""Concurrent `run` processes on one registry cooperate: each expert is trained exactly once.

Real processes on a real registry (sqlite here; tests/integration/test_team.py repeats the
scenario on an `mlflow server` backed by PostgreSQL). The lease lives in the registry.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import ROOT, cli, client_once_created

EXPERTS = ("has_loop", "is_even", "digit")


def env_for(tmp_path: Path, uri: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
            **extra}


def start_run(pipeline: Path, tmp_path: Path, uri: str, *args: str, **extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "moe_pipeline", "run", str(pipeline), "--quiet", *args],
                            env=env_for(tmp_path, uri, **extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def slower(pipeline: Path, epochs: int) -> Path:
    """Long enough trainings that runs started together overlap."""
    pipeline.write_text(pipeline.read_text().replace("epochs: 3,", f"epochs: {epochs},"))
    return pipeline


def concurrent_runs_train_each_expert_once(pipeline: Path, tmp_path: Path, uri: str, n: int, capsys,
                                           name: str = "tiny") -> list[str]:
    procs = [start_run(pipeline, tmp_path, uri) for _ in range(n)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * n, "\n".join(outputs)
    client = MlflowClient(uri, uri)
    for expert in EXPERTS:
        versions = client.search_model_versions(f"name = '{name}.{expert}'")
        assert [int(v.version) for v in versions] == [1], (expert, outputs)
        assert int(client.get_model_version_by_alias(f"{name}.{expert}", "current").version) == 1
    assert client.search_registered_models(f"name LIKE 'moe-lease.{name}.%'") == []  # every lease given back
    status = subprocess.run([sys.executable, "-m", "moe_pipeline", "status", str(pipeline), "--check"],
                            env=env_for(tmp_path, uri), capture_output=True, text=True)
    assert status.returncode == 0, status.stdout + status.stderr  # every expert fresh
    # the runs that did not train an expert said whose version they use
    assert any("trained by another run: v1" in out for out in outputs), outputs
    return outputs


@pytest.mark.parametrize("n", [2, 4])
def test_concurrent_runs_on_sqlite_train_each_expert_once(tiny: Path, registry_uri: str, tmp_path: Path, n: int,
                                                           capsys):
    concurrent_runs_train_each_expert_once(slower(tiny, 40), tmp_path, registry_uri, n, capsys)


def wait_for(condition, timeout: float = 120.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.reliability("dead leases")
def test_kill_9_of_a_lease_holder_then_the_next_run_proceeds_and_marks_its_run_failed(tiny: Path, registry_uri: str,
                                                                                       tmp_path: Path, capsys):
    slow = tiny.read_text().replace("epochs: 3,", "epochs: 5000,", 1)  # has_loop trains until killed
    tiny.write_text(slow)
    holder = start_run(tiny, tmp_path, registry_uri)
    client = client_once_created(registry_uri)

    def run_under_lease():
        """has_loop's lease, and the run training under it (the run carries the lease's token)."""
        leases = client.search_registered_models("name LIKE 'moe-lease.tiny.has_loop.%'")
        experiment = client.get_experiment_by_name("tiny")
        if not leases or experiment is None:
            return None
        token = leases[0].tags["moe.lease.token"]
        runs = client.search_runs([experiment.experiment_id], f"tags.`moe.lease.token` = '{token}'")
        return runs[0].info.run_id if runs else None

    run_id = wait_for(run_under_lease, what="has_loop's lease and its run")
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    tiny.write_text(slow.replace("epochs: 5000,", "epochs: 3,"))  # the next run need not take that long

    capsys.readouterr()
    assert cli("run", tiny, "--quiet", "--wait", "60") == 0
    assert client.get_run(run_id).info.status == "FAILED"
    assert [int(v.version) for v in client.search_model_versions("name = 'tiny.has_loop'")] == [1]
    assert client.search_registered_models("name LIKE 'moe-lease.%'") == []


@pytest.mark.reliability("dead leases")
def test_a_lease_of_another_host_expires_after_its_ttl_and_its_run_is_marked_failed(tiny: Path, registry_uri: str,
                                                                                   tmp_path: Path, capsys):
    """A holder on another machine cannot be asked whether it lives: its lease ends when unrenewed."""
    assert cli("run", tiny, "--quiet", "has_loop") == 0  # creates the store and the experiment
    client = MlflowClient(registry_uri, registry_uri)
    experiment = client.get_experiment_by_name("tiny")
    dead = client.create_run(experiment.experiment_id, tags={"moe.expert": "is_even", "moe.lease.token": "elsewhere"})
    ttl = 4.0
    client.create_registered_model("moe-lease.tiny.is_even.1", tags={
        "moe.lease": "is_even", "moe.lease.token": "elsewhere", "moe.lease.host": "another-machine",
        "moe.lease.pid": "1", "moe.lease.expires": f"{time.time() + ttl:.3f}"})

    capsys.readouterr()
    assert cli("run", tiny, "--quiet", "--wait", "0") == 2  # held, and no wait allowed
    assert "is being trained by a run on another-machine" in capsys.readouterr().err
    started = time.monotonic()
    assert cli("run", tiny, "--quiet", "--wait", "60") == 0
    waited = time.monotonic() - started
    out = capsys.readouterr()
    assert "waiting for it" in out.err
    assert waited >= 1.0, waited  # it did wait for the expiry
    assert client.get_run(dead.info.run_id).info.status == "FAILED"
    assert f"marked run {dead.info.run_id}" in out.err
    assert client.search_registered_models("name LIKE 'moe-lease.%'") == []
    assert cli("status", tiny, "--check") == 0


def test_a_lease_given_back_between_a_name_clash_and_mlflows_read_of_it_is_looked_for_again(registry_uri: str,
                                                                                         monkeypatch):
    """The race four runs on sqlite hit: run A takes generation 1 after run B looked, B's create
    clashes, and A gives the lease back before MLflow's store reads the clashing model for its
    error message, so B is told "not found". B must look again, not fail. The interleaving is
    forced on a real store; only the moments are chosen."""
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    from moe_pipeline.registry.lease import Lease
    from moe_pipeline.registry.writes import Registry

    registry = Registry(registry_uri, "tiny")
    other = MlflowClient(registry_uri, registry_uri)
    lease = Lease(registry, "digit", ttl=30)
    name = f"{lease.base}1"
    real_holders, real_read = Lease.holders, SqlAlchemyStore.get_registered_model
    events: list[str] = []

    def holders(self):
        found = real_holders(self)
        if not events:  # run A takes generation 1 just after B looked
            other.create_registered_model(name, tags={"moe.lease.token": "A", "moe.lease.host": "elsewhere",
                                                      "moe.lease.expires": f"{time.time() + 30:.3f}"})
            events.append("A took it")
        return found

    def read_after_clash(store, model_name):
        if model_name == name and events == ["A took it"]:  # A is done and gives it back
            events.append("A gave it back")
            other.delete_registered_model(name)
        return real_read(store, model_name)

    monkeypatch.setattr(Lease, "holders", holders)
    monkeypatch.setattr(SqlAlchemyStore, "get_registered_model", read_after_clash)
    try:
        assert lease.acquire(wait=5) is False
        assert events == ["A took it", "A gave it back"]  # the race happened as described
        assert lease.held == name and lease.holds()  # the name A freed, now with our token
    finally:
        lease.release()
    assert other.search_registered_models(f"name LIKE '{lease.base}%'") == []


@pytest.mark.reliability("dead leases")
def test_a_dead_lease_of_an_expert_this_run_does_not_train_is_deleted_and_its_run_failed(tiny: Path, registry_uri: str,
                                                                                        capsys):
    """A run killed while it held is_even's lease, then a run that trains only has_loop: the dead
    lease is deleted (not left until is_even trains again) and its run marked FAILED."""
    assert cli("run", tiny, "--quiet", "has_loop") == 0  # creates the store and the experiment
    client = MlflowClient(registry_uri, registry_uri)
    experiment = client.get_experiment_by_name("tiny")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid of this host that no longer runs
    dead = client.create_run(experiment.experiment_id, tags={"moe.expert": "is_even", "moe.lease.token": "killed"})
    client.create_registered_model("moe-lease.tiny.is_even.3", tags={
        "moe.lease": "is_even", "moe.lease.token": "killed", "moe.lease.host": __import__("socket").gethostname(),
        "moe.lease.pid": str(gone.pid), "moe.lease.expires": f"{time.time() + 3600:.3f}"})
    live = client.create_registered_model("moe-lease.tiny.digit.1", tags={  # a live holder's lease stays
        "moe.lease": "digit", "moe.lease.token": "alive", "moe.lease.host": __import__("socket").gethostname(),
        "moe.lease.pid": str(os.getpid()), "moe.lease.expires": f"{time.time() + 3600:.3f}"})

    capsys.readouterr()
    assert cli("run", tiny, "--quiet", "has_loop", "--force") == 0
    err = capsys.readouterr().err
    assert client.get_run(dead.info.run_id).info.status == "FAILED"
    assert "deleted the lease moe-lease.tiny.is_even.3 of a run on" in err
    assert [m.name for m in client.search_registered_models("name LIKE 'moe-lease.%'")] == [live.name]
