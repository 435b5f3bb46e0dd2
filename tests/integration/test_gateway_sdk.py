"""The official ``openai`` SDK as a client of openai2's gateway (``openai2 serve`` / Gateway), in
front of a loopback FakeServer: non-streaming and streaming answers, a 429 on the pool's first
key answered from the second, and upstream errors reaching the SDK as the SDK's own exception
classes with every upstream key masked.

The SDK lives in the git-ignored .venv-integration (``make integration`` makes it); without it
the module is skipped with the reason.
"""
from __future__ import annotations

import secrets
import unittest

from openai2 import AKPool
from openai2.gateway import Gateway
from openai2.testing import FakeServer, Reply
from tests.integration.support import figure

try:
    import openai
except ImportError:  # pragma: no cover - make integration installs it
    openai = None

KEY_A = "sk-gw-sdk-a-" + secrets.token_hex(12)
KEY_B = "sk-gw-sdk-b-" + secrets.token_hex(12)
TOKEN = "gw-token-" + secrets.token_hex(8)
MESSAGES = [{"role": "user", "content": "hi"}]


@unittest.skipIf(openai is None, "the openai SDK is not installed (make integration installs it)")
class GatewayWithSdk(unittest.TestCase):
    def setUp(self) -> None:
        self.replies: list = []
        self.server = FakeServer(handler=lambda req: self.replies.pop(0) if self.replies else Reply("default"))
        self.server.start()
        self.addCleanup(self.server.stop)

    def gateway(self, key: object = KEY_A, **kw: object) -> Gateway:
        gw = Gateway(self.server.base_url, key, token=TOKEN, quiet=True, **kw)  # type: ignore[arg-type]
        gw.start()
        self.addCleanup(gw.stop)
        return gw

    def sdk(self, gw: Gateway):
        client = openai.OpenAI(api_key=TOKEN, base_url=gw.base_url, max_retries=0, timeout=30)
        self.addCleanup(client.close)
        return client

    def assertNoKey(self, *texts: object) -> None:
        for text in texts:
            for key in (KEY_A, KEY_B):
                self.assertNotIn(key, str(text))

    def test_non_streaming(self) -> None:
        self.replies.append(Reply("hello from upstream", usage={"prompt_tokens": 2, "completion_tokens": 3,
                                                                "total_tokens": 5}))
        result = self.sdk(self.gateway()).chat.completions.create(model="m1", messages=MESSAGES, temperature=0.5)
        self.assertEqual(result.choices[0].message.content, "hello from upstream")
        self.assertEqual(result.usage.total_tokens, 5)
        sent = self.server.last_request
        self.assertEqual(sent.json["model"], "m1")
        self.assertEqual(sent.json["temperature"], 0.5)
        self.assertEqual(sent.headers["authorization"], "Bearer " + KEY_A)  # never the gateway token
        figure("gateway + SDK: non-streaming answers")

    def test_streaming(self) -> None:
        self.replies.append(Reply(chunks=["one ", "two ", "three"]))
        stream = self.sdk(self.gateway()).chat.completions.create(model="m", messages=MESSAGES, stream=True)
        pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
        self.assertEqual(pieces, ["one ", "two ", "three"])
        self.assertIs(self.server.last_request.json["stream"], True)
        figure("gateway + SDK: streams")

    def test_streaming_with_the_sdk_stream_helper(self) -> None:
        self.replies.append(Reply(chunks=["hel", "lo"]))
        with self.sdk(self.gateway()).chat.completions.stream(model="m", messages=MESSAGES) as stream:
            final = stream.get_final_completion()
        self.assertEqual(final.choices[0].message.content, "hello")

    def test_429_on_the_first_key_answered_from_the_second(self) -> None:
        self.replies += [Reply(status=429, headers={"Retry-After": "30"}), Reply("from the second key")]
        pool = AKPool([KEY_A, KEY_B])
        result = self.sdk(self.gateway(pool)).chat.completions.create(model="m", messages=MESSAGES)
        self.assertEqual(result.choices[0].message.content, "from the second key")
        used = [r.headers["authorization"][len("Bearer "):] for r in self.server.requests]
        self.assertEqual(len(used), 2)
        self.assertEqual(set(used), {KEY_A, KEY_B})
        figure("gateway + SDK: 429 failovers")

    def test_upstream_errors_reach_the_sdk_as_its_classes_with_keys_masked(self) -> None:
        cases = [
            (401, openai.AuthenticationError, "invalid_api_key"),
            (400, openai.BadRequestError, "bad_thing"),
            (404, openai.NotFoundError, "model_not_found"),
            (429, openai.RateLimitError, "rate_limit_exceeded"),
        ]
        for status, cls, code in cases:
            with self.subTest(status=status):
                body = {"error": {"message": "Incorrect API key provided: %s (status %d)" % (KEY_A, status),
                                  "type": "invalid_request_error", "param": None, "code": code}}
                # a 429 beyond the gateway's wait cap (Retry-After: 3600) is relayed at once
                self.replies[:] = [Reply(status=status, body=body, headers={"Retry-After": "3600"})]
                gw = self.gateway(KEY_A)
                with self.assertRaises(cls) as caught:
                    self.sdk(gw).chat.completions.create(model="m", messages=MESSAGES)
                error = caught.exception
                self.assertEqual(error.status_code, status)
                self.assertEqual(error.code, code)
                self.assertIn("Incorrect API key provided", error.message)
                self.assertNoKey(error, error.message, error.body, error.response.text, dict(error.response.headers))
                figure("gateway + SDK: upstream errors relayed masked")

    def test_gateway_token_refused_as_the_sdk_authentication_error(self) -> None:
        gw = self.gateway()
        client = openai.OpenAI(api_key="not-the-token", base_url=gw.base_url, max_retries=0, timeout=30)
        self.addCleanup(client.close)
        with self.assertRaises(openai.AuthenticationError):
            client.chat.completions.create(model="m", messages=MESSAGES)
        self.assertEqual(self.server.requests, [])

    def test_models_listed(self) -> None:
        gw = self.gateway(aliases={"fast": "real-model"})
        ids = [m.id for m in self.sdk(gw).models.list()]
        self.assertIn("fast", ids)


if __name__ == "__main__":
    unittest.main()
