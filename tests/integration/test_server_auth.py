"""`moe-pipeline server` with MLflow's basic authentication: on by default beyond loopback, asked
for here with `--auth` on 127.0.0.1 (a test binds nothing wider). A real server process: an
anonymous client is refused a write, the admin's credentials write, and a missing admin password
is our clear error before anything starts."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from moe_pipeline.cli.services import is_loopback, server_command


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.reliability("server authentication")
def test_authentication_is_on_beyond_loopback_unless_refused():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("registry.example")
    assert server_command("sqlite:///x.db", "/a", "0.0.0.0", 5000, 1, True)[-2:] == ["--app-name", "basic-auth"]
    assert "--app-name" not in server_command("sqlite:///x.db", "/a", "127.0.0.1", 5000, 1, False)


def test_without_an_admin_password_the_server_refuses_to_start_and_says_why(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_AUTH_ADMIN_PASSWORD"}
    done = subprocess.run([sys.executable, "-m", "moe_pipeline", "server", "--backend-store",
                           f"sqlite:///{tmp_path / 'mlflow.db'}", "--artifacts", str(tmp_path / "art"), "--host",
                           "0.0.0.0", "--port", str(_free_port())], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "set MLFLOW_AUTH_ADMIN_PASSWORD" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.reliability("server authentication")
def test_an_anonymous_client_is_refused_a_write_and_the_admin_writes(tmp_path: Path):
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    port = _free_port()
    env = {**os.environ, "MLFLOW_AUTH_ADMIN_PASSWORD": "team-s3cret-1"}
    env.pop("MLFLOW_TRACKING_USERNAME", None)
    env.pop("MLFLOW_TRACKING_PASSWORD", None)
    server = subprocess.Popen([sys.executable, "-m", "moe_pipeline", "server", "--backend-store",
                               f"sqlite:///{tmp_path / 'mlflow.db'}", "--artifacts", str(tmp_path / "art"), "--host",
                               "127.0.0.1", "--port", str(port), "--workers", "1", "--auth"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=2).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.stderr.read().decode()[-2000:]
                time.sleep(0.3)
        with pytest.MonkeyPatch.context() as patch:
            patch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
            patch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
            with pytest.raises(MlflowException) as refused:
                MlflowClient(url).create_experiment("anonymous")
            assert "401" in str(refused.value) or "nauthorized" in str(refused.value)
            patch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
            patch.setenv("MLFLOW_TRACKING_PASSWORD", "team-s3cret-1")
            client = MlflowClient(url)
            experiment = client.create_experiment("team")
            assert client.get_experiment(experiment).name == "team"
        assert (tmp_path / "basic_auth.db").exists()  # the users' database beside the artifacts folder
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
