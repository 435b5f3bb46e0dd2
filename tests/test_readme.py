"""Every ```python example in README.md runs, in order, against the fake server.

Rules of the harness (also stated in README's Development section):
- all ```python blocks run in document order in one namespace per language section (the English
  part, then the Chinese part), with OPENAI_BASE_URL pointing at a FakeServer running DemoBrain,
  OPENAI_API_KEY set to a test key, and the working directory a fresh temporary folder;
- a block preceded by the line ``<!-- norun -->`` is shown but not run (none should need it);
- a line ``expression  # >>> value`` is checked: the expression's value must print as ``value``
  (``str`` or ``repr``; quoted values are compared as Python literals).
"""
import ast
import contextlib
import io
import os
import re
import shutil
import tempfile
import unittest

from openai2.testing import FakeServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
TEST_KEY = "sk-readme-test-key-0123456789"


def readme_blocks(text):
    """Yield (language_part, line_number, code) for each runnable python block."""
    part = "en"
    lines = text.split("\n")
    i = 0
    previous = ""
    while i < len(lines):
        line = lines[i]
        if line.startswith("## 中文说明"):
            part = "zh"
        if line.strip() == "```python":
            start = i + 1
            j = start
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            if previous.strip() != "<!-- norun -->":
                yield part, start + 1, "\n".join(lines[start:j])
            i = j + 1
            previous = ""
            continue
        if line.strip():
            previous = line
        i += 1


def _expected_matches(value, expected):
    expected = expected.strip()
    if expected[:1] in "'\"[{(" or expected in ("None", "True", "False"):
        try:
            return value == ast.literal_eval(expected)
        except (ValueError, SyntaxError):
            pass
    return str(value) == expected or repr(value) == expected


def run_block(code, namespace, where):
    """Run one block; check ``# >>>`` lines that are expression statements."""
    tree = ast.parse(code, where)
    lines = code.split("\n")
    for node in tree.body:
        segment = ast.Module(body=[node], type_ignores=[])
        end_line = lines[node.end_lineno - 1] if hasattr(node, "end_lineno") else lines[node.lineno - 1]
        match = re.search(r"#\s*>>>\s*(.+)$", end_line)
        is_print = (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name)
            and node.value.func.id == "print"
        )
        if is_print and match:
            # ``print(x)  # >>> value``: the printed text must be ``value``
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(segment, where, "exec"), namespace)
            if out.getvalue().strip() != match.group(1).strip():
                raise AssertionError("%s line %d: printed %r, README says %s" % (where, node.lineno, out.getvalue(), match.group(1)))
        elif isinstance(node, ast.Expr) and match and not isinstance(node.value, ast.Await):
            value = eval(compile(ast.Expression(node.value), where, "eval"), namespace)
            if not _expected_matches(value, match.group(1)):
                raise AssertionError("%s line %d: got %r, README says %s" % (where, node.lineno, value, match.group(1)))
        else:
            exec(compile(segment, where, "exec"), namespace)


class TestReadmeExamples(unittest.TestCase):
    def test_readme_examples_run(self):
        with open(README, encoding="utf-8") as f:
            text = f.read()
        blocks = list(readme_blocks(text))
        self.assertTrue(blocks, "README has no python examples")
        saved_env = {k: os.environ.get(k) for k in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI2_HOME")}
        saved_cwd = os.getcwd()
        tmp = tempfile.mkdtemp()
        server = FakeServer()
        server.start()
        try:
            os.environ["OPENAI_BASE_URL"] = server.base_url
            os.environ["OPENAI_API_KEY"] = TEST_KEY
            os.environ["OPENAI2_HOME"] = os.path.join(tmp, "home")
            namespaces = {}
            for part, line, code in blocks:
                namespace = namespaces.setdefault(part, {"__name__": "__readme__"})
                workdir = os.path.join(tmp, part)
                os.makedirs(workdir, exist_ok=True)
                os.chdir(workdir)
                with self.subTest(part=part, line=line), contextlib.redirect_stdout(io.StringIO()):
                    run_block(code, namespace, "README.md:%d" % line)
        finally:
            os.chdir(saved_cwd)
            server.stop()
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            shutil.rmtree(tmp, ignore_errors=True)

    def test_harness_catches_a_wrong_value(self):
        with self.assertRaises(AssertionError):
            run_block("x = 1\nx + 1  # >>> 3", {}, "inline")
        run_block("x = 1\nx + 1  # >>> 2", {}, "inline")
        run_block("s = 'a'\ns  # >>> 'a'", {}, "inline")
        run_block("print('x y')  # >>> x y", {}, "inline")
        with self.assertRaises(AssertionError):
            run_block("print('x')  # >>> y", {}, "inline")


if __name__ == "__main__":
    unittest.main()
