"""Build the wheel from setup.cfg alone: ``python tests/build_wheel.py OUTDIR``.

The design card allows no setup.py and no pyproject.toml at the top level, and pip refuses to
install a folder that has neither ("Neither 'setup.py' nor 'pyproject.toml' found"). setuptools
itself reads setup.cfg, though: this script copies what a distribution needs (setup.cfg,
README.md, LICENSE, openai2/) into a temporary folder and runs ``setuptools.setup()`` there, so
no build/ or *.egg-info is left in the checkout. The interpreter must have setuptools and wheel
(the development venv of ``make check`` has them). Prints the wheel's path.
"""
import glob
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv):
    out = os.path.abspath(argv[0] if argv else os.path.join(ROOT, "dist"))
    os.makedirs(out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="openai2-wheel-")
    try:
        for name in ("setup.cfg", "README.md", "LICENSE"):
            shutil.copy2(os.path.join(ROOT, name), work)
        shutil.copytree(os.path.join(ROOT, "openai2"), os.path.join(work, "openai2"),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        before = set(glob.glob(os.path.join(out, "openai2-*.whl")))
        subprocess.check_call(
            [sys.executable, "-c", "import setuptools; setuptools.setup()", "--quiet", "bdist_wheel", "--dist-dir", out],
            cwd=work,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    wheels = sorted(set(glob.glob(os.path.join(out, "openai2-*.whl"))) - before) or sorted(glob.glob(os.path.join(out, "openai2-*.whl")))
    if not wheels:
        print("build_wheel: no wheel was produced", file=sys.stderr)
        return 1
    print(wheels[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
