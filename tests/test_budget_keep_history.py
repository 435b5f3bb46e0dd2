"""Chat(trim_history=False): the token budget trims only what is sent, the history keeps every
message, and a summary (summarize=True) is kept beside the history, standing for the messages it
covers while they are unchanged (a rollback into them or an edit drops it).

A word counter as ``tokenizer=`` makes the budgets exact.
"""

from __future__ import annotations

import json
import os
import tempfile
import unittest
import warnings

from openai2 import Chat
from openai2.testing import MemoryTransport, Reply
from openai2.tokens import count_tokens

KEY = "sk-test-keep-0123456789abcdef"


def words(text):
    return len(text.split())


def summarising_server(fail=False):
    """Answers "ok", and a summary request (its system prompt asks to summarise) with a summary
    naming how many transcript lines it was given; ``seen`` collects the summary requests."""
    seen = []

    def answer(request):
        first = request.messages[0]
        if first["role"] == "system" and ("Summarise" in first["content"] or "总结" in first["content"]):
            seen.append(request.messages)
            if fail:
                return Reply(status=500, content="down")
            lines = request.messages[1]["content"].count("\n") + 1
            return Reply("summary of %d lines" % lines, usage={"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8})
        return Reply("ok", usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2})

    return answer, seen


def make_chat(handler=None, replies=None, **options):
    transport = MemoryTransport(replies or [], handler=handler)
    chat = Chat(KEY, base_url="https://api.test/v1", model="m", transport=transport, max_retries=0, **options)
    return chat, transport


def asked(transport):
    """The requests of the conversation (not the summary requests)."""
    return [r for r in transport.requests if "Summarise" not in r.json["messages"][0]["content"]]


def sent(transport, index=-1):
    return [m["content"] for m in asked(transport)[index].json["messages"]]


QUESTIONS = ["question number %d with some words" % i for i in range(8)]


class KeepHistory(unittest.TestCase):
    def test_what_is_not_sent_stays_in_the_history(self):
        chat, transport = make_chat(replies=["ok"] * 8, MsgMaxTokens=40, tokenizer=words, trim_history=False, system="sys")
        for q in QUESTIONS:
            chat.request(q)
        self.assertEqual(len(chat.fetch_messages()), 1 + 2 * len(QUESTIONS))  # nothing left the history
        last = sent(transport)
        self.assertEqual(last[0], "sys")
        self.assertNotIn(QUESTIONS[0], last)
        self.assertEqual(last[-1], QUESTIONS[-1])
        self.assertLessEqual(count_tokens(transport.requests[-1].json["messages"], tokenizer=words), 40)
        self.assertGreater(chat.last_left_out, 0)
        stored_then = len(chat.fetch_messages()) - 2  # before the last question and its answer
        self.assertEqual(stored_then - (len(last) - 1), chat.last_left_out)

    def test_the_default_still_trims_the_history(self):
        chat, _ = make_chat(replies=["ok"] * 8, MsgMaxTokens=40, tokenizer=words)
        for q in QUESTIONS:
            chat.request(q)
        self.assertLess(len(chat.fetch_messages()), 2 * len(QUESTIONS))
        self.assertTrue(chat.trim_history)

    def test_raising_the_budget_sends_the_kept_messages_again(self):
        chat, transport = make_chat(replies=["ok"] * 9, MsgMaxTokens=40, tokenizer=words, trim_history=False)
        for q in QUESTIONS:
            chat.request(q)
        chat.MsgMaxTokens = 10000
        chat.request("all of it now")
        self.assertIn(QUESTIONS[0], sent(transport))
        self.assertEqual(chat.last_left_out, 0)

    def test_no_budget_counts_nothing_left_out(self):
        chat, _ = make_chat(replies=["ok"], trim_history=False)
        chat.request("hi")
        self.assertEqual(chat.last_left_out, 0)


class SummaryBeside(unittest.TestCase):
    def run_all(self, chat, texts=QUESTIONS):
        for text in texts:
            chat.request(text)

    def test_the_summary_is_kept_beside_and_sent_in_place_of_what_it_covers(self):
        handler, seen = summarising_server()
        chat, transport = make_chat(
            handler=handler, MsgMaxTokens=60, tokenizer=words, summarize=True, trim_history=False, system="sys"
        )
        self.run_all(chat)
        self.assertTrue(seen)
        history = chat.fetch_messages()
        self.assertEqual(len(history), 1 + 2 * len(QUESTIONS))  # the summary did not replace anything
        self.assertFalse(any(m["content"].startswith("[Summary") for m in history))
        summary = chat.summary
        self.assertIsNotNone(summary)
        self.assertTrue(summary["content"].startswith("[Summary of the earlier conversation]"))
        self.assertEqual(set(summary), {"content", "covers", "digest"})
        self.assertEqual(summary["covers"] % 2, 0)  # whole rounds
        # the next request: system prompt, the summary, then only what it does not cover
        chat.request("one more")
        last = asked(transport)[-1].json["messages"]
        self.assertEqual(last[0]["content"], "sys")
        self.assertEqual(last[1], {"role": "system", "content": chat.summary["content"]})
        covered = [m["content"] for m in history[1 : 1 + summary["covers"]] if m["role"] == "user"]
        for question in covered:
            self.assertNotIn(question, [m["content"] for m in last])
        self.assertEqual(last[2]["content"], history[1 + summary["covers"]]["content"])

    def test_a_later_summary_folds_the_previous_one_in_and_covers_more(self):
        handler, seen = summarising_server()
        chat, _ = make_chat(handler=handler, MsgMaxTokens=60, tokenizer=words, summarize=True, trim_history=False)
        self.run_all(chat, QUESTIONS[:5])
        first = chat.summary
        self.assertIsNotNone(first)
        self.run_all(chat, ["later question %d with some words" % i for i in range(6)])
        second = chat.summary
        self.assertGreater(second["covers"], first["covers"])
        self.assertIn("Previous summary:", seen[-1][1]["content"])
        # the fold sends only what the previous summary did not cover
        self.assertNotIn(QUESTIONS[0], seen[-1][1]["content"])

    def test_a_rollback_into_the_covered_messages_drops_the_summary(self):
        handler, _ = summarising_server()
        chat, transport = make_chat(handler=handler, MsgMaxTokens=60, tokenizer=words, summarize=True, trim_history=False)
        self.run_all(chat)
        covers = chat.summary["covers"]
        rounds = len(chat.fetch_messages()) // 2
        chat.rollback(rounds - covers // 2 + 1)  # back into the covered rounds
        old = next(m for m in sent(transport) if m.startswith("[Summary"))
        self.assertIsNone(chat.summary)
        chat.request("after the undo")
        self.assertTrue(old.startswith("[Summary"))
        self.assertFalse(any(m.startswith("[Summary") for m in sent(transport)))  # the stale summary is not sent

    def test_an_undo_of_the_last_round_keeps_the_summary(self):
        handler, _ = summarising_server()
        chat, _ = make_chat(handler=handler, MsgMaxTokens=60, tokenizer=words, summarize=True, trim_history=False)
        self.run_all(chat)
        before = chat.summary
        chat.rollback(1)
        self.assertEqual(chat.summary, before)

    def test_a_new_system_prompt_keeps_the_summary(self):
        handler, _ = summarising_server()
        chat, _ = make_chat(handler=handler, MsgMaxTokens=60, tokenizer=words, summarize=True, trim_history=False)
        self.run_all(chat)
        before = chat.summary
        chat.set_system("a new system prompt")
        self.assertEqual(chat.summary, before)

    def test_the_summary_survives_a_file_round_trip(self):
        handler, _ = summarising_server()
        chat, _ = make_chat(handler=handler, MsgMaxTokens=60, tokenizer=words, summarize=True, trim_history=False)
        self.run_all(chat)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "c.json")
            chat.dump(path)
            saved = json.dumps(chat.summary)
            other, transport = make_chat(handler=handler, MsgMaxTokens=60, tokenizer=words, summarize=True, trim_history=False)
            other.load(path)
            other.summary = json.loads(saved)
            other.request("next")
            self.assertEqual(sent(transport, 0)[0], chat.summary["content"])  # no system prompt: it comes first

    def test_a_summary_of_other_messages_is_never_sent(self):
        handler, _ = summarising_server()
        chat, _ = make_chat(handler=handler, MsgMaxTokens=60, tokenizer=words, summarize=True, trim_history=False)
        self.run_all(chat)
        other, transport = make_chat(replies=["ok"], MsgMaxTokens=60, tokenizer=words, trim_history=False)
        other.add_dialogs({"role": "user", "content": "different"}, {"role": "assistant", "content": "history"})
        other.summary = chat.summary  # covers more than this history has, another digest
        other.request("q")
        self.assertEqual(sent(transport), ["different", "history", "q"])
        self.assertIsNone(other.summary)

    def test_a_bad_summary_is_refused(self):
        chat, _ = make_chat(replies=[], trim_history=False)
        for bad in ({"content": "x"}, {"content": "", "covers": 2, "digest": "0" * 64}, {"content": "x", "covers": True, "digest": "0" * 64}, "text"):
            with self.assertRaises(ValueError):
                chat.summary = bad
        chat.summary = None

    def test_a_failed_summary_sends_plainly_and_keeps_the_answer(self):
        handler, seen = summarising_server(fail=True)
        chat, _ = make_chat(handler=handler, MsgMaxTokens=60, tokenizer=words, summarize=True, trim_history=False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.run_all(chat)
        self.assertTrue(seen)
        self.assertIsNone(chat.summary)
        self.assertTrue(any("could not be summarised" in str(w.message) for w in caught))
        self.assertEqual(len(chat.fetch_messages()), 2 * len(QUESTIONS))

    def test_a_summary_too_long_for_the_budget_is_not_sent_and_not_folded(self):
        seen = []

        def answer(request):
            if "Summarise" in request.messages[0]["content"]:
                seen.append(request.messages[1]["content"])
                return Reply("long " * 200)  # a summary longer than the whole budget
            return Reply("ok")

        chat, transport = make_chat(handler=answer, MsgMaxTokens=60, tokenizer=words, summarize=True, trim_history=False)
        self.run_all(chat)  # never a ContextBudgetError: the messages it covers compete again
        self.assertTrue(seen)
        self.assertFalse(any(m.startswith("[Summary") for m in sent(transport)))
        self.assertLessEqual(count_tokens(asked(transport)[-1].json["messages"], tokenizer=words), 60)
        self.assertNotIn("Previous summary:", seen[-1])  # the summary not sent is not folded in

    def test_pinned_messages_among_the_covered_ones_are_still_sent(self):
        handler, _ = summarising_server()
        chat, transport = make_chat(handler=handler, MsgMaxTokens=70, tokenizer=words, summarize=True, trim_history=False)
        chat.request("remember the code word zebra")
        chat.pin(0)
        self.run_all(chat)
        self.assertIsNotNone(chat.summary)
        self.assertGreater(chat.summary["covers"], 2)
        chat.request("what was the code word")
        contents = sent(transport)
        self.assertIn("remember the code word zebra", contents)
        self.assertEqual(contents.count("remember the code word zebra"), 1)


if __name__ == "__main__":
    unittest.main()
