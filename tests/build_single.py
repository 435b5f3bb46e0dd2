#!/usr/bin/env python3
"""Build ``dist/openai2.py``: the whole openai2 package as one standard-library-only module.

Usage: python tests/build_single.py [-o PATH] [--check] [-q]

  -o PATH   where to write (default: dist/openai2.py; never beside the package folder, which
            would shadow the file on ``import openai2``)
  --check   analyse the package and report problems, write nothing
  -q        print only the output path and its sha256

How the file is made (everything is located with ``ast``; no regular expressions touch code):

* the module order is :data:`MODULE_ORDER`, written out by hand in layer order (the layer list of
  tests/ARCHITECTURE.md, which tests/test_architecture.py holds it to), so the file reads from
  the foundations up with the fake server and the CLI last, ``__init__`` after them;
  ``__main__`` becomes the closing ``if __name__ == "__main__":`` block (the CLI's ``main()``).
  The order is checked against the intra-package ``from .x import Y`` statements executed at
  import time (top level, outside ``if TYPE_CHECKING:``): a module placed before one it imports,
  a module missing from the order or listed without a file fails the build.
* each module's docstring becomes a comment banner; ``from __future__`` imports are hoisted to
  the top once; intra-package imports are cut out wherever they are (top level, under
  ``if TYPE_CHECKING:``, inside functions), leaving ``pass`` where a block would become empty
  and ``Z = Y`` for ``from .x import Y as Z``. Everything else is copied byte for byte.
* the build fails loudly, listing every problem, on anything that would break in one namespace:
  a top-level name bound in two modules (identical plain imports such as ``import os`` excepted),
  a top-level name that shadows a builtin, a forbidden import form (``import openai2``,
  ``from openai2 import``, star imports, ``from . import x``, ``from ..x``, a relative import of
  something that is not a sibling module), an intra-package import of a name the target module
  does not define, a module missing from the order, a module without
  ``from __future__ import annotations``.
* the output is deterministic: the same sources (and revision) give a byte-identical file,
  whatever Python 3.8+ runs the build.

Stdlib only, runs on Python 3.8+. Importable: tests use :func:`analyse`, :func:`render`, :func:`build`.
"""

import argparse
import ast
import builtins
import hashlib
import inspect
import io
import os
import subprocess
import sys
import tokenize

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PACKAGE = "openai2"
PKG_DIR = os.path.join(ROOT, PACKAGE)
DEFAULT_OUTPUT = os.path.join(ROOT, "dist", PACKAGE + ".py")

# Builtins of every supported Python (3.8-3.13, PyPy), so the check does not depend on which
# interpreter runs the build; the running interpreter's own public builtins are added too.
_BUILTINS_FIXED = """
ArithmeticError AssertionError AttributeError BaseException BaseExceptionGroup BlockingIOError
BrokenPipeError BufferError BytesWarning ChildProcessError ConnectionAbortedError ConnectionError
ConnectionRefusedError ConnectionResetError DeprecationWarning EOFError Ellipsis EncodingWarning
EnvironmentError Exception ExceptionGroup False FileExistsError FileNotFoundError
FloatingPointError FutureWarning GeneratorExit IOError ImportError ImportWarning IndentationError
IndexError InterruptedError IsADirectoryError KeyError KeyboardInterrupt LookupError MemoryError
ModuleNotFoundError NameError None NotADirectoryError NotImplemented NotImplementedError OSError
OverflowError PendingDeprecationWarning PermissionError ProcessLookupError PythonFinalizationError
RecursionError ReferenceError ResourceWarning RuntimeError RuntimeWarning StopAsyncIteration
StopIteration SyntaxError SyntaxWarning SystemError SystemExit TabError TimeoutError True TypeError
UnboundLocalError UnicodeDecodeError UnicodeEncodeError UnicodeError UnicodeTranslateError
UnicodeWarning UserWarning ValueError Warning ZeroDivisionError abs aiter all anext any ascii bin
bool breakpoint bytearray bytes callable chr classmethod compile complex copyright credits delattr
dict dir divmod enumerate eval exec exit filter float format frozenset getattr globals hasattr hash
help hex id input int isinstance issubclass iter len license list locals map max memoryview min
next object oct open ord pow print property quit range repr reversed round set setattr slice sorted
staticmethod str sum super tuple type vars zip
""".split()
BUILTIN_NAMES = frozenset(_BUILTINS_FIXED) | frozenset(n for n in dir(builtins) if not n.startswith("_"))

_ALIAS_LOOP_NAME = "_openai2_module_name"
_BANNER = "# " + "=" * 98
_RULE = "# " + "-" * 98


class Problem:
    """One reason the package cannot become one module. ``kind`` is a short tag tests filter on."""

    def __init__(self, kind, path, lineno, message):
        self.kind = kind
        self.path = path
        self.lineno = lineno
        self.message = message

    def __str__(self):
        where = self.path if not self.lineno else "%s:%d" % (self.path, self.lineno)
        return "%s: [%s] %s" % (where, self.kind, self.message)

    __repr__ = __str__


class BuildError(Exception):
    """The package cannot be built into one module; ``problems`` lists every reason found."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__(
            "single-file build failed (%d problem%s):\n  %s"
            % (
                len(self.problems),
                "" if len(self.problems) == 1 else "s",
                "\n  ".join(str(p) for p in self.problems),
            )
        )


class _Binding:
    """A top-level name bound by a module. ``signature`` is set for plain imports, which may
    repeat identically in several modules (they bind the same object)."""

    def __init__(self, name, module, lineno, kind, signature, typing_only):
        self.name = name
        self.module = module
        self.lineno = lineno
        self.kind = kind
        self.signature = signature
        self.typing_only = typing_only


class _IntraImport:
    def __init__(self, node, stmts, target, names, where):
        self.node = node
        self.stmts = stmts  # the statement list holding node (to keep the block non-empty)
        self.target = target
        self.names = names  # [(name, asname or None)]
        self.where = where  # "top" (runs at import), "typing" (if TYPE_CHECKING), "function"


class ModuleInfo:
    """One parsed module of the package and what the build needs to know about it."""

    def __init__(self, name, path, relpath, source, tree):
        self.name = name
        self.path = path
        self.relpath = relpath
        self.source = source
        self.tree = tree
        self.docstring = None
        self.docstring_node = None
        self.futures = set()
        self.future_nodes = []
        self.bindings = {}  # name -> [_Binding]
        self.intra = []  # [_IntraImport]
        self.deps = set()  # modules that must come first (imported at import time)

    def runtime_names(self):
        """Names importable from this module at run time (including re-exported siblings)."""
        names = {n for n, bs in self.bindings.items() if any(not b.typing_only for b in bs)}
        for imp in self.intra:
            if imp.where == "top":
                names.update(a or n for n, a in imp.names)
        return names

    def all_names(self):
        names = set(self.bindings)
        for imp in self.intra:
            if imp.where in ("top", "typing"):
                names.update(a or n for n, a in imp.names)
        return names


class Package:
    """The analysed package: modules by name, the concatenation order, the version."""

    def __init__(self, pkg_dir, modules, order, version):
        self.pkg_dir = pkg_dir
        self.modules = modules
        self.order = order
        self.version = version


def _is_type_checking(test):
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    if isinstance(test, ast.Attribute):
        return test.attr == "TYPE_CHECKING"
    return False


def _target_names(target):
    if isinstance(target, ast.Name):
        yield target.id
    elif isinstance(target, (ast.Tuple, ast.List)):
        for elt in target.elts:
            for name in _target_names(elt):
                yield name
    elif isinstance(target, ast.Starred):
        for name in _target_names(target.value):
            yield name


def _walrus_names(node):
    """Names bound by ``:=`` in a top-level statement (comprehensions included, lambdas not)."""
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, ast.NamedExpr) and isinstance(n.target, ast.Name):
            yield n.target.id
        for child in ast.iter_child_nodes(n):
            if not isinstance(child, (ast.Lambda, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                stack.append(child)


class _Scanner:
    """Walks one module, recording bindings, intra-package imports and import-form problems."""

    def __init__(self, info, module_names, problems):
        self.info = info
        self.module_names = module_names
        self.problems = problems

    def problem(self, kind, node, message):
        self.problems.append(Problem(kind, self.info.relpath, getattr(node, "lineno", 0), message))

    def bind(self, name, node, kind, signature, typing_only):
        self.info.bindings.setdefault(name, []).append(
            _Binding(name, self.info.name, node.lineno, kind, signature, typing_only)
        )

    # --- statements -------------------------------------------------------------------------
    def scan_module(self):
        body = self.info.tree.body
        start = 0
        if (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            self.info.docstring = body[0].value.value
            self.info.docstring_node = body[0]
            start = 1
        for st in body[start:]:
            if isinstance(st, ast.ImportFrom) and st.module == "__future__" and st.level == 0:
                self.info.futures.update(a.name for a in st.names)
                self.info.future_nodes.append(st)
            else:
                break
        self.block(body, "module", False)

    def block(self, stmts, scope, typing_only):
        for st in stmts:
            self.stmt(st, stmts, scope, typing_only)

    def stmt(self, st, stmts, scope, typing_only):
        top = scope == "module"
        if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if top:
                self.bind(st.name, st, "def", None, typing_only)
            self.function_body(st)
            return
        if isinstance(st, ast.ClassDef):
            if top:
                self.bind(st.name, st, "class", None, typing_only)
            self.block(st.body, "class", typing_only)
            return
        if isinstance(st, ast.Import):
            for alias in st.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    self.problem(
                        "forbidden-import",
                        st,
                        "`import %s`: import siblings as `from .module import Name`" % alias.name,
                    )
                if top:
                    if alias.asname:
                        self.bind(alias.asname, st, "import", "module " + alias.name, typing_only)
                    else:
                        first = alias.name.split(".")[0]
                        self.bind(first, st, "import", "module " + first, typing_only)
            return
        if isinstance(st, ast.ImportFrom):
            self.import_from(st, stmts, scope, typing_only)
            return
        if top:
            if isinstance(st, ast.Assign):
                for target in st.targets:
                    for name in _target_names(target):
                        self.bind(name, st, "assignment", None, typing_only)
            elif isinstance(st, ast.AnnAssign):
                if st.value is not None:
                    for name in _target_names(st.target):
                        self.bind(name, st, "assignment", None, typing_only)
            elif isinstance(st, ast.AugAssign):
                for name in _target_names(st.target):
                    self.bind(name, st, "assignment", None, typing_only)
            elif isinstance(st, (ast.For, ast.AsyncFor)):
                for name in _target_names(st.target):
                    self.bind(name, st, "for target", None, typing_only)
            elif isinstance(st, (ast.With, ast.AsyncWith)):
                for item in st.items:
                    if item.optional_vars is not None:
                        for name in _target_names(item.optional_vars):
                            self.bind(name, st, "with target", None, typing_only)
            if not isinstance(st, (ast.If, ast.Try, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith)):
                for name in _walrus_names(st):
                    self.bind(name, st, "assignment", None, typing_only)
        # compound statements: same scope, nested blocks
        if isinstance(st, ast.If):
            if _is_type_checking(st.test):
                self.block(st.body, scope, True)
                self.block(st.orelse, scope, typing_only)
            else:
                self.block(st.body, scope, typing_only)
                self.block(st.orelse, scope, typing_only)
        elif isinstance(st, (ast.For, ast.AsyncFor, ast.While)):
            self.block(st.body, scope, typing_only)
            self.block(st.orelse, scope, typing_only)
        elif isinstance(st, (ast.With, ast.AsyncWith)):
            self.block(st.body, scope, typing_only)
        elif isinstance(st, ast.Try) or type(st).__name__ == "TryStar":
            self.block(st.body, scope, typing_only)
            for handler in st.handlers:
                self.block(handler.body, scope, typing_only)
            self.block(st.orelse, scope, typing_only)
            self.block(st.finalbody, scope, typing_only)
        elif type(st).__name__ == "Match":
            for case in st.cases:
                self.block(case.body, scope, typing_only)

    def function_body(self, func):
        """Inside a function: only `global` declarations bind module names; imports are checked."""
        for st in func.body:
            self.stmt(st, func.body, "function", False)
        for node in ast.walk(func):
            if isinstance(node, ast.Global):
                for name in node.names:
                    self.bind(name, node, "global statement", None, False)

    def import_from(self, st, stmts, scope, typing_only):
        top = scope == "module"
        names = [(a.name, a.asname) for a in st.names]
        if any(n == "*" for n, _ in names):
            self.problem("forbidden-import", st, "star import `from %s%s import *`" % ("." * st.level, st.module or ""))
            return
        if st.level == 0:
            module = st.module or ""
            if module == PACKAGE or module.startswith(PACKAGE + "."):
                self.problem(
                    "forbidden-import",
                    st,
                    "`from %s import ...`: import siblings as `from .module import Name`" % module,
                )
                return
            if module == "__future__":
                if not top or st not in self.info.future_nodes:
                    self.problem("forbidden-import", st, "`from __future__` import not at the top of the module")
                return
            if top:
                for name, asname in names:
                    self.bind(asname or name, st, "import", "from %s import %s" % (module, name), typing_only)
            return
        # relative import
        if st.level != 1 or st.module is None or "." in st.module:
            shown = "from %s%s import %s" % ("." * st.level, st.module or "", ", ".join(n for n, _ in names))
            self.problem(
                "forbidden-import",
                st,
                "`%s`: only `from .sibling import Name` is allowed between modules" % shown,
            )
            return
        if st.module not in self.module_names or st.module in ("__init__", "__main__"):
            self.problem(
                "forbidden-import",
                st,
                "`from .%s import ...`: %s is not a module of the package" % (st.module, "openai2/%s.py" % st.module),
            )
            return
        if scope == "class":
            self.problem("forbidden-import", st, "intra-package import inside a class body")
            return
        where = "function" if scope == "function" else ("typing" if typing_only else "top")
        self.info.intra.append(_IntraImport(st, stmts, st.module, names, where))
        if where == "top":
            self.info.deps.add(st.module)
        for name, asname in names:
            if asname and asname != name and top:
                # becomes `asname = name` in the single file: a new top-level name of its own
                self.bind(asname, st, "import alias", "alias %s.%s" % (st.module, name), typing_only)


def _read_version(common_path):
    with open(common_path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), common_path)
    for st in tree.body:
        if isinstance(st, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__version__" for t in st.targets):
            if isinstance(st.value, ast.Constant) and isinstance(st.value.value, str):
                return st.value.value
    return None


#: The concatenation order: the layers of tests/ARCHITECTURE.md, lowest first (``__init__`` is
#: appended, ``__main__`` becomes the closing block).  A new module must be added here.
MODULE_ORDER = (
    "common",
    "errors",
    "sse",
    "completion",
    "socks",
    "connection",
    "transport",
    "objects",
    "keypool",
    "aio",
    "tokens",
    "schema",
    "tools",
    "structured",
    "client",
    "compat",
    "history",
    "files",
    "store",
    "logbook",
    "conversation",
    "chat",
    "groupchat",
    "terminal",
    "chatpage",
    "gateway",
    "demo",
    "fakewire",
    "testing",
    "cli",
)


def _order(modules, problems, order=MODULE_ORDER):
    """:data:`MODULE_ORDER` checked against the import graph, ``__init__`` last, no ``__main__``."""
    names = sorted(n for n in modules if n not in ("__main__", "__init__"))
    missing = [n for n in names if n not in order]
    if missing:
        problems.append(
            Problem(
                "missing-module",
                PACKAGE + "/",
                0,
                "not in MODULE_ORDER of tests/build_single.py (add it where its layer is): %s" % ", ".join(missing),
            )
        )
    stale = [n for n in order if n not in modules]
    if stale:
        problems.append(
            Problem("missing-module", PACKAGE + "/", 0, "in MODULE_ORDER but no such module: %s" % ", ".join(stale))
        )
    placed = [n for n in order if n in modules]
    position = {n: i for i, n in enumerate(placed)}
    for n in placed:
        for d in sorted(modules[n].deps):
            if d != n and d in position and position[d] > position[n]:
                problems.append(
                    Problem(
                        "order",
                        modules[n].relpath,
                        0,
                        "%s imports %s at import time, but MODULE_ORDER puts %s after it" % (n, d, d),
                    )
                )
    result = placed + list(missing)
    if "__init__" in modules:
        result.append("__init__")
    return result


def analyse(pkg_dir=PKG_DIR, order=None):
    """Parse and check every module of the package.

    :param order: the module order to check and use (default :data:`MODULE_ORDER`)
    :returns: a :class:`Package` with the concatenation order
    :raises BuildError: listing every problem found
    """
    problems = []
    relroot = os.path.dirname(os.path.abspath(pkg_dir))
    if not os.path.isfile(os.path.join(pkg_dir, "__init__.py")):
        raise BuildError([Problem("missing-module", pkg_dir, 0, "no __init__.py: not a package folder")])
    files = sorted(f for f in os.listdir(pkg_dir) if f.endswith(".py"))
    for entry in sorted(os.listdir(pkg_dir)):
        sub = os.path.join(pkg_dir, entry)
        if os.path.isdir(sub) and os.path.isfile(os.path.join(sub, "__init__.py")):
            problems.append(
                Problem(
                    "forbidden-import", os.path.relpath(sub, relroot), 0, "subpackages cannot be built into one file"
                )
            )
    module_names = {f[:-3] for f in files}
    modules = {}
    for fname in files:
        path = os.path.join(pkg_dir, fname)
        rel = os.path.relpath(path, relroot).replace(os.sep, "/")
        with open(path, encoding="utf-8") as f:
            source = f.read()
        try:
            tree = ast.parse(source, rel)
        except SyntaxError as exc:
            problems.append(Problem("syntax", rel, exc.lineno or 0, "does not parse: %s" % exc.msg))
            continue
        info = ModuleInfo(fname[:-3], path, rel, source, tree)
        _Scanner(info, module_names, problems).scan_module()
        if "annotations" not in info.futures:
            problems.append(
                Problem(
                    "future",
                    rel,
                    1,
                    "must start with its docstring and then `from __future__ import annotations` "
                    "(the single file applies it to every module)",
                )
            )
        modules[info.name] = info

    # intra-package imports must name something the target defines
    for info in modules.values():
        for imp in info.intra:
            target = modules.get(imp.target)
            if target is None:
                continue
            defined = target.all_names() if imp.where == "typing" else target.runtime_names()
            for name, _asname in imp.names:
                if name not in defined:
                    problems.append(
                        Problem(
                            "missing-name",
                            info.relpath,
                            imp.node.lineno,
                            "`from .%s import %s`: %s does not define %s%s"
                            % (
                                imp.target,
                                name,
                                target.relpath,
                                name,
                                " at run time (only under TYPE_CHECKING)" if name in target.all_names() else "",
                            ),
                        )
                    )

    # one namespace: each top-level name bound by one module only (identical imports excepted)
    by_name = {}
    for info in modules.values():
        for name, bindings in info.bindings.items():
            by_name.setdefault(name, []).append((info, bindings))
    build_sys = ModuleInfo("<build>", "", "tests/build_single.py", "", None)
    by_name.setdefault("sys", []).append((build_sys, [_Binding("sys", "<build>", 0, "import", "module sys", False)]))
    by_name.setdefault(_ALIAS_LOOP_NAME, []).append(
        (build_sys, [_Binding(_ALIAS_LOOP_NAME, "<build>", 0, "assignment", None, False)])
    )
    for name in sorted(by_name):
        owners = by_name[name]
        real = [(i, b) for i, b in owners if i.name != "<build>"]
        if name in BUILTIN_NAMES:
            for info, bindings in real:
                problems.append(
                    Problem("builtin", info.relpath, bindings[0].lineno, "top-level name %r shadows a builtin" % name)
                )
        if name == "__all__":
            for info, bindings in real:
                if info.name != "__init__":
                    problems.append(
                        Problem("duplicate", info.relpath, bindings[0].lineno, "only __init__.py may define __all__")
                    )
            continue
        if len(owners) < 2:
            continue
        signatures = set()
        mergeable = True
        for _info, bindings in owners:
            sig = frozenset(b.signature for b in bindings)
            if None in sig:
                mergeable = False
            signatures.add(sig)
        if mergeable and len(signatures) == 1:
            continue  # e.g. `import os` in several modules: the same object every time
        where = ", ".join("%s:%d (%s)" % (i.relpath, b[0].lineno, b[0].kind) for i, b in owners if i.name != "<build>")
        if any(i.name == "<build>" for i, _ in owners):
            where += ", and the build's own prologue/epilogue"
        problems.append(
            Problem(
                "duplicate",
                real[0][0].relpath,
                real[0][1][0].lineno,
                "top-level name %r is bound in several modules: %s (rename one; prefix private helpers "
                "with the module's theme)" % (name, where),
            )
        )

    order = _order(modules, problems, MODULE_ORDER if order is None else tuple(order))
    version = None
    if "common" in modules:
        version = _read_version(modules["common"].path)
    if version is None:
        problems.append(Problem("version", PACKAGE + "/common.py", 0, 'no `__version__ = "..."` literal'))
    if problems:
        raise BuildError(problems)
    return Package(pkg_dir, modules, order, version)


# --- rendering ---------------------------------------------------------------------------------


def _line_offsets(data):
    offsets = [0]
    for i, byte in enumerate(data):
        if byte == 0x0A:
            offsets.append(i + 1)
    return offsets


def _edited_source(info, removals):
    """Apply ``removals`` [(stmt_node, replacement or None)] to the module source; ``None`` means
    delete the statement (and its whole lines when it stands alone on them)."""
    data = info.source.encode("utf-8")
    offsets = _line_offsets(data)
    edits = []
    for node, replacement in removals:
        start = offsets[node.lineno - 1] + node.col_offset
        end = offsets[node.end_lineno - 1] + node.end_col_offset
        line_start = offsets[node.lineno - 1]
        line_end = data.find(b"\n", end)
        line_end = len(data) if line_end < 0 else line_end
        prefix = data[line_start:start]
        suffix = data[end:line_end]
        alone = prefix.strip() == b"" and (suffix.strip() == b"" or suffix.strip().startswith(b"#"))
        if replacement is None and alone:
            edits.append((line_start, min(line_end + 1, len(data)), b""))
        else:
            edits.append((start, end, (replacement or "pass").encode("utf-8")))
    edits.sort(reverse=True)
    last = None
    for start, end, text in edits:
        if last is not None and end > last:
            raise BuildError([Problem("internal", info.relpath, 0, "overlapping edits")])
        data = data[:start] + text + data[end:]
        last = start
    return data.decode("utf-8")


def _removals(info):
    """What to cut from one module: docstring, future imports, intra-package imports."""
    out = []
    if info.docstring_node is not None:
        out.append((info.docstring_node, None))
    for node in info.future_nodes:
        out.append((node, None))
    by_block = {}
    for imp in info.intra:
        by_block.setdefault(id(imp.stmts), (imp.stmts, []))[1].append(imp)
    for stmts, imps in by_block.values():
        cut = {id(i.node) for i in imps}
        empties = all(id(s) in cut for s in stmts)
        for n, imp in enumerate(sorted(imps, key=lambda i: (i.node.lineno, i.node.col_offset))):
            aliases = ["%s = %s" % (a, nm) for nm, a in imp.names if a and a != nm]
            if aliases:
                out.append((imp.node, "; ".join(aliases)))
            elif empties and n == 0 and imp.stmts is not info.tree.body:
                out.append((imp.node, "pass"))
            else:
                out.append((imp.node, None))
    return out


def _strip_blank_edges(text):
    lines = text.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines)


def _comment(text):
    out = []
    for line in inspect.cleandoc(text).split("\n"):
        out.append(("# " + line).rstrip())
    return "\n".join(out)


def _indent_code(text, prefix="    "):
    """Indent code lines (runs of blank lines become one), leaving the inside of multi-line
    strings exactly as it is."""
    inside = set()
    starts = []  # f-strings are several tokens on Python 3.12+
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text + "\n").readline):
            kind = tokenize.tok_name.get(tok.type, "")
            if kind.endswith("STRING_START"):
                starts.append(tok.start[0])
            elif kind.endswith("STRING_END") and starts:
                first = starts.pop()
                if tok.end[0] > first:
                    inside.update(range(first + 1, tok.end[0] + 1))
            elif tok.type == tokenize.STRING and tok.end[0] > tok.start[0]:
                inside.update(range(tok.start[0] + 1, tok.end[0] + 1))
    except (tokenize.TokenError, SyntaxError):
        pass
    out = []
    for number, line in enumerate(text.split("\n"), 1):
        if number in inside:
            out.append(line)
        elif not line.strip():
            if out and out[-1]:
                out.append("")
        else:
            out.append(prefix + line)
    return "\n".join(out)


def source_revision(root=ROOT):
    """``git rev-parse --short HEAD`` plus ``-dirty`` when the build's inputs differ from HEAD;
    ``$OPENAI2_BUILD_REVISION`` wins; ``unknown`` without git."""
    forced = os.environ.get("OPENAI2_BUILD_REVISION")
    if forced:
        return forced
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=30
        )
        if rev.returncode != 0 or not rev.stdout.strip():
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=normal", "--", PACKAGE, "tests/build_single.py"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=30,
        )
        suffix = "-dirty" if dirty.returncode != 0 or dirty.stdout.strip() else ""
        return rev.stdout.strip() + suffix
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def render(pkg=None, revision=None):
    """The single file's text for an analysed package (see :func:`analyse`)."""
    if pkg is None:
        pkg = analyse()
    if revision is None:
        revision = source_revision(os.path.dirname(os.path.abspath(pkg.pkg_dir)))
    mods = pkg.modules
    init_doc = (mods["__init__"].docstring or PACKAGE).strip().split("\n")[0] if "__init__" in mods else PACKAGE
    init_doc = init_doc.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    futures = set()
    for info in mods.values():
        futures |= info.futures
    order_text = ", ".join(pkg.order)
    out = []
    out.append("#!/usr/bin/env python3")
    header = (
        f'"""{init_doc}\n\n'
        f"Single-file build of the openai2 package, version {pkg.version}, source revision {revision}.\n"
        "Generated by tests/build_single.py from the package's modules; do not edit this file:\n"
        "edit the package and rebuild. Copy this one file beside your script and `import openai2`,\n"
        "or run it: `python openai2.py --version`. Needs only the Python standard library (3.8+).\n\n"
        f"Modules, in order: {order_text}.\n"
        '"""'
    )
    out.append(header)
    license_path = os.path.join(os.path.dirname(os.path.abspath(pkg.pkg_dir)), "LICENSE")
    if os.path.isfile(license_path):
        with open(license_path, encoding="utf-8") as f:
            out.append(_comment(f.read()))
    out.append("from __future__ import %s" % ", ".join(sorted(futures)))
    out.append("")
    out.append("import sys")
    out.append("")
    out.append('if __name__ == "__main__":')
    out.append("    # Run as a script (`python openai2.py ...`): register this module as `openai2` as well,")
    out.append("    # so nothing imports the file a second time (bottle.py does the same).")
    out.append('    sys.modules.setdefault("openai2", sys.modules[__name__])')
    for name in pkg.order:
        info = mods[name]
        body = _strip_blank_edges(_edited_source(info, _removals(info)))
        out.append("")
        out.append("")
        out.append(_BANNER)
        out.append("# %s" % info.relpath)
        if info.docstring:
            out.append(_RULE)
            out.append(_comment(info.docstring))
        out.append(_BANNER)
        if body:
            out.append(body)
    aliased = sorted(n for n in mods if n not in ("__init__", "__main__"))
    if aliased:
        out.append("")
        out.append("")
        out.append(_BANNER)
        out.append("# single file: the package's module names")
        out.append(_RULE)
        out.append("# Code written against the package (`from openai2.errors import APIError`) works with this")
        out.append("# file too: each module name of the package is an alias of this one module.")
        out.append(_BANNER)
        out.append("for %s in (" % _ALIAS_LOOP_NAME)
        for n in aliased:
            out.append('    "%s",' % n)
        out.append("):")
        out.append("    sys.modules.setdefault(")
        out.append('        ("openai2" if __name__ == "__main__" else __name__) + "." + %s,' % _ALIAS_LOOP_NAME)
        out.append("        sys.modules[__name__],")
        out.append("    )")
        out.append("del %s" % _ALIAS_LOOP_NAME)
    main_body = ""
    if "__main__" in mods:
        info = mods["__main__"]
        main_body = _strip_blank_edges(_edited_source(info, _removals(info)))
    if not main_body.strip() and "cli" in mods:
        main_body = "raise SystemExit(main())"
    if main_body.strip():
        out.append("")
        out.append("")
        out.append(_BANNER)
        if "__main__" in mods:
            out.append("# %s (python openai2.py ...)" % mods["__main__"].relpath)
            if mods["__main__"].docstring:
                out.append(_RULE)
                out.append(_comment(mods["__main__"].docstring))
        else:
            out.append("# command line entry point (python openai2.py ...)")
        out.append(_BANNER)
        out.append('if __name__ == "__main__":')
        out.append(_indent_code(main_body))
    text = "\n".join(out) + "\n"
    _verify(text, pkg)
    return text


def _verify(text, pkg):
    """The output compiles, and its ``__all__`` is the package's, naming only defined names."""
    try:
        tree = ast.parse(text, "openai2.py")
        compile(tree, "openai2.py", "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise BuildError(
            [Problem("internal", "dist/openai2.py", exc.lineno or 0, "output does not compile: %s" % exc.msg)]
        ) from exc
    init = pkg.modules.get("__init__")
    if init is None:
        return
    defined = set()
    for info in pkg.modules.values():
        defined |= set(info.bindings)
    for st in init.tree.body:
        if isinstance(st, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in st.targets):
            try:
                names = ast.literal_eval(st.value)
            except ValueError:
                raise BuildError([Problem("all", init.relpath, st.lineno, "__all__ must be a literal list")]) from None
            undefined = sorted(n for n in names if n not in defined)
            if undefined:
                raise BuildError(
                    [Problem("all", init.relpath, st.lineno, "__all__ names undefined: %s" % ", ".join(undefined))]
                )


def _inside(path, folder):
    path = os.path.realpath(path)
    folder = os.path.realpath(folder)
    return path == folder or path.startswith(folder + os.sep)


def build(pkg_dir=PKG_DIR, output=DEFAULT_OUTPUT, revision=None, order=None):
    """Analyse, render and write the single file atomically (``order``: as for :func:`analyse`).

    :returns: ``(output_path, sha256_hex)``
    :raises BuildError: when the package cannot become one module, or the output path is unsafe
    """
    out_dir = os.path.dirname(os.path.abspath(output))
    if _inside(output, pkg_dir) or os.path.isfile(os.path.join(out_dir, PACKAGE, "__init__.py")):
        raise BuildError(
            [
                Problem(
                    "output",
                    output,
                    0,
                    "refusing to write beside/inside a package folder named openai2 (it would shadow the file)",
                )
            ]
        )
    text = render(analyse(pkg_dir, order), revision)
    data = text.encode("utf-8")
    os.makedirs(out_dir, exist_ok=True)
    tmp = "%s.%d.tmp" % (os.path.abspath(output), os.getpid())
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, output)
    return output, hashlib.sha256(data).hexdigest()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="build_single.py", description="Build dist/openai2.py from the package.")
    parser.add_argument("-o", "--output", default=DEFAULT_OUTPUT)
    parser.add_argument("--pkg", default=PKG_DIR, help=argparse.SUPPRESS)
    parser.add_argument("--check", action="store_true", help="analyse only, write nothing")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.check:
            pkg = analyse(args.pkg)
            render(pkg, "check")
            print("ok: %d modules, order: %s" % (len(pkg.order), ", ".join(pkg.order)))
            return 0
        path, digest = build(args.pkg, args.output)
    except BuildError as exc:
        print("build_single: error: %s" % exc, file=sys.stderr)
        return 1
    shown = os.path.relpath(path) if not os.path.relpath(path).startswith("..") else path
    if not args.quiet:
        pkg_order = analyse(args.pkg).order
        print(
            "built %s: openai2 %s, %d modules (%s)"
            % (shown, _read_version(os.path.join(args.pkg, "common.py")), len(pkg_order), ", ".join(pkg_order))
        )
    print("%s  %s" % (digest, shown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
