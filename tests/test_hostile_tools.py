"""Hostile review of tool calling and structured output: what a user who wants them to fail tries.

Tools that raise ``BaseException`` in worker threads, return lone surrogates, keys, generators;
servers that echo keys into answers that miss the schema, nest answers 100,000 deep, or need a
schema's ``$defs`` where ``list[X]`` wrapping moved them; rung memory written by a forced
strategy.  Each test failed on the code before its fix.  Everything runs on MemoryTransport.
"""

# ruff: noqa: UP006 - typing.List: the dataclasses' hints are evaluated on Python 3.8
from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import typing
import unittest

import openai2
from openai2 import Chat, SchemaValidationError
from openai2.structured import Target, find_json, forget_rungs, remembered_rung
from openai2.testing import MemoryTransport, Reply
from openai2.tools import ToolCall, pending_calls

KEY = "sk-test-hostile-tools-0123456789abcdefXYZ"
BASE = "https://api.test/v1"


def call(call_id, name, arguments):
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": text}}


def make_chat(replies, **options):
    transport = MemoryTransport(replies)
    chat = Chat(KEY, base_url=BASE, model="m", transport=transport, max_retries=0, **options)
    return chat, transport


def sent_tool_answers(transport, index=1):
    return [m for m in transport.requests[index].json["messages"] if m["role"] == "tool"]


@dataclasses.dataclass
class Person:
    name: str
    age: int


@dataclasses.dataclass
class Node:
    name: str
    kids: typing.List[Node]


class ToolsThatMisbehave(unittest.TestCase):
    def quiet_thread_errors(self):
        """A BaseException escaping a thread is printed by threading.excepthook: keep it quiet,
        and record it (the old code let it escape the worker)."""
        escaped = []
        old = threading.excepthook
        threading.excepthook = lambda args: escaped.append(args.exc_type)
        self.addCleanup(setattr, threading, "excepthook", old)
        return escaped

    def test_system_exit_in_one_of_parallel_calls_stops_the_request_as_a_single_call_would(self):
        escaped = self.quiet_thread_errors()

        def boom(n: int) -> str:
            if n == 1:
                raise SystemExit(3)
            return "ok"

        chat, transport = make_chat(
            [Reply(tool_calls=[call("a", "boom", {"n": 1}), call("b", "boom", {"n": 2})]), Reply("never")],
            tools=[boom],
        )
        with self.assertRaises(SystemExit):
            chat.request("go")
        self.assertEqual(chat.fetch_messages(), [])  # no blank "result" sent, nothing kept
        self.assertEqual(len(transport.requests), 1)
        self.assertEqual(escaped, [])

    def test_keyboard_interrupt_in_a_worker_thread_reaches_the_caller(self):
        escaped = self.quiet_thread_errors()

        async def interrupted() -> str:  # an async tool in a sync request runs in a worker thread
            raise KeyboardInterrupt

        chat, transport = make_chat(
            [Reply(tool_calls=[call("a", "interrupted", {})]), Reply("never")], tools=[interrupted]
        )
        with self.assertRaises(KeyboardInterrupt):
            chat.request("go")
        self.assertEqual(chat.fetch_messages(), [])
        self.assertEqual(len(transport.requests), 1)
        self.assertEqual(escaped, [])

    def test_an_async_confirm_in_a_sync_request_is_asked_not_taken_as_yes(self):
        ran, asked = [], []

        def rm(path: str) -> str:
            ran.append(path)
            return "removed"

        async def confirm(c):
            asked.append(c.arguments["path"])
            await asyncio.sleep(0)
            return c.arguments["path"] != "/"

        chat, transport = make_chat(
            [Reply(tool_calls=[call("a", "rm", {"path": "/"}), call("b", "rm", {"path": "/tmp/x"})]), Reply("x")],
            tools=[rm],
            confirm=confirm,
        )
        chat.request("go")
        self.assertEqual(asked, ["/", "/tmp/x"])
        self.assertEqual(ran, ["/tmp/x"])
        self.assertTrue(chat.last_tool_calls[0].declined)

    def test_an_async_confirm_in_a_sync_stream_is_asked_too(self):
        ran = []

        def rm(path: str) -> str:
            ran.append(path)
            return "removed"

        async def never(c):
            return False

        chat, _ = make_chat([Reply(tool_calls=[call("a", "rm", {"path": "/"})]), Reply("x")], tools=[rm], confirm=never)
        "".join(chat.stream_request("go"))
        self.assertEqual(ran, [])

    def test_an_async_request_runs_at_most_eight_sync_tools_at_a_time(self):
        from openai2.tools import TOOL_MAX_WORKERS

        lock, state = threading.Lock(), {"active": 0, "most": 0}
        too_many = threading.Event()

        def work(n: int) -> str:
            with lock:
                state["active"] += 1
                state["most"] = max(state["most"], state["active"])
                if state["active"] > TOOL_MAX_WORKERS:
                    too_many.set()
            too_many.wait(0.05)  # overlap with the others; released at once if the cap is broken
            with lock:
                state["active"] -= 1
            return str(n)

        count = 3 * TOOL_MAX_WORKERS
        calls = [call("c%d" % n, "work", {"n": n}) for n in range(count)]
        chat, transport = make_chat([Reply(tool_calls=calls), Reply("done")], tools=[work])
        self.assertEqual(asyncio.run(chat.async_request("go")), "done")
        self.assertEqual([m["content"] for m in sent_tool_answers(transport)], [str(n) for n in range(count)])
        self.assertLessEqual(state["most"], TOOL_MAX_WORKERS)
        self.assertFalse(too_many.is_set())

    def test_a_method_taken_from_its_class_is_refused_when_the_tool_is_defined(self):
        class Store:
            def get(self, key: str) -> str:
                return key

        with self.assertRaises(TypeError) as caught:
            make_chat([], tools=[Store.get])  # the model would have had to send "self"
        self.assertIn("Store().get", str(caught.exception))
        chat, _ = make_chat([], tools=[Store().get])
        self.assertIsNotNone(chat)

        def plain(self: int) -> int:  # a plain function may name a parameter self
            return self

        from openai2 import tool_schema

        self.assertEqual(tool_schema(plain)["function"]["parameters"]["required"], ["self"])

    def test_a_result_with_a_lone_surrogate_is_sent_with_a_replacement_character(self):
        def read_log() -> str:
            return b"bad \xff byte".decode("utf-8", "surrogateescape")

        chat, transport = make_chat([Reply(tool_calls=[call("a", "read_log", {})]), Reply("fine")], tools=[read_log])
        self.assertEqual(chat.request("go"), "fine")
        (answer,) = sent_tool_answers(transport)
        self.assertEqual(answer["content"], "bad \ufffd byte")
        self.assertEqual(chat.last_tool_calls[0].result, "bad \ufffd byte")

    def test_an_error_message_with_a_lone_surrogate_goes_back_readable(self):
        def fails() -> str:
            raise OSError("cannot open " + b"\xff.txt".decode("utf-8", "surrogateescape"))

        chat, transport = make_chat([Reply(tool_calls=[call("a", "fails", {})]), Reply("fine")], tools=[fails])
        self.assertEqual(chat.request("go"), "fine")
        (answer,) = sent_tool_answers(transport)
        self.assertEqual(answer["content"], "OSError: cannot open \ufffd.txt")

    def test_a_key_in_a_tool_result_is_masked_before_it_joins_the_history_or_is_sent(self):
        def leak() -> dict:
            return {"config": "api_key=" + KEY}

        chat, transport = make_chat([Reply(tool_calls=[call("a", "leak", {})]), Reply("fine")], tools=[leak])
        chat.request("go")
        self.assertNotIn(KEY, json.dumps(transport.requests[1].json))
        self.assertNotIn(KEY, json.dumps(chat.fetch_messages()))
        self.assertNotIn(KEY, chat.last_tool_calls[0].result)
        self.assertIn("api_key=sk-", chat.last_tool_calls[0].result)

    def test_a_key_in_an_async_tool_result_is_masked_too(self):
        async def leak() -> str:
            return KEY

        chat, transport = make_chat([Reply(tool_calls=[call("a", "leak", {})]), Reply("fine")], tools=[leak])
        asyncio.run(chat.async_request("go"))
        self.assertNotIn(KEY, json.dumps(transport.requests[1].json))

    def test_a_generator_result_goes_back_as_a_json_list(self):
        def lines():
            yield "one"
            yield "two"

        def keys() -> object:
            return {"a": 1, "b": 2}.keys()

        chat, transport = make_chat(
            [Reply(tool_calls=[call("a", "lines", {}), call("b", "keys", {})]), Reply("fine")], tools=[lines, keys]
        )
        chat.request("go")
        self.assertEqual([json.loads(m["content"]) for m in sent_tool_answers(transport)], [["one", "two"], ["a", "b"]])

    def test_results_that_are_text_or_mappings_in_disguise_stay_text_and_objects(self):
        from collections import UserDict, UserString

        from openai2.tools import tool_result_text

        self.assertEqual(json.loads(tool_result_text([UserString("abc"), UserDict({"a": 1})])), ["abc", {"a": 1}])
        self.assertEqual(json.loads(tool_result_text({"raw": b"\xffok"})), {"raw": "\ufffdok"})

    def test_an_endless_generator_result_is_cut_not_waited_for(self):
        import itertools

        def forever() -> object:
            return itertools.count()

        chat, transport = make_chat([Reply(tool_calls=[call("a", "forever", {})]), Reply("fine")], tools=[forever])
        self.assertEqual(chat.request("go"), "fine")
        self.assertIn("the result was cut", sent_tool_answers(transport)[0]["content"])


class AnswersThatMisbehave(unittest.TestCase):
    def setUp(self):
        forget_rungs()
        self.addCleanup(forget_rungs)

    def test_an_answer_nested_too_deeply_is_a_schema_validation_error_not_a_recursion_error(self):
        chat, transport = make_chat([Reply("[" * 100_000), Reply("{" * 50_000)])
        with self.assertRaises(SchemaValidationError) as caught:
            chat.parse("x", Person)
        self.assertIn("no JSON", str(caught.exception))
        self.assertEqual(len(transport.requests), 2)  # the one repair allowed
        self.assertEqual(chat.fetch_messages(), [])

    def test_find_json_skips_a_value_nested_too_deeply(self):
        self.assertEqual(find_json("[" * 100_000), (False, None))
        self.assertEqual(find_json("```json\n" + "[" * 100_000 + "\n```"), (False, None))
        self.assertEqual(find_json("[" * 100_000 + ' and then {"a": 1}'), (True, {"a": 1}))

    def test_a_list_of_recursive_dataclasses_parses(self):
        target = Target(typing.List[Node])
        self.assertIn("$defs", target.schema)  # at the root, where "#/$defs/Node" points
        chat, transport = make_chat([Reply('{"value": [{"name": "a", "kids": [{"name": "b", "kids": []}]}]}')])
        self.assertEqual(chat.parse("x", typing.List[Node]), [Node("a", [Node("b", [])])])
        sent = transport.requests[0].json["response_format"]["json_schema"]["schema"]
        self.assertEqual(sent["properties"]["value"]["items"], {"$ref": "#/$defs/Node"})
        self.assertIn("Node", sent["$defs"])

    def test_a_schema_dict_with_a_root_ref_parses(self):
        schema = {"$ref": "#/$defs/P", "$defs": {"P": {"type": "object", "properties": {"a": {"type": "integer"}}}}}
        chat, _ = make_chat([Reply('{"value": {"a": 1}}')])
        self.assertEqual(chat.parse("x", schema), {"a": 1})

    def test_a_key_echoed_in_an_answer_that_misses_the_schema_is_masked_in_the_error(self):
        schema = {"type": "object", "properties": {"mode": {"enum": ["a", "b"]}}, "required": ["mode"]}
        echoed = Reply(json.dumps({"mode": "key " + KEY}))
        chat, _ = make_chat([echoed, echoed])
        with self.assertRaises(SchemaValidationError) as caught:
            chat.parse("x", schema)
        error = caught.exception
        self.assertIn("mode", str(error))
        for text in (str(error), repr(error.errors), error.raw, json.dumps(error.completion)):
            self.assertNotIn(KEY, text)

    def test_a_bare_list_for_a_wrapped_target_is_taken_without_a_repair(self):
        chat, transport = make_chat([Reply('Here they are: [{"name": "a", "age": 1}]')])
        self.assertEqual(chat.parse("x", typing.List[Person], strategy="prompt"), [Person("a", 1)])
        self.assertEqual(len(transport.requests), 1)

    def test_the_json_value_that_fits_is_taken_even_after_an_example_in_the_prose(self):
        chat, transport = make_chat([Reply('For {"name": 1} I would say: {"name": "Ann", "age": 7}')])
        self.assertEqual(chat.parse("x", Person, strategy="prompt"), Person("Ann", 7))
        self.assertEqual(len(transport.requests), 1)

    def test_nan_in_an_answer_is_not_a_number_of_the_schema(self):
        schema = {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}
        chat, transport = make_chat([Reply('{"x": NaN}'), Reply('{"x": 1.5}')])
        self.assertEqual(chat.parse("x", schema), {"x": 1.5})
        self.assertIn("NaN (not a JSON number)", transport.requests[1].json["messages"][-1]["content"])

    def test_infinity_in_tool_arguments_goes_back_as_an_invalid_argument(self):
        ran = []

        def scale(factor: float) -> str:
            ran.append(factor)
            return "ok"

        chat, transport = make_chat(
            [Reply(tool_calls=[call("a", "scale", '{"factor": Infinity}')]), Reply("x")], tools=[scale]
        )
        chat.request("go")
        self.assertEqual(ran, [])
        self.assertTrue(chat.last_tool_calls[0].failed)
        self.assertIn("Infinity", sent_tool_answers(transport)[0]["content"])

    def test_a_schema_whose_refs_only_point_at_each_other_is_refused_before_anything_is_sent(self):
        schema = {"$ref": "#/$defs/A", "$defs": {"A": {"$ref": "#/$defs/B"}, "B": {"$ref": "#/$defs/A"}}}
        chat, transport = make_chat([Reply('{"a": 1}')])
        with self.assertRaises(TypeError) as caught:
            chat.parse("x", schema)
        self.assertIn("#/$defs/A", str(caught.exception))
        self.assertEqual(transport.requests, [])

    def test_the_sdks_response_format_dict_is_understood_as_its_schema(self):
        schema = {
            "type": "object",
            "properties": {"a": {"type": "integer"}},
            "required": ["a"],
            "additionalProperties": False,
        }
        wrapper = {"type": "json_schema", "json_schema": {"name": "thing", "schema": schema, "strict": True}}
        transport = MemoryTransport([Reply('{"a": 3}')])
        client = openai2.OpenAI(api_key=KEY, base_url=BASE, transport=transport)
        done = client.chat.completions.parse(
            model="m", messages=[{"role": "user", "content": "x"}], response_format=wrapper
        )
        self.assertEqual(done.choices[0].message.parsed, {"a": 3})
        self.assertEqual(transport.requests[0].json["response_format"], wrapper)

    def test_a_refusal_of_one_schema_does_not_lower_the_rung_for_every_schema(self):
        refusal = Reply(
            status=400,
            content="Invalid schema for response_format 'Person': In context=(), 'additionalProperties' is "
            "required to be supplied and to be false.",
            error_type="invalid_request_error",
        )
        chat, transport = make_chat([refusal, Reply('{"name": "a", "age": 1}'), Reply('{"name": "b", "age": 2}')])
        self.assertEqual(chat.parse("x", Person), Person("a", 1))  # down one rung for this call
        self.assertEqual(transport.requests[1].json["response_format"]["type"], "json_object")
        self.assertIsNone(remembered_rung(BASE, "m"))
        chat.parse("y", Person)
        self.assertEqual(transport.requests[2].json["response_format"]["type"], "json_schema")

    def test_a_forced_strategy_leaves_the_remembered_rung_alone(self):
        chat, transport = make_chat([Reply('{"name": "a", "age": 1}'), Reply('{"name": "b", "age": 2}')])
        chat.parse("x", Person, strategy="prompt")
        self.assertIsNone(remembered_rung(BASE, "m"))
        chat.parse("y", Person)  # auto: starts at the top, not at the rung a forced call used
        self.assertEqual(transport.requests[1].json["response_format"]["type"], "json_schema")
        self.assertEqual(remembered_rung(BASE, "m"), "json_schema")


class KeysAndCopies(unittest.TestCase):
    SEARCH = {
        "type": "function",
        "function": {"name": "search", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}},
    }

    def test_a_key_echoed_in_call_arguments_is_masked_in_the_records_repr(self):
        def lookup(q: str) -> str:
            return "found"

        chat, _ = make_chat(
            [
                Reply(tool_calls=[call("a", "lookup", {"q": KEY}), call("b", "nothere", '{"q": "%s"' % KEY)]),
                Reply("ok"),
            ],
            tools=[lookup],
        )
        chat.request("go")
        shown = repr(chat.last_tool_calls) + "".join(c.call_text() for c in chat.last_tool_calls)
        self.assertNotIn(KEY, shown)
        self.assertIn("lookup(q='sk-", shown)

    def test_call_text_masks_a_long_key_before_cutting_it(self):
        long_key = "sk-" + "k" * 120
        record = ToolCall("a", "f", "", [long_key])
        record.arguments = {"token": long_key, "deep": json.loads("[" * 500 + "]" * 500), "big": "x" * 5_000_000}
        for text in (record.call_text(60), repr(record)):
            self.assertNotIn("k" * 20, text)  # no stretch of the key survives a cut
            self.assertLess(len(text), 1000)

    def test_pending_calls_mask_the_keys_they_are_given(self):
        history = [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": None, "tool_calls": [call("a", "search", {"q": KEY})]},
        ]
        (record,) = pending_calls(history, [KEY])
        self.assertEqual(record.arguments, {"q": KEY})  # the data is the model's
        self.assertNotIn(KEY, repr(record) + record.call_text())

    def test_pending_calls_of_a_hand_made_history_with_object_arguments(self):
        history = [
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": {"x": 1}}}],
            },
        ]
        (record,) = pending_calls(history)
        self.assertEqual((record.id, record.arguments), ("a", {"x": 1}))

    def test_call_text_escapes_control_characters_a_model_put_in_keyword_names(self):
        asked = []

        def configure(level: int, **options: object) -> str:
            return "ok"

        forged = "\x1b[2K\rRun configure(level=1)? [y/N] "
        chat, _ = make_chat(
            [Reply(tool_calls=[call("a", "configure", {"level": 1, forged: "rm -rf /"})]), Reply("x")],
            tools=[configure],
            confirm=lambda c: asked.append(c.call_text()) or False,
        )
        chat.request("go")
        (question,) = asked
        self.assertTrue(question.isprintable(), question)  # the CLI's y/N line cannot be rewritten
        self.assertIn("rm -rf /", question)

    def test_call_text_of_arguments_that_are_not_json_is_printable(self):
        record = ToolCall("a", "f", '{"x": "\x1b]0;owned\x07', [KEY])
        self.assertTrue(record.call_text().isprintable())

    def test_chat_pending_calls_and_the_refusal_of_a_new_question_mask_an_echoed_key(self):
        chat, _ = make_chat([Reply(tool_calls=[call("a", "search", {"q": KEY})])], tools=[self.SEARCH])
        chat.request("go")
        self.assertNotIn(KEY, repr(chat.pending_tool_calls))
        with self.assertRaises(ValueError) as caught:
            chat.request("again")
        self.assertNotIn(KEY, str(caught.exception))

    def test_a_user_message_added_while_calls_wait_is_refused_not_left_to_break_every_request(self):
        chat, transport = make_chat(
            [Reply(tool_calls=[call("a", "search", {"q": "x"})]), Reply("x")], tools=[self.SEARCH]
        )
        chat.request("one")
        try:
            chat.add_dialogs({"role": "user", "content": "meanwhile"})
        except ValueError as exc:
            self.assertIn("add_tool_result", str(exc))
            return
        chat.request("two")
        sent = transport.requests[-1].json["messages"]
        for i, message in enumerate(sent):
            if message.get("tool_calls"):  # the API: each call answered by the messages right after
                answers = {m.get("tool_call_id") for m in sent[i + 1 : i + 1 + len(message["tool_calls"])]}
                self.assertEqual(answers, {c["id"] for c in message["tool_calls"]})

    def test_a_lone_surrogate_in_a_low_level_request_is_a_value_error_naming_the_field(self):
        transport = MemoryTransport([Reply("x")])
        client = openai2.OpenAI(api_key=KEY, base_url=BASE, transport=transport)
        with self.assertRaises(ValueError) as caught:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "a\udcff"}])
        self.assertNotIsInstance(caught.exception, UnicodeError)
        self.assertIn("messages", str(caught.exception))
        self.assertEqual(transport.requests, [])

    def test_a_key_in_a_result_given_to_add_tool_result_is_masked(self):
        chat, transport = make_chat(
            [Reply(tool_calls=[call("a", "search", {"q": "x"})]), Reply("x")], tools=[self.SEARCH]
        )
        chat.request("one")
        chat.add_tool_result("a", {"token": KEY})
        chat.request()
        self.assertNotIn(KEY, json.dumps(transport.requests[-1].json))
        self.assertNotIn(KEY, json.dumps(chat.fetch_messages()))

    def test_editing_last_request_of_a_tool_round_leaves_the_history_alone(self):
        def get_weather(city: str) -> str:
            return "sunny"

        chat, _ = make_chat(
            [Reply(tool_calls=[call("a", "get_weather", {"city": "P"})]), Reply("x")], tools=[get_weather]
        )
        chat.request("go")
        chat.last_request["messages"][1]["tool_calls"][0]["function"]["name"] = "edited"
        chat.last_request["messages"][2]["content"] = "edited"
        self.assertEqual(chat.fetch_messages()[1]["tool_calls"][0]["function"]["name"], "get_weather")
        self.assertEqual(chat.fetch_messages()[2]["content"], "sunny")

    def test_editing_last_request_of_a_later_exchange_leaves_the_history_alone(self):
        def get_weather(city: str) -> str:
            return "sunny"

        chat, _ = make_chat(
            [Reply(tool_calls=[call("a", "get_weather", {"city": "P"})]), Reply("x"), Reply("y")], tools=[get_weather]
        )
        chat.request("one")
        chat.request("two", tools=None)
        chat.last_request["messages"][1]["tool_calls"][0]["function"]["name"] = "edited"
        self.assertEqual(chat.fetch_messages()[1]["tool_calls"][0]["function"]["name"], "get_weather")


class CommandLine(unittest.TestCase):
    def test_an_unknown_tool_name_with_escape_sequences_is_not_printed_raw(self):
        import io
        import os
        import tempfile

        from openai2.cli import main

        with tempfile.TemporaryDirectory() as folder:
            old = os.environ.get("OPENAI2_HOME")
            os.environ["OPENAI2_HOME"] = os.path.join(folder, "home")
            try:
                path = os.path.join(folder, "w.py")
                with open(path, "w", encoding="utf-8") as handle:
                    handle.write("def get_weather(city: str) -> str:\n    return 'sunny'\n")
                forged = "\x1b]0;pwned\x07\x1b[2K"
                transport = MemoryTransport([Reply(tool_calls=[call("a", forged, {"city": "x"})]), Reply("done")])
                err = io.StringIO()
                code = main(
                    ["chat", "--yes", "--functions", path, "go", "--api-key", KEY, "--base-url", BASE, "--no-save"],
                    stdin=io.StringIO(""),
                    stdout=io.StringIO(),
                    stderr=err,
                    transport=transport,
                )
            finally:
                if old is None:
                    os.environ.pop("OPENAI2_HOME", None)
                else:
                    os.environ["OPENAI2_HOME"] = old
        self.assertEqual(code, 0)
        self.assertIn("no tool named", err.getvalue())
        self.assertNotIn("\x1b", err.getvalue())


if __name__ == "__main__":
    unittest.main()
