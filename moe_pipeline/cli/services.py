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
) -> None:
    """Start the team's shared registry: `mlflow server` on a database, serving artifacts.

    Pipelines then set `registry: {tracking_uri: http://HOST:PORT}` (or MLFLOW_TRACKING_URI)."""
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
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store, "--serve-artifacts",
           "--artifacts-destination", artifacts, "--host", host, "--port", str(port), "--workers", str(workers)]
    typer.echo(f"MLflow server on http://{host}:{port}  (store: {_without_password(backend_store)}; "
               f"artifacts: {artifacts})", err=True)
    raise typer.Exit(subprocess.call(cmd, env=os.environ.copy()))


def _without_password(uri: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return uri
