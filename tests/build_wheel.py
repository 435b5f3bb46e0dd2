"""Build the wheel, or with ``--sdist`` the sdist: ``python tests/build_wheel.py [--sdist] [OUTDIR]``.

``make wheel`` and ``make sdist`` run this with the development venv's setuptools; ``make check``
uses it too. It calls setuptools' PEP 517 hooks (``setuptools.build_meta``, the backend named in
pyproject.toml, exactly what ``pip install .``, ``pip wheel .`` and ``python -m build`` call) in
a fresh copy of the files a distribution is made of: pyproject.toml, setup.cfg, README.md,
LICENSE and openai2/. Building in a copy leaves no build/ or *.egg-info in the checkout, and no
stale egg-info from an earlier build can add files to the sdist. Needs no network: the
interpreter must have setuptools (43.0.0 or newer; older than 70.1 also needs wheel).
Prints the path of each distribution built (OUTDIR defaults to dist/).
"""
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_FILES = ("pyproject.toml", "setup.cfg", "README.md", "LICENSE")

_HOOK = "import sys, setuptools.build_meta as b; print(getattr(b, 'build_' + sys.argv[1])(sys.argv[2]))"


def build(out, kinds=("wheel",), python=None):
    """Build each of ``kinds`` ("wheel", "sdist") into ``out``; return the list of paths."""
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="openai2-build-")
    built = []
    try:
        src = os.path.join(work, "src")
        os.mkdir(src)
        for name in SOURCE_FILES:
            shutil.copy2(os.path.join(ROOT, name), src)
        shutil.copytree(os.path.join(ROOT, "openai2"), os.path.join(src, "openai2"),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for kind in kinds:
            staging = os.path.join(work, kind)
            os.mkdir(staging)
            proc = subprocess.run([python or sys.executable, "-c", _HOOK, kind, staging], cwd=src,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if proc.returncode != 0:
                raise RuntimeError("building the %s failed:\n%s" % (kind, proc.stdout))
            name = proc.stdout.strip().splitlines()[-1]
            target = os.path.join(out, name)
            shutil.copy2(os.path.join(staging, name), target)
            built.append(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return built


def main(argv):
    kinds = ["wheel"]
    if "--sdist" in argv:
        argv = [a for a in argv if a != "--sdist"]
        kinds = ["sdist"]
    out = argv[0] if argv else os.path.join(ROOT, "dist")
    try:
        paths = build(out, kinds)
    except (RuntimeError, OSError) as exc:
        print("build_wheel: %s" % exc, file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
