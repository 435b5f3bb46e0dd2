"""MsgMaxTokens: the messages sent kept within a token budget (oldest unpinned units first, the
system prompt, pins and the new message stay, tool rounds whole), ContextBudgetError up front,
calibration against the server's own prompt_tokens, tokenizer=, "auto" learning the window from a
context-length refusal with one retry, the warning for a prompt a server cut silently.

A word counter as ``tokenizer=`` makes the budgets exact where the arithmetic matters; the
calibration tests use the built-in estimate against a fake server that counts 1.3 times it.
"""

from __future__ import annotations

import asyncio
import math
import threading
import unittest
import warnings

import openai2
from openai2 import Chat
from openai2.errors import ContextBudgetError, ContextLengthError
from openai2.testing import MemoryTransport, Reply
from openai2.tokens import count_tokens

KEY = "sk-test-budget-0123456789abcdef"
BASE = "https://api.test/v1"


def words(text):
    return len(text.split())


def make_chat(replies=None, handler=None, **options):
    transport = MemoryTransport(replies or [], handler=handler)
    chat = Chat(KEY, base_url=BASE, model="m", transport=transport, max_retries=0, **options)
    return chat, transport


def sent(transport, index=-1):
    return [m.get("content") for m in transport.requests[index].json["messages"]]


def context_refusal(limit=None):
    message = (
        "This model's maximum context length is %d tokens. However, your messages resulted in 9999 tokens. "
        "Please reduce the length of the messages." % limit
        if limit
        else "the request exceeds the available context size, try increasing it"
    )
    error = {"message": message, "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}
    return Reply(status=400, body={"error": error})


class Budget(unittest.TestCase):
    def test_the_oldest_unpinned_messages_go_first_and_leave_the_history(self):
        # each message: 3 + 1 (role) + its words; the reply priming 3
        chat, transport = make_chat(["a b"] * 6, MsgMaxTokens=40, tokenizer=words, system="be brief")
        for i in range(6):
            chat.request("question %d one two three" % i)
        contents = sent(transport)
        self.assertEqual(contents[0], "be brief")  # the system prompt stays
        self.assertEqual(contents[-1], "question 5 one two three")
        self.assertLessEqual(count_tokens(transport.requests[-1].json["messages"], tokenizer=words), 40)
        self.assertNotIn("question 0 one two three", contents)
        history = [m["content"] for m in chat.fetch_messages()]
        self.assertNotIn("question 0 one two three", history)  # what was left out left the history
        self.assertEqual(history[0], "be brief")

    def test_pinned_messages_stay(self):
        chat, transport = make_chat(["ok"] * 5, MsgMaxTokens=30, tokenizer=words)
        chat.request("remember the code word is zebra")
        chat.pin(0)
        for i in range(4):
            chat.request("filler question number %d here" % i)
        self.assertIn("remember the code word is zebra", sent(transport))

    def test_tool_rounds_are_left_out_whole(self):
        def lookup(q: str) -> str:
            return "result " * 5

        call = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}
        chat, transport = make_chat([Reply(tool_calls=[call]), Reply("done")] + ["ok"] * 4, MsgMaxTokens=45, tokenizer=words)
        chat.request("use the tool please", tools=[lookup])
        for i in range(4):
            chat.request("more words in question %d" % i)
            messages = transport.requests[-1].json["messages"]
            for j, m in enumerate(messages):
                if m["role"] == "tool":
                    self.assertTrue(messages[j - 1].get("tool_calls"))
                if m.get("tool_calls"):
                    self.assertEqual(messages[j + 1]["role"], "tool")

    def test_both_limits_the_stricter_wins(self):
        chat, transport = make_chat(["ok"] * 4, MsgMaxTokens=10_000, MsgMaxCount=2, tokenizer=words)
        for i in range(4):
            chat.request("q%d" % i)
        self.assertEqual(len(transport.requests[-1].json["messages"]), 2)

    def test_what_must_stay_over_the_budget_is_refused_before_sending(self):
        chat, transport = make_chat(["ok"], MsgMaxTokens=20, tokenizer=words, system="one two three four five")
        chat.request("hi")
        before = chat.fetch_messages()
        with self.assertRaises(ContextBudgetError) as caught:
            chat.request("word " * 30)
        self.assertIsInstance(caught.exception, openai2.OpenAIError)
        self.assertEqual(caught.exception.budget, 20)
        self.assertGreater(caught.exception.required, 20)
        self.assertIn(str(caught.exception.required), str(caught.exception))
        self.assertEqual(chat.fetch_messages(), before)
        self.assertEqual(len(transport.requests), 1)

    def test_settable_and_checked(self):
        chat, _ = make_chat([], tokenizer=words)
        self.assertIsNone(chat.MsgMaxTokens)
        chat.MsgMaxTokens = 100
        self.assertEqual(chat.msg_max_tokens, 100)
        chat.msg_max_tokens = "auto"
        self.assertEqual(chat.MsgMaxTokens, "auto")
        for bad in (0, -5, 1.5, "lots", True):
            with self.subTest(bad=bad), self.assertRaises(ValueError):
                chat.MsgMaxTokens = bad
        with self.assertRaises(ValueError):
            make_chat([], MsgMaxTokens=10, msg_max_tokens=20)
        with self.assertRaises(TypeError):
            make_chat([], tokenizer="cl100k")

    def test_count_tokens_is_what_the_next_request_sends(self):
        chat, transport = make_chat(["an answer"], tokenizer=words, system="sys")
        chat.request("hello there")
        expected = count_tokens(chat.fetch_messages() + [{"role": "user", "content": "next one"}], tokenizer=words)
        self.assertEqual(chat.count_tokens("next one"), expected)
        self.assertEqual(chat.count_tokens(), count_tokens(chat.fetch_messages(), tokenizer=words))


class Calibration(unittest.TestCase):
    def server(self, factor):
        """A fake server whose prompt_tokens is ``factor`` times openai2's own estimate."""

        def answer(request):
            true = math.ceil(factor * count_tokens(request.messages, model="m", tools=request.json.get("tools")))
            return Reply("a short answer", usage={"prompt_tokens": true, "completion_tokens": 3, "total_tokens": true + 3})

        return answer

    def test_one_exchange_brings_the_estimate_within_three_percent(self):
        chat, transport = make_chat(handler=self.server(1.3), MsgMaxTokens=100_000)
        chat.request("the first question, with a good number of words in it so that rounding does not matter " * 4)
        for i in range(3):
            text = "question %d: and a longer follow-up question with more words, 还有中文 %d" % (i, i)
            predicted = chat.count_tokens(text)
            chat.request(text)
            true = transport.requests[-1]
            actual = math.ceil(1.3 * count_tokens(true.messages, model="m"))
            self.assertLess(abs(predicted - actual) / actual, 0.03, (predicted, actual))

    def test_the_budget_is_measured_in_the_servers_tokens(self):
        chat, transport = make_chat(handler=self.server(2.0), MsgMaxTokens=400)
        for i in range(12):
            chat.request("question %d with some words to fill the window up" % i)
        last = count_tokens(transport.requests[-1].json["messages"], model="m")
        self.assertLessEqual(math.ceil(2.0 * last), 400 * 1.03)

    def test_a_tokenizer_is_exact_and_never_rescaled(self):
        chat, _ = make_chat(handler=self.server(3.0), tokenizer=words)
        chat.request("one two three")
        self.assertEqual(chat.count_tokens(), count_tokens(chat.fetch_messages(), tokenizer=words))

    def test_calibration_is_shared_by_the_chats_of_one_client(self):
        chat, transport = make_chat(handler=self.server(1.5), MsgMaxTokens=100_000)
        chat.request("hello world")
        other = Chat(client=chat.client, model="m", MsgMaxTokens=100_000)
        self.assertIs(other.client.token_calibration("m"), chat.client.token_calibration("m"))
        self.assertGreater(chat.client.token_calibration("m").ratio, 1.2)

    def test_concurrent_requests_calibrate_safely(self):
        chat, transport = make_chat(handler=self.server(1.3), MsgMaxTokens=100_000)
        errors = []

        def work(n):
            try:
                for i in range(5):
                    chat.request("thread %d question %d" % (n, i))
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        self.assertEqual(errors, [])
        self.assertEqual(len(chat.fetch_messages()), 40)
        # the ratio is of the server's count to openai2's (per-message) estimate: what matters
        # is that the calibrated estimate predicts the server's next count
        predicted = chat.count_tokens("one more question")
        chat.request("one more question")
        actual = math.ceil(1.3 * count_tokens(transport.requests[-1].messages, model="m"))
        self.assertLess(abs(predicted - actual) / actual, 0.03, (predicted, actual))

    def test_a_prompt_the_server_cut_silently_warns_once_and_does_not_calibrate(self):
        def ollama(request):
            return Reply("ok", usage={"prompt_tokens": 2048, "completion_tokens": 1, "total_tokens": 2049})

        chat, _ = make_chat(handler=ollama, MsgMaxTokens=100_000)
        chat.add_dialogs(*[{"role": "user", "content": "long text " * 2000}, {"role": "assistant", "content": "ok"}] * 3)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            chat.request("and now?")
            chat.request("and again?")
        cut = [w for w in caught if "num_ctx" in str(w.message)]
        self.assertEqual(len(cut), 1)
        self.assertIn("2048", str(cut[0].message))
        self.assertEqual(chat.client.token_calibration("m").samples, 0)


class Summaries(unittest.TestCase):
    def server(self, fail_summary=False):
        seen = []

        def answer(request):
            first = request.messages[0]
            if first["role"] == "system" and "summar" in first["content"].lower() or "总结" in first["content"]:
                seen.append(request.messages)
                if fail_summary:
                    return Reply(status=500, content="down")
                return Reply("the user asked several things", usage={"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12})
            return Reply("ok", usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2})

        return answer, seen

    def run_turns(self, chat, texts):
        for text in texts:
            chat.request(text)

    def test_what_is_left_out_is_replaced_by_one_pinned_summary(self):
        handler, seen = self.server()
        chat, transport = make_chat(handler=handler, MsgMaxTokens=40, tokenizer=words, summarize=True, system="sys")
        self.run_turns(chat, ["question number %d with words" % i for i in range(6)])
        self.assertTrue(seen)
        messages = chat.fetch_messages()
        self.assertEqual(messages[0]["content"], "sys")
        self.assertEqual(messages[1]["role"], "system")
        self.assertTrue(messages[1]["content"].startswith("[Summary of the earlier conversation]"))
        self.assertIn(1, chat.pinned_indexes())
        self.assertEqual(sum(1 for m in messages if m["content"].startswith("[Summary")), 1)
        self.assertIn("Previous summary:", seen[-1][1]["content"])  # a later summary folds the previous in
        last = transport.requests[-1].json["messages"]
        if not last[-1]["content"].startswith("[Summary") and last[0]["content"] == "sys":
            self.assertTrue(any(m["content"].startswith("[Summary") for m in last))
        self.assertGreaterEqual(chat.total_usage["total_tokens"], 12)

    def test_a_chinese_conversation_is_summarised_in_chinese(self):
        handler, seen = self.server()
        chat, _ = make_chat(handler=handler, MsgMaxTokens=90, tokenizer=lambda t: len(t), summarize=True)
        self.run_turns(chat, ["第%d个问题：今天天气怎么样" % i for i in range(5)])
        self.assertTrue(seen)
        self.assertIn("用中文书写", seen[0][0]["content"])
        self.assertTrue(any(m["content"].startswith("[此前对话的摘要]") for m in chat.fetch_messages()))

    def test_a_failed_summary_falls_back_to_plain_trimming_and_keeps_the_answer(self):
        handler, seen = self.server(fail_summary=True)
        chat, _ = make_chat(handler=handler, MsgMaxTokens=40, tokenizer=words, summarize=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.run_turns(chat, ["question number %d with words" % i for i in range(6)])
        self.assertTrue(seen)
        self.assertIsInstance(chat.last_summary_error, openai2.InternalServerError)
        self.assertTrue(any("could not be summarised" in str(w.message) for w in caught))
        messages = chat.fetch_messages()
        self.assertFalse(any(m["content"].startswith("[Summary") for m in messages))
        self.assertEqual(messages[-1], {"role": "assistant", "content": "ok"})

    def test_a_summary_grown_over_the_budget_leaves_like_a_round_instead_of_blocking_every_request(self):
        summaries = []

        def answer(request):
            first = request.messages[0]
            if first["role"] == "system" and "Summarise" in first["content"]:
                summaries.append(request.messages[1]["content"])
                return Reply("long " * (50 if len(summaries) == 1 else 3))  # the first one is too long
            return Reply("ok")

        chat, transport = make_chat(handler=answer, MsgMaxTokens=60, tokenizer=words, summarize=True)
        for i in range(8):
            chat.request("question number %d with some words" % i)  # never a ContextBudgetError
        self.assertGreaterEqual(len(summaries), 2)
        # the long summary left like a round; the next summary request fits the budget (3/4 of it)
        self.assertLessEqual(words(summaries[1]), 45)
        self.assertNotIn("Previous summary:", summaries[1])
        held = [m for m in chat.fetch_messages() if m["content"].startswith("[Summary")]
        self.assertEqual(len(held), 1)
        self.assertLess(words(held[0]["content"]), 10)

    def test_without_summarize_nothing_extra_is_sent(self):
        handler, seen = self.server()
        chat, transport = make_chat(handler=handler, MsgMaxTokens=40, tokenizer=words)
        self.run_turns(chat, ["question number %d with words" % i for i in range(6)])
        self.assertEqual(seen, [])
        self.assertEqual(len(transport.requests), 6)


class Auto(unittest.TestCase):
    def history(self, chat, n=8):
        for i in range(n):
            chat.add_dialogs(
                {"role": "user", "content": "old question %d " % i + "word " * 20}, {"role": "assistant", "content": "old answer"}
            )

    def test_the_stated_limit_is_learned_and_the_request_sent_once_more(self):
        chat, transport = make_chat([context_refusal(120), "fine", "again"], MsgMaxTokens="auto", tokenizer=words)
        self.history(chat)
        self.assertEqual(chat.request("now?"), "fine")
        first, second = transport.requests[0].json["messages"], transport.requests[1].json["messages"]
        self.assertLess(len(second), len(first))
        self.assertLessEqual(count_tokens(second, tokenizer=words), 120)
        self.assertEqual(second[-1]["content"], "now?")
        self.assertIsNotNone(chat.client.learned_window("m"))
        chat.request("later?")  # remembered: no refusal needed
        self.assertEqual(len(transport.requests), 3)
        self.assertLessEqual(count_tokens(transport.requests[2].json["messages"], tokenizer=words), 120)
        self.assertEqual(chat.last_request, transport.requests[2].json)

    def test_the_answers_max_tokens_is_taken_from_the_limit(self):
        chat, transport = make_chat([context_refusal(200), "fine"], MsgMaxTokens="auto", tokenizer=words, max_tokens=100)
        self.history(chat)
        chat.request("now?")
        self.assertLessEqual(count_tokens(transport.requests[1].json["messages"], tokenizer=words), 100)

    def test_no_stated_limit_halves_what_may_be_left_out(self):
        chat, transport = make_chat([context_refusal(None), "fine"], MsgMaxTokens="auto", tokenizer=words)
        self.history(chat)
        chat.request("now?")
        first = count_tokens(transport.requests[0].json["messages"], tokenizer=words)
        second = count_tokens(transport.requests[1].json["messages"], tokenizer=words)
        self.assertLessEqual(second, first * 0.6)

    def test_one_retry_only_and_the_history_is_unchanged_when_it_fails(self):
        chat, transport = make_chat([context_refusal(120), context_refusal(60)], MsgMaxTokens="auto", tokenizer=words)
        self.history(chat)
        before = chat.fetch_messages()
        with self.assertRaises(ContextLengthError):
            chat.request("now?")
        self.assertEqual(len(transport.requests), 2)
        self.assertEqual(chat.fetch_messages(), before)

    def test_without_auto_the_refusal_is_raised(self):
        chat, transport = make_chat([context_refusal(120)], tokenizer=words)
        self.history(chat)
        with self.assertRaises(ContextLengthError):
            chat.request("now?")
        self.assertEqual(len(transport.requests), 1)

    def test_streams_and_async_learn_too(self):
        chat, transport = make_chat([context_refusal(120), "streamed"], MsgMaxTokens="auto", tokenizer=words)
        self.history(chat)
        self.assertEqual("".join(chat.stream_request("now?")), "streamed")
        self.assertEqual(len(transport.requests), 2)

        chat, transport = make_chat([context_refusal(120), "async", context_refusal(110), "async stream"], MsgMaxTokens="auto", tokenizer=words)
        self.history(chat)
        self.assertEqual(asyncio.run(chat.async_request("now?")), "async")
        chat.client._token_windows.clear()  # forget, to be refused again

        async def stream():
            return "".join([p async for p in chat.async_stream_request("and?")])

        self.assertEqual(asyncio.run(stream()), "async stream")
        self.assertEqual(len(transport.requests), 4)

    def test_parse_and_async_parse_learn_and_send_once_more(self):
        answer = '{"city": "Paris", "population": 2100000}'
        schema = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
                  "required": ["city", "population"], "additionalProperties": False}
        chat, transport = make_chat([context_refusal(120), answer, context_refusal(110), answer], MsgMaxTokens="auto", tokenizer=words)
        self.history(chat)
        self.assertEqual(chat.parse("Which city?", schema)["city"], "Paris")
        self.assertEqual(len(transport.requests), 2)
        self.assertLess(len(transport.requests[1].json["messages"]), len(transport.requests[0].json["messages"]))
        chat.client._token_windows.clear()
        self.assertEqual(asyncio.run(chat.async_parse("And now?", schema))["population"], 2100000)
        self.assertEqual(len(transport.requests), 4)
        self.assertLessEqual(count_tokens(transport.requests[3].json["messages"], tokenizer=words), 110)

    def test_parse_refused_twice_raises_and_keeps_the_history(self):
        schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
        chat, transport = make_chat([context_refusal(120), context_refusal(60)], MsgMaxTokens="auto", tokenizer=words)
        self.history(chat)
        before = chat.fetch_messages()
        with self.assertRaises(ContextLengthError):
            chat.parse("Which?", schema)
        self.assertEqual(len(transport.requests), 2)
        self.assertEqual(chat.fetch_messages(), before)


if __name__ == "__main__":
    unittest.main()
