# The two commands a newcomer needs: `make demo` and `make test`.
# Both create (or update) .venv at the repository root with the project and all extras.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.modelsafe-installed
export KERAS_BACKEND := tensorflow
export TF_CPP_MIN_LOG_LEVEL := 2
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv old-venv portable-venv java demo test test-fast bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	# torch is pinned to the CPU build (2.13.0) in pyproject; installing it first keeps pip
	# from resolving any CUDA build for packages that depend on torch.
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[all,dev]"
	touch $(STAMP)

venv: $(STAMP)

# The compatibility suite's second environment: older scikit-learn, numpy, pandas and
# XGBoost (tests/compat/requirements-old.txt), with this project installed into it.
OLD_VENV := .venv-old
OLD_STAMP := $(OLD_VENV)/.modelsafe-installed

$(OLD_STAMP): tests/compat/requirements-old.txt pyproject.toml
	test -x $(OLD_VENV)/bin/python || $(PYTHON) -m venv $(OLD_VENV)
	$(OLD_VENV)/bin/python -m pip install --quiet --upgrade pip setuptools wheel
	$(OLD_VENV)/bin/python -m pip install --quiet -r tests/compat/requirements-old.txt
	$(OLD_VENV)/bin/python -m pip install --quiet --no-deps -e .
	touch $(OLD_STAMP)

old-venv: $(OLD_STAMP)

# The portable runtime's environment: modelsafe's core, numpy and onnxruntime, and no framework (no
# scikit-learn, XGBoost, LightGBM, torch, TensorFlow, pandas). tests/portable/test_minimal_env.py loads
# artifacts there through their ONNX member (load(runtime="auto")).
PORTABLE_VENV := .venv-portable
PORTABLE_STAMP := $(PORTABLE_VENV)/.modelsafe-installed

$(PORTABLE_STAMP): tests/portable/requirements-runtime.txt pyproject.toml
	test -x $(PORTABLE_VENV)/bin/python || $(PYTHON) -m venv $(PORTABLE_VENV)
	$(PORTABLE_VENV)/bin/python -m pip install --quiet --upgrade pip setuptools wheel
	$(PORTABLE_VENV)/bin/python -m pip install --quiet -r tests/portable/requirements-runtime.txt
	$(PORTABLE_VENV)/bin/python -m pip install --quiet -e .
	touch $(PORTABLE_STAMP)

portable-venv: $(PORTABLE_STAMP)

demo: venv
	$(PY) examples/demo.py

# Java 17 for the Spark tests (pyspark 4 needs it): Debian's package, installed only when java is missing.
java:
	command -v java >/dev/null 2>&1 || (apt-get update && apt-get install -y openjdk-17-jre-headless)

# One run of the whole suite, stress tests and the compatibility suite included.
test: venv old-venv portable-venv java
	$(PY) -m pytest -n 2 --timeout=1200 -q

# Everything but the stress tests, stopping at the first failure.
test-fast: venv java
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
	rm -rf $(VENV) $(OLD_VENV) $(PORTABLE_VENV) $(BENCH_VENV) .pytest_cache build dist src/*.egg-info
