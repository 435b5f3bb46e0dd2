"""Chat(log=...): a script logs its exchanges into the same database `openai2 logs` reads —
completed, failed and interrupted ones, keys masked; True means the command line's logs.db (and
its off switches); a log that fails warns once and never costs an answer."""

from __future__ import annotations

import io
import os
import warnings

import openai2
from openai2 import Chat
from openai2.cli import main
from openai2.logbook import Logbook
from openai2.testing import MemoryTransport, Reply
from tests.support.homes import TempHomeCase

KEY = "sk-test-chatlog-0123456789abcdefSECRET"
BASE = "https://api.test/v1"


class ChatLogTest(TempHomeCase):
    def chat(self, replies, **options):
        return Chat(KEY, base_url=BASE, model="m", transport=MemoryTransport(replies), max_retries=0, **options)

    def rows(self, path):
        book = Logbook(path)
        self.addCleanup(book.close)
        return book.exchanges(limit=None)

    def test_completed_failed_and_interrupted_exchanges_are_logged(self):
        path = os.path.join(self.home, "mine.db")
        chat = self.chat(["one", Reply(status=400, content="bad"), Reply(chunks=["a", "b", "c", "d"])], log=path)
        chat.request("q1")
        with self.assertRaises(openai2.BadRequestError):
            chat.request("q2")
        stream = chat.stream_request("q3")
        next(stream)
        stream.close()
        rows = self.rows(path)
        self.assertEqual([r["status"] for r in rows], ["ok", "error", "interrupted"])
        self.assertEqual(rows[0]["answer"], "one")
        self.assertIn("BadRequestError", rows[1]["error"])
        self.assertEqual(rows[2]["answer"], "a")
        self.assertEqual(len({r["session"] for r in rows}), 1)
        self.assertTrue(rows[0]["session"].startswith("chat-"))

    def test_the_key_is_never_stored(self):
        path = os.path.join(self.home, "mine.db")
        chat = self.chat(["the key is " + KEY], log=path)
        chat.request("echo " + KEY)
        with open(path, "rb") as handle:
            raw = handle.read()
        for suffix in ("-wal", "-shm"):
            if os.path.exists(path + suffix):
                with open(path + suffix, "rb") as handle:
                    raw += handle.read()
        self.assertNotIn(KEY.encode(), raw)
        self.assertIn("sk-", self.rows(path)[0]["answer"])

    def test_log_true_is_the_command_lines_database_and_openai2_logs_reads_it(self):
        chat = self.chat(["forty-two"], log=True, log_session="script")
        chat.request("what is the answer?")
        self.assertTrue(os.path.exists(os.path.join(self.home, "logs.db")))
        out = io.StringIO()
        self.assertEqual(main(["logs", "--session", "script", "-r"], stdout=out, stderr=io.StringIO()), 0)
        self.assertEqual(out.getvalue().strip(), "forty-two")

    def test_log_true_honours_openai2_log_0_and_logs_off(self):
        os.environ["OPENAI2_LOG"] = "0"
        try:
            self.chat(["x"], log=True).request("q")
        finally:
            del os.environ["OPENAI2_LOG"]
        self.assertFalse(os.path.exists(os.path.join(self.home, "logs.db")))
        self.assertEqual(main(["logs", "off"], stdout=io.StringIO(), stderr=io.StringIO()), 0)
        self.chat(["x"], log=True).request("q")
        self.assertFalse(os.path.exists(os.path.join(self.home, "logs.db")))

    def test_a_failing_log_warns_once_and_the_answer_is_kept(self):
        path = os.path.join(self.home, "a-folder")
        os.makedirs(path)
        chat = self.chat(["one", "two"], log=path)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.assertEqual(chat.request("q1"), "one")
            self.assertEqual(chat.request("q2"), "two")
        self.assertEqual(len([w for w in caught if "exchange log" in str(w.message)]), 1)
        self.assertEqual(len(chat.fetch_messages()), 4)

    def test_tool_rounds_are_logged_with_the_final_answer(self):
        def get_weather(city: str) -> str:
            return "sunny"

        path = os.path.join(self.home, "mine.db")
        call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
        chat = self.chat([Reply(tool_calls=[call]), Reply("It is sunny.")], tools=[get_weather], log=path)
        chat.request("Oslo?")
        (row,) = self.rows(path)
        self.assertEqual(row["answer"], "It is sunny.")

    def test_bad_arguments_are_refused_at_construction(self):
        with self.assertRaises(TypeError):
            self.chat([], log=42)
        with self.assertRaises(ValueError):
            self.chat([], log=True, log_session=" ")

    def test_without_log_nothing_is_written(self):
        self.chat(["x"]).request("q")
        self.assertFalse(os.path.exists(os.path.join(self.home, "logs.db")))


if __name__ == "__main__":
    import unittest

    unittest.main()
