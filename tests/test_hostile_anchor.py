"""Hostile tests of the server's own counts kept per message (``MessageBuffer.measure``/``seed``,
``Chat._measure``/``_calibrate``): servers that lie or drift, odd usage objects, streams, async,
tools, summaries, history edits, threads, long histories, keys.

The tests of class ``Defects`` are the defects the review found, fixed since (each docstring
says what happened); the other tests are promises that held.  The fake server counts as tests/test_token_anchor.py's
does (ChatML, words and punctuation one token, a CJK ideograph one and a half).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import unittest
import warnings

from openai2 import Chat, OpenAI
from openai2.errors import ContextBudgetError
from openai2.history import MessageBuffer
from openai2.testing import MemoryTransport, Reply
from openai2.tokens import count_tokens
from tests.test_token_anchor import ANSWERS, BASE, KEY, QUESTIONS, answering, make_chat, server_prompt, server_tokens
from tests.test_token_budget import context_refusal

CJK_DOC = "北京有三千多年的建城史，八百多年的建都史，是中国的首都。" * 20


def quiet(test):
    """Run ``test`` with warnings silenced (a lying server makes the calibration warn)."""

    def run(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            test(self)

    run.__name__ = test.__name__
    run.__doc__ = test.__doc__
    return run


def body_with_usage(text, usage, choices=None):
    """A whole chat.completion body, ``usage`` sent exactly as given (any JSON value)."""
    return {
        "id": "chatcmpl-hostile",
        "object": "chat.completion",
        "model": "m",
        "choices": choices
        or [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": usage,
    }


def scaled(factor_of, answers=ANSWERS):
    """A server whose counts are its honest ones times ``factor_of(request index)``."""
    state = {"i": 0}

    def handler(request):
        factor = factor_of(state["i"])
        text = answers[state["i"] % len(answers)]
        state["i"] += 1
        prompt = round(server_prompt(request.messages) * factor)
        completion = round((server_tokens(text) + 1) * factor)
        return Reply(text, usage={"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})

    return handler


def ten(message):
    return 10


def tools_prompt(request):
    """The fake server's count of a request with its tools (the schemas as openai2 estimates them:
    a server's own tools template is a hidden prompt, tested in test_token_anchor)."""
    tools = request.json.get("tools")
    schemas = count_tokens([], model="m", tools=tools) - count_tokens([], model="m") if tools else 0
    return server_prompt(request.messages) + schemas


def first_requests(chat, transport, questions):
    """Send each question; the server's count of the first request of each exchange, and the
    prediction ``count_tokens`` made for it."""
    found = []
    for question in questions:
        predicted = chat.count_tokens(question)
        at = len(transport.requests)
        chat.request(question)
        found.append((predicted, server_prompt(transport.requests[at].messages)))
    return found


# -- defects --------------------------------------------------------------------------------------


class Defects(unittest.TestCase):
    @quiet
    def test_a_first_message_the_server_counts_more_of_is_not_kept_as_a_hidden_prompt(self):
        """Was a defect: the first request is measured with an uncalibrated ratio (1.0): a first message
        the server counts 1.75x the estimate (Chinese) has each message capped at its estimate and
        the rest (350 tokens here) kept in ``_base`` as "tokens the server adds to every prompt".
        Once that message is left out, ``_base`` stays: every later prediction is ~38% too high
        (1271 for 922) and ~350 tokens of MsgMaxTokens are never used.  Should: ``_base`` is lowered
        when a later count shows it is too large (``actual - known`` below what the new messages
        need), in ``MessageBuffer.measure``; or it is learned only from a request that did not send
        the first round."""
        for trim in (True, False):
            with self.subTest(trim_history=trim):
                chat, transport = make_chat(answering(answers=["OK, noted."]), MsgMaxTokens=1600, trim_history=trim, system="Be helpful.")
                chat.request(CJK_DOC)
                found = first_requests(chat, transport, ["Question number %d about the weather, short." % i for i in range(40)])
                self.assertNotIn(CJK_DOC, [m["content"] for m in transport.requests[-1].messages])
                predicted, actual = found[-1]
                self.assertLess(abs(predicted - actual) / actual, 0.05, found[-5:])
                self.assertLessEqual(max(a for _, a in found), 1600 * 1.03, found)

    def test_a_first_message_the_server_counts_more_of_does_not_make_a_false_cut_prompt_warning(self):
        """Was a defect: the same ``_base`` as above (350 tokens kept from the first request) makes the
        count of a later prompt look 27% short of what was sent (922 counted, 1271 predicted),
        just under a power of two: the calibration warns "the server seems to cut the prompt to a
        1024-token window" (Ollama's ``num_ctx``) about a server that cut nothing.  Should: no
        warning; fixed with ``_base`` (``MessageBuffer.measure``)."""
        chat, _ = make_chat(answering(answers=["OK, noted."]), MsgMaxTokens=1600, system="Be helpful.")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            chat.request(CJK_DOC)
            for i in range(40):
                chat.request("Question number %d about the weather, short." % i)
        self.assertEqual([str(w.message)[:90] for w in caught], [])

    @quiet
    def test_a_server_whose_counts_double_is_followed_after_two_answers(self):
        """Was a defect: ten honest answers, then the server counts everything twice as much (a router
        that moved the model to another provider, the same name).  Its counts say the prompt is
        734 for a budget of 400, but ``measure`` rejects the share (too far from the estimate) and
        keeps the old per-message counts, which are not rescaled by the ratio: the next requests
        are 762, 650, 536 (the ratio catches up by 1/4 an answer).  Should: a count that does not
        add up and is well over what ``fit`` counted makes the stored counts (and ``_base``)
        scaled by actual/fitted.tokens or forgotten (``Chat._measure`` when
        ``MessageBuffer.measure`` returns None), so the next fit follows the server."""
        chat, transport = make_chat(scaled(lambda i: 1.0 if i < 10 else 2.0), MsgMaxTokens=400, system="Be helpful.")
        counts = []
        for i in range(30):
            chat.request(QUESTIONS[i % len(QUESTIONS)])
            counts.append(2 * server_prompt(transport.requests[-1].messages) if i >= 10 else server_prompt(transport.requests[-1].messages))
        self.assertLessEqual(max(counts[12:]), 400 * 1.05, counts)

    @quiet
    def test_a_proxy_that_leaves_cached_tokens_out_of_prompt_tokens_does_not_overrun_the_budget(self):
        """Was a defect: a proxy that reports ``prompt_tokens`` without the cached prefix (only in
        ``prompt_tokens_details.cached_tokens``; OpenAI includes them) teaches counts far too low:
        with MsgMaxTokens=400 the prompts really sent grow to 772 tokens (1.9x) before the
        calibration recovers.  The lie is visible: ``cached_tokens`` > ``prompt_tokens`` is
        impossible for an honest count.  Should: such a usage teaches nothing (or counts
        ``prompt_tokens + cached_tokens``), in ``Chat._measure`` and ``Chat._calibrate``."""
        state = {"previous": []}

        def handler(request):
            messages, previous = request.messages, state["previous"]
            same = 0
            while same < min(len(previous), len(messages)) and previous[same] == messages[same]:
                same += 1
            cached = server_prompt(messages[:same]) - (2 + server_tokens("assistant")) if same else 0
            state["previous"] = list(messages)
            prompt = server_prompt(messages) - cached
            return Reply(
                "A short answer of a few words.",
                usage={
                    "prompt_tokens": prompt,
                    "completion_tokens": 8,
                    "total_tokens": prompt + 8,
                    "prompt_tokens_details": {"cached_tokens": cached},
                },
            )

        chat, transport = make_chat(handler, MsgMaxTokens=400, system="Be helpful.")
        for i in range(30):
            chat.request(QUESTIONS[i % len(QUESTIONS)])
        counts = [server_prompt(r.messages) for r in transport.requests]
        self.assertLessEqual(max(counts), 400 * 1.05, counts)

    def test_set_system_keeps_the_servers_counts_of_the_other_messages(self):
        """Was a defect: ``Chat.set_system`` rebuilds the history from copies (``_buffer.messages()``,
        ``clear()``, ``extend()``), so every message loses the server's count, not only the
        system prompt that changed (``measured`` 9 -> 0); the next request is then estimated ~12%
        low (with MsgMaxTokens=300 the server counts 315).  Should: keep the stored dicts
        (``_buffer.view()``) and replace only the system message, in ``Chat.set_system``."""
        chat, _ = make_chat(answering(), system="Be helpful.")
        for question in QUESTIONS[:5]:
            chat.request(question)
        before = chat.budget_report()["measured"]
        self.assertGreaterEqual(before, 9)
        chat.set_system("A different system prompt.")
        self.assertGreaterEqual(chat.budget_report()["measured"], before - 1)

    def test_when_the_counts_start_over_the_ratio_still_fits_the_budget(self):
        """Was a defect: the ratio now learns from the new part of each prompt only, which is the user's
        questions (answers are counted from ``completion_tokens``), so it says nothing of the
        answers.  When the counts start over (another model and back, ``replace_messages``,
        ``set_system``) the whole history is estimated at the questions' ratio: 282 predicted for
        323 counted, MsgMaxTokens=300 exceeded by 7.7%.  Before 9557d89 the whole-prompt ratio
        predicted 270 for 277.  Should: the ratio also learns from the whole prompt (or from the
        answers' completion_tokens against their estimate), in ``Chat._calibrate``."""
        chat, transport = make_chat(answering(), MsgMaxTokens=300, system="Be helpful.")
        for question in QUESTIONS[:5]:
            chat.request(question)
        chat.params["model"] = "another-model"
        chat.count_tokens()
        chat.params["model"] = "m"
        found = first_requests(chat, transport, QUESTIONS[5:] + QUESTIONS[:3])
        self.assertLessEqual(max(actual for _, actual in found), 300 * 1.05, found)

    def test_requests_in_flight_together_do_not_each_take_the_historys_residual(self):
        """Was a defect: four requests prepared from the same history before any answer comes (four
        streams opened, then read; four threads do the same at random).  Each one's new question
        is measured as its prompt_tokens less the counts known of the shared history, so each of
        the four takes the same residual of that history (the few tokens its counts are off):
        the four questions carry the same error (+6.5, +5.8, +5.8, +5.6 tokens), the history's
        error is multiplied by -3 each such round, and the predictions drift to 13% off (with
        threads the server counted up to 445 for MsgMaxTokens=400).  Should: only the first of
        them to commit measures its prompt; one whose fit came before another exchange's commit
        keeps only its answer's count (a commit counter read in ``Chat._prepare`` and checked in
        ``Chat._measure``)."""
        chat, transport = make_chat(answering(), MsgMaxTokens=400, system="sys")
        errors = []
        for i in range(15):
            streams = [chat.stream_request(QUESTIONS[(i * 4 + k) % len(QUESTIONS)]) for k in range(4)]
            for stream in streams:
                "".join(stream)
            (predicted, actual), = first_requests(chat, transport, ["probe question"])
            errors.append(round(100.0 * (predicted - actual) / actual, 1))
        self.assertLess(max(abs(e) for e in errors[5:]), 5.0, errors)

    def test_fitted_promises_only_what_it_has(self):
        """Was a defect: ``Fitted``'s docstring and ``__slots__`` still promised ``fixed`` after it
        stopped being set (reading it raised AttributeError); now every attribute the docstring
        names is set."""
        import re

        from openai2.history import Fitted

        buffer = MessageBuffer()
        buffer.extend([{"role": "user", "content": "q"}])
        fitted = buffer.fit([], None, lambda m: 10)
        named = set(re.findall(r"``(\w+)``", Fitted.__doc__)) & set(Fitted.__slots__)
        self.assertEqual(named, {"tokens", "raw", "measured", "commits"})
        for name in Fitted.__slots__:
            getattr(fitted, name)  # set, whatever it is


# -- promises that held -----------------------------------------------------------------------------

ODD_USAGES = {
    "floats": {"prompt_tokens": 30.0, "completion_tokens": 7.0, "total_tokens": 37.0},
    "strings": {"prompt_tokens": "30", "completion_tokens": "7", "total_tokens": "37"},
    "negative": {"prompt_tokens": -30, "completion_tokens": -7, "total_tokens": -37},
    "huge": {"prompt_tokens": 10**40, "completion_tokens": 10**40, "total_tokens": 10**41},
    "bools": {"prompt_tokens": True, "completion_tokens": True, "total_tokens": True},
    "missing prompt_tokens": {"completion_tokens": 7, "total_tokens": 7},
    "zero": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    "a list": [30, 7],
    "a string": "lots",
    "a number": 37,
    "null values": {"prompt_tokens": None, "completion_tokens": None},
}


class OddUsage(unittest.TestCase):
    @quiet
    def test_an_odd_usage_never_raises_and_teaches_nothing(self):
        for name, usage in ODD_USAGES.items():
            with self.subTest(usage=name):
                chat, transport = make_chat(lambda r, u=usage: Reply(body=body_with_usage("fine, thanks", u)), MsgMaxTokens=400, system="sys")
                for question in QUESTIONS:
                    chat.request(question)
                report = chat.budget_report()
                self.assertEqual((report["measured"], report["samples"]), (0, 0), report)
                self.assertEqual(report["ratio"], 1.0)
                self.assertLessEqual(max(server_prompt(r.messages) for r in transport.requests), 400 * 1.1)

    def test_a_nan_or_infinite_usage_never_raises_and_teaches_nothing(self):
        usage = {"prompt_tokens": float("nan"), "completion_tokens": float("inf"), "total_tokens": float("-inf")}
        chat, _ = make_chat(lambda r: Reply(usage=usage, content="fine"), MsgMaxTokens=400)
        chat.request("a question")
        report = chat.budget_report()
        self.assertEqual((report["measured"], report["samples"]), (0, 0))

    @quiet
    def test_junk_completion_details_never_raise_and_the_answer_stays_believable(self):
        """``completion_tokens_details`` not a dict, or with junk: the prompt is still measured and
        the answer is counted at most twice its estimate (or estimated)."""
        for details in ([1, 2], "x", None, {"reasoning_tokens": "x"}, {"reasoning_tokens": -50}, {"reasoning_tokens": 10**9}, {"reasoning_tokens": 2.5}):
            with self.subTest(details=details):

                def handler(request, d=details):
                    prompt = server_prompt(request.messages)
                    usage = {"prompt_tokens": prompt, "completion_tokens": 20, "total_tokens": prompt + 20, "completion_tokens_details": d}
                    return Reply(ANSWERS[0], usage=usage)

                chat, transport = make_chat(handler, system="sys")
                chat.request(QUESTIONS[0])
                self.assertGreaterEqual(chat.budget_report()["measured"], 2)
                chat.request(QUESTIONS[1])
                found = first_requests(chat, transport, QUESTIONS[2:4])
                for predicted, actual in found:
                    self.assertLess(abs(predicted - actual) / actual, 0.05, found)

    def test_completion_tokens_far_over_the_answer_are_not_its_count(self):
        def handler(request):
            prompt = server_prompt(request.messages)
            return Reply(ANSWERS[0], usage={"prompt_tokens": prompt, "completion_tokens": 10 * prompt, "total_tokens": 11 * prompt})

        chat, _ = make_chat(handler, system="sys")
        chat.request(QUESTIONS[0])
        self.assertEqual(chat.budget_report()["measured"], 2)  # the system prompt and the question, not the answer

    def test_two_choices_do_not_count_the_answer(self):
        def handler(request):
            prompt = server_prompt(request.messages)
            choices = [
                {"index": 0, "message": {"role": "assistant", "content": "first choice"}, "finish_reason": "stop"},
                {"index": 1, "message": {"role": "assistant", "content": "a second, longer choice"}, "finish_reason": "stop"},
            ]
            return Reply(body=body_with_usage(None, {"prompt_tokens": prompt, "completion_tokens": 12, "total_tokens": prompt + 12}, choices))

        chat, _ = make_chat(handler, system="sys")
        chat.request(QUESTIONS[0], n=2)
        self.assertEqual(chat.budget_report()["measured"], 2)


class Streams(unittest.TestCase):
    def test_a_streamed_answer_with_usage_is_measured(self):
        chat, transport = make_chat(answering(), system="sys")
        self.assertEqual("".join(chat.stream_request(QUESTIONS[0], stream_options={"include_usage": True})), ANSWERS[0])
        self.assertEqual(chat.budget_report()["measured"], 3)
        found = first_requests(chat, transport, QUESTIONS[1:3])
        self.assertLess(max(abs(p - a) / a for p, a in found[1:]), 0.03, found)

    def test_a_stream_closed_half_way_measures_nothing(self):
        chat, _ = make_chat(answering(), system="sys")
        stream = chat.stream_request(QUESTIONS[0], stream_options={"include_usage": True})
        next(iter(stream))
        stream.close()
        self.assertEqual(len(chat.fetch_messages()), 3)  # the part read is kept
        self.assertEqual(chat.budget_report()["measured"], 0)

    def test_async_requests_and_streams_are_measured_and_one_stopped_early_is_not(self):
        async def run():
            chat, _ = make_chat(answering(), system="sys")
            await chat.async_request(QUESTIONS[0])
            self.assertEqual(chat.budget_report()["measured"], 3)
            chat, _ = make_chat(answering(), system="sys")
            pieces = [p async for p in chat.async_stream_request(QUESTIONS[0], stream_options={"include_usage": True})]
            self.assertEqual("".join(pieces), ANSWERS[0])
            self.assertEqual(chat.budget_report()["measured"], 3)
            chat, _ = make_chat(answering(), system="sys")
            stream = chat.async_stream_request(QUESTIONS[0], stream_options={"include_usage": True})
            async for _ in stream:
                break
            await stream.aclose()
            self.assertEqual(chat.budget_report()["measured"], 0)

        asyncio.run(run())


class NotTheConversations(unittest.TestCase):
    def test_parse_teaches_nothing(self):
        def handler(request):
            prompt = server_prompt(request.messages)
            return Reply('{"a": 1}', usage={"prompt_tokens": prompt, "completion_tokens": 6, "total_tokens": prompt + 6})

        chat, _ = make_chat(handler, system="sys")
        schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
        self.assertEqual(chat.parse("give json", schema), {"a": 1})
        report = chat.budget_report()
        self.assertEqual((report["measured"], report["samples"]), (0, 0))

    @quiet
    def test_a_summary_requests_usage_is_not_measured_as_the_conversations(self):
        """The summary requests answer with absurd counts: only the conversation's requests
        teach the calibration, and its estimates stay close."""
        conversation = answering()
        summaries = []

        def handler(request):
            if request.messages and str(request.messages[0].get("content", "")).startswith(("Summarise", "请为")):
                summaries.append(request)
                return Reply("[a summary] they talked.", usage={"prompt_tokens": 1, "completion_tokens": 900, "total_tokens": 901})
            return conversation(request)

        for trim in (True, False):
            with self.subTest(trim_history=trim):
                del summaries[:]
                chat, transport = make_chat(handler, MsgMaxTokens=300, summarize=True, trim_history=trim, system="Be helpful.")
                for question in QUESTIONS * 2:
                    chat.request(question)
                self.assertTrue(summaries)
                report = chat.budget_report()
                self.assertEqual(report["samples"], len(transport.requests) - len(summaries))
                self.assertGreater(report["measured"], 0)

    def test_only_the_first_tool_rounds_usage_measures_and_the_answer_after_tools_is_estimated(self):
        def lookup(q: str) -> str:
            return "result for %s: " % q + "data " * 20

        def handler(request):
            prompt = tools_prompt(request)
            usage = {"prompt_tokens": prompt, "completion_tokens": 10, "total_tokens": prompt + 10}
            tools_answered = sum(1 for m in request.messages if m["role"] == "tool")
            if request.messages[-1]["role"] != "tool" or tools_answered < 2:
                call = {"id": "c%d" % len(request.messages), "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}
                return Reply(tool_calls=[call], usage=usage)
            return Reply("Done, here it is.", usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2})

        chat, transport = make_chat(handler, system="Be helpful.", tools=[lookup])
        chat.request("use the tool twice")
        self.assertEqual(len(transport.requests), 3)
        report = chat.budget_report()
        self.assertEqual(report["measured"], 2)  # the system prompt and the question
        self.assertEqual(report["samples"], 1)  # the last round's absurd usage taught nothing

    def test_an_add_tool_result_continuation_is_measured_without_raising(self):
        call = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}
        answers = answering()

        def handler(request):
            if request.messages[-1].get("content") == "call the tool":
                prompt = tools_prompt(request)
                return Reply(tool_calls=[call], usage={"prompt_tokens": prompt, "completion_tokens": 5, "total_tokens": prompt + 5})
            return answers(request)

        chat, transport = make_chat(handler, system="sys")
        chat.request("call the tool", tools=[{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}])
        self.assertEqual(chat.budget_report()["measured"], 2)  # the call is not counted
        chat.add_tool_result("c1", {"value": "some result text"})
        chat.request(None)
        self.assertGreaterEqual(chat.budget_report()["measured"], 4)
        found = first_requests(chat, transport, QUESTIONS[:3])
        self.assertLess(max(abs(p - a) / a for p, a in found), 0.05, found)


class HistoryEdits(unittest.TestCase):
    def test_edits_between_exchanges_keep_the_estimate_close_and_the_budget(self):
        edits = {
            "rollback": lambda c: c.rollback(1),
            "rollback two": lambda c: c.rollback(2),
            "add_dialogs": lambda c: c.add_dialogs({"role": "user", "content": "an added question"}, {"role": "assistant", "content": "an added answer " * 10}),
            "pin": lambda c: c.pin_messages(1),
            "pin and unpin": lambda c: (c.pin_messages(1), c.unpin_messages(1)),
            "clear": lambda c: c.clear(),
        }
        for budget in (100_000, 300):
            for name, edit in edits.items():
                with self.subTest(edit=name, budget=budget):
                    chat, transport = make_chat(answering(), MsgMaxTokens=budget, system="Be helpful.")
                    for question in QUESTIONS[:5]:
                        chat.request(question)
                    edit(chat)
                    found = first_requests(chat, transport, QUESTIONS[5:] + QUESTIONS[:3])
                    self.assertLess(max(abs(p - a) / a for p, a in found[1:]), 0.03, found)
                    self.assertLessEqual(max(a for _, a in found), budget * 1.03, found)

    def test_msg_max_count_with_msg_max_tokens_keeps_the_estimate_close(self):
        chat, transport = make_chat(answering(), MsgMaxTokens=300, MsgMaxCount=6, system="Be helpful.")
        found = first_requests(chat, transport, QUESTIONS * 3)
        self.assertLess(max(abs(p - a) / a for p, a in found[1:]), 0.05, found)
        self.assertLessEqual(max(a for _, a in found), 300)

    def test_another_model_and_back_starts_over(self):
        chat, _ = make_chat(answering())
        chat.request(QUESTIONS[0])
        chat.params["model"] = "other"
        self.assertEqual(chat.budget_report()["measured"], 0)
        chat.params["model"] = "m"
        self.assertEqual(chat.budget_report()["measured"], 0)  # the counts were another tokenizer's once dropped

    def test_add_dialogs_copies_a_dict_given_twice(self):
        chat, _ = make_chat(answering())
        message = {"role": "user", "content": "the same"}
        answer = {"role": "assistant", "content": "an answer"}
        chat.add_dialogs(message, answer, message, answer)
        stored = chat._buffer.view()
        self.assertIsNot(stored[0], stored[2])

    def test_one_dict_twice_in_a_buffer_is_counted_exactly_together(self):
        buffer = MessageBuffer()
        a = {"role": "user", "content": "a"}
        b = {"role": "assistant", "content": "b"}
        buffer.extend([a, b, a])
        self.assertEqual(buffer.measure([a, b, a], 45, ten), (30, 45.0))
        self.assertEqual(buffer.fit([], None, ten).tokens, 45)


class Auto(unittest.TestCase):
    def test_a_learned_window_with_measured_counts_is_refused_once_and_never_raises(self):
        honest = answering()
        for limit in (300, None):
            with self.subTest(stated_limit=limit):

                def handler(request, limit=limit):
                    return context_refusal(limit) if server_prompt(request.messages) > 300 else honest(request)

                chat, transport = make_chat(handler, MsgMaxTokens="auto", system="Be helpful.")
                for i in range(30):
                    chat.request(QUESTIONS[i % len(QUESTIONS)])
                refused = [r for r in transport.requests if server_prompt(r.messages) > 300]
                self.assertEqual(len(refused), 1)
                self.assertGreater(chat.budget_report()["measured"], 0)


class Tokenizer(unittest.TestCase):
    def test_with_a_tokenizer_no_server_counts_are_kept_streams_and_async_too(self):
        words = lambda text: len(text.split())  # noqa: E731
        chat, _ = make_chat(answering(), tokenizer=words)
        "".join(chat.stream_request(QUESTIONS[0], stream_options={"include_usage": True}))
        asyncio.run(chat.async_request(QUESTIONS[1]))
        self.assertEqual(chat.budget_report()["measured"], 0)
        self.assertEqual(chat._buffer._server.counts, {})
        self.assertEqual(chat._buffer._server.base, 0.0)


class Threads(unittest.TestCase):
    def test_threads_on_one_chat_never_raise_and_keep_the_budget_near(self):
        chat, transport = make_chat(answering(), MsgMaxTokens=400, system="sys")
        errors = []

        def work(k):
            try:
                for i in range(20):
                    chat.request(QUESTIONS[(i + k) % len(QUESTIONS)])
                    chat.count_tokens("x")
                    chat.budget_report()
            except Exception as exc:  # the test reports it
                errors.append(repr(exc))

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(errors, [])
        counts = [server_prompt(r.messages) for r in transport.requests]
        print("threads on one Chat: the most the server counted %d for MsgMaxTokens=400" % max(counts))
        self.assertLessEqual(max(counts), 400 * 1.25, counts)
        self.assertLessEqual(len(chat._buffer._server.counts), 2 * len(chat._buffer) + 64 + 8)

    def test_two_chats_sharing_a_client_in_threads(self):
        transport = MemoryTransport(handler=answering())
        client = OpenAI(KEY, base_url=BASE, transport=transport, max_retries=0)
        chats = [Chat(client=client, model="m", MsgMaxTokens=400, system=s) for s in ("one", "two two two")]
        errors = []

        def work(chat, k):
            try:
                for i in range(20):
                    chat.request(QUESTIONS[(i + k) % len(QUESTIONS)])
                    chat.count_tokens()
            except Exception as exc:  # the test reports it
                errors.append(repr(exc))

        threads = [threading.Thread(target=work, args=(chats[k % 2], k)) for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(errors, [])
        self.assertLessEqual(max(server_prompt(r.messages) for r in transport.requests), 400 * 1.10)
        for chat in chats:
            self.assertGreater(chat.budget_report()["measured"], 0)


class Memory(unittest.TestCase):
    def test_the_counts_stay_bounded_when_messages_leave(self):
        chat, _ = make_chat(answering(), MsgMaxTokens=300, MsgMaxCount=6, system="sys")
        for i in range(300):
            chat.request(QUESTIONS[i % len(QUESTIONS)])
        self.assertLessEqual(len(chat._buffer._server.counts), 2 * len(chat._buffer) + 64 + 8)
        self.assertLessEqual(len(chat._buffer._costs), 2 * len(chat._buffer) + 64 + 8)

    def test_a_twenty_thousand_message_history(self):
        def handler(request):
            prompt = 10 * len(request.messages) + 3
            return Reply("OK.", usage={"prompt_tokens": prompt, "completion_tokens": 2, "total_tokens": prompt + 2})

        chat, _ = make_chat(handler, MsgMaxTokens=10**7)
        dialog = []
        for i in range(10_000):
            dialog += [{"role": "user", "content": "q %d" % i}, {"role": "assistant", "content": "a %d" % i}]
        chat.add_dialogs(*dialog)
        chat.request("first")
        self.assertEqual(chat.budget_report()["measured"], 20_002)
        started = time.perf_counter()
        for i in range(20):
            chat.request("more %d" % i)
        per_request = (time.perf_counter() - started) / 20
        started = time.perf_counter()
        for _ in range(20):
            chat.count_tokens("x")
        per_count = (time.perf_counter() - started) / 20
        print("20,000 messages: %.1f ms a request, %.2f ms a count_tokens" % (1000 * per_request, 1000 * per_count))
        self.assertLessEqual(len(chat._buffer._server.counts), 2 * len(chat._buffer) + 64)


class Keys(unittest.TestCase):
    def test_no_key_in_what_a_lying_server_provokes(self):
        shown = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            chat, transport = make_chat(None, MsgMaxTokens=5000, system="key is " + KEY)
            transport.add_replies(Reply("fine " + KEY, usage={"prompt_tokens": 2048, "completion_tokens": 2, "total_tokens": 2050}))
            chat.request(("word " * 4000) + KEY)
            shown += [str(w.message) for w in caught]
        self.assertTrue(shown, "the cut prompt should warn")
        try:
            chat.budget_report("word " * 6000)
        except ContextBudgetError as exc:
            shown += [str(exc), repr(exc)]
        shown += [repr(chat), repr(chat._buffer), str(chat.budget_report()), repr(chat._client.token_calibration("m"))]
        for text in shown:
            self.assertNotIn(KEY, text)
            self.assertNotIn(KEY[3:-4], text)


class BudgetUnderLies(unittest.TestCase):
    @quiet
    def test_a_server_that_halves_its_counts_never_makes_a_request_raise(self):
        chat, transport = make_chat(scaled(lambda i: 1.0 if i < 5 else 0.5), MsgMaxTokens=400, system="sys")
        for i in range(20):
            chat.request(QUESTIONS[i % len(QUESTIONS)])
        counts = [math.ceil(0.5 * server_prompt(r.messages)) for r in transport.requests[6:]]
        self.assertLessEqual(max(counts), 400 * 1.05, counts)  # by what the server itself counts


if __name__ == "__main__":
    unittest.main()
