"""One headless chromium for the whole test session, and one small trained project whose pages
it opens: the tiny digits pipeline trained, then its first expert's `lr` changed (has_loop stale,
digit pending), then `report` and `explain --html` written, and an MLflow UI on its registry.

The project is made by real `moe-pipeline` processes in a folder of its own, as a user would.
The browser is Debian's chromium with its chromedriver (`make test` installs both where missing);
Selenium is told where they are, so it never downloads a browser or a driver.
"""
from __future__ import annotations

import os
import signal
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import TARGETS, TINY_DIGITS

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="session")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for binary in (CHROMIUM, CHROMEDRIVER):
        assert Path(binary).exists(), f"{binary} missing: `make test` installs Debian's chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _moe(project: Path, *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "moe_pipeline", *args], cwd=project, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="session")
def pages(tmp_path_factory: pytest.TempPathFactory):
    """file:// URLs of the overview, has_loop's report and the explain page; the MLflow UI's base URL."""
    project = tmp_path_factory.mktemp("browser-project")
    (project / ".git").mkdir()
    (project / "browser_targets.py").write_text(TARGETS)
    pipeline = project / "tiny.yaml"
    pipeline.write_text(TINY_DIGITS.replace("name: tiny", "name: browser").replace("TARGETS", "browser_targets"))
    _moe(project, "run", "tiny.yaml")
    server = _mlflow_ui(project)  # it boots (imports, workers) while the pages are drawn
    try:
        text = pipeline.read_text()
        at = text.index("lr: 1.0e-2")  # has_loop's, the first
        pipeline.write_text(text[:at] + "lr: 2.0e-2" + text[at + len("lr: 1.0e-2"):])
        _moe(project, "status", "tiny.yaml", "--record")  # the stale state into the registry's tags
        _moe(project, "report", "tiny.yaml")
        _moe(project, "explain", "tiny.yaml", "--split", "test", "--row", "3", "--html", "explain.html", "--allow-stale")
        _moe(project, "diagnose", "tiny.yaml", "--html", "diagnose.html")
        overview = project / "reports" / "browser" / "overview"
        _wait_until_up(*server)
        yield {"overview": (overview / "overview.html").as_uri(),
               "expert": (overview / "experts" / "has_loop" / "report.html").as_uri(),
               "explain": (project / "explain.html").as_uri(), "diagnose": (project / "diagnose.html").as_uri(),
               "mlflow": server[0]}
    finally:  # the session is over, its project thrown away: no graceful stop (about 4 s), the workers too
        os.killpg(server[1].pid, signal.SIGKILL)
        server[1].wait(timeout=30)


def _mlflow_ui(project: Path) -> tuple[str, subprocess.Popen]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    db = project / "registry" / "mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{db}"}
    process = subprocess.Popen([mlflow, "server", "--backend-store-uri", f"sqlite:///{db}", "--host", "127.0.0.1",
                                "--port", str(port), "--workers", "1"], cwd=project, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    return f"http://127.0.0.1:{port}", process


def _wait_until_up(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                return
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.3)
