"""Chat and GroupChat against hostile answers and careless input: what joins the history is
normalised the same way on every path, what cannot be JSON or UTF-8 is refused with its place
named, system prompts survive rollback, archives round-trip, and a stream stops at once from
another thread.

The tests run in memory (tests/support/memory.py: a MemoryTransport where the FakeServer
stood; TestStopFromAnotherThread with ``stalls = "block"``, so that a stall really holds the
stream until it is closed).  TestEndToEndOverSockets keeps on the loopback FakeServer the
close from another thread of a stream blocked in a real socket read (mid-body, and before the
first byte: a delay, and a Gate holding the answer), each followed by a request on the same
client where the test says so.
"""
import asyncio
import json
import os
import threading
import unittest

import openai2
from openai2 import Chat, GroupChat, assistant_msg, system_msg, user_msg
from openai2.groupchat import GroupChatReplyError
from openai2.testing import Reply, chat_chunk, chat_completion
from tests.support.memory import server_options
from tests.support.serving import ChatServerCase, Gate

KEY = "sk-test-hostile-0123456789abcdef"
STANDARD = {"role", "content", "name", "tool_calls", "refusal", "audio", "function_call"}


def deep_text(levels):
    return "[" * levels + "]" * levels


class Case(ChatServerCase):
    key = KEY
    chat_defaults = {"model": "gpt-4o-mini", "max_retries": 0}

    def answer_json(self, message, **extra):
        body = chat_completion("placeholder", model="gpt-4o-mini")
        body["choices"][0]["message"] = message
        body.update(extra)
        return Reply(body=body)

    def answer_stream(self, *deltas, finish="stop"):
        events = [chat_chunk(choices=[{"index": 0, "delta": d, "finish_reason": None}]) for d in deltas]
        events.append(chat_chunk(choices=[{"index": 0, "delta": {}, "finish_reason": finish}]))
        return Reply(events=events)


class TestRollbackKeepsWhatPrecedesTheFirstRound(Case):
    def test_rolling_back_every_round_keeps_an_added_system_prompt(self):
        c = self.chat()
        c.add_dialogs(system_msg("Be brief."), assistant_msg("Hello, ask me anything."))
        c.request("自然数1的后面是几?")
        self.assertEqual(repr(c.rollback(1)), "")
        self.assertEqual(c.fetch_messages(), [{"role": "system", "content": "Be brief."},
                                              {"role": "assistant", "content": "Hello, ask me anything."}])
        c.request("again")
        self.assertEqual(self.server.requests[-1].json["messages"][0], {"role": "system", "content": "Be brief."})

    def test_more_rounds_than_there_are_keeps_a_loaded_or_replaced_system_prompt(self):
        path = os.path.join(self.tmp, "s.json")
        first = self.chat()
        first.add_dialogs(system_msg("sys"))
        first.request("q1")
        first.dump(path)
        loaded = self.chat()
        loaded.load(path)
        loaded.request("q2")
        loaded.rollback(10)
        self.assertEqual(loaded.fetch_messages(), [{"role": "system", "content": "sys"}])
        replaced = self.chat()
        replaced.replace_messages([system_msg("sys2"), user_msg("a"), assistant_msg("b")])
        replaced.rollback(2)
        self.assertEqual(replaced.fetch_messages(), [{"role": "system", "content": "sys2"}])


class TestWhatJoinsTheHistory(Case):
    def test_content_that_is_not_text_is_refused_and_nothing_is_kept(self):
        c = self.chat()
        c.request("first")
        before = c.fetch_messages()
        for content in ({"text": "hi", "echo": KEY}, 42, [{"type": "image_url", "image_url": {"url": "x"}}]):
            self.server.replies.append(self.answer_json({"role": "assistant", "content": content}))
            with self.subTest(content=content):
                with self.assertRaises(openai2.APIError) as caught:
                    c.request("q")
                self.assertNotIsInstance(caught.exception, openai2.APIConnectionError)
                self.assertIn("content", str(caught.exception))
                self.assertNotIn(KEY, str(caught.exception))
                self.assertNotIn(KEY, repr(caught.exception.body))
                self.assertEqual(c.fetch_messages(), before)

    def test_text_parts_are_joined(self):
        c = self.chat()
        self.server.replies.append(self.answer_json({"role": "assistant", "content": [
            {"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}]},
            {"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}]}))
        self.assertEqual(c.request("q"), "Hello")
        self.assertEqual(c.fetch_messages()[-1], {"role": "assistant", "content": "Hello"})

    def test_streamed_foreign_roles_join_as_assistant_and_round_trip(self):
        for role in ("model", "tool", "system", "developer", "user"):
            with self.subTest(role=role):
                c = self.chat()
                self.server.replies.append(self.answer_stream({"role": role, "content": ""}, {"content": "Hi"}))
                self.assertEqual("".join(c.stream_request("q")), "Hi")
                self.assertEqual(c.fetch_messages()[-1], {"role": "assistant", "content": "Hi"})
                path = os.path.join(self.tmp, role + ".json")
                c.dump(path)
                again = self.chat()
                again.load(path)
                again.request("next")
                self.assertEqual([m["role"] for m in self.server.requests[-1].json["messages"]],
                                 ["user", "assistant", "user"])

    def test_async_paths_follow_the_same_rule(self):
        c = self.chat()
        self.server.replies.append(self.answer_json({"role": "model", "content": {"a": 1}}))
        self.server.replies.append(self.answer_stream({"role": "tool", "content": "ok"}))

        async def main():
            with self.assertRaises(openai2.APIError):
                await c.async_request("q")
            self.assertEqual(c.fetch_messages(), [])
            return [p async for p in c.async_stream_request("q2")]

        self.assertEqual(asyncio.run(main()), ["ok"])
        self.assertEqual(c.fetch_messages(), [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "ok"}])

    def test_response_only_fields_are_not_sent_back(self):
        call = {"id": "call_1", "type": "function", "index": 0, "provider_specific_fields": {"x": 1},
                "function": {"name": "f", "arguments": "{}", "provider_specific_fields": None}}
        message = {"role": "assistant", "content": "Sure.", "tool_calls": [call], "annotations": [],
                   "provider_specific_fields": {"citations": None}, "reasoning_content": "r",
                   "audio": {"id": "audio_1", "data": "AAAA", "expires_at": 1, "transcript": "Sure."}}
        self.server.replies.append(self.answer_json(message))
        c = self.chat()
        c.request("use f")
        kept = c.fetch_messages()[-1]
        self.assertEqual(kept, {"role": "assistant", "content": "Sure.", "audio": {"id": "audio_1"},
                                "tool_calls": [{"id": "call_1", "type": "function",
                                                "function": {"name": "f", "arguments": "{}"}}]})
        # the whole answer stays in last_response
        self.assertEqual(c.last_response.choices[0].message.provider_specific_fields, {"citations": None})
        c.add_dialogs({"role": "tool", "tool_call_id": "call_1", "content": "42"})
        c.request("and?")
        sent = self.server.requests[-1].json["messages"][1]
        self.assertLessEqual(set(sent), STANDARD)
        self.assertNotIn("provider_specific_fields", json.dumps(self.server.requests[-1].json))

    def test_what_the_user_adds_is_sent_as_added(self):
        c = self.chat()
        c.add_dialogs(user_msg("Write a poem"), {"role": "assistant", "content": "Roses", "prefix": True})
        c.request("go on")
        self.assertEqual(self.server.requests[-1].json["messages"][1], {"role": "assistant", "content": "Roses", "prefix": True})

    def test_streamed_and_whole_answers_give_the_same_history_message(self):
        call = {"id": "call_9", "type": "function", "function": {"name": "lookup", "arguments": '{"q": 1}'}}
        cases = {
            "refusal": ({"role": "assistant", "content": None, "refusal": "I can't help with that."},
                        [{"role": "assistant", "refusal": "I can't"}, {"refusal": " help with that."}], "stop"),
            "tool call": ({"role": "assistant", "content": "", "tool_calls": [call]},
                          [{"role": "assistant", "tool_calls": [{"index": 0, "id": "call_9", "type": "function",
                                                                  "function": {"name": "lookup", "arguments": ""}}]},
                           {"tool_calls": [{"index": 0, "function": {"arguments": '{"q": 1}'}}]}], "tool_calls"),
            "text": ({"role": "model", "content": "Hi", "provider_specific_fields": {}},
                     [{"role": "model", "content": "H"}, {"content": "i"}], "stop"),
        }
        for name, (whole, deltas, finish) in cases.items():
            with self.subTest(name=name):
                plain, streamed = self.chat(), self.chat()
                self.server.replies.append(self.answer_json(whole))
                plain.request("q")
                self.server.replies.append(self.answer_stream(*deltas, finish=finish))
                list(streamed.stream_request("q"))
                self.assertEqual(streamed.fetch_messages(), plain.fetch_messages())
                self.assertLessEqual(set(plain.fetch_messages()[-1]), STANDARD)

    def test_a_stopped_stream_keeps_its_text_as_an_assistant_message(self):
        c = self.chat()
        self.server.replies.append(self.answer_stream({"role": "model", "content": "a"}, {"content": "b"}, {"content": "c"}))
        stream = c.stream_request("q")
        self.assertEqual(next(stream), "a")
        stream.close()
        self.assertEqual(c.fetch_messages()[-1], {"role": "assistant", "content": "a"})


class TestTextThatCannotBeSent(Case):
    def test_lone_surrogates_are_refused_naming_message_and_position(self):
        c = self.chat()
        with self.assertRaises(ValueError) as caught:
            c.add_dialogs(user_msg("fine"), user_msg("caf\udce9 au lait"))
        self.assertIn("argument 2", str(caught.exception))
        self.assertIn("position 3", str(caught.exception))
        with self.assertRaises(ValueError) as caught:
            c.add_dialogs(user_msg([{"type": "text", "text": "\ud83d"}]))
        self.assertIn("content[0].text", str(caught.exception))
        with self.assertRaises(ValueError):
            c.request("broken \udc80")
        with self.assertRaises(ValueError):
            c.replace_messages([user_msg("x\ud800")])
        with self.assertRaises(ValueError):
            self.chat(system="\udfff")
        self.assertEqual((c.fetch_messages(), self.server.requests), ([], []))
        path = os.path.join(self.tmp, "escaped.json")
        with open(path, "w", encoding="ascii") as f:
            f.write('[{"role": "user", "content": "\\ud800"}]')
        with self.assertRaises(ValueError) as caught:
            c.load(path)
        self.assertIn("archive message 0", str(caught.exception))
        self.assertEqual(c.fetch_messages(), [])

    def test_nan_and_infinity_are_refused_naming_the_field(self):
        c = self.chat()
        with self.assertRaises(ValueError) as caught:
            c.add_dialogs({"role": "user", "content": "x", "weight": float("nan")})
        self.assertIn("weight", str(caught.exception))
        path = os.path.join(self.tmp, "nan.json")
        with open(path, "w") as f:
            f.write('[{"role": "user", "content": "x", "score": Infinity}]')
        with self.assertRaises(ValueError) as caught:
            c.load(path)
        self.assertIn("score", str(caught.exception))
        for cls in (Chat, GroupChat):
            with self.subTest(cls=cls.__name__):
                with self.assertRaises(ValueError) as caught:
                    cls(api_key=KEY, model="m", **server_options(self.server), temperature=float("nan"))
                self.assertIn("temperature", str(caught.exception))
                with self.assertRaises(ValueError) as caught:
                    cls(api_key=KEY, model="m", **server_options(self.server), logit_bias={"50256": float("-inf")})
                self.assertIn("logit_bias", str(caught.exception))
        self.assertEqual(c.fetch_messages(), [])

    def test_images_must_be_paths_or_urls(self):
        c = self.chat()
        for bad in (5, [5], {"url": "x"}):
            with self.subTest(images=bad):
                with self.assertRaises(TypeError) as caught:
                    c.request("x", images=bad)
                self.assertIn("images", str(caught.exception))
        self.assertEqual(self.server.requests, [])

    def test_dump_into_a_missing_folder_names_the_users_path(self):
        path = os.path.join(self.tmp, "no", "such", "folder", "f.json")
        for owner in (self.chat(), self.group(roles={"A": "", "B": ""})):
            with self.subTest(owner=type(owner).__name__):
                with self.assertRaises(FileNotFoundError) as caught:
                    owner.dump(path)
                message = str(caught.exception)
                self.assertIn(path, message)
                self.assertIn(os.path.dirname(path), message)
                self.assertIn("does not exist", message)
                self.assertNotIn(".tmp", message)

    def test_deeply_nested_input_is_a_value_error(self):
        c = self.chat()
        nested = {}
        inner = nested
        for _ in range(100000):
            inner["x"] = {}
            inner = inner["x"]
        with self.assertRaises(ValueError):
            c.add_dialogs({"role": "user", "content": "x", "extra": nested})
        path = os.path.join(self.tmp, "deep.json")
        with open(path, "w") as f:
            f.write(deep_text(100000))
        with self.assertRaises(ValueError):
            c.load(path)
        g = self.group(roles={"A": "", "B": ""})
        with self.assertRaises(ValueError):
            g.load(path)
        self.assertEqual((c.fetch_messages(), g.export_dialogs()), ([], []))


class TestLastRequest(Case):
    def test_streams_record_the_body_exactly_as_sent(self):
        c = self.chat()
        list(c.stream_request("q", stream_options={"include_usage": True}))
        self.assertEqual(c.last_request, self.server.requests[-1].json)
        self.assertIs(c.last_request["stream"], True)

        async def main():
            return [p async for p in c.async_stream_request("q2")]

        asyncio.run(main())
        self.assertEqual(c.last_request, self.server.requests[-1].json)
        stream = c.stream_request("q3")
        next(stream)
        stream.close()
        self.assertEqual(c.last_request, self.server.requests[-1].json)
        c.request("q4")
        self.assertEqual(c.last_request, self.server.requests[-1].json)
        self.assertNotIn("stream", c.last_request)


class TestStopFromAnotherThread(Case):
    stalls = "block"  # in memory a stall holds the stream until it is closed

    def consume(self, stream, got, first_pieces, outcome, wanted):
        try:
            for piece in stream:
                got.append(piece)
                if len(got) == wanted:
                    first_pieces.set()
            outcome.append("ended")
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            outcome.append(exc)
        first_pieces.set()

    def test_close_from_another_thread_stops_at_once(self):
        c = self.chat(timeout=(5, 120))
        # three pieces, then the server stalls for a minute (the test ends long before)
        self.server.replies.append(Reply(content="abcdefgh", stall_after=4, stall_seconds=60))
        stream = c.stream_request("q")
        got, outcome, first_pieces = [], [], threading.Event()
        reader = threading.Thread(target=self.consume, args=(stream, got, first_pieces, outcome, 3), daemon=True)
        reader.start()
        self.assertTrue(first_pieces.wait(10))
        stream.close()  # the "stop" button
        # the partial answer is kept by close() itself, before it returns
        self.assertEqual(len(c.fetch_messages()), 2)
        reader.join(10)
        self.assertFalse(reader.is_alive(), "the reading thread still waits for the server")
        self.assertEqual(outcome, ["ended"])
        self.assertEqual(c.fetch_messages(), [{"role": "user", "content": "q"},
                                              {"role": "assistant", "content": "".join(got)}])
        self.assertEqual("".join(got), "abc")
        stream.close()
        self.assertEqual(list(stream), [])
        self.assertEqual(len(c.fetch_messages()), 2)  # committed exactly once
        self.assertEqual(c.request("自然数1的后面是几?"), "2")

    def test_close_while_the_gate_holds_the_first_byte_keeps_nothing(self):
        # over sockets the close shuts the socket down; in memory it cancels the wait at the gate
        c = self.chat(timeout=(5, 120))
        gate = Gate()
        self.addCleanup(gate.release.set)
        self.server.replies.append(Reply(content="late", gate=gate, gate_timeout=3600))
        stream = c.stream_request("q")
        got, outcome, done = [], [], threading.Event()
        reader = threading.Thread(target=self.consume, args=(stream, got, done, outcome, 1), daemon=True)
        reader.start()
        self.assertTrue(gate.arrived.wait(10))  # the request is at the server, no answer yet
        stream.close()
        reader.join(10)
        self.assertFalse(reader.is_alive())
        self.assertEqual((outcome, got, c.fetch_messages()), (["ended"], [], []))

    def test_closes_racing_from_several_threads_commit_once(self):
        c = self.chat(timeout=(5, 120))
        self.server.replies.append(Reply(content="abcdefgh", stall_after=4, stall_seconds=60))
        stream = c.stream_request("q")
        got, outcome, first_pieces = [], [], threading.Event()
        reader = threading.Thread(target=self.consume, args=(stream, got, first_pieces, outcome, 3), daemon=True)
        reader.start()
        self.assertTrue(first_pieces.wait(10))
        barrier = threading.Barrier(4)
        closers = [threading.Thread(target=lambda: (barrier.wait(10), stream.close()), daemon=True) for _ in range(4)]
        for t in closers:
            t.start()
        for t in closers + [reader]:
            t.join(10)
            self.assertFalse(t.is_alive())
        self.assertEqual(outcome, ["ended"])
        self.assertEqual(c.fetch_messages(), [{"role": "user", "content": "q"}, {"role": "assistant", "content": "abc"}])

    def test_close_inside_the_reasoning_callback_stops_quietly(self):
        c = self.chat()
        self.server.replies.append(Reply(content="answer", reasoning=["a", "b", "c"]))
        holder = []
        stream = c.stream_request("q", on_reasoning=lambda text: holder[0].close())
        holder.append(stream)
        self.assertEqual(list(stream), [])
        self.assertEqual(c.fetch_messages(), [])  # no text had arrived: nothing kept

    def test_a_finalizer_running_while_the_chat_is_locked_does_not_deadlock(self):
        # PyPy runs finalizers at a collection, in whatever thread triggers it: possibly one that
        # holds the Chat's lock at that moment. The dropped stream's commit must not wait for it.
        for kind in ("sync", "async"):
            with self.subTest(kind=kind):
                c = self.chat()
                self.server.replies.append(Reply(chunks=["a", "b", "c", "d"]))
                if kind == "sync":
                    stream = c.stream_request("q")
                    self.assertEqual(next(stream), "a")
                else:
                    async def first(s):
                        return await s.__anext__()

                    stream = c.async_stream_request("q")
                    loop = asyncio.new_event_loop()
                    self.addCleanup(loop.close)
                    self.assertEqual(loop.run_until_complete(first(stream)), "a")
                finalized = threading.Event()

                def collect_while_locked(stream=stream, c=c, finalized=finalized):
                    with c._lock:  # as if the collector ran inside a locked section
                        stream.__del__()
                    finalized.set()

                worker = threading.Thread(target=collect_while_locked, daemon=True)
                worker.start()
                worker.join(10)
                self.assertTrue(finalized.is_set(), "the finalizer waited for a lock its own thread held")
                for _ in range(200):  # the handed-off commit lands once the lock is free
                    if len(c.fetch_messages()) == 2:
                        break
                    threading.Event().wait(0.01)
                self.assertEqual(c.fetch_messages()[1], {"role": "assistant", "content": "a"})

    def test_close_while_waiting_for_the_first_byte_keeps_nothing(self):
        c = self.chat(timeout=(5, 3600))
        # the request arrives, then its answer is held back for an hour (in memory: blocking)
        self.server.replies.append(Reply(content="late", delay=3600))
        stream = c.stream_request("q")
        got, outcome, done = [], [], threading.Event()
        reader = threading.Thread(target=self.consume, args=(stream, got, done, outcome, 1), daemon=True)
        reader.start()
        self.assertTrue(self.server.wait_for_requests(1, 10))  # the request is in, no answer yet
        stream.close()
        reader.join(10)
        self.assertFalse(reader.is_alive())
        self.assertEqual((outcome, got, c.fetch_messages()), (["ended"], [], []))

class TestGroupChatArchives(Case):
    ROLES = {"苏轼": "宋朝诗人。", "李清照": "宋代女词人。", "杜甫": "唐朝诗人。"}

    def test_dump_after_a_role_left_loads_back_whole(self):
        g = self.group(roles=dict(self.ROLES))
        g.add_dialog("苏轼", ["李清照"], "你好呀")
        g.add_dialog("杜甫", ["苏轼", "李清照"], "诗写好了吗?")
        del g.roles["杜甫"]
        g.roles["易安居士"] = g.roles.pop("李清照")  # renamed
        path = os.path.join(self.tmp, "scene.json")
        g.dump(path)
        other = self.group()
        other.load(path)
        self.assertEqual((other.roles, other.export_dialogs()), (g.roles, g.export_dialogs()))
        # the departed speaker's remark is part of the conversation the next request shows
        self.assertIn("诗写好了吗?", other.build_messages([("苏轼", ["易安居士"])])[1]["content"])
        other.request([("苏轼", ["易安居士"])])

    def test_dump_refuses_roles_load_would_refuse(self):
        g = self.group(roles={"A": "", "B": ""})
        g.roles["C"] = 5
        path = os.path.join(self.tmp, "bad.json")
        with self.assertRaises(ValueError) as caught:
            g.dump(path)
        self.assertIn("'C'", str(caught.exception))
        self.assertFalse(os.path.exists(path))

    def test_a_deeply_nested_reply_is_a_reply_error(self):
        g = self.group(roles={"A": "", "B": ""})
        for reply in ("[" * 100000, deep_text(100000), "Here: " + "{\"a\": " * 100000):
            self.server.replies.append(Reply(content=reply))
            with self.assertRaises(GroupChatReplyError):
                g.request_remarks([("A", ["B"])], record=True)
        self.assertEqual(g.export_dialogs(), [])

    def test_a_broken_escape_in_a_reply_still_archives(self):
        g = self.group(roles={"A": "", "B": ""})
        self.server.replies.append(Reply(content='[{"speaker": "A", "audiences": ["B"], "remark": "hi \\ud83d"}]'))
        g.request_remarks([("A", ["B"])], record=True)
        path = os.path.join(self.tmp, "g.json")
        g.dump(path)
        other = self.group()
        other.load(path)
        self.assertEqual(other.export_dialogs(), [{"speaker": "A", "audiences": ["B"], "remark": "hi \ufffd"}])


class TestDefaultRequestOptions(Case):
    """extra_headers / extra_body given to Chat or GroupChat as defaults act as per-call ones:
    sent as headers and merged into the body, never as literal JSON fields."""

    def assertSentAsOptions(self, request, seed):
        self.assertEqual(request.headers.get("x-tenant"), "t1")
        self.assertNotIn("extra_headers", request.json)
        self.assertNotIn("extra_body", request.json)
        self.assertEqual(request.json["seed"], seed)

    def test_chat_default_extra_headers_and_extra_body(self):
        chat = self.chat(extra_headers={"X-Tenant": "t1"}, extra_body={"seed": 7})
        for call, seed in (({}, 7), ({"extra_body": {"seed": 8}}, 8), ({"extra_headers": None}, 7)):
            with self.subTest(call=call):
                self.server.replies.append(Reply(content="ok"))
                chat.request("hi", **call)
                self.assertSentAsOptions(self.server.requests[-1], seed)
        self.server.replies.append(Reply(content="ok"))
        "".join(chat.stream_request("hi"))
        self.assertSentAsOptions(self.server.requests[-1], 7)
        self.assertEqual(chat.params, {"model": "gpt-4o-mini", "extra_headers": {"X-Tenant": "t1"}, "extra_body": {"seed": 7}})

    def test_groupchat_default_extra_headers_and_extra_body(self):
        group = self.group(roles={"A": "", "B": ""}, extra_headers={"X-Tenant": "t1"}, extra_body={"seed": 7})
        self.server.replies.append(Reply(content="ok"))
        group.request([("A", ["B"])])
        self.assertSentAsOptions(self.server.requests[-1], 7)


class TestDefaultParameterChecks(Case):
    def test_defaults_that_are_not_json_or_a_model_that_is_not_text_are_refused_at_construction(self):
        for make in (self.chat, lambda **kw: self.group(roles={"A": ""}, **kw)):
            with self.assertRaises(ValueError) as cm:
                make(temperature={"a": {1}})
            self.assertIn("temperature", str(cm.exception))
            self.assertIn("not JSON", str(cm.exception))
            with self.assertRaises(TypeError):
                make(model=5)
        self.assertEqual(self.server.requests, [])


class TestStreamedAndWholeAnswersJoinAlike(Case):
    """Each answer given once whole and once streamed: the same history message, or the same
    refusal with the history unchanged."""

    CASES = {
        "legacy function_call": (
            {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": '{"a":1}'}},
            [{"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": ""}},
             {"function_call": {"arguments": '{"a"'}}, {"function_call": {"name": "f", "arguments": ":1}"}}],
            "function_call",
            {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": '{"a":1}'}}),
        "name": (
            {"role": "assistant", "content": "hi", "name": "bot"},
            [{"role": "assistant", "content": "hi", "name": "bot"}], "stop",
            {"role": "assistant", "content": "hi", "name": "bot"}),
        "audio": (
            {"role": "assistant", "content": None, "audio": {"id": "audio_1", "data": "AAA", "transcript": "hi"}},
            [{"role": "assistant", "audio": {"id": "audio_1", "transcript": "hi"}}, {"audio": {"data": "AAA"}}],
            "stop",
            {"role": "assistant", "content": "", "audio": {"id": "audio_1"}}),
        "integer tool call id": (
            {"role": "assistant", "content": None,
             "tool_calls": [{"id": 7, "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            [{"tool_calls": [{"index": 0, "id": 7, "type": "function", "function": {"name": "f", "arguments": "{}"}}]}],
            "tool_calls",
            {"role": "assistant", "content": None,
             "tool_calls": [{"id": "7", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}),
        "tool call without function": (
            {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function"}]},
            [{"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1", "type": "function"}]}],
            "tool_calls", None),
        "tool call with an empty name": (
            {"role": "assistant", "content": None,
             "tool_calls": [{"id": "c", "type": "function", "function": {"name": "", "arguments": "{}"}}]},
            [{"tool_calls": [{"index": 0, "id": "c", "type": "function", "function": {"name": "", "arguments": "{}"}}]}],
            "tool_calls", None),
        "function_call without a name": (
            {"role": "assistant", "content": None, "function_call": {"arguments": "{}"}},
            [{"function_call": {"arguments": "{}"}}], "function_call", None),
        "image part in the content": (
            {"role": "assistant", "content": [{"type": "text", "text": "look "},
                                              {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]},
            [{"role": "assistant", "content": [{"type": "text", "text": "look "}]},
             {"content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}],
            "stop", None),
    }

    def test_each_answer_gives_the_same_history_streamed_or_not(self):
        for name, (message, deltas, finish, expected) in self.CASES.items():
            with self.subTest(name):
                results = []
                for streamed in (False, True):
                    c = self.chat()
                    c.request("first")  # the default reply
                    before = c.fetch_messages()
                    if streamed:
                        self.server.replies.append(self.answer_stream(*deltas, finish=finish))
                    else:
                        self.server.replies.append(self.answer_json(message, finish_reason=finish))
                    try:
                        if streamed:
                            "".join(c.stream_request("q"))
                        else:
                            c.request("q")
                    except openai2.APIError as exc:
                        self.assertNotIsInstance(exc, openai2.APIConnectionError)
                        self.assertEqual(c.fetch_messages(), before)
                        results.append("refused")
                    else:
                        self.assertEqual(c.fetch_messages()[:-2], before)
                        results.append(c.fetch_messages()[-1])
                self.assertEqual(results[0], results[1])
                self.assertEqual(results[0], "refused" if expected is None else expected)


def reasoning_event(text):
    return b'data: {"choices":[{"index":0,"delta":{"reasoning_content":"%s"}}]}\n\n' % text


class TestReasoningCallbackText(Case):
    def stream_reasoning(self, *escaped):
        raw = b"".join(reasoning_event(e) for e in escaped)
        raw += b'data: {"choices":[{"index":0,"delta":{"content":"ok"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
        self.server.replies.append(Reply(raw_stream=raw))
        got = []
        c = self.chat()
        self.assertEqual("".join(c.stream_request("q", on_reasoning=got.append)), "ok")
        for piece in got:
            piece.encode("utf-8")  # each piece is valid text
        return got, c

    def test_an_emoji_split_across_chunks_reaches_on_reasoning_whole(self):
        got, c = self.stream_reasoning(b"think \\ud83d", b"\\ude00 done")
        self.assertEqual("".join(got), "think \U0001F600 done")
        self.assertEqual(c.last_reasoning, "think \U0001F600 done")

    def test_lone_surrogates_in_reasoning_become_replacement_characters(self):
        got, c = self.stream_reasoning(b"a\\ude00b", b"c\\ud83d")
        self.assertEqual("".join(got), "a\ufffdbc\ufffd")
        self.assertEqual(c.last_reasoning, "a\ufffdbc\ufffd")


class TestEndToEndOverSockets(Case):
    """Over real loopback sockets (see the module docstring)."""

    sockets = True

    consume = TestStopFromAnotherThread.consume
    test_close_from_another_thread_stops_at_once = TestStopFromAnotherThread.test_close_from_another_thread_stops_at_once
    test_closes_racing_from_several_threads_commit_once = (
        TestStopFromAnotherThread.test_closes_racing_from_several_threads_commit_once)
    test_close_while_waiting_for_the_first_byte_keeps_nothing = (
        TestStopFromAnotherThread.test_close_while_waiting_for_the_first_byte_keeps_nothing)
    test_close_while_the_gate_holds_the_first_byte_keeps_nothing = (
        TestStopFromAnotherThread.test_close_while_the_gate_holds_the_first_byte_keeps_nothing)


if __name__ == "__main__":
    unittest.main()
