# openai2 — development tasks. Everything here needs only Python; tools that are not in the
# standard library are installed into git-ignored virtual environments (.venv-*) on demand.
PYTHON ?= python3

.PHONY: test
test:
	$(PYTHON) tests/run.py

# One file, every Python (issue 6). dist/openai2.py is built from openai2/*.py with ast (see the
# docstring of tests/build_single.py); the build prints the file's sha256.
.PHONY: single-file test-single test-matrix pypy check format
single-file:
	$(PYTHON) tests/build_single.py

# make test's tests, with dist/openai2.py importable as `openai2` instead of the package
test-single: single-file
	$(PYTHON) tests/run_single.py --no-build

# the suite (package and single file) on every python3.X on PATH, ~/.pyenv/versions/*, pypy3
test-matrix:
	$(PYTHON) tests/matrix.py

# Debian's PyPy 3, for test-matrix (CI runs as root)
pypy:
	command -v pypy3 >/dev/null || (apt-get update && apt-get install -y pypy3)

# ruff, mypy --strict, vermin, pip install/wheel checks; tools in the git-ignored .venv-dev
check:
	PYTHON=$(PYTHON) bash tests/check_dev.sh

# a wheel built from setup.cfg alone (pip cannot install a folder without setup.py/pyproject.toml)
.PHONY: wheel
wheel:
	$(PYTHON) -c "import setuptools, wheel" 2>/dev/null || $(PYTHON) -m pip install --quiet setuptools wheel
	$(PYTHON) tests/build_wheel.py dist

# apply ruff's formatting to openai2/ (what `make check` verifies)
format:
	PYTHON=$(PYTHON) bash tests/check_dev.sh --format

# Benchmark against the official SDK (issue 7; not a test, independent of `make test`).
# The SDK and pyinstrument live only in the git-ignored .venv-bench; openai2 is used from the
# repository. Results: tests/bench/results.md. Profiles: .venv-bench/bin/python tests/bench/prof.py
BENCH_VENV ?= .venv-bench

$(BENCH_VENV)/.installed:
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check openai pyinstrument
	touch $@

.PHONY: bench
bench: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python tests/bench/run.py

# Reliability and security against real components (issue 8): real tinyproxy and microsocks, the
# official SDK as an oracle, hypothesis properties, faults, load, data safety, key hygiene.
# Installs Debian's tinyproxy, microsocks and strace when missing (CI runs as root) and the
# git-ignored .venv-integration (openai, hypothesis); openai2 itself is used from the repository.
INTEGRATION_VENV ?= .venv-integration

$(INTEGRATION_VENV)/.installed:
	$(PYTHON) -m venv $(INTEGRATION_VENV) || (apt-get update && apt-get install -y python3-venv && $(PYTHON) -m venv $(INTEGRATION_VENV))
	$(INTEGRATION_VENV)/bin/python -m pip install --quiet --disable-pip-version-check openai hypothesis
	touch $@

.PHONY: integration
integration: $(INTEGRATION_VENV)/.installed
	@missing=""; for tool in tinyproxy microsocks strace; do command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; fi
	$(INTEGRATION_VENV)/bin/python tests/integration/run.py
