"""A registry that cannot be written (read-only) or fills up mid-run: exit 2 and one message,
never a traceback; nothing it held is lost, and the next run with room converges.

Read-only: the registry folder made immutable (`chattr +i`, which stops root too; plain
permissions where the tests do not run as root). A full disk: the run's processes get a file
size limit (RLIMIT_FSIZE, with SIGXFSZ ignored), so a write past it fails as a write to a full
disk does (EFBIG rather than ENOSPC: the same error path, without mounting a small file system).
"""
from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import ROOT, cli, store_bytes


@contextlib.contextmanager
def read_only(folder: Path):
    """Nothing under `folder` can be created, changed or deleted, by root either, until the end."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-R", "+i", str(folder)], check=True)
        try:
            yield
        finally:
            subprocess.run(["chattr", "-R", "-i", str(folder)], check=True)
    else:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
        for p in modes:
            p.chmod(modes[p] & ~0o222)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)


def one_message(err: str, fragment: str) -> None:
    assert "Traceback" not in err and fragment in err, err[-2000:]
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1, err[-2000:]


@pytest.mark.reliability("read-only registry")
def test_a_read_only_registry_is_read_and_every_write_is_one_clear_error(tiny: Path, registry_uri: str, capsys,
                                                                         tmp_path: Path):
    assert cli("run", tiny, "--quiet") == 0
    tiny.write_text(tiny.read_text().replace("epochs: 3", "epochs: 4", 1))  # has_loop stale: a run would write
    folder = Path(registry_uri[len("sqlite:///"):]).parent
    before = store_bytes(registry_uri)
    capsys.readouterr()
    with read_only(folder):
        assert cli("status", tiny) == 0  # reading needs no write
        assert "stale" in capsys.readouterr().out
        assert cli("predict", tiny, "--split", "test", "--allow-stale", "--out", tmp_path / "p.csv") == 0
        capsys.readouterr()
        for args in (["status", tiny, "--record"], ["run", tiny, "--quiet"],
                     ["inspect", tiny, "is_even", "--out", tmp_path / "report", "--methods", "metrics"]):
            assert cli(*args) == 2, args
            one_message(capsys.readouterr().err, "cannot be written from here")
    assert store_bytes(registry_uri) == before  # nothing lost, nothing half-written
    assert cli("run", tiny, "--quiet") == 0 and cli("status", tiny, "--check") == 0  # writable again: converges


def _limited(limit: int, *args: str, env: dict) -> subprocess.CompletedProcess:
    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), not the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-m", "moe_pipeline", *args], preexec_fn=limit_file_size, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.reliability("full disk")
@pytest.mark.parametrize("full", ["registry database", "version artifacts"])
def test_a_disk_that_fills_during_a_run_is_one_clear_error_and_the_next_run_converges(tiny: Path, registry_uri: str,
                                                                                      tmp_path: Path, full: str):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    assert cli("run", tiny, "--quiet") == 0
    db = Path(registry_uri[len("sqlite:///"):])
    if full == "registry database":  # the database cannot grow: the first new row fails
        tiny.write_text(tiny.read_text().replace("epochs: 3", "epochs: 4", 1))
        limit = db.stat().st_size
    else:  # room for the database, not for a wide model's weights (64 x 8192 floats, 2 MiB)
        tiny.write_text(tiny.read_text().replace("model: {kind: mlp, hidden: [16]}", "model: {kind: mlp, hidden: [8192]}", 1))
        limit = db.stat().st_size + (1 << 19)
    done = _limited(limit, "run", str(tiny), "--quiet", env=env)
    assert done.returncode == 2, done.stderr[-2000:]
    one_message(done.stderr, "error: ")
    assert cli("run", tiny, "--quiet") == 0 and cli("status", tiny, "--check") == 0
    client = MlflowClient(registry_uri, registry_uri)
    assert client.search_registered_models("name LIKE 'moe-lease.%'") == []
    experiment = client.get_experiment_by_name("tiny")
    assert [r for r in client.search_runs([experiment.experiment_id]) if r.info.status == "RUNNING"] == []
