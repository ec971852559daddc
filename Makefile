# Two commands matter: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup lock reliability install-check demo test bench gpu-check postgres browser graphviz clean

setup: $(STAMP)

# The lock (requirements.lock, made by `make lock`) pins every package of the project's own set-up,
# with hashes; pyproject.toml keeps ranges for the package's users.
# torch goes in first, without an index, so a CPU-only machine with a local CPU wheel
# never downloads the CUDA build; only when no local wheel exists do we ask the index.
# An installed torch is never upgraded. The lock leaves torch out (its CPU and CUDA builds are
# different files) and holds everything else, torch's own dependencies included: installed with
# --no-deps and --require-hashes, the venv gets exactly the lock, and `pip check` proves it whole.
$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null \
	  || $(PY) -m pip install -q --no-index --no-deps torch \
	  || $(PY) -m pip install -q --no-deps torch
	$(PY) -m pip install -q --require-hashes --no-deps -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	$(PY) -c "import torch, mlflow, captum, safetensors; print('torch', torch.__version__)"
	touch $(STAMP)

# Refresh the lock from pyproject.toml's ranges: uv resolves for CPython 3.11 on x86-64 Linux
# without installing anything, against the local CPU torch wheel (its dependencies, not CUDA's).
# uv itself lives apart from the project's packages, so the venv stays equal to the lock.
UV_VERSION := 0.13.9
UV := $(VENV)/uv/bin/uv
TORCH_CPU := torch==2.13.0+cpu

# The README's reliability table, from the outcomes of the tests marked `reliability`
reliability: $(STAMP)
	$(PY) tools/reliability.py

lock:
	test -x $(UV) || $(PYTHON) -m pip install -q --target $(VENV)/uv uv==$(UV_VERSION)
	echo '$(TORCH_CPU)' > $(VENV)/torch-override.txt
	$(UV) pip compile pyproject.toml --extra dev --generate-hashes --no-header \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	  --index-url https://pypi.org/simple --find-links /opt/wheels \
	  --override $(VENV)/torch-override.txt --no-emit-package torch -o $(VENV)/lock.body
	$(PYTHON) tools/lockfile.py header > requirements.lock
	cat $(VENV)/lock.body >> requirements.lock

demo: $(STAMP)
	$(VENV)/bin/moe-pipeline run pipelines/digits.yaml

test: $(STAMP) postgres browser graphviz
	$(PY) tools/lockfile.py check
	$(PY) -m pytest tests --ignore=tests/install --durations=15

# The wheel in a clean venv outside the repo, from the lock's runtime pins (.ci/run runs it once).
install-check: $(STAMP)
	$(PY) -m pytest tests/install

# The team-mode tests start a real PostgreSQL: its binaries come from apt where missing, and
# as root the database runs as the `postgres` user (initdb refuses root).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null \
	  || ($(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q postgresql)
	@[ "$$(id -u)" != 0 ] || id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres

# The graph pages are laid out by Graphviz's `dot` (the `graphviz` package calls it; without it a
# page lists its arrows in a table and says so). The browser tests drive Debian's chromium through
# its chromedriver: both from apt where missing, never a browser download.
graphviz:
	@command -v dot >/dev/null \
	  || ($(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q graphviz)
browser:
	@(command -v chromium && command -v chromedriver) >/dev/null \
	  || ($(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium chromium-driver)

# Bytecode of the project's own modules first: Python writes it on first import, unless
# PYTHONDONTWRITEBYTECODE is set (as on the machines these figures come from), and then every
# fresh process would compile them again; the benchmarks measure what a user's second run sees.
bench: $(STAMP)
	$(PY) -m compileall -q moe_pipeline stages benchmarks
	$(PY) benchmarks/run.py

# On a CUDA machine: demo on the GPU, the micro-batch memory promise, AGOP on the GPU;
# writes benchmarks/results-gpu.json. Where torch and the dependencies are already
# installed, `make gpu-check PY=python3 STAMP=` uses them instead of .venv.
gpu-check: $(STAMP)
	$(PY) benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) registry/mlflow.db registry/artifacts reports
