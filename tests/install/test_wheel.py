"""The package as a user installs it: a wheel built from this checkout, installed into a clean
venv outside the repo with exactly the lock's runtime pins, then used as the README says.

Run once per CI run (`make install-check`, from `.ci/run`), not by `make test`: it builds a venv
of its own. Real parts only: pip, a new interpreter, the installed `moe-pipeline` script.
"""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import lockfile  # noqa: E402


def _sh(args: list, cwd: Path, env: dict, timeout: int = 600) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_the_wheel_installs_from_the_lock_and_runs_init_run_predict_and_a_pyfunc_load(tmp_path: Path):
    clean = {k: v for k, v in os.environ.items()
             if k not in ("PYTHONPATH", "VIRTUAL_ENV", "MLFLOW_TRACKING_URI", "PYTHONHOME")}
    dist = tmp_path / "dist"
    _sh([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", ROOT, "-w", dist],
        tmp_path, clean)
    (wheel,) = dist.glob("moe_pipeline-*.whl")
    top = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert top == {"moe_pipeline", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}, top

    venv = tmp_path / "venv"
    _sh([sys.executable, "-m", "venv", venv], tmp_path, clean)
    py, bin_ = venv / "bin" / "python", venv / "bin"
    env = {**clean, "PATH": f"{bin_}{os.pathsep}{clean.get('PATH', '')}"}
    # torch as `make setup` installs it: the local CPU wheel, else the index; never from the lock
    if subprocess.run([py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "torch"], env=env,
                      capture_output=True).returncode != 0:
        _sh([py, "-m", "pip", "install", "-q", "--no-deps", "torch"], tmp_path, env)
    runtime = tmp_path / "runtime.lock"
    runtime.write_text(lockfile.runtime_subset(ROOT / "pyproject.toml", ROOT / "requirements.lock"))
    _sh([py, "-m", "pip", "install", "-q", "--require-hashes", "--no-deps", "-r", runtime], tmp_path, env)
    _sh([py, "-m", "pip", "install", "-q", "--no-deps", wheel], tmp_path, env)
    _sh([py, "-m", "pip", "check"], tmp_path, env)  # the runtime pins alone make the wheel whole
    installed = _sh([py, "-c", "import importlib.util as u; print(u.find_spec('stages'))"], tmp_path, env)
    assert installed.strip() == "None"  # no top-level `stages` to shadow a user's own

    work = tmp_path / "work"
    work.mkdir()
    cli = bin_ / "moe-pipeline"
    _sh([cli, "init", "x"], work, env)
    _sh([cli, "run", "x/pipeline.yaml"], work, env)
    _sh([cli, "predict", "x/pipeline.yaml", "--split", "test", "--out", "p.csv"], work, env)
    _sh([cli, "export", "x/pipeline.yaml", "--out", "exp"], work, env)
    script = """
import sys
import numpy as np, pandas as pd, mlflow.pyfunc
from moe_pipeline.execute.view import View
from moe_pipeline.pipeline.loader import load_pipeline
rows = View(load_pipeline("x/pipeline.yaml")).store.source("wine").raw_field("features", "test").numpy()
got = mlflow.pyfunc.load_model("exp").predict({"wine.features": rows})
want = pd.read_csv("p.csv")
assert list(got.columns) == list(want.columns), (list(got.columns), list(want.columns))
numeric = [c for c in want.columns if not c.endswith(".class")]
assert np.abs(got[numeric].to_numpy(dtype=float) - want[numeric].to_numpy(dtype=float)).max() <= 1e-6
print(len(got))
"""
    rows = _sh([py, "-c", script], work, env)
    assert int(rows) > 10
