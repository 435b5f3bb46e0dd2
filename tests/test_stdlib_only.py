"""openai2/ needs nothing but the standard library, stays light to import, and builds into one file.

* every import in openai2/*.py is a standard-library module (or a sibling, relatively);
* every module has a docstring, then ``from __future__ import annotations``;
* the package passes the single-file build's checks (one namespace: no duplicate top-level names,
  no builtin shadowed, only allowed import forms, an import order without cycles);
* ``import openai2`` does not load the heavy modules listed in ``HEAVY_AT_IMPORT``;
* the single file builds deterministically, runs under ``python -I -S`` and is importable beside
  a script; the build's checks catch what they claim to catch (small synthetic packages).

Tests that read the package's sources or build the single file are skipped when the suite runs
against the single file (``OPENAI2_SINGLE_FILE=1``, tests/run_single.py): there is no package
folder then, and the sources were checked by ``make test``.
"""

import ast
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import unittest

from tests import build_single

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PKG = os.path.join(ROOT, "openai2")
SINGLE_FILE_MODE = os.environ.get("OPENAI2_SINGLE_FILE") == "1"
NEEDS_SOURCES = unittest.skipIf(
    SINGLE_FILE_MODE, "reads openai2/ sources or builds the single file: checked by `make test`"
)

# ---------------------------------------------------------------------------------------------
# The modules `import openai2` must NOT load (ARCHITECTURE.md, "Import time"): each costs
# milliseconds, and they are imported lazily inside the functions that need them.
HEAVY_AT_IMPORT = (
    "json",
    "ssl",
    "socket",
    "urllib.request",
    "http.client",
    "logging",
    "asyncio",
    "typing",
    "email",
)
# ---------------------------------------------------------------------------------------------

# Platform-specific standard modules the 3.8/3.9 fallback listing cannot see on Linux.
_OTHER_PLATFORM_STDLIB = {
    "msvcrt",
    "winreg",
    "winsound",
    "_winapi",
    "_overlapped",
    "nt",
    "msilib",
    "_msi",
    "_scproxy",
    "_osx_support",
    "posix",
    "fcntl",
    "termios",
    "tty",
    "pty",
    "grp",
    "pwd",
    "resource",
    "readline",
    "curses",
    "_curses",
    "syslog",
    "crypt",
    "nis",
    "spwd",
    "ossaudiodev",
}
# Importable only by type checkers; allowed under `if TYPE_CHECKING:` and nowhere else.
_TYPING_ONLY_MODULES = {"_typeshed", "typing_extensions"}


def stdlib_module_names():
    """Top-level names of the running interpreter's standard library."""
    names = getattr(sys, "stdlib_module_names", None)
    if names:
        return set(names)
    # Python 3.8/3.9 (and PyPy 3.9): list the standard library folder instead.
    found = set(sys.builtin_module_names) | _OTHER_PLATFORM_STDLIB | {"__future__"}
    paths = sysconfig.get_paths()
    folders = {paths.get("stdlib"), paths.get("platstdlib")}
    for folder in list(folders):
        if folder:
            folders.add(os.path.join(folder, "lib-dynload"))
    for folder in folders:
        if not folder or not os.path.isdir(folder):
            continue
        for entry in os.listdir(folder):
            if entry in ("site-packages", "dist-packages") or entry.startswith("."):
                continue
            full = os.path.join(folder, entry)
            if entry.endswith(".py"):
                found.add(entry[:-3])
            elif entry.endswith((".so", ".pyd")):
                found.add(entry.split(".")[0])
            elif os.path.isdir(full) and "-" not in entry and entry != "__pycache__":
                found.add(entry)
    return found


def package_files():
    return sorted(os.path.join(PKG, f) for f in os.listdir(PKG) if f.endswith(".py"))


def parse(path):
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read(), path)


def _type_checking_nodes(tree):
    """ids of nodes under `if TYPE_CHECKING:` (typing-only imports)."""
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and build_single._is_type_checking(node.test):
            for st in node.body:
                for sub in ast.walk(st):
                    inside.add(id(sub))
    return inside


@NEEDS_SOURCES
class TestStandardLibraryOnly(unittest.TestCase):
    def test_stdlib_list_is_sane(self):
        names = stdlib_module_names()
        for mod in ("os", "sys", "json", "ssl", "asyncio", "http", "urllib", "__future__", "_thread"):
            self.assertIn(mod, names)
        for not_std in ("openai2", "requests", "setuptools", "pip"):
            self.assertNotIn(not_std, names)

    def test_every_import_is_standard_library(self):
        stdlib = stdlib_module_names()
        bad = []
        for path in package_files():
            tree = parse(path)
            typing_only = _type_checking_nodes(tree)
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    mods = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    mods = [node.module or ""]
                else:
                    continue  # relative imports are the package's own modules
                for mod in mods:
                    top = mod.split(".")[0]
                    if top in stdlib:
                        continue
                    if top in _TYPING_ONLY_MODULES and id(node) in typing_only:
                        continue
                    bad.append("%s:%d imports %s" % (os.path.relpath(path, ROOT), node.lineno, mod))
        self.assertEqual(bad, [], "imports outside the standard library")

    def test_docstring_then_future_annotations(self):
        bad = []
        for path in package_files():
            rel = os.path.relpath(path, ROOT)
            body = parse(path).body
            if not (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
                and body[0].value.value.strip()
            ):
                bad.append("%s: no module docstring" % rel)
                continue
            second = body[1] if len(body) > 1 else None
            if not (
                isinstance(second, ast.ImportFrom)
                and second.module == "__future__"
                and "annotations" in [a.name for a in second.names]
            ):
                bad.append("%s: `from __future__ import annotations` must follow the docstring" % rel)
        self.assertEqual(bad, [])


@NEEDS_SOURCES
class TestOneNamespace(unittest.TestCase):
    """The package as it is now passes the single-file build's checks (see tests/build_single.py)."""

    @classmethod
    def setUpClass(cls):
        try:
            build_single.analyse(PKG)
            cls.problems = []
        except build_single.BuildError as exc:
            cls.problems = exc.problems

    def _of(self, *kinds):
        return [str(p) for p in self.problems if p.kind in kinds]

    def test_no_top_level_name_in_two_modules(self):
        self.assertEqual(self._of("duplicate"), [])

    def test_no_builtin_shadowed(self):
        self.assertEqual(self._of("builtin"), [])

    def test_only_allowed_import_forms(self):
        self.assertEqual(self._of("forbidden-import", "missing-name"), [])

    def test_modules_can_be_ordered(self):
        self.assertEqual(self._of("order", "missing-module", "syntax", "future", "version"), [])

    def test_nothing_else(self):
        self.assertEqual([str(p) for p in self.problems], [])


def _run(args, cwd, timeout=120):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return subprocess.run(
        args,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _modules_after(code, cwd):
    out = _run([sys.executable, "-S", "-c", code], cwd)
    if out.returncode != 0:
        raise AssertionError(out.stderr)
    return set(out.stdout.split())


class TestImportIsLight(unittest.TestCase):
    """Runs in both forms: against the package, and (run_single) against the single file."""

    def test_import_does_not_load_heavy_modules(self):
        where = repr(ROOT)
        before = _modules_after("import sys; print(' '.join(sys.modules))", ROOT)
        after = _modules_after(
            "import sys; sys.path.insert(0, %s); import openai2; "
            "assert openai2.__file__.startswith(%s), openai2.__file__; "
            "print(' '.join(sys.modules))" % (where, where),
            ROOT,
        )
        self.assertIn("openai2", after)
        added = after - before
        self.assertEqual(
            sorted(m for m in HEAVY_AT_IMPORT if m in added),
            [],
            "`import openai2` loaded heavy modules (import them lazily)",
        )


def _build(pkg_dir, out_dir, revision="test"):
    return build_single.build(pkg_dir, os.path.join(out_dir, "openai2.py"), revision=revision)


@NEEDS_SOURCES
class TestSingleFileBuild(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="openai2-build-test-")
        # a snapshot of the sources, so an edit made during the run cannot look like non-determinism
        cls.pkg = os.path.join(cls.tmp, "src", "openai2")
        shutil.copytree(PKG, cls.pkg, ignore=shutil.ignore_patterns("__pycache__"))
        cls.path, cls.digest = _build(cls.pkg, cls.tmp)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_deterministic(self):
        other = os.path.join(self.tmp, "again")
        path, digest = _build(self.pkg, other)
        self.assertEqual(digest, self.digest)
        with open(path, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), digest)

    def test_header_names_version_and_revision(self):
        with open(self.path, encoding="utf-8") as f:
            head = f.read(2000)
        version = build_single._read_version(os.path.join(self.pkg, "common.py"))
        self.assertIn("version %s" % version, head)
        self.assertIn("source revision test", head)
        tree = parse(self.path)
        first = tree.body[1]
        self.assertIsInstance(first, ast.ImportFrom)
        self.assertEqual(first.module, "__future__")
        futures = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "__future__"]
        self.assertEqual(len(futures), 1)

    def test_no_relative_imports_left(self):
        left = [n.lineno for n in ast.walk(parse(self.path)) if isinstance(n, ast.ImportFrom) and n.level]
        self.assertEqual(left, [])

    def test_importable_beside_a_script_isolated(self):
        script = os.path.join(self.tmp, "use_it.py")
        with open(script, "w", encoding="utf-8") as f:
            f.write(
                textwrap.dedent("""\
                import os, sys
                sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # -I leaves it out
                import openai2
                from openai2.errors import APIError  # package-style import of a module name
                assert APIError is openai2.APIError
                print(openai2.__version__)
                print(openai2.__file__)
                print(" ".join(openai2.__all__))
            """)
            )
        out = _run([sys.executable, "-I", "-S", script], self.tmp)
        self.assertEqual(out.returncode, 0, out.stderr)
        version, where, names = out.stdout.splitlines()
        self.assertEqual(version, build_single._read_version(os.path.join(self.pkg, "common.py")))
        self.assertEqual(os.path.realpath(where), os.path.realpath(self.path))
        init_all = None
        for st in parse(os.path.join(self.pkg, "__init__.py")).body:
            if isinstance(st, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in st.targets):
                init_all = ast.literal_eval(st.value)
        self.assertEqual(names.split(), list(init_all or []))

    def test_runs_as_a_script(self):
        if not os.path.exists(os.path.join(self.pkg, "cli.py")):
            self.skipTest("openai2/cli.py does not exist yet")
        out = _run([sys.executable, "-I", "-S", self.path, "--version"], self.tmp)
        self.assertEqual(out.returncode, 0, out.stderr)
        version = build_single._read_version(os.path.join(self.pkg, "common.py"))
        self.assertIn(version, out.stdout + out.stderr)

    def test_refuses_to_write_beside_the_package(self):
        with self.assertRaises(build_single.BuildError):
            build_single.build(PKG, os.path.join(ROOT, "openai2.py"), revision="test")
        self.assertFalse(os.path.exists(os.path.join(ROOT, "openai2.py")))


class _FakePackage:
    """A tiny package in a temporary folder, for checking what the build catches."""

    BASE = {
        "__init__.py": '"""Fake."""\nfrom __future__ import annotations\n\nfrom .common import __version__\n\n__all__ = ["__version__"]\n',
        "common.py": '"""Common."""\nfrom __future__ import annotations\n\nimport os\n\n__version__ = "9.9.9"\nTYPE_CHECKING = False\n',
    }

    def __init__(self, test, order=None, **files):
        # the explicit module order the build checks (default: common, then the others by name)
        self.order = order or ["common"] + sorted(n[:-3] for n in files if n not in ("__init__.py", "__main__.py", "common.py"))
        self.dir = tempfile.mkdtemp(prefix="openai2-fakepkg-")
        test.addCleanup(shutil.rmtree, self.dir, True)
        self.pkg = os.path.join(self.dir, "openai2")
        os.mkdir(self.pkg)
        contents = dict(self.BASE)
        contents.update(files)
        for name, text in contents.items():
            with open(os.path.join(self.pkg, name), "w", encoding="utf-8") as f:
                f.write(textwrap.dedent(text))

    def problems(self):
        try:
            build_single.analyse(self.pkg, self.order)
        except build_single.BuildError as exc:
            return exc.problems
        return []

    def kinds(self):
        return sorted({p.kind for p in self.problems()})

    def render(self):
        return build_single.render(build_single.analyse(self.pkg, self.order), "test")


def _exec_module(test, text):
    """Run a rendered single file as a fresh module (it looks itself up in sys.modules)."""
    import types

    name = "openai2_fake_%d" % id(text)
    module = types.ModuleType(name)
    sys.modules[name] = module

    def forget():
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]

    test.addCleanup(forget)
    exec(compile(text, "openai2.py", "exec"), module.__dict__)
    return module.__dict__


def _mod(body):
    return '"""Doc."""\nfrom __future__ import annotations\n\n' + textwrap.dedent(body)


@NEEDS_SOURCES
class TestBuildCatches(unittest.TestCase):
    """Every check of the build fires on a package that breaks it, and only then."""

    def test_clean_fake_package_builds_and_runs(self):
        fake = _FakePackage(self, **{"b.py": _mod("from .common import __version__ as v\nX = v\n")})
        self.assertEqual(fake.problems(), [])
        text = fake.render()
        ns = _exec_module(self, text)
        self.assertEqual(ns["X"], "9.9.9")
        self.assertEqual(ns["__all__"], ["__version__"])

    def test_duplicate_top_level_name(self):
        fake = _FakePackage(self, **{"a.py": _mod("def helper():\n    pass\n"), "b.py": _mod("helper = 1\n")})
        self.assertEqual(fake.kinds(), ["duplicate"])

    def test_identical_plain_imports_are_fine_different_ones_are_not(self):
        fake = _FakePackage(self, **{"a.py": _mod("import os\nimport os.path\n"), "b.py": _mod("import os\n")})
        self.assertEqual(fake.problems(), [])
        fake = _FakePackage(self, **{"a.py": _mod("from time import time\n"), "b.py": _mod("import time\n")})
        self.assertEqual(fake.kinds(), ["duplicate"])

    def test_builtin_shadowed(self):
        fake = _FakePackage(self, **{"a.py": _mod("class TimeoutError(Exception):\n    pass\n")})
        self.assertEqual(fake.kinds(), ["builtin"])

    def test_forbidden_import_forms(self):
        for body in (
            "import openai2\n",
            "import openai2.common\n",
            "from openai2 import common\n",
            "from openai2.common import TYPE_CHECKING\n",
            "from os import *\n",
            "from . import common\n",
            "from ..common import x\n",
            "from .nothere import x\n",
            "def f():\n    from .common.sub import x\n",
        ):
            with self.subTest(body=body):
                fake = _FakePackage(self, **{"a.py": _mod(body)})
                self.assertEqual(fake.kinds(), ["forbidden-import"])

    def test_import_of_a_name_the_module_does_not_define(self):
        fake = _FakePackage(self, **{"a.py": _mod("from .common import nothing_here\n")})
        self.assertEqual(fake.kinds(), ["missing-name"])
        fake = _FakePackage(self, **{"a.py": _mod("def f():\n    from .common import nope\n")})
        self.assertEqual(fake.kinds(), ["missing-name"])

    def test_typing_only_name_imported_at_run_time(self):
        fake = _FakePackage(
            self,
            **{
                "a.py": _mod("from .common import TYPE_CHECKING\nif TYPE_CHECKING:\n    from typing import Any\n"),
                "b.py": _mod("from .a import Any\n"),
            },
        )
        self.assertEqual(fake.kinds(), ["missing-name"])

    def test_an_import_cycle_cannot_be_ordered(self):
        fake = _FakePackage(
            self, **{"a.py": _mod("from .b import B\nA = 1\n"), "b.py": _mod("from .a import A\nB = 1\n")}
        )
        self.assertEqual(fake.kinds(), ["order"])
        self.assertIn("a imports b at import time, but MODULE_ORDER puts b after it", str(fake.problems()[0]))

    def test_no_cycle_through_typing_or_function_imports(self):
        fake = _FakePackage(
            self,
            order=["common", "b", "a"],
            **{
                "a.py": _mod("from .b import B\nA = 1\n"),
                "b.py": _mod(
                    "from .common import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\n"
                    "B = 1\ndef f():\n    from .a import A\n    return A\n"
                ),
            },
        )
        self.assertEqual(fake.problems(), [])
        text = fake.render()
        self.assertLess(text.index("# openai2/b.py"), text.index("# openai2/a.py"))

    def test_the_order_is_the_explicit_list_checked_against_the_imports(self):
        files = {"zeta.py": _mod("Z = 1\n"), "alpha.py": _mod("from .zeta import Z\nA = Z\n"), "mid.py": _mod("M = 1\n")}
        fake = _FakePackage(self, order=["common", "zeta", "alpha", "mid"], **files)
        self.assertEqual(build_single.analyse(fake.pkg, fake.order).order, ["common", "zeta", "alpha", "mid", "__init__"])
        self.assertEqual(_FakePackage(self, order=["common", "alpha", "zeta", "mid"], **files).kinds(), ["order"])
        self.assertEqual(_FakePackage(self, order=["common", "zeta", "alpha"], **files).kinds(), ["missing-module"])
        self.assertEqual(_FakePackage(self, order=["common", "zeta", "alpha", "mid", "ghost"], **files).kinds(), ["missing-module"])

    def test_the_real_order_lists_every_module_once_with_the_fake_server_and_the_cli_last(self):
        order = list(build_single.MODULE_ORDER)
        self.assertEqual(len(order), len(set(order)))
        self.assertEqual(order[-4:], ["demo", "fakewire", "testing", "cli"])

    def test_missing_future_annotations(self):
        fake = _FakePackage(self, **{"a.py": '"""Doc."""\nX = 1\n'})
        self.assertEqual(fake.kinds(), ["future"])

    def test_emptied_blocks_get_pass_and_aliases_survive(self):
        fake = _FakePackage(
            self,
            **{
                "a.py": _mod("""\
                from .common import TYPE_CHECKING
                if TYPE_CHECKING:
                    from .common import __version__
                def f():
                    from .common import __version__ as ver
                    return ver
                def g():
                    from .common import TYPE_CHECKING
                if TYPE_CHECKING: from .common import __version__
                """),
            },
        )
        text = fake.render()
        ns = _exec_module(self, text)
        self.assertEqual(ns["f"](), "9.9.9")
        self.assertIsNone(ns["g"]())
        self.assertIn("ver = __version__", text)

    def test_multiline_strings_and_comments_kept_byte_for_byte(self):
        body = 'TEXT = """line one\n    indented: from .common import x\n"""  # a comment\n'
        fake = _FakePackage(self, **{"a.py": _mod(body)})
        self.assertIn(body, fake.render())

    def test_main_becomes_the_script_block(self):
        fake = _FakePackage(
            self,
            **{
                "cli.py": _mod(
                    "import sys\n\ndef main(extra=''):\n    print('v' + __version__ + extra)\n"
                    "    print(__import__('openai2') is sys.modules['__main__'])\n    return 0\n\n"
                    "from .common import __version__\n"
                ),
                "__main__.py": _mod(
                    'from .cli import main\n\n\n\nraise SystemExit(main("""!\n  ! kept as is\n"""))\n'
                ),
            },
        )
        out_dir = tempfile.mkdtemp(prefix="openai2-fakeout-")
        self.addCleanup(shutil.rmtree, out_dir, True)
        path, _ = build_single.build(fake.pkg, os.path.join(out_dir, "openai2.py"), revision="test", order=fake.order)
        out = _run([sys.executable, "-I", "-S", path], out_dir)
        # the multi-line string is not re-indented; `import openai2` in the script is the script
        self.assertEqual((out.returncode, out.stdout), (0, "v9.9.9!\n  ! kept as is\n\nTrue\n"), out.stderr)
        script = os.path.join(out_dir, "s.py")
        with open(script, "w") as f:
            f.write(
                "import sys, os\nsys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))\n"
                "import openai2\nprint(openai2.__version__)\n"
            )
        out = _run([sys.executable, "-I", "-S", script], out_dir)
        self.assertEqual((out.returncode, out.stdout.strip()), (0, "9.9.9"), out.stderr)


if __name__ == "__main__":
    unittest.main()
