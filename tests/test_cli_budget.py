"""`openai2 chat` and the token budget: the session file keeps the whole conversation while only
what fits is sent ("auto" by default: the window learned from the server's first refusal, kept in
tokens.json so that every later one-shot run knows it; --max-history-tokens N to fix it; 0: none),
one dim line on stderr when messages were left out, --summarize keeping a summary beside the
messages in the session file, and /tokens in the REPL.  In-process, against the demo model with a
context window (it refuses a prompt over it as OpenAI does)."""

from __future__ import annotations

import json
import os

from openai2.cli import EXIT_OK, EXIT_USAGE
from openai2.demo import DemoBrain
from openai2.testing import MemoryTransport, Reply
from tests.support.cli import run_main
from tests.support.homes import TempHomeCase

KEY = "sk-test-clibudget-0123456789abcdef"
BASE = "https://mem.test/v1"


def long_question(i):
    return "question %d: " % i + "please explain the history of the number %d in some detail " % i * 4


class CliBudgetTest(TempHomeCase):
    def setUp(self):
        super().setUp()
        # a summary request (its transcript starts "user:" or "Previous summary:") gets a short summary
        self.brain = DemoBrain([(lambda text: text.startswith(("user:", "Previous summary:")), "They talked about numbers.")], window=600)
        self.transport = MemoryTransport(handler=self.brain)

    def run_cli(self, *args, stdin="", base=BASE):
        common = [] if args[0] == "sessions" else ["--api-key", KEY, "--base-url", base]
        return run_main(list(args) + common, stdin=stdin, transport=self.transport)

    def refusals(self):
        return sum(1 for r in self.transport.requests if self.brain.prompt_tokens(r.messages) > self.brain.window)

    def chat_requests(self):
        return [r for r in self.transport.requests if "Summarise" not in str(r.messages[0].get("content"))]

    def session(self, name="default"):
        return self.store.read_session(name)

    # -- "auto" and tokens.json ----------------------------------------------------------------
    def test_one_shot_runs_pay_one_refusal_and_keep_every_message(self):
        notes = []
        for i in range(12):
            code, out, err = self.run_cli("chat", long_question(i))
            self.assertEqual(code, EXIT_OK, err)
            self.assertTrue(out.strip())
            notes.append(err)
        self.assertEqual(self.refusals(), 1)  # the window is learned once, then known to every run
        messages = self.session()["messages"]
        self.assertEqual(len(messages), 24)  # nothing deleted from the session file
        self.assertEqual(messages[0]["content"], long_question(0))
        last = self.chat_requests()[-1].messages
        self.assertLessEqual(self.brain.prompt_tokens(last), 600)
        self.assertLess(len(last), 24)
        self.assertIn("earlier messages not sent, to fit", notes[-1])
        self.assertIn("the session keeps them all", notes[-1])
        self.assertNotIn("not sent", notes[0])  # nothing left out: no note

    def test_tokens_file_holds_no_part_of_the_url_secrets(self):
        for i in range(10):
            code, _, err = self.run_cli("chat", long_question(i), base="https://user:pw-s3cret@mem.test/v1/")
            self.assertEqual(code, EXIT_OK, err)
        path = os.path.join(self.home, "tokens.json")
        with open(path, "rb") as f:
            raw = f.read()
        for secret in (b"pw-s3cret", b"user:", KEY.encode()):
            self.assertNotIn(secret, raw)
        data = json.loads(raw)
        self.assertEqual(data["format"], "openai2.tokens")
        entry = next(iter(data["servers"].values()))
        self.assertEqual(entry["host"], "mem.test")
        self.assertLess(entry["models"]["gpt-4o-mini"]["window"], 600)

    def test_a_corrupt_tokens_file_is_a_note_not_an_error(self):
        os.makedirs(self.home, exist_ok=True)
        with open(os.path.join(self.home, "tokens.json"), "w") as f:
            f.write("{not json")
        code, out, err = self.run_cli("chat", "hello")
        self.assertEqual(code, EXIT_OK, err)
        self.assertTrue(out.strip())
        self.assertIn("tokens.json", err)

    def test_no_save_writes_no_tokens_file(self):
        for i in range(10):
            self.assertEqual(self.run_cli("chat", "--no-save", long_question(i))[0], EXIT_OK)
        self.assertFalse(os.path.exists(os.path.join(self.home, "tokens.json")))

    # -- --max-history-tokens --------------------------------------------------------------------
    def test_a_fixed_budget_sends_only_what_fits(self):
        for i in range(8):
            code, _, err = self.run_cli("chat", "--max-history-tokens", "300", long_question(i))
            self.assertEqual(code, EXIT_OK, err)
        self.assertEqual(self.refusals(), 0)
        self.assertEqual(len(self.session()["messages"]), 16)
        for request in self.chat_requests()[2:]:
            self.assertLessEqual(self.brain.prompt_tokens(request.messages), 330)  # the estimate, calibrated
        self.assertIn("to fit 300 tokens", err)

    def test_zero_means_no_budget_and_a_negative_one_is_a_usage_error(self):
        self.brain.window = None
        for i in range(6):
            self.assertEqual(self.run_cli("chat", "--max-history-tokens", "0", long_question(i))[0], EXIT_OK)
        self.assertEqual(len(self.transport.requests[-1].messages), 11)  # everything sent
        code, _, err = self.run_cli("chat", "--max-history-tokens", "-5", "hi")
        self.assertEqual(code, EXIT_USAGE)
        self.assertIn("--max-history-tokens", err)

    # -- --summarize -----------------------------------------------------------------------------
    def test_summarize_keeps_the_summary_beside_the_messages(self):
        for i in range(8):
            code, _, err = self.run_cli("chat", "--summarize", "--max-history-tokens", "300", long_question(i))
            self.assertEqual(code, EXIT_OK, err)
        saved = self.session()
        self.assertEqual(len(saved["messages"]), 16)  # the summary replaced nothing
        summary = saved["summary"]
        self.assertIsNotNone(summary)
        self.assertTrue(summary["content"].startswith("[Summary of the earlier conversation]"))
        with open(self.store.session_path("default"), encoding="utf-8") as f:
            raw = json.load(f)
        self.assertEqual(raw["summary"]["covers"], summary["covers"])
        # the next run sends it in place of what it covers
        self.run_cli("chat", "--summarize", "--max-history-tokens", "300", "and now?")
        sent = self.chat_requests()[-1].messages
        self.assertEqual(sent[0]["role"], "system")
        self.assertTrue(sent[0]["content"].startswith("[Summary"))
        self.assertRegex(
            self.run_cli("chat", "--summarize", "--max-history-tokens", "300", "more?")[2],
            r"\(\d+ earlier messages not sent, to fit 300 tokens; a summary stood for \d+ of them; the session keeps",
        )

    def test_undo_into_what_the_summary_covers_drops_it_and_exports_are_as_before(self):
        for i in range(8):
            self.run_cli("chat", "--summarize", "--max-history-tokens", "300", long_question(i))
        covers = self.session()["summary"]["covers"]
        rounds = 8 - covers // 2 + 1
        code, out, err = self.run_cli("chat", "-i", stdin="/undo %d\n/exit\n" % rounds)
        self.assertEqual(code, EXIT_OK, err)
        saved = self.session()
        self.assertIsNone(saved["summary"])
        self.assertEqual(len(saved["messages"]), 16 - 2 * rounds)
        code, out, err = self.run_cli("sessions", "export")
        self.assertEqual(code, EXIT_OK, err)
        self.assertEqual(set(json.loads(out)), {"format", "version", "messages", "pinned"})

    def test_newchat_archives_the_summary_with_the_messages(self):
        for i in range(8):
            self.run_cli("chat", "--summarize", "--max-history-tokens", "300", long_question(i))
        self.assertEqual(self.run_cli("newchat", "hello")[0], EXIT_OK)
        self.assertIsNone(self.session()["summary"])
        archived = os.listdir(self.store.archive_dir)
        self.assertEqual(len(archived), 1)
        with open(os.path.join(self.store.archive_dir, archived[0])) as f:
            self.assertIn("summary", json.load(f))

    # -- /tokens ---------------------------------------------------------------------------------
    def test_tokens_command_shows_estimate_budget_and_messages(self):
        for i in range(10):
            self.run_cli("chat", long_question(i))
        code, out, err = self.run_cli("chat", "-i", stdin="/tokens\n/exit\n")
        self.assertEqual(code, EXIT_OK, err)
        self.assertRegex(out, r"Next request: about \d+ tokens before your message \(the estimate x [0-9.]+, calibrated on \d+ answers?\)")
        self.assertRegex(out, r"Budget: \d+ tokens \(learned from the server's refusal")
        self.assertRegex(out, r"Messages: 20 in the session, \d+ sent \(\d+ left out\)")

    def test_tokens_command_after_an_answer_counts_what_the_server_counted(self):
        code, out, err = self.run_cli("chat", "-i", stdin=long_question(1) + "\n/tokens\n/exit\n")
        self.assertEqual(code, EXIT_OK, err)
        # the system prompt is none: the question and its answer, as the demo server counted them
        self.assertRegex(out, r"about \d+ tokens before your message \(2 messages as the server counted them, the rest "
                              r"the estimate x [0-9.]+, calibrated on 1 answer\)")

    def test_tokens_command_before_anything_is_learned(self):
        code, out, err = self.run_cli("chat", "-i", stdin="/tokens\n/exit\n")
        self.assertEqual(code, EXIT_OK, err)
        self.assertIn("Budget: not known yet", out)
        self.assertIn("Messages: 0 in the session, 0 sent", out)
        self.assertIn("calibrated once an answer reports its prompt tokens", out)

    def test_a_refusal_that_cannot_be_fixed_says_what_to_do(self):
        self.transport = MemoryTransport(
            [
                Reply(
                    status=400,
                    body={
                        "error": {
                            "message": "This model's maximum context length is 10 tokens. However, your messages "
                            "resulted in 900 tokens.",
                            "code": "context_length_exceeded",
                            "type": "invalid_request_error",
                        }
                    },
                )
            ]
        )
        code, _, err = self.run_cli("chat", long_question(1))
        self.assertEqual(code, 1)
        self.assertIn("--max-history-tokens", err)
        self.assertIsNone(self.session())  # nothing saved from the failed run


if __name__ == "__main__":
    import unittest

    unittest.main()
