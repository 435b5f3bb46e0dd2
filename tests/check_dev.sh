#!/usr/bin/env bash
# `make check`: the code-quality gates. Developer tools only: they live in the git-ignored
# .venv-dev/ and never become runtime dependencies of openai2.
#
#   ruff check openai2 tests          lint (rules: tests/ruff.toml)
#   ruff format --check openai2       formatting (`make format` applies it)
#   mypy --strict openai2             types, for Python 3.8
#   vermin -t=3.8- openai2            nothing newer than Python 3.8 is used
#   wheel from setup.cfg, then pip install it into a fresh venv: `openai2 --version` and
#                                     `python -m openai2 --version`; the wheel has no Requires-Dist
#   (pip cannot install the folder itself: it wants a setup.py or pyproject.toml, which the
#   design card excludes; tests/build_wheel.py builds the wheel from setup.cfg instead)
#
# Every gate runs even when an earlier one fails; the exit status is 1 if any failed.
# `tests/check_dev.sh --format` (make format) applies ruff's formatting to openai2/ instead.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${DEV_VENV:-.venv-dev}"
# mypy 1.16 is the last release that still checks for --python-version 3.8.
PINS="ruff==0.17.5 mypy==1.16.1 vermin==1.9.2 setuptools==75.3.0 wheel==0.45.1"
RUFF_CONFIG=tests/ruff.toml

stamp="$VENV/.installed-$(echo "$PINS" | cksum | cut -d' ' -f1)"
if [ ! -f "$stamp" ]; then
    echo "== creating $VENV with $PINS"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV" || exit 1
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $PINS || exit 1
    touch "$stamp"
fi

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

# --- installing: a fresh virtual environment, used from outside the checkout ---------------------
tmp="$(mktemp -d "${TMPDIR:-/tmp}/openai2-check.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
version="$("$PYTHON" -c 'import sys; sys.path.insert(0, "tests"); import build_single as b; print(b._read_version("openai2/common.py"))')"
root="$(pwd)"

build_wheel() {
    [ -n "$(ls "$tmp"/wheel/openai2-*.whl 2>/dev/null)" ] && return 0
    "$VENV/bin/python" tests/build_wheel.py "$tmp/wheel" >/dev/null
}

install_and_run() {
    build_wheel || return 1
    "$PYTHON" -m venv "$tmp/venv" || return 1
    "$tmp/venv/bin/python" -m pip install --quiet --disable-pip-version-check "$tmp"/wheel/openai2-*.whl || return 1
    (
        cd "$tmp" || exit 1
        ./venv/bin/python - "$root" <<'PY' || exit 1
import os, sys
import openai2
here = os.path.dirname(os.path.abspath(openai2.__file__))
assert not here.startswith(os.path.realpath(sys.argv[1]) + os.sep), "imported the checkout, not the install: " + here
assert os.path.isfile(os.path.join(here, "py.typed")), "py.typed is not installed"
print("installed openai2 %s at %s (py.typed present)" % (openai2.__version__, here))
PY
        if [ ! -f "$root/openai2/cli.py" ]; then
            echo "note: openai2/cli.py does not exist yet: CLI checks skipped"
            exit 0
        fi
        out="$(./venv/bin/openai2 --version 2>&1)" || { echo "openai2 --version failed: $out"; exit 1; }
        echo "openai2 --version: $out"
        case "$out" in *"$version"*) ;; *) echo "expected version $version"; exit 1 ;; esac
        out="$(./venv/bin/python -m openai2 --version 2>&1)" || { echo "python -m openai2 --version failed: $out"; exit 1; }
        echo "python -m openai2 --version: $out"
        case "$out" in *"$version"*) ;; *) echo "expected version $version"; exit 1 ;; esac
    )
}
gate "pip install (wheel from setup.cfg)" install_and_run

wheel_has_no_deps() {
    build_wheel || return 1
    "$PYTHON" - "$tmp"/wheel/*.whl <<'PY'
import sys, zipfile
path = sys.argv[1]
with zipfile.ZipFile(path) as whl:
    names = whl.namelist()
    meta = [n for n in names if n.endswith(".dist-info/METADATA")]
    text = whl.read(meta[0]).decode("utf-8")
requires = [line for line in text.splitlines() if line.startswith("Requires-Dist:")]
problems = []
if requires:
    problems.append("wheel declares dependencies: %s" % requires)
if "openai2/py.typed" not in names:
    problems.append("py.typed missing from the wheel")
stray = sorted(n for n in names if not (n.startswith("openai2/") or ".dist-info/" in n))
if stray:
    problems.append("files outside the package in the wheel: %s" % stray)
print("%s: %d files, no Requires-Dist" % (path.rsplit("/", 1)[-1], len(names)) if not problems else "\n".join(problems))
sys.exit(1 if problems else 0)
PY
}
gate "pip wheel" wheel_has_no_deps

echo
if [ "${#failed[@]}" -gt 0 ]; then
    echo "make check: FAILED: ${failed[*]}"
    exit 1
fi
echo "make check: all gates pass"
