"""The import graph of openai2/*.py holds to the layer list in tests/ARCHITECTURE.md.

The list is the fenced block marked ```` ```layers ```` in that document, read at test time, one
module a line, lowest layer first::

    name   what it owns (free text)   <- a, b, c ; lazy: d (why)

After ``<-``: the package modules it imports at module level (``(none)`` for none; words in
parentheses are remarks). After ``; lazy:``: the documented exceptions, package modules it
imports inside a function. ``#`` starts a comment line.

Checked against the real imports (the ast of every openai2/*.py: ``from .x import``, also
``from . import x`` and ``openai2.x``, at module level including ``if TYPE_CHECKING:``, and
inside functions):
- every module is in the list, once, and every module in the list exists;
- a module-level import goes strictly downward: to a module above it in the list;
- a function-level (lazy) import is allowed only where the list names it after ``lazy:``;
- the list's ``<-`` and ``lazy:`` entries are exactly the real imports (the document cannot go
  stale again).
``__init__`` (re-exports the public names) is the top and not in the list; no module imports it.
"""

import ast
import os
import re
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PACKAGE = os.path.join(ROOT, "openai2")
DOCUMENT = os.path.join(HERE, "ARCHITECTURE.md")
FENCE = re.compile(r"^```layers[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")


class Layer:
    def __init__(self, name, line_no, imports, lazy):
        self.name = name
        self.line_no = line_no  # in the document
        self.imports = imports  # set of module names
        self.lazy = lazy


def _names(text, where):
    """The module names of a comma-separated list; parenthesised remarks and "(none)" dropped."""
    text = re.sub(r"\([^)]*\)", "", text)
    names = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if not NAME.match(part):
            raise ValueError("%s: %r is not a module name" % (where, part))
        names.add(part)
    return names


def parse_layers(text):
    """The layer list of the document's ```layers block: [Layer], lowest first.

    :raises ValueError: no such block (or two), or a line that does not fit the format
    """
    blocks = FENCE.findall(text)
    if len(blocks) != 1:
        raise ValueError("tests/ARCHITECTURE.md must have exactly one ```layers block, found %d" % len(blocks))
    start = text[: text.index(blocks[0])].count("\n") + 1
    layers = []
    for offset, line in enumerate(blocks[0].splitlines()):
        line_no = start + offset
        where = "tests/ARCHITECTURE.md:%d" % line_no
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name = line.split()[0]
        if not NAME.match(name):
            raise ValueError("%s: %r is not a module name" % (where, name))
        if "<-" not in line:
            raise ValueError("%s: no '<-' (write '<- (none)' for a module that imports none)" % where)
        right = line.rsplit("<-", 1)[1]
        top, _, rest = right.partition(";")
        lazy = set()
        if rest.strip():
            label, colon, lazy_text = rest.partition(":")
            if label.strip() != "lazy" or not colon:
                raise ValueError("%s: after ';' only 'lazy: module, ...' may follow" % where)
            lazy = _names(lazy_text, where)
        layers.append(Layer(name, line_no, _names(top, where), lazy))
    return layers


def real_imports(path):
    """(top-level imports, lazy imports) of one module file: {module: first line number}."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    top, lazy = {}, {}

    def targets(node):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                return [node.module.split(".")[0]]
            if node.level == 1:  # from . import x
                return [alias.name for alias in node.names]
            if node.level == 0 and node.module and node.module.split(".")[0] == "openai2":
                parts = node.module.split(".")
                return [parts[1]] if len(parts) > 1 else ["__init__"]
        elif isinstance(node, ast.Import):
            found = []
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "openai2":
                    found.append(parts[1] if len(parts) > 1 else "__init__")
            return found
        return []

    def walk(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            for name in targets(child):
                bucket = lazy if in_function else top
                bucket.setdefault(name, child.lineno)
            walk(child, nested)

    walk(tree, False)
    return top, lazy


def package_modules():
    return sorted(f[:-3] for f in os.listdir(PACKAGE) if f.endswith(".py"))


class LayerListFormatTest(unittest.TestCase):
    def test_a_line_without_arrow_is_refused(self):
        with self.assertRaisesRegex(ValueError, "ARCHITECTURE.md:3: no '<-'"):
            parse_layers("x\n```layers\ncommon   version\n```\n")

    def test_remarks_none_and_lazy_are_read(self):
        text = "```layers\n# a comment\ncommon  c  <- (none)\ncli  the CLI <- common (why) ; lazy: testing (demo)\n```\n"
        layers = parse_layers(text)
        self.assertEqual([(x.name, x.imports, x.lazy) for x in layers], [("common", set(), set()), ("cli", {"common"}, {"testing"})])

    def test_the_document_has_exactly_one_block(self):
        with self.assertRaisesRegex(ValueError, "found 0"):
            parse_layers("no block here\n")


def check_graph(layers, imports):
    """Everything wrong between the layer list and the real imports ({module: (top, lazy)}), as
    sentences naming the module, what it imports and where: [] when they agree."""
    problems = []
    listed = [layer.name for layer in layers]
    position = {layer.name: i for i, layer in enumerate(layers)}
    for name in sorted(set(listed)):
        if listed.count(name) > 1:
            problems.append("%s is in the layer list %d times" % (name, listed.count(name)))
    for name in sorted(imports):
        if name not in position:
            problems.append("openai2/%s.py is missing from the layer list of tests/ARCHITECTURE.md" % name)
    for layer in layers:
        if layer.name not in imports:
            problems.append("tests/ARCHITECTURE.md:%d lists %s, but there is no openai2/%s.py" % (layer.line_no, layer.name, layer.name))
    for name in sorted(imports):
        top, lazy = imports[name]
        for target, line in sorted(top.items()):
            where = "openai2/%s.py:%d" % (name, line)
            if target == "__init__":
                problems.append("%s: %s imports the package itself (openai2/__init__)" % (where, name))
            elif target not in position:
                problems.append("%s: %s imports %s, which is not in the layer list" % (where, name, target))
            elif name in position and position[target] >= position[name]:
                problems.append("%s: %s imports %s, which is not below it in the layer list" % (where, name, target))
        allowed = layers[position[name]].lazy if name in position else set()
        for target, line in sorted(lazy.items()):
            if target not in allowed:
                problems.append(
                    "openai2/%s.py:%d: %s imports %s inside a function, which is not a documented exception"
                    " ('; lazy: %s' on its line of the layer list)" % (name, line, name, target, target)
                )
    for layer in layers:
        if layer.name not in imports:
            continue
        top, lazy = imports[layer.name]
        for kind, declared, real in (("<-", layer.imports, set(top)), ("lazy:", layer.lazy, set(lazy))):
            if declared != real:
                problems.append(
                    "tests/ARCHITECTURE.md:%d: %s %s %s, but the module imports %s"
                    % (layer.line_no, layer.name, kind, ", ".join(sorted(declared)) or "(none)", ", ".join(sorted(real)) or "(none)")
                )
    return problems


class CheckGraphTest(unittest.TestCase):
    """The checks themselves, on a made-up package."""

    DOC = "```layers\ncommon  c  <- (none)\nerrors  e  <- common\ncli  the CLI  <- errors ; lazy: testing (demo)\ntesting  t  <- common\n```\n"

    def imports(self, **changes):
        graph = {"common": ({}, {}), "errors": ({"common": 3}, {}), "cli": ({"errors": 5}, {"testing": 90}), "testing": ({"common": 2}, {})}
        graph.update(changes)
        return graph

    def test_agreeing_graph_passes_with_the_lazy_exception(self):
        self.assertEqual(check_graph(parse_layers(self.DOC), self.imports()), [])

    def test_a_module_missing_from_the_list_is_named(self):
        problems = check_graph(parse_layers(self.DOC), self.imports(files=({"common": 4}, {})))
        self.assertIn("openai2/files.py is missing from the layer list of tests/ARCHITECTURE.md", problems)

    def test_an_upward_import_names_both_modules(self):
        problems = check_graph(parse_layers(self.DOC), self.imports(errors=({"common": 3, "cli": 7}, {})))
        self.assertIn("openai2/errors.py:7: errors imports cli, which is not below it in the layer list", problems)

    def test_a_lazy_import_without_exception_is_named(self):
        problems = check_graph(parse_layers(self.DOC), self.imports(errors=({"common": 3}, {"testing": 40})))
        self.assertTrue(any(p.startswith("openai2/errors.py:40: errors imports testing inside a function") for p in problems), problems)

    def test_a_stale_entry_is_named(self):
        problems = check_graph(parse_layers(self.DOC), self.imports(cli=({"errors": 5, "common": 6}, {"testing": 90})))
        self.assertIn("tests/ARCHITECTURE.md:4: cli <- errors, but the module imports common, errors", problems)
        gone = self.imports()
        del gone["testing"]
        gone["cli"] = ({"errors": 5}, {})
        problems = check_graph(parse_layers(self.DOC), gone)
        self.assertIn("tests/ARCHITECTURE.md:5 lists testing, but there is no openai2/testing.py", problems)


@unittest.skipIf(os.environ.get("OPENAI2_SINGLE_FILE") == "1", "the package's modules are one file in this run")
class ImportGraphTest(unittest.TestCase):
    """The real imports of openai2/*.py against tests/ARCHITECTURE.md as it is now."""

    def test_the_import_graph_holds_to_the_layer_list(self):
        with open(DOCUMENT, encoding="utf-8") as handle:
            layers = parse_layers(handle.read())
        modules = [m for m in package_modules() if m != "__init__"]
        imports = {m: real_imports(os.path.join(PACKAGE, m + ".py")) for m in modules}
        self.assertEqual(check_graph(layers, imports), [])

    def test_the_single_file_is_built_in_layer_order(self):
        # tests/build_single.py concatenates the modules in its own MODULE_ORDER: the same list
        import importlib

        build_single = importlib.import_module("tests.build_single")
        with open(DOCUMENT, encoding="utf-8") as handle:
            layers = [layer.name for layer in parse_layers(handle.read()) if layer.name != "__main__"]
        self.assertEqual(list(build_single.MODULE_ORDER), layers)

    def test_the_package_is_read_at_all(self):
        top, _ = real_imports(os.path.join(PACKAGE, "errors.py"))
        self.assertIn("common", top)


if __name__ == "__main__":
    unittest.main()
