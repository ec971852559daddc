# Two commands matter: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench gpu-check postgres clean

setup: $(STAMP)

# torch goes in first, without an index, so a CPU-only machine with a local CPU wheel
# never downloads the CUDA build; only when no local wheel exists do we ask the index.
# An installed torch is never upgraded: the project's `torch>=2.4` is then already met.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null \
	  || $(PY) -m pip install -q --no-index --no-deps torch \
	  || $(PY) -m pip install -q torch
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -c "import torch, mlflow, captum, safetensors; print('torch', torch.__version__)"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/moe-pipeline run pipelines/digits.yaml

test: $(STAMP) postgres
	$(PY) -m pytest tests

# The team-mode tests start a real PostgreSQL: its binaries come from apt where missing, and
# as root the database runs as the `postgres` user (initdb refuses root).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null \
	  || ($(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q postgresql)
	@[ "$$(id -u)" != 0 ] || id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres

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
