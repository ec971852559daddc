"""Shared fixtures: a temporary sqlite registry and small pipelines written to tmp_path."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from moe_pipeline.cli.app import run_cli

ROOT = Path(__file__).resolve().parents[1]

TINY_DIGITS = """
name: tiny
seed: 0
sources:
  digits: {loader: sklearn.digits, split: {val: 0.2, test: 0.2}}
experts:
  has_loop:
    inputs: [digits.image]
    target: {from: digits.label, fn: "TARGETS:has_loop"}
    model: {kind: cnn, channels: [4], hidden: 16}
    train: {epochs: 3, batch_size: 128, lr: 1.0e-2, patience: null}
  is_even:
    inputs: [digits.image]
    target: {from: digits.label, fn: "TARGETS:is_even"}
    model: {kind: mlp, hidden: [16]}
    train: {epochs: 3, batch_size: 128, lr: 1.0e-2, patience: null}
  digit:
    inputs: [has_loop.probs, is_even.embedding]
    target: digits.label
    model: {kind: mlp, hidden: [16]}
    train: {epochs: 3, batch_size: 128, lr: 1.0e-2, patience: null}
    cutoff: "off"  # hash-based staleness alone; tests/integration/test_cutoff.py covers the cutoff
"""

TARGETS = '''
import torch

LOOPED = (0, 6, 8, 9)


def has_loop(label):
    return torch.isin(label, torch.tensor(LOOPED)).long()


def is_even(label):
    return (label % 2 == 0).long()
'''


@pytest.fixture(autouse=True, scope="session")
def _schema_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """New registries copy MLflow's empty schema from a cache of this test session (and its
    subprocesses), not from the user's: the first one migrates, the rest copy it."""
    import os

    os.environ["MOE_PIPELINE_CACHE"] = str(tmp_path_factory.mktemp("moe-cache"))


@pytest.fixture
def registry_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri = f"sqlite:///{tmp_path / 'registry' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def unique_module(prefix: str, request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str = "") -> str:
    """A module of tmp_path, importable, named for this test alone (tests edit their modules, and
    Python keeps a module once imported under a name); returns its name."""
    name = f"{prefix}_{abs(hash(request.node.nodeid))}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def status_entries(path: Path, capsys, *options: str) -> dict[str, dict]:
    """`status --json` of a pipeline (exit 0 asserted): expert name -> its entry."""
    capsys.readouterr()
    assert cli("status", path, "--json", *options) == 0
    return {e["name"]: e for e in json.loads(capsys.readouterr().out)["experts"]}


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry_uri: str, request) -> Path:
    """A three-expert digits pipeline whose target functions live in a module of tmp_path."""
    module = unique_module("tiny_targets", request, tmp_path, monkeypatch, TARGETS)
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_DIGITS.replace("TARGETS", module))
    return path


def client_once_created(registry_uri: str, timeout: float = 120.0):
    """An MLflow client of an sqlite store that a `run` in another process is creating, made
    once the store is whole: MLflow's client opens (and would create and migrate) the store as
    soon as it is made, so one made earlier races with the run's own creation of it. The run
    creates it under the store's creation lock; taking that lock waits until it is done."""
    import time

    from filelock import FileLock
    from mlflow.tracking import MlflowClient

    db = Path(registry_uri[len("sqlite:///"):])
    deadline = time.monotonic() + timeout
    while not db.exists():
        assert time.monotonic() < deadline, f"no store at {db} after {timeout:.0f} s"
        time.sleep(0.1)
    with FileLock(str(db) + ".lock", timeout=timeout):
        return MlflowClient(registry_uri, registry_uri)


def cli(*args: str) -> int:
    return run_cli([str(a) for a in args])


def run_table(out: str) -> dict[str, tuple[str, str]]:
    """expert -> (action, note) from `run`'s table as a pipe shows it: one aligned line per expert,
    columns apart by two spaces at least, the note last."""
    import re

    rows = {}
    for line in out.splitlines():
        cells = re.split(r"\s{2,}", line.strip(), maxsplit=6)
        if len(cells) >= 6 and re.fullmatch(r"v\d+", cells[2]) and cells[1] in ("trained", "retrained", "kept", "unchanged"):
            rows[cells[0]] = (cells[1], cells[6] if len(cells) > 6 else "")
    return rows


def store_bytes(registry_uri: str) -> str:
    """One hash over every byte of an sqlite registry folder (database and artifacts)."""
    import hashlib

    folder = Path(registry_uri[len("sqlite:///"):]).parent
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".lock")):
        digest.update(str(path).encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One local Ray cluster for the whole test session (`ray start --head`); its address."""
    import shutil
    import socket
    import subprocess
    import sys

    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    import os
    import secrets

    # Ray's token authentication, as a team would run it: the head and every client share the token
    os.environ.update({"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
                       "RAY_AUTH_TOKEN": secrets.token_hex(16)})
    env = dict(os.environ)
    subprocess.run([ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
                    "--num-gpus", "0", "--include-dashboard", "false", "--object-store-memory", str(200 * 2**20),
                    "--disable-usage-stats"], check=True, capture_output=True, env=env, timeout=180)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, env=env, timeout=120)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _postgres_bin(name: str) -> str:
    import glob
    import shutil

    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed; `make test` installs it (apt postgresql)")
    return found


@pytest.fixture(scope="session")
def team_server() -> str:
    """A real PostgreSQL (initdb/pg_ctl in a temporary folder) behind a real `mlflow server`
    started by `moe-pipeline server`, both on 127.0.0.1, once per test session; its URI."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import tempfile
    import time
    import urllib.request

    base = Path(tempfile.mkdtemp(prefix="moe-team-test-"))
    pgdata, sockets = base / "pgdata", base / "sockets"
    sockets.mkdir()
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: the database runs as the postgres user
        as_postgres = ["runuser", "-u", "postgres", "--"]
        for path in (base, sockets):
            shutil.chown(path, "postgres")
    db_port, port = _free_port(), _free_port()
    subprocess.run([*as_postgres, _postgres_bin("initdb"), "-D", str(pgdata), "-U", "moe", "--auth=trust",
                    "-E", "UTF8"], check=True, capture_output=True, timeout=120)
    pg_ctl = [*as_postgres, _postgres_bin("pg_ctl"), "-D", str(pgdata)]
    subprocess.run([*pg_ctl, "-l", str(base / "postgres.log"), "-w", "-o",
                    f"-p {db_port} -k {sockets} -c listen_addresses=127.0.0.1", "start"],
                   check=True, capture_output=True, timeout=120)
    server = None
    try:
        subprocess.run([_postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(db_port), "-U", "moe", "mlflow"],
                       check=True, capture_output=True, timeout=60)
        log = open(base / "mlflow-server.log", "wb")
        server = subprocess.Popen([sys.executable, "-m", "moe_pipeline", "server", "--backend-store",
                                   f"postgresql+psycopg://moe@127.0.0.1:{db_port}/mlflow", "--artifacts",
                                   str(base / "artifacts"), "--port", str(port), "--workers", "2"],
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        uri = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not start:\n" + (base / "mlflow-server.log").read_text()[-3000:])
            time.sleep(0.5)
        yield uri
    finally:
        if server is not None and server.poll() is None:
            # the session is over and its data is thrown away: no graceful stop (about 4 s of the suite)
            os.killpg(server.pid, signal.SIGKILL)  # the server and its workers
            server.wait(timeout=30)
        subprocess.run([*pg_ctl, "-m", "fast", "-w", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------- the README's reliability table

def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "reliability(case, tried=1): this test proves a row of the README's "
                                       "reliability table (tools/reliability.py); `tried`: the cases it runs")


_RELIABILITY: list[dict] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """With MOE_RELIABILITY_OUT set, each marked test's outcome is kept for tools/reliability.py."""
    props = dict(report.user_properties)
    if "reliability" in props and (report.when == "call" or report.failed):
        _RELIABILITY.append({"test": report.nodeid, "case": props["reliability"], "tried": props["tried"],
                             "passed": report.passed and report.when == "call"})


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("reliability")
    if marker is not None:
        item.user_properties += [("reliability", marker.args[0]), ("tried", marker.kwargs.get("tried", 1))]


def pytest_sessionfinish(session: pytest.Session) -> None:
    import os

    out = os.environ.get("MOE_RELIABILITY_OUT")
    if out:
        Path(out).write_text(json.dumps(_RELIABILITY, indent=1))
