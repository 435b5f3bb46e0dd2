"""Chat: the seed examples (000 and 001) against the fake server, and the failure semantics.

The tests run in memory (tests/support/memory.py: a MemoryTransport where the FakeServer
stood; stalls and delays simulated, or really blocking with ``stalls = "block"`` where a test
stops a stuck request).  TestEndToEndOverSockets keeps a subset on the loopback FakeServer,
for what only sockets have: the conversation and a stream over a real keep-alive connection
(and the pool still usable after a stream dropped mid-body), Ctrl-C (SIGINT) arriving while
the main thread is blocked in a real recv(), and an async cancel that must shut a real socket
down so that its worker thread exits.
"""
import asyncio
import gc
import json
import os
import sys
import threading
import unittest

import openai2
from openai2 import AKPool, Chat, assistant_msg, system_msg, user_msg
from openai2.testing import Reply
from tests.support.memory import server_options
from tests.support.serving import ChatServerCase, no_sleep

KEY = "sk-test-chat-0123456789abcdef"


class SeedCase(ChatServerCase):
    key = KEY
    chat_defaults = {"model": "gpt-3.5-turbo"}

    def sent_messages(self, i=-1):
        return self.server.requests[i].json["messages"]


class TestSeedConversation(SeedCase):
    def test_continuous_conversation(self):
        Tony = self.chat()
        Lucy = self.chat()
        self.assertEqual(Tony.request("自然数50的后面是几?"), "51")
        self.assertEqual(Lucy.request("自然数100的后面是几?"), "101")
        self.assertEqual(Tony.request("再往后是几?"), "52")
        self.assertEqual(Lucy.request("再往后是几?"), "102")
        self.assertEqual(Tony.request("再往后呢?"), "53")
        self.assertEqual(Lucy.request("再往后呢?"), "103")
        # the last request carried Lucy's whole history plus the new question
        self.assertEqual([m["content"] for m in self.sent_messages()], ["自然数100的后面是几?", "101", "再往后是几?", "102", "再往后呢?"])
        self.assertEqual(len(Tony.fetch_messages()), 6)

    def test_stream_one_piece_per_character(self):
        Lucy = self.chat()
        pieces = list(Lucy.stream_request("世界上最大的海洋是哪个?"))
        self.assertEqual(pieces, list("世界上最大的海洋是太平洋。"))
        self.assertEqual(Lucy.fetch_messages()[-1], {"role": "assistant", "content": "世界上最大的海洋是太平洋。"})
        self.assertTrue(self.server.requests[-1].json["stream"])

    def test_async_request_and_stream(self):
        Tony = self.chat()

        async def main():
            answer = await Tony.async_request("世界上最大的海洋是哪个")
            pieces = [p async for p in Tony.async_stream_request("世界上最大的海洋是哪个?")]
            return answer, pieces

        answer, pieces = asyncio.run(main())
        self.assertEqual(answer, "世界上最大的海洋是太平洋。")
        self.assertEqual(pieces, list("世界上最大的海洋是太平洋。"))
        self.assertEqual(len(Tony.fetch_messages()), 4)

    def test_rollback_walkthrough(self):
        Anna = self.chat()
        self.assertEqual(Anna.request("自然数1的后面是几?"), "2")
        self.assertEqual(Anna.request("再往后是几?"), "3")
        for expected in "45678":
            self.assertEqual(Anna.request("再往后呢?"), expected)
        shown = Anna.rollback()
        self.assertEqual(repr(shown), "[user]:再往后呢? [assistant]:7")
        self.assertEqual(repr(Anna.rollback(n=3)), "[user]:再往后呢? [assistant]:4")
        self.assertEqual(Anna.request("再往后呢?"), "5")

    def test_rollback_edges(self):
        Anna = self.chat()
        Anna.add_dialogs(system_msg("sys"), assistant_msg("hello first"), user_msg("a"), user_msg("b"), assistant_msg("c"))
        self.assertEqual(repr(Anna.rollback(0)), "[user]:b [assistant]:c")
        self.assertEqual(len(Anna.fetch_messages()), 5)
        self.assertEqual(repr(Anna.rollback()), "[user]:a")
        with self.assertRaises(ValueError):
            Anna.rollback(-1)
        # messages before the first user message belong to no round: one round back leaves them
        self.assertEqual([m["content"] for m in Anna.fetch_messages()], ["sys", "hello first", "a"])
        # more rounds than there are removes every round; what came before the first one stays
        Anna.rollback(100)
        self.assertEqual([m["content"] for m in Anna.fetch_messages()], ["sys", "hello first"])
        Sys = self.chat(system="kept")
        Sys.add_dialogs(assistant_msg("forged opener"), user_msg("q"), assistant_msg("a"))
        Sys.rollback(5)
        self.assertEqual(Sys.fetch_messages(), [{"role": "system", "content": "kept"}, {"role": "assistant", "content": "forged opener"}])

    def test_fetch_messages_is_a_copy(self):
        Ariel = self.chat()
        Ariel.request("自然数1的后面是几?")
        Ariel.request("再往后是几?")
        self.assertEqual(
            Ariel.fetch_messages(),
            [
                {"role": "user", "content": "自然数1的后面是几?"},
                {"role": "assistant", "content": "2"},
                {"role": "user", "content": "再往后是几?"},
                {"role": "assistant", "content": "3"},
            ],
        )
        copy = Ariel.fetch_messages()
        copy[0]["content"] = "changed"
        copy.append({"role": "user", "content": "x"})
        self.assertEqual(Ariel.fetch_messages()[0]["content"], "自然数1的后面是几?")
        self.assertEqual(len(Ariel.fetch_messages()), 4)

    def test_export_import_and_record_json(self):
        Ariel = self.chat()
        Ariel.request("自然数1的后面是几?")
        Ariel.request("再往后是几?")
        record = Ariel.fetch_messages()
        Jenny = self.chat()
        Jenny.add_dialogs(*record)
        self.assertEqual(Jenny.request("再往后呢?"), "4")
        # seed 001's record.json, written by hand, loads too
        path = os.path.join(self.tmp, "record.json")
        with open(path, "w", encoding="utf8") as f:
            f.write(json.dumps(record, ensure_ascii=False))
        Kim = self.chat()
        Kim.load(path)
        self.assertEqual(Kim.fetch_messages(), record)

    def test_dump_and_load(self):
        Tony = self.chat()
        for q in ("自然数50的后面是几?", "再往后是几?", "再往后呢?"):
            Tony.request(q)
        path = os.path.join(self.tmp, "talk_record.json")
        Tony.pin_messages(0)
        Tony.dump(path)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        self.assertIn("自然数50", text)  # human-readable, not \\u escapes
        Jenny = self.chat()
        Jenny.load(path)
        self.assertEqual(Jenny.request("再往后呢?"), "54")
        self.assertEqual(Jenny.pinned_indexes(), [0])
        self.assertEqual(os.listdir(self.tmp), ["talk_record.json"])  # no temporary file left

    def test_load_errors_leave_history_unchanged(self):
        Tony = self.chat()
        Tony.add_dialogs(user_msg("a"), assistant_msg("b"))
        bad = os.path.join(self.tmp, "bad.json")
        for content in ("{not json", json.dumps({"messages": [{"role": "wizard", "content": "x"}]}), json.dumps(42)):
            with open(bad, "w") as f:
                f.write(content)
            with self.assertRaises(ValueError) as cm:
                Tony.load(bad)
            self.assertIn("bad.json", str(cm.exception))
            self.assertEqual(len(Tony.fetch_messages()), 2)
        with self.assertRaises(FileNotFoundError):
            Tony.load(os.path.join(self.tmp, "missing.json"))

    def test_forge_old_and_new_names(self):
        for method in ("forge", "add_dialogs"):
            Mickey = self.chat()
            getattr(Mickey, method)(
                user_msg("请问1+1=几?"),
                assistant_msg("1+1=10"),
                {"role": "user", "content": "那10+10=几?"},
                {"role": "assistant", "content": "10+10=你大爷, 你提的这些问题真弱智!"},
            )
            answer = Mickey.request("哦吼, 你还敢骂我呀?")
            self.assertEqual(answer, "非常抱歉，我刚才的回答有些不适当。1+1=2, 10+10=20。非常抱歉给你带来困扰！")
            self.assertEqual(len(self.sent_messages()), 5)

    def test_invalid_dialogs_append_nothing(self):
        Mickey = self.chat()
        with self.assertRaises(ValueError) as cm:
            Mickey.add_dialogs(user_msg("ok"), {"role": "robot", "content": "x"})
        self.assertIn("argument 2", str(cm.exception))
        with self.assertRaises(ValueError):
            Mickey.add_dialogs({"role": "user"})
        with self.assertRaises(ValueError):
            Mickey.add_dialogs({"role": "user", "content": 5})
        self.assertEqual(Mickey.fetch_messages(), [])

    def test_msg_max_count(self):
        for name in ("MsgMaxCount", "msg_max_count"):
            Ariel = self.chat(**{name: 6})
            answers = [Ariel.request(q) for q in (
                "英国的首都是什么？", "日本首都是什么？", "意大利的首都是什么？", "美国的首都是什么？",
                "世界上国土面积最大的国家是哪个？", "法国的首都叫什么？", "青蛙的幼体叫什么？", "世界上最大的海洋是什么？")]
            self.assertEqual(answers, ["伦敦", "东京", "罗马", "华盛顿", "俄罗斯", "巴黎", "蝌蚪", "太平洋"])
            self.assertEqual(
                Ariel.fetch_messages(),
                [
                    {"role": "user", "content": "法国的首都叫什么？"},
                    {"role": "assistant", "content": "巴黎"},
                    {"role": "user", "content": "青蛙的幼体叫什么？"},
                    {"role": "assistant", "content": "蝌蚪"},
                    {"role": "user", "content": "世界上最大的海洋是什么？"},
                    {"role": "assistant", "content": "太平洋"},
                ],
            )
            # the request payload was trimmed to 6 too, keeping the new user message
            self.assertEqual(len(self.sent_messages()), 6)
            self.assertEqual(self.sent_messages()[-1]["content"], "世界上最大的海洋是什么？")

    def test_pin_walkthrough(self):
        for pin, unpin in (("pin_messages", "unpin_messages"), ("pin", "unpin")):
            Ariel = self.chat(MsgMaxCount=6)
            Ariel.request("英国的首都是什么？")
            Ariel.request("日本首都是什么？")
            Ariel.request("意大利的首都是什么？")
            getattr(Ariel, pin)(0, -2, -1)
            self.assertEqual(Ariel.request("美国的首都是什么？"), "华盛顿")
            self.assertEqual(
                [m["content"] for m in Ariel.fetch_messages()],
                ["英国的首都是什么？", "东京", "意大利的首都是什么？", "罗马", "美国的首都是什么？", "华盛顿"],
            )
            self.assertEqual(Ariel.pinned_indexes(), [0, 2, 3])
            getattr(Ariel, pin)(-2)
            for q in ("世界上国土面积最大的国家是哪个？", "法国的首都叫什么？", "青蛙的幼体叫什么？", "世界上最大的海洋是什么？"):
                Ariel.request(q)
            self.assertEqual(
                Ariel.fetch_messages(),
                [
                    {"role": "user", "content": "英国的首都是什么？"},
                    {"role": "user", "content": "意大利的首都是什么？"},
                    {"role": "assistant", "content": "罗马"},
                    {"role": "user", "content": "美国的首都是什么？"},
                    {"role": "user", "content": "世界上最大的海洋是什么？"},
                    {"role": "assistant", "content": "太平洋"},
                ],
            )
            getattr(Ariel, unpin)(0, -2, -1)
            self.assertEqual(Ariel.pinned_indexes(), [1, 2, 3])
            with self.assertRaises(IndexError):
                Ariel.pin_messages(0, 99)
            self.assertEqual(Ariel.pinned_indexes(), [1, 2, 3])

    def test_default_and_per_call_params(self):
        Chris = self.chat(max_tokens=100, temperature=0.5)
        Chris.request("hi", temperature=0.1, top_p=0.9)
        body = self.server.requests[-1].json
        self.assertEqual((body["max_tokens"], body["temperature"], body["top_p"], body["model"]), (100, 0.1, 0.9, "gpt-3.5-turbo"))
        Chris.request("again")
        self.assertEqual(self.server.requests[-1].json["temperature"], 0.5)
        self.assertEqual(Chris.last_request["messages"][-1]["content"], "again")
        self.assertIs(Chris.recently_request_data, Chris.last_request)

    def test_system_prompt_is_pinned(self):
        Sys = self.chat(system="You are terse.", MsgMaxCount=3)
        for q in ("自然数1的后面是几?", "再往后是几?", "再往后呢?"):
            Sys.request(q)
        msgs = Sys.fetch_messages()
        self.assertEqual(msgs[0], {"role": "system", "content": "You are terse."})
        self.assertEqual(self.sent_messages()[0]["role"], "system")
        Sys.rollback(10)
        self.assertEqual(Sys.fetch_messages(), [{"role": "system", "content": "You are terse."}])

    def test_reset_api_key_and_pool(self):
        Carl = self.chat(api_key="sk-first-key-000000000000")
        Carl.request("hi")
        Carl.reset_api_key("sk-second-key-11111111111")
        Carl.request("hi")
        pool = AKPool(["sk-pool-a-2222222222222", "sk-pool-b-3333333333333"])
        Carl.reset_api_key(pool)
        Carl.request("hi")
        Carl.request("hi")
        auth = [r.headers.get("authorization") for r in self.server.requests]
        self.assertEqual(auth, ["Bearer sk-first-key-000000000000", "Bearer sk-second-key-11111111111",
                                "Bearer sk-pool-a-2222222222222", "Bearer sk-pool-b-3333333333333"])
        with self.assertRaises(ValueError):
            Carl.reset_api_key("")

    def test_usage_and_reasoning(self):
        self.server.replies.append(Reply(content="answer", reasoning="thinking…", usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}))
        self.server.replies.append(Reply(content="again", reasoning="more", usage={"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5}))
        c = self.chat()
        self.assertEqual(c.request("q"), "answer")
        self.assertEqual(c.last_reasoning, "thinking…")
        self.assertEqual(list(c.stream_request("q2")), list("again"))
        self.assertEqual(c.last_reasoning, "more")
        self.assertEqual(c.total_usage, {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10})
        # reasoning is never sent back
        self.assertNotIn("reasoning_content", json.dumps(self.server.requests[-1].json))
        self.assertEqual(c.last_response.choices[0].message.content, "again")

    def test_images(self):
        path = os.path.join(self.tmp, "dot.png")
        with open(path, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\nfake")
        c = self.chat()
        c.request("what is this?", images=["https://example.com/cat.jpg", path])
        content = self.sent_messages()[-1]["content"]
        self.assertEqual(content[0], {"type": "text", "text": "what is this?"})
        self.assertEqual(content[1]["image_url"]["url"], "https://example.com/cat.jpg")
        self.assertTrue(content[2]["image_url"]["url"].startswith("data:image/png;base64,"))
        with self.assertRaises(ValueError):
            c.request("x", images=[os.path.join(self.tmp, "nope.png")])

    def test_tool_calls_kept_and_tool_messages_accepted(self):
        call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        self.server.replies.append(Reply(content=None, tool_calls=[call], finish_reason="tool_calls"))
        c = self.chat()
        c.request("use the tool")
        last = c.fetch_messages()[-1]
        self.assertEqual(last["tool_calls"][0]["id"], "call_1")
        c.add_dialogs({"role": "tool", "tool_call_id": "call_1", "content": "42"})
        c.request("and?")
        self.assertEqual(self.sent_messages()[-2]["role"], "tool")

    def test_no_model_is_a_clear_error(self):
        c = Chat(api_key=KEY, **server_options(self.server))
        with self.assertRaises(ValueError) as cm:
            c.request("hi")
        self.assertIn("model", str(cm.exception))
        self.assertEqual(self.server.requests, [])


class TestFailureSemantics(SeedCase):
    def test_failed_request_leaves_history(self):
        c = self.chat(max_retries=1)
        c.request("自然数1的后面是几?")
        before = c.fetch_messages()
        self.server.replies.extend([Reply(status=500), Reply(status=500)])
        with self.assertRaises(openai2.InternalServerError):
            c.request("再往后是几?")
        self.assertEqual(c.fetch_messages(), before)
        self.server.replies.append(Reply(status=400, body={"error": {"message": "bad", "type": "invalid_request_error"}}))
        with self.assertRaises(openai2.BadRequestError):
            c.request("再往后是几?")
        self.assertEqual(c.fetch_messages(), before)

    def test_stream_stopped_early_keeps_partial(self):
        c = self.chat()
        stream = c.stream_request("世界上最大的海洋是哪个?")
        got = [next(stream), next(stream), next(stream)]
        stream.close()
        self.assertEqual(c.fetch_messages(), [
            {"role": "user", "content": "世界上最大的海洋是哪个?"},
            {"role": "assistant", "content": "".join(got)},
        ])
        # break out of a for loop and drop the iterator: same result
        c2 = self.chat()
        for i, _ in enumerate(c2.stream_request("世界上最大的海洋是哪个?")):
            if i == 1:
                break
        gc.collect()
        self.assertEqual(c2.fetch_messages()[-1], {"role": "assistant", "content": "世界"})
        # the next request still works on the same connection pool
        self.assertEqual(c2.request("自然数1的后面是几?"), "2")

    def test_on_reasoning_callback_and_property(self):
        self.server.replies.append(Reply(content="ok", reasoning=["thinking ", "hard"]))
        c = self.chat()
        thoughts = []
        stream = c.stream_request("q", on_reasoning=thoughts.append)
        self.assertEqual(list(stream), ["o", "k"])
        self.assertEqual(thoughts, ["thinking ", "hard"])
        self.assertEqual(stream.reasoning, "thinking hard")
        self.assertNotIn("thinking", json.dumps(c.fetch_messages()))

    def test_a_per_call_none_unsets_a_default_instead_of_sending_null(self):
        c = self.chat(temperature=0.2, max_tokens=50)
        c.request("a", temperature=None, stop=None)
        list(c.stream_request("b", max_tokens=None))
        asyncio.run(c.async_request("c", temperature=None))
        c.request("d")
        sent = [r.json for r in self.server.requests]
        self.assertNotIn("temperature", sent[0])
        self.assertNotIn("stop", sent[0])
        self.assertEqual(sent[0]["max_tokens"], 50)
        self.assertNotIn("max_tokens", sent[1])
        self.assertEqual(sent[1]["temperature"], 0.2)
        self.assertNotIn("temperature", sent[2])
        self.assertEqual((sent[3]["temperature"], sent[3]["max_tokens"]), (0.2, 50))
        self.assertEqual(c.params, {"model": "gpt-3.5-turbo", "temperature": 0.2, "max_tokens": 50})

    def test_a_per_call_none_timeout_keeps_the_default_timeout(self):
        c = self.chat(timeout=7)
        c.request("a", timeout=None)
        self.assertNotIn("timeout", self.server.requests[-1].json)
        self.assertNotIn("timeout", c.last_request)

    def test_on_reasoning_gets_thinking_parts_as_the_accumulator_reads_them(self):
        # Mistral's content arrays: "thinking" parts are reasoning; the callback sees what the
        # accumulator merged (it does not read the chunks a second time with its own rule)
        self.server.replies.append(Reply(events=[
            {"choices": [{"index": 0, "delta": {"content": [{"type": "thinking", "thinking": [{"type": "text", "text": "hmm "}]}]}}]},
            {"choices": [{"index": 0, "delta": {"content": [{"type": "text", "text": "ok"}]}}]},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]))
        c = self.chat()
        thoughts = []
        stream = c.stream_request("q", on_reasoning=thoughts.append)
        self.assertEqual(list(stream), ["ok"])
        self.assertEqual(thoughts, ["hmm "])
        self.assertEqual(c.last_reasoning, "hmm ")

    def test_reasoning_before_any_text_reaches_the_callback_before_the_first_piece(self):
        self.server.replies.append(Reply(content="ok", reasoning=["a", "b"]))
        c = self.chat()
        events = []
        stream = c.stream_request("q", on_reasoning=lambda t: events.append(("thought", t)))
        for piece in stream:
            events.append(("piece", piece))
        self.assertEqual(events, [("thought", "a"), ("thought", "b"), ("piece", "o"), ("piece", "k")])

    def test_chat_talks_to_the_client_through_its_public_complete_and_stream(self):
        calls = []

        class Recording(openai2.OpenAI):
            def complete(self, body, **options):
                calls.append("complete")
                return super().complete(body, **options)

            def stream(self, body, **options):
                calls.append("stream")
                return super().stream(body, **options)

        client = Recording(api_key=KEY, sleep=no_sleep, **server_options(self.server))
        c = Chat(client=client, model="m")
        c.request("a")
        list(c.stream_request("b"))
        asyncio.run(c.async_request("c"))

        async def consume():
            return [p async for p in c.async_stream_request("d")]

        asyncio.run(consume())
        self.assertEqual(calls, ["complete", "stream", "complete", "stream"])

    def test_archive_private_dump_system_and_replace(self):
        c = self.chat(system="first")
        c.add_dialogs(user_msg("a"), assistant_msg("b"))
        c.pin_messages(-1)
        data = c.to_archive()
        self.assertEqual((data["format"], data["version"], data["pinned"]), ("openai2.chat", 1, [0, 2]))
        data["messages"][0]["content"] = "changed"
        self.assertEqual(c.fetch_messages()[0]["content"], "first")  # a copy
        path = os.path.join(self.tmp, "private.json")
        old = os.umask(0)
        try:
            c.dump(path, private=True)
        finally:
            os.umask(old)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        c.set_system("second")
        self.assertEqual(c.fetch_messages()[0], {"role": "system", "content": "second"})
        self.assertEqual(c.pinned_indexes(), [0, 2])
        c.set_system(None)
        self.assertEqual(c.fetch_messages()[0]["role"], "user")
        self.assertEqual(c.pinned_indexes(), [1])
        before = c.fetch_messages()
        with self.assertRaises(ValueError):
            c.replace_messages([user_msg("x"), {"role": "nobody", "content": "y"}])
        with self.assertRaises(IndexError):
            c.replace_messages([user_msg("x")], pinned=[5])
        self.assertEqual(c.fetch_messages(), before)
        c.replace_messages([user_msg("x"), assistant_msg("y")], pinned=[0])
        self.assertEqual((len(c.fetch_messages()), c.pinned_indexes()), (2, [0]))

    def test_per_call_client_options_are_applied_not_sent(self):
        c = self.chat(max_retries=0)
        c.request("hi", extra_headers={"X-Test": "1"}, extra_body={"top_k": 3})
        req = self.server.requests[-1]
        self.assertEqual(req.headers.get("x-test"), "1")
        self.assertEqual(req.json["top_k"], 3)
        for name in ("extra_headers", "extra_body", "timeout"):
            self.assertNotIn(name, req.json)
        self.server.replies.append(Reply(content="slow", delay=3))
        with self.assertRaises(openai2.APITimeoutError) as cm:
            c.request("hi", timeout=(2, 0.3))
        self.assertIn("within 0.3s (read timeout)", str(cm.exception))  # the per-call read limit
        list(c.stream_request("hi", extra_headers={"X-Test": "2"}))
        self.assertEqual(self.server.requests[-1].headers.get("x-test"), "2")

    def test_answer_without_choices_is_an_error_and_keeps_nothing(self):
        c = self.chat(max_retries=0)
        for reply, streamed in ((Reply(body={"code": 500, "msg": "upstream busy"}), False),
                                (Reply(body={"choices": []}), False),
                                (Reply(events=[]), True)):
            self.server.replies.append(reply)
            with self.assertRaises(openai2.APIError):
                if streamed:
                    list(c.stream_request("q"))
                else:
                    c.request("q")
            self.assertEqual(c.fetch_messages(), [])

    def test_orphaned_tool_answer_is_not_sent(self):
        call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        c = self.chat(MsgMaxCount=4)
        self.server.replies.append(Reply(content=None, tool_calls=[call], finish_reason="tool_calls"))
        c.request("use the tool")
        c.add_dialogs({"role": "tool", "tool_call_id": "call_1", "content": "42"})
        c.request("thanks")
        c.request("next")
        roles = [m["role"] for m in self.sent_messages()]
        self.assertNotEqual(roles[0], "tool")
        self.assertEqual(roles[-1], "user")

    def test_set_system_does_not_lose_concurrent_exchanges(self):
        c = self.chat()
        done = threading.Event()

        def talk():
            for i in range(40):
                c.request("q%d" % i)
            done.set()

        worker = threading.Thread(target=talk)
        worker.start()
        n = 0
        while not done.is_set():
            c.set_system("S%d" % n)
            n += 1
        worker.join(30)
        msgs = c.fetch_messages()
        self.assertEqual(msgs[0]["role"], "system")
        self.assertEqual(len(msgs), 81)

    def test_messages_that_cannot_be_sent_as_json_are_refused(self):
        c = self.chat()
        for bad in (user_msg([{"type": "text", "text": b"hi"}]), user_msg([{"type": "text"}]),
                    user_msg([{"type": "image_url", "image_url": 5}]),
                    {"role": "user", "content": "x", "metadata": {1, 2}}):
            with self.assertRaises(ValueError):
                c.add_dialogs(bad)
        self.assertEqual(c.fetch_messages(), [])
        c.add_dialogs({"role": "assistant", "content": "hi", "reasoning_details": [{"type": "x"}]})
        self.assertNotIn("reasoning_details", c.fetch_messages()[0])

    def test_stream_broken_keeps_nothing(self):
        c = self.chat(max_retries=0)
        self.server.replies.append(Reply(content="abcdefgh", disconnect_after=4))
        got = []
        with self.assertRaises(openai2.IncompleteStreamError):
            for piece in c.stream_request("q"):
                got.append(piece)
        self.assertTrue(got)
        self.assertEqual(c.fetch_messages(), [])
        self.assertEqual(c.request("自然数1的后面是几?"), "2")

    def test_stream_error_event_keeps_nothing(self):
        c = self.chat()
        self.server.replies.append(Reply(events=[
            {"choices": [{"index": 0, "delta": {"content": "par"}}]},
            {"error": {"message": "overloaded", "type": "server_error"}},
        ], done=False))
        with self.assertRaises(openai2.APIError) as cm:
            list(c.stream_request("q"))
        self.assertEqual(cm.exception.message, "overloaded")
        self.assertEqual(c.fetch_messages(), [])

    def test_threads_exchanges_atomic(self):
        c = self.chat()
        errors = []

        def worker(n):
            try:
                for i in range(5):
                    c.request("thread %d message %d" % (n, i))
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(errors, [])
        msgs = c.fetch_messages()
        self.assertEqual(len(msgs), 80)
        for user, answer in zip(msgs[::2], msgs[1::2]):
            self.assertEqual(user["role"], "user")
            self.assertEqual(answer["role"], "assistant")
            self.assertIn(user["content"], answer["content"])  # the demo brain echoes the question

    def test_async_concurrency_all_in_flight(self):
        n = 100
        gate = threading.Barrier(n, timeout=20)
        self.server.handler = lambda req: Reply(content="ok", gate=gate)
        chats = [self.chat() for _ in range(n)]

        async def main():
            return await asyncio.gather(*(c.async_request("hi %d" % i) for i, c in enumerate(chats)))

        answers = asyncio.run(main())
        self.assertEqual(answers, ["ok"] * n)
        self.assertEqual(self.server.max_in_flight, n)

    def test_async_cancel_frees_worker_and_keeps_history(self):
        self.server.stalls = "block"  # in memory: the delay really waits, until the cancel
        c = self.chat(timeout=(5, 30))
        c.request("自然数1的后面是几?")
        before = c.fetch_messages()
        self.server.replies.append(Reply(content="slow", delay=20))

        async def main():
            task = asyncio.ensure_future(c.async_request("再往后是几?"))
            while len(self.server.requests) < 2:  # the request is in, its answer delayed
                await asyncio.sleep(0.005)
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task

        start = threading.active_count()
        asyncio.run(main())
        # the worker thread exits promptly once its request is cancelled (its socket shut down)
        for _ in range(100):
            if threading.active_count() <= start:
                break
            threading.Event().wait(0.02)
        self.assertLessEqual(threading.active_count(), start)
        self.assertEqual(c.fetch_messages(), before)
        self.assertEqual(c.request("再往后是几?"), "3")

    def test_async_stream_aclose_keeps_partial(self):
        c = self.chat()

        async def main():
            stream = c.async_stream_request("世界上最大的海洋是哪个?")
            got = []
            async for piece in stream:
                got.append(piece)
                if len(got) == 2:
                    break
            await stream.aclose()
            return got

        got = asyncio.run(main())
        self.assertEqual(c.fetch_messages()[-1], {"role": "assistant", "content": "".join(got)})

    def test_async_stream_break_and_drop_stops_the_worker_at_once(self):
        # in memory, the stall really blocks (for an hour) until the response is closed; a
        # watchdog closes it after 30 s so that a regression fails instead of hanging
        self.server.stalls = "block"
        c = self.chat(timeout=(5, 3600))
        self.server.replies.append(Reply(content="abcdef", stall_after=3, stall_seconds=3600))
        watchdog_fired = threading.Event()

        def watchdog():
            watchdog_fired.set()
            for response in self.server.responses:
                response.close()

        timer = threading.Timer(30, watchdog)
        timer.start()
        self.addCleanup(timer.cancel)

        async def main():
            async for _ in c.async_stream_request("hi"):
                break  # the iterator is dropped here
            gc.collect()  # CPython finalizes it at once; PyPy at a collection (README says: close it)
            # the partial answer is kept right away, not when the server finishes (the stall
            # is an hour: waiting for it would have let the watchdog fire first)
            return c.fetch_messages()

        msgs = asyncio.run(main())
        self.assertFalse(watchdog_fired.is_set())
        self.assertEqual(msgs, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}])
        for _ in range(50):
            if not any(t.name == "openai2-worker" for t in threading.enumerate()):
                break
            threading.Event().wait(0.05)
        self.assertFalse(any(t.name == "openai2-worker" for t in threading.enumerate()))
        self.assertTrue(self.server.responses[0].closed)  # the drop ended the stall, not the watchdog
        self.assertFalse(watchdog_fired.is_set())

    def test_async_stream_cancelled_before_any_text_keeps_nothing(self):
        self.server.stalls = "block"  # in memory: the delay really waits, until the cancel
        c = self.chat()
        self.server.replies.append(Reply(content="abc", delay=3))

        async def consume():
            return [p async for p in c.async_stream_request("hi")]

        async def main():
            with self.assertRaises(asyncio.TimeoutError):
                await asyncio.wait_for(consume(), 0.3)

        asyncio.run(main())
        self.assertEqual(c.fetch_messages(), [])

    def test_async_twins_exist(self):
        for name in ("request", "stream_request"):
            self.assertTrue(asyncio.iscoroutinefunction(Chat.async_request))
            self.assertTrue(hasattr(Chat, "async_" + name), name)



class TestEndToEndOverSockets(SeedCase):
    """The subset that needs real sockets (see the module docstring): a real keep-alive
    connection, SIGINT in a real recv(), an async cancel shutting a real socket down."""

    sockets = True

    test_continuous_conversation = TestSeedConversation.test_continuous_conversation
    test_stream_one_piece_per_character = TestSeedConversation.test_stream_one_piece_per_character
    test_async_request_and_stream = TestSeedConversation.test_async_request_and_stream
    test_stream_stopped_early_keeps_partial = TestFailureSemantics.test_stream_stopped_early_keeps_partial
    test_stream_broken_keeps_nothing = TestFailureSemantics.test_stream_broken_keeps_nothing

    @unittest.skipUnless(hasattr(__import__("signal"), "pthread_kill"), "needs signal.pthread_kill")
    def test_ctrl_c_inside_the_network_read_keeps_partial(self):
        import signal

        c = self.chat(timeout=(5, 10))
        self.server.replies.append(Reply(content="abcdefgh", stall_after=4, stall_seconds=5))
        stream = c.stream_request("q")
        got = [next(stream), next(stream)]
        main = threading.main_thread().ident
        stop = threading.Event()

        def interrupt_while_blocked_in_a_read():
            # a real SIGINT to the main thread while it is in the socket read of the stalled
            # stream (its stack is in readinto), not after a guessed pause; again every 0.1 s
            # while it still is, as a user presses Ctrl-C again: a SIGINT landing between
            # Python's last signal check and the blocking recv() is only acted on when the
            # read returns (a CPython limit)
            while not stop.is_set():
                frame, names = sys._current_frames().get(main), set()
                while frame is not None:
                    names.add(frame.f_code.co_name)
                    frame = frame.f_back
                if "readinto" in names:
                    signal.pthread_kill(main, signal.SIGINT)
                    stop.wait(0.1)
                else:
                    stop.wait(0.005)

        # Python's own Ctrl-C handler, even where SIGINT came ignored (a shell's background job)
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        self.addCleanup(signal.signal, signal.SIGINT, previous)
        interrupter = threading.Thread(target=interrupt_while_blocked_in_a_read, daemon=True)
        interrupter.start()
        try:
            with self.assertRaises(KeyboardInterrupt):
                for piece in stream:
                    got.append(piece)
        finally:
            stop.set()
            interrupter.join(10)
        self.assertEqual(c.fetch_messages(), [{"role": "user", "content": "q"}, {"role": "assistant", "content": "".join(got)}])
        self.assertIs(c.last_request, stream._body)
        stream.close()  # nothing more happens
        self.assertEqual(len(c.fetch_messages()), 2)

    # over sockets the cancel shuts the real socket down (the `stalls` setting only matters in memory)
    test_async_cancel_shuts_the_socket_down_and_frees_the_worker = (
        TestFailureSemantics.test_async_cancel_frees_worker_and_keeps_history
    )


if __name__ == "__main__":
    unittest.main()
