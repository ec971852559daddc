"""Commands that start long-running servers: `ui` (MLflow's UI on one registry) and `server`
(the team's shared MLflow server on a database). They check what would otherwise fail late
(a taken port, a missing database driver) and then hand over to `mlflow`; they never train.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Optional

import typer

from moe_pipeline.errors import SelectionError

PipelineArg = typer.Argument(..., help="pipeline YAML file, e.g. pipelines/digits.yaml", show_default=False)


def _port_free(host: str, port: int) -> None:
    """A taken port would print our URL, then fail inside mlflow with exit 0: refuse it first."""
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            raise SelectionError(f"port {port} on {host} is in use; choose another with --port") from None


def ui(
    pipeline: Path = PipelineArg,
    port: int = typer.Option(5000, help="port on 127.0.0.1"),
) -> None:
    """Start the MLflow UI on this pipeline's registry, on loopback only."""
    from moe_pipeline.pipeline.loader import load_pipeline
    from moe_pipeline.registry.reader import resolve_tracking_uri

    loaded = load_pipeline(pipeline)
    uri = resolve_tracking_uri(loaded.pipeline, loaded.path)
    _port_free("127.0.0.1", port)
    typer.echo(f"MLflow UI for {loaded.pipeline.name} on http://127.0.0.1:{port}  (store: {uri})")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)]
    raise typer.Exit(subprocess.call(cmd, env=os.environ.copy()))


def server(
    backend_store: str = typer.Option(..., "--backend-store", help="database URI, e.g. "
                                      "postgresql+psycopg://USER@HOST:5432/mlflow", show_default=False),
    artifacts: str = typer.Option(..., "--artifacts", help="where the server keeps artifacts (a folder, or "
                                  "s3://...); clients reach them through the server", show_default=False),
    host: str = typer.Option("127.0.0.1", help="interface to listen on; 0.0.0.0 for the whole network"),
    port: int = typer.Option(5000, help="port to listen on"),
    workers: int = typer.Option(4, help="server worker processes"),
    auth: Optional[bool] = typer.Option(None, "--auth/--no-auth", help="MLflow's basic authentication (users and "
                                        "passwords; clients set MLFLOW_TRACKING_USERNAME and _PASSWORD); default: "
                                        "on whenever the server listens beyond loopback", show_default=False),
    auth_db: Optional[str] = typer.Option(None, "--auth-db", help="the users' database; default: basic_auth.db "
                                          "beside a local --artifacts folder", show_default=False),
) -> None:
    """Start the team's shared registry: `mlflow server` on a database, serving artifacts.

    Pipelines then set `registry: {tracking_uri: http://HOST:PORT}` (or MLFLOW_TRACKING_URI).
    Beyond loopback it asks for a user and password on every request (MLflow's basic-auth app)
    unless `--no-auth`: otherwise anyone on the network could write the versions others load."""
    if backend_store.startswith("postgresql"):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise SelectionError("a PostgreSQL backend store needs its driver: pip install 'moe-pipeline[postgres]'") \
                from None
    _port_free(host, port)
    if "://" not in artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        artifacts = str(Path(artifacts).resolve())
    use_auth = auth if auth is not None else not is_loopback(host)
    env = os.environ.copy()
    if use_auth:
        config = _auth_config(artifacts, auth_db)
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(config)
        env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", _secret_key(config.parent))
    cmd = server_command(backend_store, artifacts, host, port, workers, use_auth)
    typer.echo(f"MLflow server on http://{host}:{port}  (store: {_without_password(backend_store)}; "
               f"artifacts: {artifacts}; " + ("users and passwords required" if use_auth else
                                               "no authentication: loopback only, or --no-auth") + ")", err=True)
    raise typer.Exit(subprocess.call(cmd, env=env))


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def server_command(backend_store: str, artifacts: str, host: str, port: int, workers: int, auth: bool) -> list[str]:
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store, "--serve-artifacts",
           "--artifacts-destination", artifacts, "--host", host, "--port", str(port), "--workers", str(workers)]
    return cmd + (["--app-name", "basic-auth"] if auth else [])


def _secret_key(folder: Path) -> str:
    """The key MLflow's auth app signs its forms with: made once, kept (owner-only) beside the auth
    settings, so every worker and every restart share it; MLFLOW_FLASK_SERVER_SECRET_KEY overrides it."""
    import secrets

    path = folder / "moe-auth.secret"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32))
    return path.read_text().strip()


def _auth_config(artifacts: str, auth_db: str | None) -> Path:
    """MLflow's auth settings for this server: the users' database, authenticated users may read
    and write (a team's shared registry), anonymous requests none. The first start creates the
    `admin` user with MLFLOW_AUTH_ADMIN_PASSWORD: without it (and no users' database yet) it
    would not start, so say so here."""
    if auth_db is None:
        if "://" in artifacts:
            raise SelectionError("with authentication and remote --artifacts, give the users' database: "
                                 "--auth-db sqlite:////path/basic_auth.db (or a PostgreSQL URI)")
        auth_db = f"sqlite:///{Path(artifacts).parent / 'basic_auth.db'}"
    local = Path(auth_db[len("sqlite:///"):]) if auth_db.startswith("sqlite:///") else None
    if (local is None or not local.exists()) and not os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD"):
        raise SelectionError("authentication is on (the server listens beyond loopback, or --auth): set "
                             "MLFLOW_AUTH_ADMIN_PASSWORD to the password of the `admin` user it creates on first "
                             "start, or pass --no-auth to serve without users")
    # beside the users' database where it is a file, else beside a local artifacts folder, else here
    home = local.parent if local is not None else Path(artifacts).parent if "://" not in artifacts else Path.cwd()
    config = home / "moe-auth.ini"
    config.write_text("[mlflow]\ndefault_permission = EDIT\n"
                      f"database_uri = {auth_db}\nadmin_username = admin\n"
                      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    return config


def _without_password(uri: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return uri
