# The two commands a newcomer needs: `make demo` and `make test`.
# Both create (or update) .venv at the repository root with the project and all extras.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.modelsafe-installed
export KERAS_BACKEND := tensorflow
export TF_CPP_MIN_LOG_LEVEL := 2
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv demo test test-fast bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	# torch is pinned to the CPU build (2.13.0) in pyproject; installing it first keeps pip
	# from resolving any CUDA build for packages that depend on torch.
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[all,dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(PY) examples/demo.py

# One run of the whole suite, stress tests included (they are sized to fit CI).
test: venv
	$(PY) -m pytest -n 2 --timeout=1200 -q

# Everything but the stress tests, stopping at the first failure.
test-fast: venv
	$(PY) -m pytest -n 2 -m "not slow" --timeout=900 -q -x

# The peers (skops, MLflow, picklescan, modelscan...) live in their own environment.
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.modelsafe-installed

$(BENCH_STAMP): pyproject.toml Makefile
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BENCH_VENV)/bin/python -m pip install --quiet "torch==2.13.0"
	$(BENCH_VENV)/bin/python -m pip install --quiet -e ".[all,dev,bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python bench/run.py

clean:
	rm -rf $(VENV) $(BENCH_VENV) .pytest_cache build dist src/*.egg-info
