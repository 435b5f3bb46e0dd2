"""openai2 against a real LiteLLM proxy (pinned in tests/integration/litellm_venv.sh).

Two proxies run for the module, on 127.0.0.1 only, started side by side:

- ``keyed``: LiteLLM's custom-auth hook accepts two client keys and answers any other with its
  own 401.  Models: ``mock-pacific`` and ``mock-remarks`` (LiteLLM's ``mock_response``: LiteLLM
  answers itself), ``demo`` (forwarded to a loopback FakeServer with openai2's DemoBrain, which
  answers from the history it is sent) and ``strict`` (forwarded to a FakeServer that, like
  pydantic-validated providers, answers 400 "Extra inputs are not permitted" when an assistant
  message carries a key outside role/content/name/tool_calls/refusal/audio/function_call, and
  whose own answers carry vendor fields that LiteLLM hands on as
  ``message.provider_specific_fields``).
- ``masterkey``: LiteLLM's own key check without a database: only the master key passes.

Covered: Chat (request, history as sent upstream, stream_request, async twins), AKPool over a
key LiteLLM rejects, GroupChat.request_remarks, the low-level client (plain and stream=True),
the compatibility layer, the CLI in a subprocess (two turns), the official SDK on the same
proxy as an oracle, and the strict provider's second turn.

Without the LiteLLM venv the module is skipped with the reason (``bash
tests/integration/litellm_venv.sh`` makes it); with OPENAI2_REQUIRE_LITELLM=1 (``make
integration``) a missing venv is an error instead, so CI cannot skip it silently.
"""
from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
import unittest
from unittest import mock

import openai2
from openai2 import AKPool, Chat, GroupChat, OpenAI
from openai2.errors import AuthenticationError, BadRequestError
from openai2.testing import FakeServer, Reply, chat_completion
from tests.integration.litellm_support import (
    LiteLLMProxy,
    litellm_missing,
    litellm_version,
    mock_model,
    upstream_model,
)
from tests.integration.support import TempDir, figure, run_cli, set_figure

try:
    import openai
except ImportError:  # pragma: no cover - make integration installs it
    openai = None

KEY_A = "sk-litellm-a-" + secrets.token_hex(12)
KEY_B = "sk-litellm-b-" + secrets.token_hex(12)
KEY_BAD = "sk-litellm-rejected-" + secrets.token_hex(12)
UPSTREAM_KEY = "sk-upstream-" + secrets.token_hex(12)

PACIFIC = "The Pacific Ocean."
REMARKS = [
    {"speaker": "苏轼", "audiences": ["李清照"], "remark": "最近我在写一首新的诗，题目是《听雨》"},
    {"speaker": "苏轼", "audiences": ["杜甫"], "remark": "那首《茅屋为秋风所破歌》已经写好啦"},
]
#: the keys an assistant message may carry at a strict (pydantic "extra=forbid") provider
STRICT_ASSISTANT_KEYS = {"role", "content", "name", "tool_calls", "refusal", "audio", "function_call"}

MISSING = litellm_missing()
#: the reason every test here skips: the venv is missing and nobody asked for it to be there
SKIP = MISSING if MISSING and os.environ.get("OPENAI2_REQUIRE_LITELLM") != "1" else None

_state: dict = {}


def _strict_upstream(request):
    """A provider that refuses unknown assistant-message keys and adds vendor fields itself."""
    for i, message in enumerate(request.messages):
        extra = sorted(set(message) - STRICT_ASSISTANT_KEYS) if message.get("role") == "assistant" else []
        if extra:
            return Reply("messages.%d.assistant.%s: Extra inputs are not permitted" % (i, extra[0]), status=400)
    turn = sum(1 for m in request.messages if m.get("role") == "user")
    text = "strict answer %d" % turn
    if request.stream:
        return Reply(text, chunks=["strict ", "answer ", str(turn)])
    body = chat_completion(text, model=request.json.get("model", "strict"), reasoning="thought %d" % turn,
                           usage={"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8})
    # fields outside OpenAI's message: LiteLLM keeps them as message.provider_specific_fields
    body["choices"][0]["message"]["citations"] = ["https://example.invalid/%d" % turn]
    body["choices"][0]["message"]["x_vendor"] = {"turn": turn}
    return Reply(body=body)


def setUpModule() -> None:
    if SKIP:
        return  # every class below is skipped with the reason
    if MISSING:
        raise RuntimeError(MISSING + " (OPENAI2_REQUIRE_LITELLM=1: not skipping)")
    tmp = TempDir("openai2-litellm-")
    _state["tmp"] = tmp
    demo = _state["demo"] = FakeServer().start()
    strict = _state["strict"] = FakeServer(handler=_strict_upstream).start()
    models = [
        mock_model("mock-pacific", PACIFIC),
        mock_model("mock-remarks", json.dumps(REMARKS, ensure_ascii=False)),
        upstream_model("demo", demo.base_url, UPSTREAM_KEY),
        upstream_model("strict", strict.base_url, UPSTREAM_KEY),
    ]
    keyed = _state["keyed"] = LiteLLMProxy(tmp.path, models, [KEY_A, KEY_B])
    masterkey = _state["masterkey"] = LiteLLMProxy(tmp.path, [mock_model("mock-pacific", PACIFIC)], None)
    started = time.monotonic()
    try:
        keyed.launch()
        masterkey.launch()
        keyed.wait_ready()
        masterkey.wait_ready()
    except BaseException:
        tearDownModule()
        raise
    set_figure("litellm: version", litellm_version())
    set_figure("litellm: start-up of two proxies side by side (s)", round(time.monotonic() - started, 1))


def tearDownModule() -> None:
    for name in ("keyed", "masterkey", "demo", "strict"):
        thing = _state.pop(name, None)
        if thing is not None:
            thing.stop()
    tmp = _state.pop("tmp", None)
    if tmp is not None:
        tmp.cleanup()


@unittest.skipIf(SKIP, SKIP)
class _ProxyCase(unittest.TestCase):
    """Shared helpers; a failing test prints the tail of the proxy's log."""

    proxy_name = "keyed"

    @property
    def proxy(self) -> LiteLLMProxy:
        return _state[self.proxy_name]

    def chat(self, model: str, api_key=KEY_A, **kw) -> Chat:
        return Chat(api_key=api_key, base_url=self.proxy.base_url, model=model, max_retries=0, timeout=30, **kw)

    def run(self, result=None):
        failures = len(result.failures) + len(result.errors) if result is not None else 0
        outcome = super().run(result)
        if result is not None and len(result.failures) + len(result.errors) > failures and self.proxy_name in _state:
            print("\n--- the LiteLLM proxy's log ends:\n%s\n---" % self.proxy.log_tail(40))
        return outcome

    def tearDown(self) -> None:
        figure("litellm: tests run against the proxy")


class ChatThroughLiteLLM(_ProxyCase):
    def test_request_sends_the_whole_history_upstream(self) -> None:
        demo = _state["demo"]
        tony = self.chat("demo")
        sent = []
        for question, answer in (("自然数50的后面是几?", "51"), ("再往后是几?", "52"), ("再往后呢?", "53")):
            before = tony.fetch_messages()
            self.assertEqual(tony.request(question), answer)
            upstream = demo.requests[-1]
            self.assertEqual(upstream.messages, before + [{"role": "user", "content": question}])
            self.assertEqual(upstream.headers.get("authorization"), "Bearer " + UPSTREAM_KEY)
            sent.append(len(upstream.messages))
        self.assertEqual(sent, [1, 3, 5])
        self.assertEqual([m["content"] for m in tony.fetch_messages()],
                         ["自然数50的后面是几?", "51", "再往后是几?", "52", "再往后呢?", "53"])

    def test_mock_model_request_and_usage(self) -> None:
        chat = self.chat("mock-pacific")
        self.assertEqual(chat.request("Which is the largest ocean?"), PACIFIC)
        self.assertGreater(chat.last_usage["total_tokens"], 0)
        self.assertEqual(chat.fetch_messages()[-1], {"role": "assistant", "content": PACIFIC})

    def test_stream_request_text_and_finish(self) -> None:
        for model, question, want in (("demo", "世界上最大的海洋是哪个?", "世界上最大的海洋是太平洋。"),
                                      ("mock-pacific", "Which is the largest ocean?", PACIFIC)):
            with self.subTest(model=model):
                chat = self.chat(model)
                pieces = list(chat.stream_request(question))
                self.assertGreater(len(pieces), 1)
                self.assertNotIn("", pieces)
                self.assertEqual("".join(pieces), want)
                self.assertEqual(chat.last_response["choices"][0]["finish_reason"], "stop")
                self.assertEqual(chat.fetch_messages(), [{"role": "user", "content": question},
                                                         {"role": "assistant", "content": want}])

    def test_async_request_and_async_stream_request(self) -> None:
        chat = self.chat("demo")

        async def talk():
            first = await chat.async_request("自然数100的后面是几?")
            pieces = [p async for p in chat.async_stream_request("再往后是几?")]
            both = await asyncio.gather(self.chat("mock-pacific").async_request("a"),
                                        self.chat("mock-pacific").async_request("b"))
            return first, pieces, both

        first, pieces, both = asyncio.run(talk())
        self.assertEqual(first, "101")
        self.assertEqual("".join(pieces), "102")
        self.assertEqual(both, [PACIFIC, PACIFIC])
        self.assertEqual(len(chat), 4)
        self.assertEqual(chat.last_response["choices"][0]["finish_reason"], "stop")


class KeysAtLiteLLM(_ProxyCase):
    def test_pool_sets_aside_the_key_litellm_rejects_and_the_request_succeeds(self) -> None:
        pool = AKPool([KEY_BAD, KEY_A, KEY_B])
        chat = self.chat("mock-pacific", api_key=pool)
        rejected_before = self.proxy.log_text().count('" 401 Unauthorized')
        answers = [chat.request("question %d" % i) for i in range(4)]
        self.assertEqual(answers, [PACIFIC] * 4)
        self.assertEqual(len(pool.set_aside), 1)
        masked, status = pool.set_aside[0]
        self.assertEqual(status, 401)
        self.assertNotIn(KEY_BAD, masked)
        self.assertTrue(masked.endswith(KEY_BAD[-4:]), masked)
        self.assertEqual(pool.usable_count, 2)
        # LiteLLM saw the rejected key exactly once: afterwards the pool used the other two
        self.assertEqual(self.proxy.log_text().count('" 401 Unauthorized') - rejected_before, 1)
        self.assertEqual(len(chat), 8)

    def test_a_rejected_key_alone_is_a_masked_authentication_error(self) -> None:
        chat = self.chat("mock-pacific", api_key=KEY_BAD)
        with self.assertRaises(AuthenticationError) as caught:
            chat.request("hello")
        self.assertEqual(caught.exception.status_code, 401)
        self.assertIn("invalid proxy key", str(caught.exception))
        self.assertNotIn(KEY_BAD, str(caught.exception))
        self.assertNotIn(KEY_BAD, repr(caught.exception.body))
        self.assertEqual(len(chat), 0)


class MasterKeyOnlyLiteLLM(_ProxyCase):
    """LiteLLM without a database: its master key is the only key; any other gets 400."""

    proxy_name = "masterkey"

    def test_master_key_works_and_another_key_is_answered_400_no_db(self) -> None:
        master = self.proxy.master_key
        self.assertEqual(self.chat("mock-pacific", api_key=master).request("hi"), PACIFIC)
        chat = self.chat("mock-pacific", api_key=KEY_A)
        with self.assertRaises(BadRequestError) as caught:
            chat.request("hi")
        self.assertIn("No connected db", str(caught.exception))
        self.assertNotIn(KEY_A, str(caught.exception))
        # a 400 is about the request, not the key: a pool does not set the key aside for it
        pool = AKPool([KEY_A, master])
        with self.assertRaises(BadRequestError):
            self.chat("mock-pacific", api_key=pool).request("hi")
        self.assertEqual(pool.set_aside, [])


class GroupChatThroughLiteLLM(_ProxyCase):
    def test_request_remarks_parses_the_mock_json_array(self) -> None:
        group = GroupChat(api_key=KEY_A, base_url=self.proxy.base_url, model="mock-remarks", max_retries=0, timeout=30)
        group.roles["苏轼"] = "宋朝诗人，他的词风格独特，既有儒家的教诲，又有生活的乐趣。"
        group.roles["李清照"] = "宋代著名的女词人，其词句优美，情感真挚。"
        group.roles["杜甫"] = "唐朝著名诗人。"
        group.add_dialog(speaker="苏轼", audiences=["李清照"], remark="你好呀")
        group.add_dialog(speaker="李清照", audiences=["苏轼"], remark="好久不见, 你最近在忙什么?")
        group.add_dialog(speaker="杜甫", audiences=["苏轼"], remark="上次托你帮我写的那首《茅屋为秋风所破歌》写好了吗?")
        remarks = group.request_remarks([("苏轼", ["李清照"]), ("苏轼", ["杜甫"])], record=True)
        self.assertEqual(remarks, REMARKS)
        self.assertEqual(len(group), 5)
        self.assertEqual(group.export_dialogs()[-1]["remark"], REMARKS[1]["remark"])


class LowLevelClientThroughLiteLLM(_ProxyCase):
    def test_create_and_stream(self) -> None:
        client = OpenAI(api_key=KEY_A, base_url=self.proxy.base_url, max_retries=0, timeout=30)
        try:
            messages = [{"role": "user", "content": "Which is the largest ocean?"}]
            r = client.chat.completions.create(model="mock-pacific", messages=messages)
            self.assertEqual(r.choices[0].message.content, PACIFIC)
            self.assertEqual(r["choices"][0]["finish_reason"], "stop")
            self.assertGreater(r.usage.total_tokens, 0)
            stream = client.chat.completions.create(model="mock-pacific", messages=messages, stream=True,
                                                    stream_options={"include_usage": True})
            with stream:
                text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            self.assertEqual(text, PACIFIC)
            self.assertEqual(stream.accumulator.content, PACIFIC)
            self.assertEqual(stream.accumulator.finish_reason, "stop")
            self.assertGreater(stream.accumulator.usage["total_tokens"], 0)
        finally:
            client.close()

    def test_compatibility_layer(self) -> None:
        import openai2 as openai_old  # the pre-1.0 `import openai` style

        with mock.patch.object(openai2, "api_key", KEY_A), mock.patch.object(openai2, "api_base", self.proxy.base_url):
            rsp = openai_old.ChatCompletion.create(
                model="mock-pacific",
                messages=[{"role": "system", "content": "一个有10年Python开发经验的资深算法工程师"},
                          {"role": "user", "content": "Which is the largest ocean?"}],
                request_timeout=30,
            )
        self.assertEqual(rsp.get("choices")[0]["message"]["content"], PACIFIC)
        self.assertEqual(rsp.choices[0].message["content"], PACIFIC)
        self.assertGreater(rsp.get("usage")["total_tokens"], 0)


class CliThroughLiteLLM(_ProxyCase):
    def test_chat_two_turns_in_subprocesses(self) -> None:
        home = TempDir("openai2-litellm-home-")
        demo = _state["demo"]
        try:
            common = ["--base-url", self.proxy.base_url, "--api-key", KEY_A, "--model", "demo", "--timeout", "30"]
            first = run_cli(home.path, "chat", "自然数50的后面是几?", *common)
            self.assertEqual(first.returncode, 0, first.stderr)
            self.assertEqual(first.stdout.strip(), "51")
            second = run_cli(home.path, "chat", "再往后是几?", *common)
            self.assertEqual(second.returncode, 0, second.stderr)
            self.assertEqual(second.stdout.strip(), "52")
            self.assertEqual([m["content"] for m in demo.requests[-1].messages],
                             ["自然数50的后面是几?", "51", "再往后是几?"])
            for out in (first.stdout, first.stderr, second.stdout, second.stderr):
                self.assertNotIn(KEY_A, out)
        finally:
            home.cleanup()


@unittest.skipIf(openai is None, "the openai SDK is not installed (make integration installs it)")
class SdkOnTheSameProxy(_ProxyCase):
    """The official SDK and openai2 ask the same proxy the same thing and read the same answer."""

    messages = [{"role": "user", "content": "世界上最大的海洋是哪个?"}]

    def clients(self):
        ours = OpenAI(api_key=KEY_A, base_url=self.proxy.base_url, max_retries=0, timeout=30)
        sdk = openai.OpenAI(api_key=KEY_B, base_url=self.proxy.base_url, max_retries=0, timeout=30)
        self.addCleanup(ours.close)
        self.addCleanup(sdk.close)
        return ours, sdk

    def test_same_content_finish_and_usage(self) -> None:
        ours, sdk = self.clients()
        for model in ("mock-pacific", "demo"):
            with self.subTest(model=model):
                a = ours.chat.completions.create(model=model, messages=self.messages)
                b = sdk.chat.completions.create(model=model, messages=self.messages)
                self.assertEqual(a.choices[0].message.content, b.choices[0].message.content)
                self.assertEqual(a.choices[0].finish_reason, b.choices[0].finish_reason)
                self.assertEqual(a.usage.total_tokens, b.usage.total_tokens)
                self.assertEqual(dict(a.usage), b.usage.to_dict())
                figure("litellm: SDK comparisons")

    def test_same_content_finish_and_usage_streamed(self) -> None:
        ours, sdk = self.clients()
        for model in ("mock-pacific", "demo"):
            with self.subTest(model=model):
                kw = {"model": model, "messages": self.messages, "stream": True, "stream_options": {"include_usage": True}}
                stream = ours.chat.completions.create(**kw)
                with stream:
                    for _ in stream:
                        pass
                acc = stream.accumulator
                text, finish, usage = [], None, None
                for chunk in sdk.chat.completions.create(**kw):
                    if chunk.usage is not None:
                        usage = chunk.usage.to_dict()
                    for choice in chunk.choices:
                        text.append(choice.delta.content or "")
                        finish = choice.finish_reason or finish
                self.assertEqual(acc.content, "".join(text))
                self.assertEqual(acc.finish_reason, finish)
                self.assertIsNotNone(usage)
                self.assertEqual(dict(acc.usage), usage)
                figure("litellm: SDK comparisons")


class StrictProviderBehindLiteLLM(_ProxyCase):
    def assert_sent_only_strict_keys(self, request) -> None:
        for message in request.messages:
            if message["role"] == "assistant":
                self.assertLessEqual(set(message), STRICT_ASSISTANT_KEYS, message)

    def test_the_strict_upstream_refuses_provider_specific_fields(self) -> None:
        # the control: what a client that echoes LiteLLM's answer verbatim gets
        client = OpenAI(api_key=KEY_A, base_url=self.proxy.base_url, max_retries=0, timeout=30)
        self.addCleanup(client.close)
        first = client.chat.completions.create(model="strict", messages=[{"role": "user", "content": "one"}])
        echoed = dict(first.choices[0].message)
        self.assertIn("provider_specific_fields", echoed)  # LiteLLM moved the vendor fields there
        with self.assertRaises(BadRequestError) as caught:
            client.chat.completions.create(model="strict", messages=[{"role": "user", "content": "one"}, echoed,
                                                                    {"role": "user", "content": "two"}])
        self.assertIn("Extra inputs are not permitted", str(caught.exception))

    def test_second_turn_succeeds(self) -> None:
        strict = _state["strict"]
        chat = self.chat("strict")
        self.assertEqual(chat.request("one"), "strict answer 1")
        self.assertIn("provider_specific_fields", chat.last_response["choices"][0]["message"])
        self.assertEqual(chat.last_reasoning, "thought 1")
        self.assertEqual(chat.request("two"), "strict answer 2")
        self.assert_sent_only_strict_keys(strict.requests[-1])
        self.assertEqual("".join(chat.stream_request("three")), "strict answer 3")
        self.assert_sent_only_strict_keys(strict.requests[-1])

        async def more():
            return await chat.async_request("four")

        self.assertEqual(asyncio.run(more()), "strict answer 4")
        self.assert_sent_only_strict_keys(strict.requests[-1])
        self.assertEqual(len(chat), 8)


if __name__ == "__main__":
    unittest.main()
