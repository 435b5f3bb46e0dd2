"""Tool calling: the @tool decorator and tool_schema, the Chat tool loop (sync, async, streamed),
its history rules, the low-level run_tools, and a loop over each recorded provider quirk.

Everything runs on MemoryTransport (no sockets): the replies are scripted, the requests the
server saw are read back from ``transport.requests``.
"""

# ruff: noqa: UP045 - typing.Optional: the hints are evaluated on Python 3.8
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import tempfile
import threading
import typing
import unittest

import openai2
from openai2 import Chat, OpenAI, OpenAIError, ToolCall, ToolRoundsError, tool, tool_schema
from openai2.testing import MemoryTransport, Reply
from openai2.tools import TOOL_DECLINED

KEY = "sk-test-tools-0123456789abcdefXYZ"
BASE = "https://api.test/v1"
HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "wire-corpus"))


def call(call_id, name, arguments):
    """A tool call as a server sends it (arguments: a dict made JSON, or raw text)."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": text}}


def get_weather(city: str, days: int = 1) -> str:
    """Get the weather forecast for a city.

    Args:
        city: the city's name
        days: how many days ahead
    """
    return "sunny in %s for %d day(s)" % (city, days)


def make_chat(replies, **options):
    transport = MemoryTransport(replies)
    chat = Chat(KEY, base_url=BASE, model="m", transport=transport, **options)
    return chat, transport


class Decorator(unittest.TestCase):
    def test_bare_decorator_keeps_the_function_callable(self):
        @tool
        def add(a: int, b: int) -> int:
            """Add two numbers."""
            return a + b

        self.assertEqual(add(2, 3), 5)
        schema = tool_schema(add)
        self.assertEqual(schema["type"], "function")
        self.assertEqual(schema["function"]["name"], "add")
        self.assertEqual(schema["function"]["description"], "Add two numbers.")
        self.assertEqual(schema["function"]["parameters"]["required"], ["a", "b"])

    def test_decorator_options_name_description_strict(self):
        @tool(name="lookup_user", description="  Find a   user. ", strict=True)
        def find(name: str) -> str:
            return name

        self.assertEqual(find("x"), "x")
        spec = tool_schema(find)["function"]
        self.assertEqual((spec["name"], spec["description"], spec.get("strict")), ("lookup_user", "Find a user.", True))
        self.assertIs(spec["parameters"].get("additionalProperties"), False)

    def test_plain_function_schema_from_hints_and_docstring(self):
        spec = tool_schema(get_weather)["function"]
        self.assertEqual(spec["name"], "get_weather")
        self.assertEqual(spec["description"], "Get the weather forecast for a city.")
        props = spec["parameters"]["properties"]
        self.assertEqual(props["city"]["type"], "string")
        self.assertEqual(props["days"]["type"], "integer")
        self.assertEqual(props["city"]["description"], "the city's name")
        self.assertEqual(spec["parameters"]["required"], ["city"])

    def test_unsupported_annotation_fails_at_decoration_naming_function_and_parameter(self):
        with self.assertRaises(TypeError) as caught:

            @tool
            def bad(items: set) -> None:  # a set is not JSON
                pass

        self.assertIn("bad", str(caught.exception))
        self.assertIn("items", str(caught.exception))

    def test_unsupported_annotation_fails_at_chat_construction_not_during_a_request(self):
        def bad(items: set) -> None:
            pass

        with self.assertRaises(TypeError):
            make_chat([], tools=[bad])

    def test_bound_method_skips_self(self):
        class Store:
            def get(self, key: str) -> str:
                """Read a key."""
                return key.upper()

        spec = tool_schema(Store().get)["function"]
        self.assertEqual(list(spec["parameters"]["properties"]), ["key"])

    def test_bad_names_and_duplicates_are_refused(self):
        def a(x: int) -> int:
            return x

        with self.assertRaises(ValueError):
            make_chat([], tools=[a, a])
        with self.assertRaises(ValueError):
            tool(name="has space")(a)
        with self.assertRaises(ValueError):
            make_chat([], tools=[{"type": "function", "function": {"description": "no name"}}])
        with self.assertRaises(TypeError):
            make_chat([], tools=[42])


class Loop(unittest.TestCase):
    def test_call_run_reply_until_an_answer_without_calls(self):
        chat, transport = make_chat(
            [Reply(tool_calls=[call("c1", "get_weather", {"city": "Paris"})]), Reply("It is sunny in Paris.")],
            tools=[get_weather],
        )
        self.assertEqual(chat.request("Weather in Paris?"), "It is sunny in Paris.")
        first, second = transport.requests
        self.assertEqual(first.json["tools"], [tool_schema(get_weather)])
        self.assertEqual(
            second.json["messages"][-1], {"role": "tool", "tool_call_id": "c1", "content": "sunny in Paris for 1 day(s)"}
        )
        roles = [m["role"] for m in chat.fetch_messages()]
        self.assertEqual(roles, ["user", "assistant", "tool", "assistant"])
        (record,) = chat.last_tool_calls
        self.assertIsInstance(record, ToolCall)
        self.assertEqual((record.id, record.name, record.arguments), ("c1", "get_weather", {"city": "Paris"}))
        self.assertEqual(record.result, "sunny in Paris for 1 day(s)")
        self.assertFalse(record.failed)
        self.assertGreaterEqual(record.duration, 0.0)

    def test_parallel_calls_run_concurrently_and_answer_in_call_order(self):
        barrier = threading.Barrier(3, timeout=10)
        threads = []

        def slow(n: int) -> str:
            threads.append(threading.get_ident())
            barrier.wait()  # three calls in one answer meet here: they run at the same time
            return "r%d" % n

        calls = [call("c%d" % n, "slow", {"n": n}) for n in (1, 2, 3)]
        chat, transport = make_chat([Reply(tool_calls=calls), Reply("done")], tools=[slow])
        self.assertEqual(chat.request("go"), "done")
        answers = transport.requests[1].json["messages"][-3:]
        self.assertEqual([(m["tool_call_id"], m["content"]) for m in answers], [("c1", "r1"), ("c2", "r2"), ("c3", "r3")])
        self.assertEqual(len(set(threads)), 3)
        self.assertFalse(any(c.failed for c in chat.last_tool_calls))

    def test_invalid_arguments_are_not_run_and_the_error_goes_back(self):
        ran = []

        def get_city(city: str) -> str:
            ran.append(city)
            return city

        chat, transport = make_chat(
            [
                Reply(tool_calls=[call("c1", "get_city", {"city": 5})]),
                Reply(tool_calls=[call("c2", "get_city", {"town": "Rome"})]),
                Reply(tool_calls=[call("c3", "get_city", {"city": "Rome"})]),
                Reply("ok"),
            ],
            tools=[get_city],
        )
        self.assertEqual(chat.request("go"), "ok")
        self.assertEqual(ran, ["Rome"])
        wrong_type, missing, good = chat.last_tool_calls
        self.assertTrue(wrong_type.failed and missing.failed and not good.failed)
        self.assertIn("city", wrong_type.result)
        self.assertIn("city", missing.result)
        self.assertEqual(transport.requests[1].json["messages"][-1]["content"], wrong_type.result)

    def test_arguments_that_are_not_json_go_back_as_an_error_and_count_as_a_round(self):
        chat, transport = make_chat(
            [Reply(tool_calls=[call("c1", "get_weather", '{"city": "Paris"')]), Reply("sorry")],
            tools=[get_weather],
            max_tool_rounds=1,
        )
        self.assertEqual(chat.request("go"), "sorry")
        (record,) = chat.last_tool_calls
        self.assertTrue(record.failed)
        self.assertIsNone(record.arguments)
        self.assertIn("not valid JSON", record.result)

    def test_an_unknown_tool_gets_an_error_naming_the_available_ones(self):
        chat, _ = make_chat([Reply(tool_calls=[call("c1", "get_wether", {})]), Reply("ok")], tools=[get_weather])
        chat.request("go")
        (record,) = chat.last_tool_calls
        self.assertTrue(record.failed)
        self.assertIn("get_wether", record.result)
        self.assertIn("get_weather", record.result)

    def test_a_tool_exception_goes_back_as_type_and_message_with_keys_masked(self):
        def explode(x: int) -> str:
            raise ValueError("cannot use %s for %d" % (KEY, x))

        chat, transport = make_chat([Reply(tool_calls=[call("c1", "explode", {"x": 1})]), Reply("it failed")], tools=[explode])
        self.assertEqual(chat.request("go"), "it failed")
        sent = transport.requests[1].json["messages"][-1]["content"]
        self.assertTrue(sent.startswith("ValueError: cannot use "), sent)
        self.assertNotIn(KEY, sent)
        self.assertNotIn("Traceback", sent)
        self.assertIsInstance(chat.last_tool_calls[0].error, ValueError)

    def test_tool_errors_raise_raises_and_leaves_the_history_unchanged(self):
        def explode() -> str:
            raise KeyError("boom")

        chat, transport = make_chat(
            [Reply(tool_calls=[call("c1", "explode", {})]), Reply("never")], tools=[explode], tool_errors="raise"
        )
        chat.add_dialogs({"role": "user", "content": "before"}, {"role": "assistant", "content": "ok"})
        before = chat.fetch_messages()
        with self.assertRaises(KeyError):
            chat.request("go")
        self.assertEqual(chat.fetch_messages(), before)
        self.assertEqual(len(transport.requests), 1)

    def test_confirm_refusal_sends_the_decline_and_does_not_run(self):
        ran, asked = [], []

        def rm(path: str) -> str:
            ran.append(path)
            return "removed"

        def confirm(c):
            asked.append((c.name, c.arguments))
            return False

        chat, transport = make_chat([Reply(tool_calls=[call("c1", "rm", {"path": "/"})]), Reply("fine")], tools=[rm], confirm=confirm)
        chat.request("clean up")
        self.assertEqual(ran, [])
        self.assertEqual(asked, [("rm", {"path": "/"})])
        self.assertEqual(transport.requests[1].json["messages"][-1]["content"], TOOL_DECLINED)
        self.assertTrue(chat.last_tool_calls[0].declined)

    def test_confirm_per_call_overrides_and_none_unsets(self):
        ran = []

        def rm(path: str) -> str:
            ran.append(path)
            return "removed"

        chat, _ = make_chat(
            [Reply(tool_calls=[call("c1", "rm", {"path": "a"})]), Reply("x")], tools=[rm], confirm=lambda c: False
        )
        chat.request("go", confirm=None)
        self.assertEqual(ran, ["a"])

    def test_too_many_rounds_raise_a_typed_error_and_keep_the_history(self):
        chat, transport = make_chat(
            [Reply(tool_calls=[call("c%d" % i, "get_weather", {"city": "X"})]) for i in range(5)],
            tools=[get_weather],
            max_tool_rounds=2,
        )
        with self.assertRaises(ToolRoundsError) as caught:
            chat.request("loop forever")
        self.assertIsInstance(caught.exception, OpenAIError)
        self.assertIs(openai2.ToolRoundsError, ToolRoundsError)
        self.assertEqual(len(caught.exception.calls), 2)
        self.assertEqual(chat.fetch_messages(), [])
        self.assertEqual(len(transport.requests), 3)

    def test_max_tool_rounds_per_call(self):
        chat, _ = make_chat([Reply(tool_calls=[call("c1", "get_weather", {"city": "X"})])], tools=[get_weather])
        with self.assertRaises(ToolRoundsError):
            chat.request("go", max_tool_rounds=0)

    def test_per_call_tools_replace_the_default_and_none_unsets_them(self):
        def other(q: str) -> str:
            return q

        chat, transport = make_chat(["a", "b"], tools=[get_weather])
        chat.request("one", tools=[other])
        self.assertEqual([t["function"]["name"] for t in transport.requests[0].json["tools"]], ["other"])
        chat.request("two", tools=None)
        self.assertNotIn("tools", transport.requests[1].json)

    def test_tool_choice_and_parallel_tool_calls_pass_through_and_a_forced_choice_applies_once(self):
        chat, transport = make_chat(
            [Reply(tool_calls=[call("c1", "get_weather", {"city": "X"})]), Reply("ok")], tools=[get_weather]
        )
        chat.request("go", tool_choice="required", parallel_tool_calls=False)
        first, second = (r.json for r in transport.requests)
        self.assertEqual((first["tool_choice"], first["parallel_tool_calls"]), ("required", False))
        self.assertNotIn("tool_choice", second)  # else the model could never answer
        self.assertFalse(second["parallel_tool_calls"])

    def test_strict_null_for_a_parameter_with_a_default_means_the_default(self):
        seen = []

        @tool(strict=True)
        def forecast(city: str, unit: str = "celsius") -> str:
            seen.append((city, unit))
            return "ok"

        self.assertEqual(tool_schema(forecast)["function"]["parameters"]["required"], ["city", "unit"])
        chat, _ = make_chat([Reply(tool_calls=[call("c1", "forecast", {"city": "Oslo", "unit": None})]), Reply("x")], tools=[forecast])
        chat.request("go")
        self.assertEqual(seen, [("Oslo", "celsius")])
        self.assertFalse(chat.last_tool_calls[0].failed)

    def test_a_null_for_an_optional_parameter_means_its_default(self):
        seen = []

        def note(text: str, tag: typing.Optional[str] = None, count: int = 2) -> str:
            seen.append((text, tag, count))
            return "ok"

        chat, _ = make_chat(
            [Reply(tool_calls=[call("c1", "note", {"text": "hi", "tag": None, "count": None})]), Reply("x")], tools=[note]
        )
        chat.request("go")
        self.assertEqual(seen, [("hi", None, 2)])
        self.assertFalse(chat.last_tool_calls[0].failed)

    def test_a_local_return_type_under_future_annotations_does_not_matter(self):
        @dataclasses.dataclass
        class Local:
            x: int

        def make(x: int) -> Local:
            return Local(x)

        self.assertEqual(list(tool_schema(make)["function"]["parameters"]["properties"]), ["x"])

    def test_results_are_text_or_json(self):
        @dataclasses.dataclass
        class Point:
            x: int
            y: int

        def point() -> Point:
            return Point(1, 2)

        def mapping() -> dict:
            return {"城市": "北京", "n": [1, 2]}

        def nothing() -> None:
            return None

        calls = [call("c1", "point", {}), call("c2", "mapping", {}), call("c3", "nothing", {})]
        chat, transport = make_chat([Reply(tool_calls=calls), Reply("ok")], tools=[point, mapping, nothing])
        chat.request("go")
        sent = [m["content"] for m in transport.requests[1].json["messages"][-3:]]
        self.assertEqual(json.loads(sent[0]), {"x": 1, "y": 2})
        self.assertEqual(json.loads(sent[1]), {"城市": "北京", "n": [1, 2]})
        self.assertIn("北京", sent[1])  # not \\u escaped
        self.assertEqual(sent[2], "null")

    def test_missing_and_repeated_call_ids_get_ids_of_their_own(self):
        calls = [call("", "get_weather", {"city": "A"}), call("", "get_weather", {"city": "B"})]
        chat, transport = make_chat([Reply(tool_calls=calls), Reply("ok")], tools=[get_weather])
        chat.request("go")
        messages = transport.requests[1].json["messages"]
        ids = [c["id"] for c in messages[-3]["tool_calls"]]
        self.assertEqual(len(set(ids)), 2)
        self.assertTrue(all(ids))
        self.assertEqual([m["tool_call_id"] for m in messages[-2:]], ids)

    def test_a_failed_request_in_a_later_round_leaves_the_history_unchanged(self):
        chat, transport = make_chat(
            [Reply(tool_calls=[call("c1", "get_weather", {"city": "X"})]), Reply(status=400, content="bad")],
            tools=[get_weather],
            max_retries=0,
        )
        with self.assertRaises(openai2.BadRequestError):
            chat.request("go")
        self.assertEqual(chat.fetch_messages(), [])
        self.assertEqual(chat.last_tool_calls, [])

    def test_usage_is_summed_over_the_rounds(self):
        usage = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
        chat, _ = make_chat(
            [Reply(tool_calls=[call("c1", "get_weather", {"city": "X"})], usage=usage), Reply("ok", usage=usage)],
            tools=[get_weather],
        )
        chat.request("go")
        self.assertEqual(chat.last_usage, {"prompt_tokens": 20, "completion_tokens": 4, "total_tokens": 24})
        self.assertEqual(chat.total_usage, {"prompt_tokens": 20, "completion_tokens": 4, "total_tokens": 24})


class SchemaOnlyTools(unittest.TestCase):
    LOOKUP = {
        "type": "function",
        "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}},
    }

    def test_the_loop_pauses_the_caller_answers_and_request_goes_on(self):
        chat, transport = make_chat(
            [Reply("Let me look.", tool_calls=[call("c1", "lookup", {"q": "x"})]), Reply("Found it.")], tools=[self.LOOKUP]
        )
        self.assertEqual(chat.request("find x"), "Let me look.")
        (pending,) = chat.pending_tool_calls
        self.assertEqual((pending.id, pending.name, pending.arguments), ("c1", "lookup", {"q": "x"}))
        with self.assertRaises(ValueError) as caught:
            chat.request("something else")  # the API would refuse it: calls must be answered first
        self.assertIn("add_tool_result", str(caught.exception))
        with self.assertRaises(ValueError):
            chat.add_tool_result("nope", "x")
        chat.add_tool_result(pending, {"hits": 1})
        self.assertEqual(chat.pending_tool_calls, [])
        self.assertEqual(chat.request(), "Found it.")
        self.assertEqual(transport.requests[1].json["messages"][-1], {"role": "tool", "tool_call_id": "c1", "content": '{"hits": 1}'})
        self.assertEqual([m["role"] for m in chat.fetch_messages()], ["user", "assistant", "tool", "assistant"])
        chat.rollback(1)
        self.assertEqual(chat.fetch_messages(), [])

    def test_mixed_answer_runs_the_python_tools_and_leaves_the_rest_pending(self):
        chat, _ = make_chat(
            [Reply(tool_calls=[call("c1", "get_weather", {"city": "X"}), call("c2", "lookup", {"q": "y"})])],
            tools=[get_weather, self.LOOKUP],
        )
        chat.request("go")
        self.assertEqual([c.id for c in chat.pending_tool_calls], ["c2"])
        self.assertEqual(chat.fetch_messages()[-1]["tool_call_id"], "c1")

    def test_add_dialogs_answers_too_and_request_without_text_needs_something_to_go_on(self):
        chat, _ = make_chat([Reply(tool_calls=[call("c1", "lookup", {"q": "x"})]), Reply("done")], tools=[self.LOOKUP])
        with self.assertRaises(ValueError):
            chat.request()
        chat.request("go")
        chat.add_dialogs({"role": "tool", "tool_call_id": "c1", "content": "42"})
        self.assertEqual(chat.request(), "done")


class Async(unittest.TestCase):
    def test_async_tools_are_awaited_on_the_callers_loop_and_sync_ones_in_threads(self):
        seen = {}

        async def fetch(url: str) -> str:
            seen["fetch"] = (asyncio.get_running_loop(), threading.get_ident())
            await asyncio.sleep(0)
            return "page " + url

        def compute(n: int) -> int:
            seen["compute"] = threading.get_ident()
            return n * 2

        calls = [call("c1", "fetch", {"url": "u"}), call("c2", "compute", {"n": 21})]
        chat, transport = make_chat([Reply(tool_calls=calls), Reply("ok")], tools=[fetch, compute])

        async def main():
            answer = await chat.async_request("go")
            return answer, asyncio.get_running_loop(), threading.get_ident()

        answer, loop, ident = asyncio.run(main())
        self.assertEqual(answer, "ok")
        self.assertEqual(seen["fetch"], (loop, ident))
        self.assertNotEqual(seen["compute"], ident)
        self.assertEqual([m["content"] for m in transport.requests[1].json["messages"][-2:]], ["page u", "42"])

    def test_async_tool_in_a_sync_request_runs_too(self):
        async def fetch(url: str) -> str:
            await asyncio.sleep(0)
            return "page " + url

        chat, _ = make_chat([Reply(tool_calls=[call("c1", "fetch", {"url": "u"})]), Reply("ok")], tools=[fetch])
        self.assertEqual(chat.request("go"), "ok")
        self.assertEqual(chat.last_tool_calls[0].result, "page u")

    def test_cancelling_during_a_tool_leaves_the_history_and_drops_the_late_result(self):
        started, release, finished = threading.Event(), threading.Event(), threading.Event()

        def slow() -> str:
            started.set()
            release.wait(10)
            finished.set()
            return "late"

        chat, transport = make_chat([Reply(tool_calls=[call("c1", "slow", {}), call("c2", "slow", {})]), Reply("never")], tools=[slow])

        async def main():
            task = asyncio.ensure_future(chat.async_request("go"))
            while not started.is_set():
                await asyncio.sleep(0.001)
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task

        asyncio.run(main())
        release.set()
        self.assertTrue(finished.wait(10))
        self.assertEqual(chat.fetch_messages(), [])
        self.assertEqual(len(transport.requests), 1)

    def test_async_confirm_may_be_a_coroutine(self):
        async def confirm(c):
            return c.arguments["city"] != "X"

        chat, transport = make_chat(
            [Reply(tool_calls=[call("c1", "get_weather", {"city": "X"})]), Reply("ok")], tools=[get_weather], confirm=confirm
        )
        asyncio.run(chat.async_request("go"))
        self.assertEqual(transport.requests[1].json["messages"][-1]["content"], TOOL_DECLINED)

    def test_async_stream_runs_the_loop(self):
        chat, _ = make_chat(
            [Reply("Checking. ", tool_calls=[call("c1", "get_weather", {"city": "Oslo"})]), Reply("Cold.")], tools=[get_weather]
        )

        async def main():
            return [piece async for piece in chat.async_stream_request("Oslo?")]

        self.assertEqual("".join(asyncio.run(main())), "Checking. Cold.")
        self.assertEqual([m["role"] for m in chat.fetch_messages()], ["user", "assistant", "tool", "assistant"])


class Streaming(unittest.TestCase):
    REPLIES = [
        Reply("Let me check. ", tool_calls=[call("c1", "get_weather", {"city": "Oslo"})]),
        Reply("It is cold in Oslo."),
    ]

    def test_pieces_of_every_round_and_tool_events_in_order(self):
        events = []
        chat, _ = make_chat(list(self.REPLIES), tools=[get_weather])
        stream = chat.stream_request(
            "Oslo?",
            on_tool_call=lambda c: events.append(("call", c.name, c.result)),
            on_tool_result=lambda c: events.append(("result", c.name, c.result)),
        )
        text = ""
        for piece in stream:
            text += piece
            if text == "Let me check. ":
                events.append(("text", text))
        self.assertEqual(text, "Let me check. It is cold in Oslo.")
        self.assertEqual(
            events,
            [("text", "Let me check. "), ("call", "get_weather", None), ("result", "get_weather", "sunny in Oslo for 1 day(s)")],
        )
        self.assertEqual([c.id for c in stream.tool_calls], ["c1"])

    def test_streamed_and_whole_exchanges_store_the_same_history(self):
        streamed, _ = make_chat(list(self.REPLIES), tools=[get_weather])
        "".join(streamed.stream_request("Oslo?"))
        whole, _ = make_chat(list(self.REPLIES), tools=[get_weather])
        whole.request("Oslo?")
        self.assertEqual(streamed.fetch_messages(), whole.fetch_messages())

    def test_stopping_keeps_the_completed_rounds_and_the_text_so_far(self):
        chat, _ = make_chat(list(self.REPLIES), tools=[get_weather])
        stream = chat.stream_request("Oslo?")
        text = ""
        for piece in stream:
            text += piece
            if text.endswith("It is"):
                break
        stream.close()
        messages = chat.fetch_messages()
        self.assertEqual([m["role"] for m in messages], ["user", "assistant", "tool", "assistant"])
        self.assertEqual(messages[-1]["content"], "It is")
        self.assertEqual(messages[1]["tool_calls"][0]["id"], "c1")

    def test_stopping_during_the_first_round_keeps_only_its_text(self):
        chat, _ = make_chat(list(self.REPLIES), tools=[get_weather])
        stream = chat.stream_request("Oslo?")
        next(stream)
        stream.close()
        self.assertEqual(chat.fetch_messages(), [{"role": "user", "content": "Oslo?"}, {"role": "assistant", "content": "L"}])

    def test_a_stream_that_fails_in_a_later_round_keeps_nothing(self):
        chat, _ = make_chat(
            [self.REPLIES[0], Reply(status=500, content="down")], tools=[get_weather], max_retries=0
        )
        with self.assertRaises(openai2.InternalServerError):
            "".join(chat.stream_request("Oslo?"))
        self.assertEqual(chat.fetch_messages(), [])


class HistoryWithTools(unittest.TestCase):
    def exchange(self, chat, transport, text, city):
        transport.replies.extend([Reply(tool_calls=[call("c_" + city, "get_weather", {"city": city})]), Reply("ok " + city)])
        chat.request(text)

    def test_rollback_removes_the_whole_exchange(self):
        chat, transport = make_chat([], tools=[get_weather])
        self.exchange(chat, transport, "one", "A")
        self.exchange(chat, transport, "two", "B")
        self.assertEqual(len(chat.fetch_messages()), 8)
        chat.rollback(1)
        self.assertEqual([m.get("content") for m in chat.fetch_messages()][-1], "ok A")
        self.assertEqual(len(chat.fetch_messages()), 4)

    def test_msg_max_count_never_separates_calls_from_their_answers(self):
        chat, transport = make_chat([], tools=[get_weather], MsgMaxCount=5)
        for city in "ABCD":
            self.exchange(chat, transport, "q" + city, city)
            messages = chat.fetch_messages()
            self.assertLessEqual(len(messages), 5)
            self.assertNotEqual(messages[0]["role"], "tool")
            for i, m in enumerate(messages):
                if m.get("tool_calls"):
                    self.assertEqual(messages[i + 1]["tool_call_id"], m["tool_calls"][0]["id"])
        for request in transport.requests:
            sent = request.json["messages"]
            for i, m in enumerate(sent):
                if m["role"] == "tool":
                    self.assertTrue(sent[i - 1].get("tool_calls") or sent[i - 1]["role"] == "tool")
                if m.get("tool_calls"):
                    self.assertEqual(sent[i + 1]["role"], "tool")

    def test_a_pin_on_a_tool_answer_keeps_its_call_with_it(self):
        chat, transport = make_chat([], tools=[get_weather], MsgMaxCount=4)
        self.exchange(chat, transport, "qA", "A")
        chat.pin(2)  # the tool answer
        self.exchange(chat, transport, "qB", "B")
        messages = chat.fetch_messages()
        self.assertIn({"role": "tool", "tool_call_id": "c_A", "content": "sunny in A for 1 day(s)"}, messages)
        index = messages.index({"role": "tool", "tool_call_id": "c_A", "content": "sunny in A for 1 day(s)"})
        self.assertEqual(messages[index - 1]["tool_calls"][0]["id"], "c_A")

    def test_dump_and_load_round_trip_tool_rounds(self):
        chat, transport = make_chat([], tools=[get_weather])
        self.exchange(chat, transport, "one", "A")
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "c.json")
            chat.dump(path)
            other, _ = make_chat([])
            other.load(path)
        self.assertEqual(other.fetch_messages(), chat.fetch_messages())


class RunTools(unittest.TestCase):
    def test_low_level_loop_returns_the_final_completion_and_the_added_messages(self):
        transport = MemoryTransport([Reply(tool_calls=[call("c1", "get_weather", {"city": "Nice"})]), Reply("Sunny.")])
        client = OpenAI(api_key=KEY, base_url=BASE, transport=transport)
        messages = [{"role": "user", "content": "Nice?"}]
        done = client.chat.completions.run_tools(model="m", messages=messages, tools=[get_weather])
        self.assertEqual(done.choices[0].message.content, "Sunny.")
        self.assertEqual(len(messages), 1)  # the caller's list is not changed
        self.assertEqual([m["role"] for m in done.new_messages], ["assistant", "tool", "assistant"])
        self.assertEqual([c.id for c in done.tool_call_records], ["c1"])
        self.assertEqual(transport.requests[1].json["messages"], messages + done.new_messages[:2])
        self.assertNotIn("new_messages", done)  # the completion's own fields are untouched

    def test_stream_is_refused_with_a_pointer(self):
        client = OpenAI(api_key=KEY, base_url=BASE, transport=MemoryTransport([]))
        with self.assertRaises(TypeError):
            client.chat.completions.run_tools(model="m", messages=[], tools=[get_weather], stream=True)


def corpus_tool_files():
    try:
        with open(os.path.join(CORPUS, "expected.json"), encoding="utf-8") as handle:
            expected = json.load(handle)
    except OSError:
        return {}
    return {rel: exp for rel, exp in expected.items() if exp.get("tool_calls")}


@unittest.skipUnless(os.path.isdir(CORPUS), "the wire corpus lives beside the repository (../shared/wire-corpus)")
class ProviderQuirks(unittest.TestCase):
    """A whole tool loop over each recorded tool-call answer (Mistral without index, Anthropic's
    first index 1, Kimi's id "0" and no finish reason, Qwen, DeepSeek, Gemini ...)."""

    def reply_for(self, rel):
        with open(os.path.join(CORPUS, rel), "rb") as handle:
            raw = handle.read()
        if rel.endswith(".json"):
            return Reply(body=raw)
        if rel.endswith(".jsonl"):
            raw = b"".join(b"data: " + line + b"\n\n" for line in raw.split(b"\n") if line.strip())
        return Reply(raw_stream=raw, content_type="text/event-stream")

    def test_every_recorded_tool_call_runs_and_is_answered(self):
        files = corpus_tool_files()
        self.assertGreaterEqual(len(files), 8)
        for rel, exp in sorted(files.items()):
            with self.subTest(file=rel):
                names = {c["function"]["name"] for c in exp["tool_calls"]}
                ran = []

                def make(name, ran=ran):
                    def run(**kwargs):
                        ran.append((name, kwargs))
                        return "result of " + name

                    run.__name__ = name
                    return run

                chat, transport = make_chat([self.reply_for(rel), Reply("final")], tools=[make(n) for n in sorted(names)])
                streamed = not rel.endswith(".json")
                answer = "".join(chat.stream_request("go")) if streamed else chat.request("go")
                self.assertTrue(answer.endswith("final"), answer)
                want = [(c["function"]["name"], json.loads(c["function"]["arguments"] or "{}")) for c in exp["tool_calls"]]
                self.assertEqual(sorted(ran, key=repr), sorted(want, key=repr))
                sent = transport.requests[1].json["messages"]
                asked = sent[-1 - len(want)]
                ids = [c["id"] for c in asked["tool_calls"]]
                self.assertEqual([m["tool_call_id"] for m in sent[-len(want) :]], ids)
                self.assertEqual(len(set(ids)), len(ids))


if __name__ == "__main__":
    unittest.main()
