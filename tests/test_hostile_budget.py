"""A hostile look at Chat(trim_history=False) with a summary kept beside the history and at the
command line's token budget: session files with a hostile "summary", summaries ending inside a
tool round or over pinned rounds, hostile tokens.json, odd --max-history-tokens values, /tokens.

The tests whose docstring says "Was a defect" failed on the code as the review found it (their
docstrings name what was wrong and where it was fixed)."""

from __future__ import annotations

import json
import os
import unittest
import warnings

from openai2 import Chat
from openai2.cli import EXIT_OK, EXIT_USAGE
from openai2.demo import DemoBrain
from openai2.history import hist_digest
from openai2.testing import MemoryTransport
from tests.support.cli import run_main
from tests.support.homes import TempHomeCase

KEY = "sk-test-hostilebudget-0123456789abcdef"
BASE = "https://mem.test/v1"


def words(text):
    return len(text.split())


def make_chat(**options):
    transport = MemoryTransport(["ok"] * 4)
    chat = Chat(KEY, base_url="https://api.test/v1", model="m", transport=transport, max_retries=0, tokenizer=words, **options)
    return chat, transport


def rounds(n):
    return [{"role": r, "content": "%s%d" % (r, i)} for i in range(n) for r in ("user", "assistant")]


TOOL_ROUND = [
    {"role": "user", "content": "call the tool please"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "result"},
    {"role": "assistant", "content": "done"},
]


def orphans(messages):
    """Tool messages sent without the assistant message that called them."""
    called, out = set(), []
    for m in messages:
        for call in m.get("tool_calls") or ():
            called.add(call["id"])
        if m["role"] == "tool" and m.get("tool_call_id") not in called:
            out.append(m)
    return out


class SummaryBesideHistory(unittest.TestCase):
    def test_a_summary_ending_inside_a_tool_round_never_sends_an_orphaned_tool_message(self):
        """Was a defect: a summary (set from a session file) whose ``covers`` ends on the assistant
        message with tool_calls, with a digest that matches, makes _beside_summary drop the call
        and keep its tool result: the request carries an orphaned tool message (a 400 from
        OpenAI).  Fix: openai2/chat.py _side_message_locked (or history.py _beside_summary): a
        summary is valid only when ``head + covers`` is a round boundary — the message at that
        index is a user message, or it is the end of the history; else drop it like a stale one."""
        chat, transport = make_chat(MsgMaxTokens=1000, trim_history=False, summarize=True, system="sys")
        chat.replace_messages([{"role": "system", "content": "sys"}] + TOOL_ROUND + rounds(1), [0])
        history = chat.fetch_messages()
        chat.summary = {"content": "S", "covers": 2, "digest": hist_digest(history[1:3])}
        chat.request("next")
        self.assertEqual(orphans(transport.requests[-1].json["messages"]), [])

    def test_a_summary_over_whole_tool_rounds_leaves_no_orphan(self):
        chat, transport = make_chat(MsgMaxTokens=1000, trim_history=False, summarize=True, system="sys")
        chat.replace_messages([{"role": "system", "content": "sys"}] + TOOL_ROUND + rounds(1), [0])
        history = chat.fetch_messages()
        chat.summary = {"content": "S", "covers": 4, "digest": hist_digest(history[1:5])}
        chat.request("next")
        sent = transport.requests[-1].json["messages"]
        self.assertEqual(orphans(sent), [])
        self.assertEqual([m["content"] for m in sent], ["sys", "S", "user0", "assistant0", "next"])

    def test_a_summary_of_other_messages_is_never_sent(self):
        chat, transport = make_chat(MsgMaxTokens=1000, trim_history=False, summarize=True)
        chat.replace_messages(rounds(3))
        chat.summary = {"content": "FORGED", "covers": 2, "digest": hist_digest(rounds(3)[2:4])}
        chat.request("next")
        self.assertNotIn("FORGED", [m["content"] for m in transport.requests[-1].json["messages"]])
        self.assertIsNone(chat.summary)

    def test_a_summary_covering_everything_sends_only_it_and_the_new_message(self):
        chat, transport = make_chat(MsgMaxTokens=1000, trim_history=False, summarize=True, system="sys")
        chat.replace_messages([{"role": "system", "content": "sys"}] + rounds(3), [0])
        chat.summary = {"content": "S", "covers": 6, "digest": hist_digest(rounds(3))}
        report = chat.budget_report()
        self.assertEqual((report["stored"], report["sent"], report["summarised"]), (7, 1, 6))
        chat.request("next")
        self.assertEqual([m["content"] for m in transport.requests[-1].json["messages"]], ["sys", "S", "next"])

    def test_a_rollback_into_the_covered_messages_drops_the_summary(self):
        chat, transport = make_chat(MsgMaxTokens=1000, trim_history=False, summarize=True)
        chat.replace_messages(rounds(2))
        chat.summary = {"content": "S", "covers": 4, "digest": hist_digest(rounds(2))}
        chat.rollback(1)
        self.assertIsNone(chat.summary)
        chat.request("next")
        self.assertNotIn("S", [m["content"] for m in transport.requests[-1].json["messages"]])

    def test_budget_report_counts_as_summarised_only_messages_not_sent(self):
        """Was a defect: with a pinned round inside what the summary covers, that round is still sent,
        yet budget_report()["summarised"] is the whole ``covers``: stored 9, sent 7, summarised 4,
        so /tokens says "4 as a summary" when 2 messages are not sent (and ``stored - sent -
        summarised`` goes negative).  Fix: openai2/chat.py budget_report: ``summarised`` = the
        covered messages not in ``fitted.messages`` (count ``m`` in ``buffer.view()[head:head +
        covers]`` whose id is not among the sent ones), not ``side["covers"]``."""
        chat, _ = make_chat(MsgMaxTokens=1000, trim_history=False, summarize=True, system="sys")
        chat.replace_messages([{"role": "system", "content": "sys"}] + rounds(4), [0, 1])
        history = chat.fetch_messages()
        chat.summary = {"content": "S", "covers": 4, "digest": hist_digest(history[1:5])}
        report = chat.budget_report()
        self.assertEqual(report["stored"] - report["sent"], 2)
        self.assertEqual(report["summarised"], 2)

    def test_replacing_or_clearing_the_messages_drops_the_summary(self):
        chat, transport = make_chat(MsgMaxTokens=1000, trim_history=False, summarize=True)
        valid = {"content": "S", "covers": 2, "digest": hist_digest(rounds(2)[:2])}
        chat.replace_messages(rounds(2))
        chat.summary = valid
        edited = rounds(2)
        edited[0] = {"role": "user", "content": "changed"}
        chat.replace_messages(edited)
        self.assertIsNone(chat.summary)
        chat.replace_messages(rounds(2))
        chat.summary = valid
        chat.clear()
        self.assertIsNone(chat.summary)

    def test_a_new_system_prompt_keeps_the_summary_and_what_it_covers(self):
        chat, transport = make_chat(MsgMaxTokens=1000, trim_history=False, summarize=True)
        chat.replace_messages(rounds(2))
        chat.summary = {"content": "S", "covers": 2, "digest": hist_digest(rounds(2)[:2])}
        chat.set_system("new sys")
        chat.request("next")
        self.assertEqual(
            [m["content"] for m in transport.requests[-1].json["messages"]], ["new sys", "S", "user1", "assistant1", "next"]
        )

    def test_the_summary_setter_refuses_hostile_values(self):
        chat, _ = make_chat(MsgMaxTokens=1000, trim_history=False, summarize=True)
        digest = "0" * 64
        for bad in (
            "text",
            [1],
            {"content": "S", "covers": True, "digest": digest},
            {"content": "S", "covers": -1, "digest": digest},
            {"content": "S", "covers": 2.0, "digest": digest},
            {"content": ["S"], "covers": 2, "digest": digest},
            {"content": "S", "covers": 2, "digest": "A" * 64},
            {"content": "  ", "covers": 2, "digest": digest},
        ):
            with self.assertRaises(ValueError, msg=repr(bad)):
                chat.summary = bad
        chat.summary = {"content": "S", "covers": 10 ** 30, "digest": digest}
        self.assertIsNone(chat.summary)  # covers beyond the history: dropped


class CliHostile(TempHomeCase):
    def setUp(self):
        super().setUp()
        self.brain = DemoBrain([], window=600)
        self.transport = MemoryTransport(handler=self.brain)

    def run_cli(self, *args, stdin="", base=BASE):
        return run_main(list(args) + ["--api-key", KEY, "--base-url", base], stdin=stdin, transport=self.transport)

    def session_file(self):
        return os.path.join(self.home, "sessions", "default.json")

    def edit_session(self, summary):
        with open(self.session_file(), encoding="utf-8") as f:
            data = json.load(f)
        data["summary"] = summary(data["messages"]) if callable(summary) else summary
        with open(self.session_file(), "w", encoding="utf-8") as f:
            f.write(json.dumps(data))

    def test_a_session_summary_with_a_lone_surrogate_is_dropped_not_an_error(self):
        """Was a defect: a session file whose "summary" content holds a lone surrogate ("\\ud800", valid
        JSON) passes check_side_summary; every later `openai2 chat` then fails with "unexpected
        ValueError: ... lone surrogate ... Nothing was sent", and the bad summary is written back,
        so the session is unusable for good.  The README says a bad summary is dropped, never an
        error.  Fix: openai2/history.py check_side_summary: return None when
        ``content.encode("utf-8")`` raises UnicodeEncodeError (a lone surrogate)."""
        code, _, err = self.run_cli("chat", "hello there")
        self.assertEqual(code, EXIT_OK, err)
        self.edit_session(lambda msgs: {"content": "S\ud800", "covers": 2, "digest": hist_digest(msgs[0:2])})
        code, out, err = self.run_cli("chat", "again", "--max-history-tokens", "1000")
        self.assertEqual(code, EXIT_OK, err)

    def test_hostile_session_summaries_are_dropped_and_the_chat_goes_on(self):
        code, _, err = self.run_cli("chat", "hello there")
        self.assertEqual(code, EXIT_OK, err)
        hostile = [
            "just text",
            [1, 2],
            {"content": {"nested": ["junk"]}, "covers": 2, "digest": "0" * 64},
            {"content": "FORGED", "covers": 10 ** 40, "digest": "0" * 64},
            {"content": "FORGED", "covers": True, "digest": "0" * 64},
            lambda msgs: {"content": "FORGED", "covers": 2, "digest": hist_digest(msgs[1:3])},  # other messages
        ]
        for summary in hostile:
            self.edit_session(summary)
            code, _, err = self.run_cli("chat", "again", "--max-history-tokens", "1000")
            self.assertEqual(code, EXIT_OK, (summary, err))
            self.assertNotIn("FORGED", json.dumps(self.transport.requests[-1].messages))

    def test_a_session_summary_ending_mid_round_is_not_sent(self):
        """Was a defect (same root as the orphaned tool message): a session "summary" with covers=1
        and the digest of the first message (the question alone) is sent in place of the
        question while its answer is still sent, an answer with no question (with a tool round:
        an orphaned tool message, refused by the API).  Fix: as for the tool round — drop a
        summary whose ``head + covers`` is not a round boundary (history.check_side_summary
        cannot see the messages; do it in chat.py _side_message_locked, which is where the
        CLI's ``chat.summary = saved.get("summary")`` ends up)."""
        code, _, err = self.run_cli("chat", "hello there")
        self.assertEqual(code, EXIT_OK, err)
        self.edit_session(lambda msgs: {"content": "FORGED", "covers": 1, "digest": hist_digest(msgs[0:1])})
        code, _, err = self.run_cli("chat", "again", "--max-history-tokens", "1000")
        self.assertEqual(code, EXIT_OK, err)
        self.assertNotIn("FORGED", json.dumps(self.transport.requests[-1].messages))

    def test_the_left_out_note_claims_a_summary_only_when_one_was_sent(self):
        """Was a defect: when the summary kept beside the history is itself over the budget it is not
        sent (as the README says), yet the dim stderr line says "a summary stands for them":
        _CliConversation.after_request tests ``chat.summary is not None``, not whether the
        request carried it.  Fix: openai2/chat.py _commit_fitted: also record how many left-out
        messages the summary stood for in that request (e.g. ``self.last_summarised``: covered
        messages absent from ``fitted.messages`` when ``self._side_msg`` is among them, else 0);
        openai2/cli.py after_request: add "; a summary stands for them" only when it is > 0."""
        for i in range(4):
            code, _, err = self.run_cli("chat", "question %d " % i + "words " * 30)
            self.assertEqual(code, EXIT_OK, err)
        big = "a long summary " * 200
        self.edit_session(lambda msgs: {"content": big, "covers": 2, "digest": hist_digest(msgs[0:2])})
        code, _, err = self.run_cli("chat", "question 4", "--max-history-tokens", "300")
        self.assertEqual(code, EXIT_OK, err)
        self.assertNotIn(big, json.dumps(self.transport.requests[-1].messages))  # over the budget: not sent
        self.assertIn("earlier messages not sent", err)
        self.assertNotIn("a summary stands for them", err)

    def test_hostile_tokens_file_is_at_most_a_note(self):
        os.makedirs(self.home, exist_ok=True)
        path = os.path.join(self.home, "tokens.json")
        contents = [
            "[]",
            '{"format": "openai2.tokens", "version": 1, "servers": []}',
            ('{"format": "openai2.tokens", "version": 1, "servers": {"x": {"host": 1, "models": {"gpt-4o-mini": '
            '{"window": true, "ratio": "x", "samples": -1, "updated": null}}}}}'),
            '{"format": "openai2.tokens", "version": 999999999999999999999, "servers": {}}',
            "\xff\xfe garbage",
            '{"format": "openai2.tokens", "version": 1, "servers": {"x": ' * 2000,
        ]
        for text in contents:
            with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
                f.write(text)
            code, out, err = self.run_cli("chat", "hi")
            self.assertEqual(code, EXIT_OK, (text[:80], err))
            self.assertIn("You said", out)

    def test_summary_requests_with_auto_budget_fit_the_learned_window(self):
        """Was a defect: with "auto" and --summarize, the summary request carries the whole transcript
        of what is left out, unbudgeted.  The first summary (463 tokens) works and covers 2
        messages; the next transcript (previous summary + newly left-out rounds) is over the
        window: refused (837 > 600), a RuntimeWarning is printed (by the warnings module, not
        through the CLI's stderr), nothing new is covered, so every later run leaves out more and
        the summary request only grows (1211, 1585, ...): the summary never covers more again.  Fix: openai2/chat.py _summary_request (_chat_summary_body):
        fit the transcript to the budget in force (``self._budget(model)`` less a reserve for the
        answer) — keep its newest part, or summarise in chunks — so a summary request never
        exceeds the window the conversation's own requests respect."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for i in range(8):
                code, _, err = self.run_cli("chat", "question %d " % i + "words " * 120, "--summarize")
                self.assertEqual(code, EXIT_OK, err)
        summaries = [r for r in self.transport.requests if "Summarise" in str(r.messages[0].get("content"))]
        self.assertTrue(summaries)
        sizes = [self.brain.prompt_tokens(r.messages) for r in summaries]
        self.assertLessEqual(max(sizes), self.brain.window, sizes)  # seen: 463, 837, 1211, 1585, ...

    def test_a_tiny_window_in_the_tokens_file_does_not_lock_the_model_out(self):
        """Was a defect: tokens.json may hold any window in 1..100,000,000 (a hostile or mis-learned
        file: save_token_state(window=1) is accepted).  Every later `openai2 chat` for that model
        then ends in "error: ... need about 9 tokens, more than the token budget of 1" (exit 1),
        without ever asking the server; the window only goes down, so no refusal can repair it,
        and the advice (/unpin, /new, "raise --max-history-tokens if you set it too low") does
        not name the file.  A cache must be a note at most.  Fix: openai2/cli.py
        _CliTokens.before: do not learn a stored window smaller than what the request must send
        (or below a floor such as 256 tokens; store.py _store_tok_window could refuse those
        too), with one note naming tokens.json; or openai2/chat.py, under "auto": when the fixed
        part alone exceeds the *learned* window, send it and let the server's answer relearn."""
        self.store.save_token_state(BASE, "gpt-4o-mini", window=1)
        code, out, err = self.run_cli("chat", "hi there")
        self.assertEqual(code, EXIT_OK, err)
        self.assertIn("You said", out)

    def test_tokens_command_speaks_of_command_line_options_when_nothing_fits(self):
        """Was a defect (wording): when nothing fits, /tokens prints the library's ContextBudgetError
        text ("... the budget of 1 (MsgMaxTokens) ... raise MsgMaxTokens"), a Python option the
        command line user has never seen, while a request says "--max-history-tokens".  Fix:
        openai2/cli.py _CliRepl._cmd_tokens: print ``_cli_error_text(exc)`` instead of ``exc``."""
        code, out, err = self.run_cli("chat", "-i", "--max-history-tokens", "1", stdin="/tokens\n/exit\n")
        self.assertEqual(code, EXIT_OK, err)
        self.assertIn("cannot be sent", out)
        self.assertNotIn("MsgMaxTokens", out)

    def test_a_failed_summary_is_a_note_on_the_cli_stderr_not_a_python_warning(self):
        """Was a defect: when the summary request fails, Chat warns (RuntimeWarning) and the command
        line does not catch it: the user sees Python's raw warning on the process's stderr (the
        path of openai2/chat.py, a line number, a source line), not a note through the CLI's
        output (which main(stderr=...) captures, colours and keeps off stdout).  Fix:
        openai2/cli.py: around each request (_CliConversation.ask/_cli_parse_once and the
        one-shot path) use ``warnings.catch_warnings(record=True)`` (or read
        ``chat.last_summary_error`` after the request) and print one
        ``openai2: note: the earlier messages could not be summarised: ...`` via ``out.note``."""
        brain = self.brain

        def handler(request):
            if "Summarise" in str(request.messages[0].get("content")):
                from openai2.testing import Reply

                return Reply(status=500, content="summariser down")
            return brain(request)

        self.transport = MemoryTransport(handler=handler)
        errs = []
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            for i in range(5):
                code, _, err = self.run_cli(
                    "chat", "question %d " % i + "words " * 30, "--summarize", "--max-history-tokens", "300"
                )
                self.assertEqual(code, EXIT_OK, err)
                errs.append(err)
        self.assertTrue(any("Summarise" in str(r.messages[0].get("content")) for r in self.transport.requests))
        self.assertIn("could not be summarised", "".join(errs))

    def test_neither_key_nor_url_password_reach_tokens_file_or_stderr(self):
        base = "https://user:pw-s3cret@mem.test/v1/"
        errs = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for i in range(8):
                code, _, err = self.run_cli("chat", "question %d " % i + "words " * 120, "--summarize", base=base)
                self.assertEqual(code, EXIT_OK, err)
                errs.append(err)
        errs.extend(str(w.message) for w in caught)
        with open(os.path.join(self.home, "tokens.json"), "rb") as f:
            raw = f.read()
        for secret in ("pw-s3cret", KEY):
            self.assertNotIn(secret.encode(), raw)
            self.assertNotIn(secret, "".join(errs))

    def test_odd_max_history_tokens_values(self):
        code, _, err = self.run_cli("chat", "hi", "--max-history-tokens", "-5")
        self.assertEqual(code, EXIT_USAGE, err)
        code, _, err = self.run_cli("chat", "hi", "--max-history-tokens", "abc")
        self.assertEqual(code, EXIT_USAGE, err)
        code, out, err = self.run_cli("chat", "hi", "--max-history-tokens", str(10 ** 30))
        self.assertEqual(code, EXIT_OK, err)
        code, out, err = self.run_cli("chat", "hi again", "--max-history-tokens", "1")
        self.assertNotEqual(code, EXIT_OK)
        self.assertIn("--max-history-tokens", err)
        self.assertNotIn("Traceback", err)

    def test_tokens_command_on_an_empty_session_and_after_a_model_change(self):
        code, out, err = self.run_cli("chat", "-i", stdin="/tokens\n/model other-model\n/tokens\n/exit\n")
        self.assertEqual(code, EXIT_OK, err)
        self.assertEqual(out.count("Messages: 0 in the session, 0 sent"), 2, out)
        self.assertNotIn("Traceback", err + out)


if __name__ == "__main__":
    unittest.main()
