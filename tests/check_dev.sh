#!/usr/bin/env bash
# `make check`: the code-quality and installation gates. Developer tools only: they live in the
# git-ignored .venv-dev/ and never become runtime dependencies of openai2.
#
#   ruff check openai2 tests          lint (rules: tests/ruff.toml)
#   ruff format --check openai2       formatting (`make format` applies it)
#   mypy --strict openai2             types, for Python 3.8
#   vermin -t=3.8- openai2            nothing newer than Python 3.8 is used
#   tests/install_checks.py           pip install . / --user . / git+file://, an app venv like
#                                     pipx's, the wheel and the sdist (contents, install, twine
#                                     check --strict), pip uninstall, the oldest setuptools that
#                                     pyproject.toml allows, README's quick start in a fresh clone
#
# Creating .venv-dev is the only step that uses the package index: it installs the tools and
# downloads the build requirements (setuptools, wheel) into .venv-dev/wheelhouse, from which the
# installation checks build with PIP_NO_INDEX=1. `tests/check_dev.sh --setup` stops after that
# step (make wheel, make sdist). Every gate runs even when an earlier one fails; the exit status
# is 1 if any failed. `tests/check_dev.sh --format` (make format) applies ruff's formatting.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${DEV_VENV:-.venv-dev}"
# mypy 1.16 is the last release that still checks for --python-version 3.8.
PINS="ruff==0.17.5 mypy==1.16.1 vermin==1.9.2 setuptools==75.3.0 wheel==0.45.1 twine==7.0.0 readme_renderer[md]==46.0"
# The wheelhouse: what building openai2 needs (setuptools 75.3.0 is the last for Python 3.8), and
# the oldest setuptools pyproject.toml allows, with a wheel of its time, for the floor check.
WHEELS="setuptools==75.3.0 wheel==0.45.1 setuptools==43.0.0 wheel==0.34.2"
WHEELHOUSE="$VENV/wheelhouse"
RUFF_CONFIG=tests/ruff.toml

stamp="$VENV/.installed-$(echo "$PINS $WHEELS" | cksum | cut -d' ' -f1)"
if [ ! -f "$stamp" ]; then
    echo "== creating $VENV with $PINS; wheelhouse: $WHEELS"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV" || exit 1
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $PINS || exit 1
    for requirement in $WHEELS; do  # one at a time: pip download resolves a list as one set
        "$VENV/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary :all: \
            --dest "$WHEELHOUSE" "$requirement" || exit 1
    done
    touch "$stamp"
fi
[ "${1:-}" = "--setup" ] && exit 0

if [ "${1:-}" = "--format" ]; then
    exec "$VENV/bin/ruff" format --config "$RUFF_CONFIG" --no-cache openai2
fi

failed=()
gate() {  # gate NAME COMMAND...
    local name="$1"
    shift
    echo
    echo "== $name: $*"
    if "$@"; then
        echo "-- $name: ok"
    else
        echo "-- $name: FAILED"
        failed+=("$name")
    fi
}

gate "ruff check" "$VENV/bin/ruff" check --config "$RUFF_CONFIG" --no-cache --output-format concise openai2 tests
gate "ruff format" "$VENV/bin/ruff" format --config "$RUFF_CONFIG" --no-cache --check --output-format concise openai2
gate "mypy" "$VENV/bin/mypy" --strict --python-version 3.8 --no-error-summary --cache-dir .mypy_cache \
    --hide-error-context --show-error-codes openai2
gate "vermin" "$VENV/bin/vermin" -t=3.8- --no-tips --violations --no-make-paths-absolute openai2

# --- installing: fresh venvs, fresh clones, no package index (tests/install_checks.py) ------------
gate "installing (pip install ., --user, git+URL, app venv, wheel, sdist, twine check, uninstall, README)" \
    env OPENAI2_WHEELHOUSE="$WHEELHOUSE" OPENAI2_DEV_PYTHON="$VENV/bin/python" "$PYTHON" tests/install_checks.py

echo
if [ "${#failed[@]}" -gt 0 ]; then
    echo "make check: FAILED: ${failed[*]}"
    exit 1
fi
echo "make check: all gates pass"
