"""`openai2 logs` and the logging of every exchange the CLI completes, in-process against
scripted replies answered in memory (``main(transport=...)`` with a MemoryServer, see
tests/support/memory.py), OPENAI2_HOME in a temporary folder."""
import json
import os
import sys
import unittest
from unittest import mock
from urllib.parse import urlsplit

from openai2.cli import EXIT_API_ERROR, EXIT_OK
from openai2.logbook import Logbook
from openai2.testing import Reply
from tests.support.cli import run_main
from tests.support.homes import TempHomeCase
from tests.support.memory import MemoryServer
from tests.support.serving import no_sleep

KEY = "sk-clilogs-RAWKEY-0123456789abcdef"


class CLILogsCase(TempHomeCase):
    """The CLI on a MemoryServer in a temporary home; ``key`` is the one it uses (never shown)."""

    tmp_prefix = "o2clilog-"
    key = KEY

    def setUp(self):
        self.server = MemoryServer()
        super().setUp()

    def home_env(self):
        return {"OPENAI_BASE_URL": self.server.base_url, "OPENAI_API_KEY": self.key}

    def run_cli(self, *argv, stdin=""):
        return run_main(argv, stdin=stdin, sleep=no_sleep, transport=self.server, secret=self.key)

    def logged(self):
        with Logbook(self.store.logs_path) as book:
            return book.exchanges(limit=None)


class LoggingTest(CLILogsCase):
    def test_one_shot_streamed_and_not_are_logged_with_their_history(self):
        self.server.add_replies(Reply(content="Paris."), Reply(content="Lyon."))
        self.assertEqual(self.run_cli("chat", "--system", "Be brief.", "Capital of France?")[0], EXIT_OK)
        self.assertEqual(self.run_cli("chat", "--no-stream", "Second city?")[0], EXIT_OK)
        records = self.logged()
        self.assertEqual([(r["question"], r["answer"], r["status"]) for r in records],
                         [("Capital of France?", "Paris.", "ok"), ("Second city?", "Lyon.", "ok")])
        self.assertEqual(records[0]["system"], "Be brief.")
        self.assertEqual(records[0]["host"], urlsplit(self.server.base_url).hostname)  # the base URL's host
        self.assertEqual(records[0]["key_fingerprint"], "sk-…cdef")
        with Logbook(self.store.logs_path) as book:
            sent = book.get(records[1]["id"])["messages"]
        self.assertEqual([m["content"] for m in sent], ["Be brief.", "Capital of France?", "Paris.", "Second city?"])

    def test_a_failed_exchange_is_logged_with_its_error(self):
        self.server.add_replies(Reply(content="bad model " + KEY, status=400))
        os.makedirs(self.home)  # a first run that fails creates nothing (test_cli holds that)
        code, _, err = self.run_cli("chat", "hello")
        self.assertEqual(code, EXIT_API_ERROR)
        (record,) = self.logged()
        self.assertEqual(record["status"], "error")
        self.assertIn("HTTP 400", record["error"])
        self.assertEqual(record["question"], "hello")

    def test_openai2_log_0_and_logs_off_log_nothing(self):
        self.server.add_replies(Reply(content="a"), Reply(content="b"), Reply(content="c"))
        with mock.patch.dict(os.environ, {"OPENAI2_LOG": "0"}):
            self.run_cli("chat", "one")
        self.assertFalse(os.path.exists(self.store.logs_path))
        self.assertEqual(self.run_cli("logs", "off")[0], EXIT_OK)
        self.run_cli("chat", "two")
        self.assertFalse(os.path.exists(self.store.logs_path))
        self.assertIn("off", self.run_cli("logs", "status")[1])
        self.run_cli("logs", "on")
        self.run_cli("chat", "three")
        self.assertEqual([r["question"] for r in self.logged()], ["three"])

    def test_a_corrupt_log_never_loses_the_answer(self):
        os.makedirs(self.home)
        with open(self.store.logs_path, "wb") as handle:
            handle.write(b"garbage" * 1000)
        self.server.add_replies(Reply(content="the answer"))
        code, out, err = self.run_cli("chat", "q")
        self.assertEqual(code, EXIT_OK)
        self.assertIn("the answer", out)
        self.assertIn("corrupted", err)
        self.assertEqual(json.load(open(self.store.session_path("default")))["messages"][-1]["content"], "the answer")
        self.assertEqual(len(self.logged()), 1)
        self.assertTrue(any(".corrupt-" in n for n in os.listdir(self.home)))

    def test_a_log_that_cannot_be_written_is_a_warning(self):
        os.makedirs(os.path.join(self.home, "logs.db"))  # a folder where the file should be
        self.server.add_replies(Reply(content="still here"))
        code, out, err = self.run_cli("chat", "q")
        self.assertEqual(code, EXIT_OK)
        self.assertIn("still here", out)
        self.assertIn("not logged", err)

    def test_without_sqlite3_everything_else_runs(self):
        self.server.add_replies(Reply(content="fine"))
        with mock.patch.dict(sys.modules, {"sqlite3": None}):
            code, out, _ = self.run_cli("chat", "q")
            self.assertEqual(code, EXIT_OK)
            self.assertIn("fine", out)
            self.assertIn("no sqlite3", self.run_cli("logs", "status")[1])
        self.assertFalse(os.path.exists(self.store.logs_path))


class LogsCommandTest(CLILogsCase):
    def fill(self):
        self.server.add_replies(Reply(content="人工智能正在快速发展"), Reply(content="Use open()."), Reply(content="ok"))
        self.run_cli("chat", "我们讨论一下人工智能")
        self.run_cli("chat", "--session", "py", "How to read a file?")
        self.run_cli("chat", "--session", "py", "--model", "other", "thanks")

    def test_list_search_filters_and_last_answer(self):
        self.fill()
        code, out, _ = self.run_cli("logs")
        self.assertEqual(code, EXIT_OK)
        self.assertLess(out.index("人工智能"), out.index("thanks"))  # newest last
        self.assertIn("人工智能", self.run_cli("logs", "-q", "讨论一下")[1])
        self.assertNotIn("thanks", self.run_cli("logs", "-q", "讨论一下")[1])
        self.assertIn("read a file", self.run_cli("logs", "-q", "fi")[1])
        out = self.run_cli("logs", "--session", "py", "--json")[1]
        self.assertEqual([r["question"] for r in json.loads(out)], ["How to read a file?", "thanks"])
        out = self.run_cli("logs", "--model", "other", "--json")[1]
        self.assertEqual([r["question"] for r in json.loads(out)], ["thanks"])
        self.assertEqual(self.run_cli("logs", "-r")[1], "ok\n")
        self.assertEqual(json.loads(self.run_cli("logs", "-n", "1", "--json")[1])[0]["answer"], "ok")
        self.assertEqual(self.run_cli("logs", "--since", "1d", "-n", "5", "--json")[0], EXIT_OK)
        self.assertEqual(self.run_cli("logs", "--since", "soon")[0], 2)

    def test_show_path_and_status(self):
        self.fill()
        out = self.run_cli("logs", "show", "3")[1]
        for text in ("How to read a file?", "Use open().", "thanks", "[answer]"):
            self.assertIn(text, out)
        self.assertNotEqual(self.run_cli("logs", "show", "99")[0], EXIT_OK)
        self.assertEqual(self.run_cli("logs", "path")[1].strip(), self.store.logs_path)
        self.assertIn("3 exchanges logged", self.run_cli("logs", "status")[1])


if __name__ == "__main__":
    unittest.main()
