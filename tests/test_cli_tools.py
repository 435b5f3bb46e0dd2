"""The command line's tools: --functions FILE.py (or inline code), the y/N question before each
call, --yes, calls and results dimmed on stderr, stdout only the answer in one-shot runs, /tools.

In memory (``main(transport=MemoryTransport(...))``); the interactive question in a real terminal
is in tests/test_cli_pty.py.
"""

from __future__ import annotations

import json
import os
import tempfile
import unittest

from openai2.testing import MemoryTransport, Reply
from tests.support.cli import run_main

KEY = "sk-test-clitools-0123456789abcdef"
BASE = "https://mem.test/v1"

WEATHER = '''
import os
from os.path import join  # imported: not a tool

RAN = []

def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    RAN.append(city)
    return {"Paris": "sunny, 22 °C", "北京": "晴"}.get(city, "no data")

def _helper():
    return 1

class NotATool:
    pass
'''


def call(call_id, name, arguments):
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}}


class CliToolsTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        old = os.environ.get("OPENAI2_HOME")
        os.environ["OPENAI2_HOME"] = os.path.join(self.tmp.name, "home")
        self.addCleanup(lambda: os.environ.__setitem__("OPENAI2_HOME", old) if old is not None else os.environ.pop("OPENAI2_HOME", None))
        self.file = os.path.join(self.tmp.name, "weather.py")
        with open(self.file, "w", encoding="utf-8") as handle:
            handle.write(WEATHER)

    def run_cli(self, *args, stdin="", replies=None):
        self.transport = MemoryTransport(replies)
        return run_main(list(args) + ["--api-key", KEY, "--base-url", BASE, "--no-save"], stdin=stdin, transport=self.transport)

    def test_public_functions_of_the_file_become_the_tools(self):
        code, out, err = self.run_cli("chat", "--yes", "--functions", self.file, "What is the weather in Paris?")
        self.assertEqual(code, 0, err)
        names = [t["function"]["name"] for t in self.transport.requests[0].json["tools"]]
        self.assertEqual(names, ["get_weather"])
        self.assertEqual(out, "Here is what the tools said: sunny, 22 °C.\n")
        self.assertIn("tool: get_weather(city='Paris')", err)
        self.assertIn("-> sunny, 22 °C", err)

    def test_each_call_is_asked_first_and_only_yes_runs_it(self):
        code, out, err = self.run_cli("chat", "--functions", self.file, "What is the weather in Paris?", stdin="y\n")
        self.assertEqual(code, 0, err)
        self.assertIn("Run get_weather(city='Paris')? [y/N]", err)
        self.assertEqual(self.transport.requests[1].json["messages"][-1]["content"], "sunny, 22 °C")
        for answer in ("n\n", "\n", ""):
            with self.subTest(answer=answer):
                code, out, err = self.run_cli("chat", "--functions", self.file, "What is the weather in Paris?", stdin=answer)
                self.assertEqual(code, 0, err)
                self.assertEqual(
                    self.transport.requests[1].json["messages"][-1]["content"], "The user declined to run this tool."
                )
                self.assertIn("not run (declined)", err)

    def test_chinese_arguments_are_shown_as_typed(self):
        code, out, err = self.run_cli("chat", "--functions", self.file, "北京天气怎么样？", stdin="y\n")
        self.assertEqual(code, 0, err)
        self.assertIn("Run get_weather(city='北京')? [y/N]", err)
        self.assertEqual(out, "查询结果：晴。\n")

    def test_a_question_read_from_stdin_leaves_nothing_to_ask_on_without_a_terminal(self):
        # stdin held the question; /dev/tty may exist on this machine, so only --yes is certain
        code, out, err = self.run_cli("chat", "--yes", "--functions", self.file, stdin="What is the weather in Paris?")
        self.assertEqual(code, 0, err)
        self.assertEqual(out, "Here is what the tools said: sunny, 22 °C.\n")

    def test_one_shot_stdout_holds_only_the_final_answer(self):
        replies = [Reply("Let me check. ", tool_calls=[call("c1", "get_weather", {"city": "Paris"})]), Reply("It is sunny.")]
        code, out, err = self.run_cli("chat", "--yes", "--functions", self.file, "Paris?", replies=replies)
        self.assertEqual(code, 0, err)
        self.assertEqual(out, "It is sunny.\n")
        self.assertIn("Let me check.", err)
        self.assertLess(err.index("Let me check."), err.index("tool: get_weather"))

    def test_inline_code_and_several_specs(self):
        code, out, err = self.run_cli(
            "chat",
            "--yes",
            "--functions",
            self.file,
            "--functions",
            'def add(a: int, b: int) -> int:\n    """Add two numbers."""\n    return a + b',
            "please add 2 and 3",
        )
        self.assertEqual(code, 0, err)
        names = sorted(t["function"]["name"] for t in self.transport.requests[0].json["tools"])
        self.assertEqual(names, ["add", "get_weather"])
        self.assertEqual(out, "Here is what the tools said: 5.\n")

    def test_failures_are_usage_errors_and_nothing_is_sent(self):
        broken = os.path.join(self.tmp.name, "broken.py")
        with open(broken, "w", encoding="utf-8") as handle:
            handle.write("def f(:\n")
        cases = [
            (os.path.join(self.tmp.name, "missing.py"), "No such file"),
            (broken, "SyntaxError"),
            ("x = 1", "defines no public function"),
            ("def bad(items: set) -> None:\n    pass", "'items'"),
            ("raise SystemExit(3)", "SystemExit"),
        ]
        for spec, expected in cases:
            with self.subTest(spec=spec):
                code, out, err = self.run_cli("chat", "--functions", spec, "hi")
                self.assertEqual(code, 2, err)
                self.assertIn(expected, err)
                self.assertEqual(self.transport.requests, [])
                self.assertEqual(out, "")

    def test_slash_tools_lists_them(self):
        code, out, err = self.run_cli("chat", "-i", "--functions", self.file, stdin="/tools\nquit\n")
        self.assertEqual(code, 0, err)
        self.assertIn("get_weather(city)  Get the current weather in a city.", out)
        code, out, err = self.run_cli("chat", "-i", stdin="/tools\nquit\n")
        self.assertIn("No tools", out)


if __name__ == "__main__":
    unittest.main()
