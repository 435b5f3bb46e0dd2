"""`openai2 chat --continue ID` and `-c`: a logged exchange's conversation, rebuilt from logs.db
(the logbook's delta history), goes on in a new session — also after `newchat` archived it.

In-process (``main(..., transport=MemoryTransport())``); the restored history is read off the
next request the transport recorded and off the new session file.
"""
import os
import unittest
from unittest import mock

from openai2.cli import EXIT_OK, EXIT_STORAGE, EXIT_USAGE
from openai2.logbook import Logbook
from openai2.testing import Reply
from tests.test_cli_roles import CliCase


class ContinueCase(CliCase):
    def ask(self, *argv, answer=None):
        if answer is not None:
            self.transport.replies.append(Reply(answer))
        code, out, err = self.run_cli("chat", *argv)
        self.assertEqual(code, EXIT_OK, err)
        return out, err

    def logged(self):
        with Logbook(self.store.logs_path) as book:
            return book.exchanges(limit=None)

    def contents(self, index=-1):
        return [m["content"] for m in self.sent(index)["messages"]]


class ContinueTest(ContinueCase):
    def test_continue_id_restores_that_exchange_into_a_new_session(self):
        self.ask("--system", "Be brief.", "one", answer="first answer")
        self.ask("two", answer="second answer")
        first = self.logged()[0]["id"]
        out, err = self.ask("--continue", str(first), "three", answer="third answer")
        self.assertEqual(out, "third answer\n")  # stdout: only the answer
        self.assertEqual(self.contents(), ["Be brief.", "one", "first answer", "three"])
        self.assertIn("exchange #%d" % first, err)
        self.assertIn("new session default-%d" % first, err)
        saved = self.store.read_session("default-%d" % first)
        self.assertEqual([m["content"] for m in saved["messages"]],
                         ["Be brief.", "one", "first answer", "three", "third answer"])
        self.assertEqual(saved["pinned"], [0])  # the system prompt stays pinned
        # the original session is untouched
        self.assertEqual(len(self.store.read_session("default")["messages"]), 5)

    def test_c_continues_the_latest_exchange(self):
        self.ask("one", answer="a1")
        self.ask("--session", "other", "two", answer="a2")
        latest = self.logged()[-1]["id"]
        _, err = self.ask("-c", "three")
        self.assertEqual(self.contents(), ["two", "a2", "three"])
        self.assertIn("new session other-%d" % latest, err)

    def test_continue_works_after_newchat_archived_the_conversation(self):
        self.ask("remember the number 7", answer="noted: 7")
        code, _, _ = self.run_cli("newchat", "something else")
        self.assertEqual(code, EXIT_OK)
        self.assertEqual(self.store.read_session("default")["messages"][0]["content"], "something else")
        first = self.logged()[0]["id"]
        self.ask("--continue", str(first), "which number?")
        self.assertEqual(self.contents(), ["remember the number 7", "noted: 7", "which number?"])
        self.assertEqual(self.store.read_session("default")["messages"][0]["content"], "something else")

    def test_a_long_conversation_comes_back_whole(self):
        for i in range(6):
            self.ask("q%d" % i, answer="a%d" % i)
        fourth = self.logged()[3]["id"]
        self.ask("--continue", str(fourth), "next")
        self.assertEqual(self.contents(), ["q0", "a0", "q1", "a1", "q2", "a2", "q3", "a3", "next"])

    def test_the_new_session_name_is_free_and_session_picks_one(self):
        self.ask("one", answer="a1")
        first = self.logged()[0]["id"]
        self.ask("--continue", str(first), "again")
        _, err = self.ask("--continue", str(first), "and again")
        self.assertIn("new session default-%d-2" % first, err)
        _, err = self.ask("--continue", str(first), "--session", "mine", "named")
        self.assertIn("new session mine", err)
        self.assertEqual(self.store.read_session("mine")["messages"][-2]["content"], "named")
        code, _, err = self.run_cli("chat", "--continue", str(first), "--session", "mine", "taken")
        self.assertEqual(code, EXIT_USAGE)
        self.assert_one_line_error(err, "session 'mine' already exists")

    def test_a_missing_id_is_a_clear_usage_error(self):
        self.ask("one", answer="a1")
        sent = len(self.transport.requests)
        for argv, words in (
            (("--continue", "999", "x"), ("no exchange 999", "openai2 logs")),
            (("--continue", "1", "-c", "x"), ("not both",)),
        ):
            code, out, err = self.run_cli("chat", *argv)
            self.assertEqual((code, out), (EXIT_USAGE, ""), argv)
            self.assert_one_line_error(err, *words)
        code, _, err = self.run_cli("newchat", "-c", "x")
        self.assertEqual(code, EXIT_USAGE)
        self.assert_one_line_error(err, "with chat, not newchat")
        code, _, err = self.run_cli("chat", "--continue", "abc")
        self.assertEqual(code, EXIT_USAGE)
        self.assertEqual(len(self.transport.requests), sent)
        self.assertEqual([s.name for s in self.store.list_sessions()], ["default"])

    def test_nothing_logged_yet_is_a_usage_error(self):
        code, _, err = self.run_cli("chat", "-c", "hello")
        self.assertEqual(code, EXIT_USAGE)
        self.assert_one_line_error(err, "nothing is logged yet")
        self.assertEqual(self.transport.requests, [])
        self.assertFalse(os.path.exists(self.home))

    def test_a_failed_exchange_comes_back_without_its_unanswered_question(self):
        self.ask("good question", answer="good answer")
        self.transport.replies.append(Reply(status=400, content="bad"))
        self.assertNotEqual(self.run_cli("chat", "failed question")[0], EXIT_OK)
        failed = self.logged()[-1]
        self.assertEqual(failed["status"], "error")
        _, err = self.ask("--continue", str(failed["id"]), "retry it")
        self.assertEqual(self.contents(), ["good question", "good answer", "retry it"])
        self.assertIn("its question is left out: failed question", err)

    def test_an_interrupted_exchange_keeps_what_arrived(self):
        self.ask("one", answer="a1")
        with Logbook(self.store.logs_path) as book:
            cut = book.append(messages=[{"role": "user", "content": "story"}], answer="Once upon",
                              session="pty", status="interrupted")
        self.ask("--continue", str(cut), "go on")
        self.assertEqual(self.contents(), ["story", "Once upon", "go on"])

    def test_continue_at_the_prompt_and_with_no_save(self):
        self.ask("one", answer="a1")
        code, out, err = self.run_cli("chat", "-c", "-i", stdin="/history\n")
        self.assertEqual(code, EXIT_OK)
        self.assertIn("session default-1 (2 messages so far", out)
        self.assertIn("[assistant]:a1", out)
        code, _, err = self.run_cli("chat", "-c", "--no-save", "not kept")
        self.assertEqual(code, EXIT_OK)
        self.assertIn("(not saved: --no-save)", err)
        self.assertEqual(self.contents(), ["one", "a1", "not kept"])
        self.assertNotIn("default-1-2", [s.name for s in self.store.list_sessions()])

    def test_continue_with_the_log_off_for_this_run_still_reads_it(self):
        self.ask("one", answer="a1")
        with mock.patch.dict(os.environ, {"OPENAI2_LOG": "0"}):
            self.ask("-c", "two")
        self.assertEqual(self.contents(), ["one", "a1", "two"])
        self.assertEqual(len(self.logged()), 1)

    def test_a_corrupt_log_is_a_storage_error(self):
        os.makedirs(self.home)
        with open(self.store.logs_path, "wb") as handle:
            handle.write(b"not a database" * 100)
        code, _, err = self.run_cli("chat", "-c", "x")
        self.assertEqual(code, EXIT_USAGE)
        self.assert_one_line_error(err, "was corrupted", "logs.db.corrupt-")
        with open(self.store.logs_path, "wb") as handle:
            handle.write(b"not a database" * 100)
        code, _, err = self.run_cli("chat", "--continue", "3", "x")
        self.assertEqual(code, EXIT_STORAGE)
        self.assert_one_line_error(err, "no exchange 3", "was corrupted")
        self.assertEqual(self.transport.requests, [])


if __name__ == "__main__":
    unittest.main()
