# The two commands a newcomer needs: `make demo` and `make test`.
# Both create (or update) .venv at the repository root with the project and all extras.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.modelsafe-installed
export KERAS_BACKEND := tensorflow
export TF_CPP_MIN_LOG_LEVEL := 2
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: lock venv old-venv portable-venv java azurite demo test test-fast bench clean

# Every dependency of the project with all its extras, resolved once into requirements/lock.txt (`make lock`):
# resolving ~220 packages at install time made pip give up (resolution-too-deep) after half an hour.
# uv installs the locked set in parallel; torch is the CPU build 2.13.0 that lies on this machine's disk
# (/opt/wheels), which uv reads only when told.
LOCK := requirements/lock.txt
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels)
UV := $(VENV)/bin/uv

$(STAMP): pyproject.toml Makefile $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "uv>=0.6,<1"
	$(UV) pip install --quiet --python $(PY) $(FIND_LINKS) -r $(LOCK)
	$(UV) pip install --quiet --python $(PY) --no-deps -e .
	$(call compile-bytecode,$(VENV))
	touch $(STAMP)

# Re-resolve the lock after a change to the dependencies in pyproject.toml.
lock: $(STAMP)
	$(UV) pip compile pyproject.toml --extra all --extra dev --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 $(FIND_LINKS) --no-emit-find-links \
		--custom-compile-command "make lock" -o $(LOCK)

venv: $(STAMP)

# Every installed module compiled to bytecode once, here: where PYTHONDONTWRITEBYTECODE is set (as on the CI
# machines), Python never caches what it compiles, and every fresh process would compile TensorFlow, torch and
# scikit-learn from source again (importing keras: 11 s instead of 4 s). A file that does not compile (some
# packages ship templates with a .py suffix) is left to Python, hence the `|| true`.
define compile-bytecode
	$(1)/bin/python -m compileall -qq -j 0 $(1)/lib || true
endef

# A small test environment: $(1) the folder, $(2) its requirements file, $(3) options for installing the project.
define small-venv
	test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install --quiet --upgrade pip
	$(1)/bin/python -m pip install --quiet "uv>=0.6,<1"
	$(1)/bin/uv pip install --quiet --python $(1)/bin/python -r $(2)
	$(1)/bin/uv pip install --quiet --python $(1)/bin/python $(3) -e .
	$(call compile-bytecode,$(1))
	touch $(1)/.modelsafe-installed
endef

# The compatibility suite's second environment: older scikit-learn, numpy, pandas and
# XGBoost (tests/compat/requirements-old.txt), with this project installed into it.
OLD_VENV := .venv-old
OLD_STAMP := $(OLD_VENV)/.modelsafe-installed

$(OLD_STAMP): tests/compat/requirements-old.txt pyproject.toml
	$(call small-venv,$(OLD_VENV),tests/compat/requirements-old.txt,--no-deps)

old-venv: $(OLD_STAMP)

# The oldest scikit-learn the project supports (1.3), for the compatibility suite's estimator zoo.
SK13_VENV := .venv-sklearn13
SK13_STAMP := $(SK13_VENV)/.modelsafe-installed

$(SK13_STAMP): tests/compat/requirements-sklearn13.txt pyproject.toml
	$(call small-venv,$(SK13_VENV),tests/compat/requirements-sklearn13.txt,--no-deps)

old-venv: $(SK13_STAMP)

# The portable runtime's environment: modelsafe's core, numpy and onnxruntime, and no framework (no
# scikit-learn, XGBoost, LightGBM, torch, TensorFlow, pandas). tests/portable/test_minimal_env.py loads
# artifacts there through their ONNX member (load(runtime="auto")).
PORTABLE_VENV := .venv-portable
PORTABLE_STAMP := $(PORTABLE_VENV)/.modelsafe-installed

$(PORTABLE_STAMP): tests/portable/requirements-runtime.txt pyproject.toml
	$(call small-venv,$(PORTABLE_VENV),tests/portable/requirements-runtime.txt,)

portable-venv: $(PORTABLE_STAMP)

demo: venv
	$(PY) examples/demo.py

# Java 17 for the Spark tests (pyspark 4 needs it): Debian's package, installed only when java is missing.
java:
	command -v java >/dev/null 2>&1 || (apt-get update && apt-get install -y openjdk-17-jre-headless)

# Azurite, Microsoft's Azure Storage emulator (from npm), for the az:// tests; Node.js from Debian when missing.
AZURITE := .tools/node_modules/.bin/azurite-blob

$(AZURITE):
	command -v npm >/dev/null 2>&1 || (apt-get update && apt-get install -y nodejs npm)
	npm install --prefix .tools --no-audit --no-fund --loglevel=error azurite@3.37.0

azurite: $(AZURITE)

# One run of the whole suite, stress tests and the compatibility suite included.
test: venv old-venv portable-venv java azurite
	$(PY) -m pytest -n 2 --dist worksteal --timeout=1200 -q

# Everything but the stress tests, stopping at the first failure.
test-fast: venv old-venv portable-venv java azurite
	$(PY) -m pytest -n 2 -m "not slow" --timeout=900 -q -x

# The peers (skops, MLflow, picklescan, modelscan...) live in their own environment.
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.modelsafe-installed

$(BENCH_STAMP): pyproject.toml Makefile $(LOCK) bench/overrides.txt
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet "uv>=0.6,<1"
	$(BENCH_VENV)/bin/uv pip install --quiet --python $(BENCH_VENV)/bin/python $(FIND_LINKS) -r $(LOCK)
	grep -v '^rich==' $(LOCK) > $(BENCH_VENV)/constraints.txt
	$(BENCH_VENV)/bin/uv pip install --quiet --python $(BENCH_VENV)/bin/python $(FIND_LINKS) \
		-c $(BENCH_VENV)/constraints.txt --override bench/overrides.txt -e ".[bench]"
	$(call compile-bytecode,$(BENCH_VENV))
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python bench/run.py

clean:
	rm -rf $(VENV) $(OLD_VENV) $(SK13_VENV) $(PORTABLE_VENV) .tools $(BENCH_VENV) .pytest_cache build dist src/*.egg-info
