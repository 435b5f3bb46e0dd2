# openai2 — development tasks. Everything here needs only Python; tools that are not in the
# standard library are installed into git-ignored virtual environments (.venv-*) on demand.
PYTHON ?= python3

.PHONY: test
test:
	$(PYTHON) tests/run.py
