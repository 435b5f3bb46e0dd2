#!/usr/bin/env bash
# Create the git-ignored .venv-litellm/ with a pinned LiteLLM proxy, for
# tests/integration/test_litellm.py (which talks to the proxy over HTTP only: the test process
# never imports litellm, so LiteLLM's large dependency tree stays out of .venv-integration).
#
#   bash tests/integration/litellm_venv.sh          create or reuse the venv; prints its path
#
# The pin: LiteLLM 1.82.7 and 1.82.8 were published to PyPI with stolen credentials on
# 2026-03-24 (a credential stealer; 1.82.8 also ran from a litellm_init.pth at every interpreter
# start-up) and were removed. 1.83.0 was the first release from LiteLLM's rebuilt CI/CD;
# 1.108.0 opens its long-term-support line (1.108.x) and is past CVE-2026-42271 (command
# execution through the MCP test endpoints, fixed in 1.83.7). Later 1.108.x patches pin .postN
# builds of litellm-proxy-extras / litellm-enterprise that not every index serves; 1.108.0 pins
# plain releases of both.
# The script refuses the two compromised releases whatever LITELLM_PIN says, and checks after
# installing that the version is the one asked for and that no .pth file came with it.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python3}"
VENV="${LITELLM_VENV:-.venv-litellm}"
PIN="${LITELLM_PIN:-1.108.0}"

case "$PIN" in
    1.82.7|1.82.8) echo "litellm $PIN is a compromised release; refusing" >&2; exit 2 ;;
esac

stamp="$VENV/.installed-litellm-$PIN"
if [ ! -f "$stamp" ]; then
    echo "== creating $VENV with litellm[proxy]==$PIN" >&2
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "litellm[proxy]==$PIN"
    # look for .pth files before running the venv's python again (a .pth runs at start-up)
    pth="$(find "$VENV" -path '*site-packages*' -name '*.pth' ! -name 'distutils-precedence.pth' -print)"
    if [ -n "$pth" ]; then
        echo "unexpected .pth files in $VENV (a compromised release ran code from one):" >&2
        echo "$pth" >&2
        exit 1
    fi
    got="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))')"
    if [ "$got" != "$PIN" ]; then
        echo "installed litellm $got, not $PIN" >&2
        exit 1
    fi
    touch "$stamp"
fi
echo "$VENV"
