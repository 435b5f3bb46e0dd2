#!/usr/bin/env python3
"""Run `make test`'s tests against the single file dist/openai2.py instead of the package.

Usage: python tests/run_single.py [--no-build] [--file PATH] [-v] [pattern...]

The package folder must not be importable during the run, or the tests would quietly test it
instead of the single file. So the run happens in a temporary tree that has everything the
checkout has at its top level (tests/, README.md, ...) except the package folder, with the
single file copied in as ``openai2.py``; the working directory is that tree, and ``shared/``
(test data kept beside the checkout) is linked beside it so relative paths still resolve.
Subprocesses the tests start (``python -m openai2 ...``) therefore find the single file too.

In the test process, ``openai2`` is imported from the single file first and every private
module name is aliased to it (``sys.modules["openai2.sse"] = openai2``), so tests written as
``from openai2.sse import SSEDecoder`` work unchanged. ``OPENAI2_SINGLE_FILE=1`` is set in the
environment: a test that genuinely cannot run against one file skips itself with
``unittest.skipIf(os.environ.get("OPENAI2_SINGLE_FILE") == "1", "why")``.

Prints the same closing line as tests/run.py: 'N passed, N failed, N skipped'.
"""

import os
import shutil
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PACKAGE = "openai2"

# Top-level entries of the checkout that never go into the temporary tree.
_SKIP_TOP = {PACKAGE, "dist", "build", ".git", ".ruff_cache", ".mypy_cache", "__pycache__"}


def _module_names():
    pkg = os.path.join(ROOT, PACKAGE)
    return sorted(f[:-3] for f in os.listdir(pkg) if f.endswith(".py") and f != "__init__.py")


def _ignore(_dir, names):
    return [n for n in names if n in ("__pycache__", ".cache") or n.endswith((".pyc", ".pyo"))]


def _make_tree(single_file):
    """A temporary copy of the checkout without the package; returns (base, tree)."""
    base = tempfile.mkdtemp(prefix="openai2-single-")
    tree = os.path.join(base, os.path.basename(ROOT) or "main")
    os.mkdir(tree)
    for entry in sorted(os.listdir(ROOT)):
        if entry in _SKIP_TOP or entry.startswith(".venv") or entry.endswith(".egg-info"):
            continue
        src = os.path.join(ROOT, entry)
        dst = os.path.join(tree, entry)
        if os.path.isdir(src):
            if entry.startswith("."):
                continue  # .ci, .github...: not test inputs
            shutil.copytree(src, dst, symlinks=True, ignore=_ignore)
        elif entry != PACKAGE + ".py":
            shutil.copy2(src, dst)
    shutil.copy2(single_file, os.path.join(tree, PACKAGE + ".py"))
    shared = os.path.join(os.path.dirname(ROOT), "shared")
    if os.path.isdir(shared):
        try:
            os.symlink(shared, os.path.join(base, "shared"), target_is_directory=True)
        except OSError:
            shutil.copytree(shared, os.path.join(base, "shared"), ignore=_ignore)
    return base, tree


def _import_single(tree):
    """Import the single file as ``openai2`` and alias the package's module names to it."""
    for name in list(sys.modules):
        if name == PACKAGE or name.startswith((PACKAGE + ".", "tests.")) or name == "tests":
            del sys.modules[name]
    import importlib

    module = importlib.import_module(PACKAGE)
    where = os.path.realpath(getattr(module, "__file__", "") or "")
    if where != os.path.realpath(os.path.join(tree, PACKAGE + ".py")):
        raise SystemExit("run_single: `import openai2` found %s, not the single file" % where)
    for name in _module_names():
        sys.modules["%s.%s" % (PACKAGE, name)] = module
        if not hasattr(module, name):
            # as after `import openai2.sse` in the package; never replaces a real name
            setattr(module, name, module)
    return module


def main(argv):
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # as tests/run.py: a background job's
        signal.signal(signal.SIGINT, signal.default_int_handler)  # SIGINT is ignored; tests press Ctrl-C
    build = "--no-build" not in argv
    single = os.path.join(ROOT, "dist", PACKAGE + ".py")
    args = []
    it = iter(argv)
    for a in it:
        if a == "--file":
            single = os.path.abspath(next(it))
            build = False
        elif a != "--no-build":
            args.append(a)
    if build:
        sys.path.insert(0, HERE)
        import build_single

        sys.path.remove(HERE)
        try:
            path, digest = build_single.build(output=single)
        except build_single.BuildError as exc:
            print("run_single: %s" % exc, file=sys.stderr)
            return 1
        print("%s  %s" % (digest, os.path.relpath(path, ROOT)))
    if not os.path.isfile(single):
        print("run_single: %s does not exist; run `make single-file` first" % single, file=sys.stderr)
        return 1

    verbosity = 2 if "-v" in args else 1
    names = [a for a in args if not a.startswith("-")]
    base, tree = _make_tree(single)
    old_cwd = os.getcwd()
    try:
        os.chdir(tree)
        os.environ["OPENAI2_SINGLE_FILE"] = "1"
        os.environ.pop("PYTHONPATH", None)
        # Nothing from the checkout stays importable: the script's own folder (tests/ of the
        # checkout), the checkout itself, and '' all go; the temporary tree comes first.
        real_root = os.path.realpath(ROOT)
        sys.path[:] = [
            p
            for p in sys.path
            if p not in ("", ".")
            and not (os.path.realpath(p) == real_root or os.path.realpath(p).startswith(real_root + os.sep))
        ]
        sys.path.insert(0, tree)
        module = _import_single(tree)
        print("testing %s (openai2 %s)" % (module.__file__, getattr(module, "__version__", "?")))

        from tests.run import CountingResult, load_suite, report  # as make test selects and counts

        suite = load_suite(os.path.join(tree, "tests"), names)
        from tests.support.keyscan import KeyScan

        with KeyScan() as scan:  # as in tests/run.py: no key may reach the openai2 log
            result = unittest.TextTestRunner(verbosity=verbosity, resultclass=CountingResult).run(suite)
        key_leaks = sorted(set(scan.found))
        # The single file registers one namespace of its own: the pre-1.0 ``openai2.error``.
        own = (module, getattr(module, "error", None))
        leaked = sorted(
            m
            for m, mod in list(sys.modules.items())
            if m.startswith(PACKAGE) and mod is not None and not any(mod is o for o in own)
        )
    finally:
        os.chdir(old_cwd)
        shutil.rmtree(base, ignore_errors=True)
    extra = 0
    if key_leaks:
        print("API keys reached the openai2 log unmasked: %s" % key_leaks, file=sys.stderr)
        extra += 1
    if leaked:
        # A test imported the package folder after all: its results do not count for the file.
        print("run_single: modules not from the single file were imported: %s" % ", ".join(leaked), file=sys.stderr)
        extra += 1
    return report(result, extra)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
