"""A server's refusal of a request as longer than the model's context window becomes
``ContextLengthError`` (a ``BadRequestError``, its status kept), with the window and the count
the server stated; look-alikes (a ``max_tokens`` over the output cap, tokens-per-minute rate
limits, a proxy's 413, a prompt too short) stay what they were.

The answers are real: tests/data/context_errors.json holds each body as it was reported, with
its source and the limit/requested the message states.
"""
import json
import os
import unittest

import openai2
from openai2.errors import (
    BadRequestError,
    ContextLengthError,
    InternalServerError,
    make_status_error,
    parse_error_body,
)
from openai2.testing import MemoryTransport, Reply

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "context_errors.json")
KEY = "sk-proj-ctx0123456789abcdefXYZ"
MESSAGES = [{"role": "user", "content": "hi"}]


def load():
    with open(DATA, encoding="utf-8") as f:
        return json.load(f)


def raw_body(entry):
    body = entry["body"]
    return body if isinstance(body, str) else json.dumps(body)


def client(*replies, max_retries=0):
    transport = MemoryTransport(list(replies))
    ai = openai2.OpenAI(
        api_key=KEY,
        base_url="https://x.test/v1",
        transport=transport,
        max_retries=max_retries,
        sleep=lambda seconds, cancel: None,  # a retry's backoff is not waited for
    )
    return ai, transport


class CorpusTest(unittest.TestCase):
    def test_the_corpus_names_a_source_for_every_body(self):
        data = load()
        self.assertGreaterEqual(len(data["positive"]), 20)
        self.assertGreaterEqual(len(data["negative"]), 8)
        for entry in data["positive"] + data["negative"]:
            with self.subTest(server=entry["server"]):
                self.assertTrue(entry["source"].strip())
                self.assertIn(entry["reported_as"], ("json", "python-repr", "message"))
                self.assertIsInstance(entry["status"], int)

    def test_every_refusal_for_length_becomes_context_length_error(self):
        for entry in load()["positive"]:
            with self.subTest(server=entry["server"], source=entry["source"]):
                exc = make_status_error(entry["status"], {}, raw_body(entry).encode(), secrets=[KEY])
                self.assertIsInstance(exc, ContextLengthError)
                self.assertIsInstance(exc, BadRequestError)
                self.assertEqual(exc.status_code, entry["status"])
                self.assertEqual(exc.http_status, entry["status"])
                self.assertEqual((exc.limit, exc.requested), (entry["limit"], entry["requested"]))
                self.assertIn("context window", exc.hint)
                self.assertIn("MsgMaxTokens", exc.hint)
                self.assertEqual(len(exc.hint.splitlines()), 1)
                self.assertTrue(str(exc).startswith("Error code: %d - " % entry["status"]))
                self.assertIn(exc.hint, str(exc))

    def test_look_alikes_are_not_context_length_errors(self):
        for entry in load()["negative"]:
            with self.subTest(server=entry["server"], source=entry["source"]):
                exc = make_status_error(entry["status"], {}, raw_body(entry).encode(), secrets=[KEY])
                self.assertNotIsInstance(exc, ContextLengthError)
                self.assertEqual(exc.status_code, entry["status"])
                self.assertFalse(hasattr(exc, "limit"))


class ShapeTest(unittest.TestCase):
    def test_llama_cpp_old_500_keeps_its_status_and_is_not_an_internal_server_error(self):
        raw = '{"error":{"code":500,"message":"Context size has been exceeded.","type":"server_error"}}'
        exc = make_status_error(500, {}, raw)
        self.assertIsInstance(exc, ContextLengthError)
        self.assertEqual(exc.status_code, 500)
        self.assertNotIsInstance(exc, InternalServerError)
        self.assertIs(exc.retryable, False)
        self.assertIn("--ctx-size", exc.hint)
        self.assertEqual((exc.limit, exc.requested), (None, None))
        self.assertIn("Error code: 500 - Context size has been exceeded.", str(exc))

    def test_the_hint_names_the_window_and_what_the_request_needs(self):
        raw = json.dumps(
            {
                "error": {
                    "message": "This model's maximum context length is 8192 tokens. However, your messages "
                    "resulted in 9000 tokens. Please reduce the length of the messages.",
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": "context_length_exceeded",
                }
            }
        )
        exc = make_status_error(400, {"x-request-id": "req_1"}, raw)
        self.assertEqual(
            exc.hint,
            "The conversation is longer than the model's context window (8192 tokens; this request needs 9000): "
            "set Chat(MsgMaxTokens=...) or MsgMaxTokens='auto', or remove messages.",
        )
        self.assertEqual(exc.request_id, "req_1")
        self.assertEqual(exc.code, "context_length_exceeded")

    def test_the_hint_says_to_lower_max_tokens_only_when_the_answer_was_counted_in(self):
        counted = make_status_error(
            400,
            {},
            '{"object":"error","message":"This model\'s maximum context length is 4096 tokens. However, you '
            'requested 5000 tokens (4000 in the messages, 1000 in the completion). Please reduce the length of '
            'the messages or completion.","type":"BadRequestError","param":null,"code":400}',
        )
        self.assertEqual((counted.limit, counted.requested), (4096, 5000))
        self.assertIn("lower max_tokens (1000 of them", counted.hint)
        zero = make_status_error(
            400,
            {},
            json.dumps({"error": {"message": "This model's maximum context length is 65536 tokens. However, you "
                                  "requested 68161 tokens (68161 in the messages, 0 in the completion)."}}),
        )
        self.assertNotIn("max_tokens", zero.hint)

    def test_the_llama_cpp_fields_give_the_numbers_when_the_message_does_not(self):
        raw = json.dumps(
            {
                "error": {
                    "code": 400,
                    "message": "the request exceeds the available context size, try increasing it",
                    "type": "exceed_context_size_error",
                    "n_prompt_tokens": 5000,
                    "n_ctx": 4096,
                }
            }
        )
        exc = make_status_error(400, {}, raw)
        self.assertEqual((exc.limit, exc.requested), (4096, 5000))
        self.assertIn("(4096 tokens; this request needs 5000)", exc.hint)

    def test_a_key_echoed_in_the_refusal_is_masked_everywhere(self):
        raw = json.dumps(
            {
                "error": {
                    "message": "This model's maximum context length is 4096 tokens. However, your messages "
                    "resulted in 5000 tokens. Key: " + KEY,
                    "code": "context_length_exceeded",
                    "param": KEY,
                },
                "echo": {"authorization": "Bearer " + KEY},
            }
        )
        exc = make_status_error(400, {"x-echo": KEY}, raw, secrets=[KEY])
        self.assertIsInstance(exc, ContextLengthError)
        shown = str(exc) + repr(exc) + json.dumps(exc.body) + str(exc.param) + json.dumps(exc.headers) + exc.hint
        self.assertNotIn(KEY, shown)
        self.assertEqual((exc.limit, exc.requested), (4096, 5000))

    def test_gemini_list_bodies_give_their_error_object(self):
        raw = '[{"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}}]'
        body, err = parse_error_body(raw)
        self.assertEqual(err, {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"})
        self.assertEqual(body[0]["error"], err)
        self.assertEqual(make_status_error(400, {}, raw).message, "bad")

    def test_a_rate_limit_that_carries_the_context_code_is_still_a_rate_limit(self):
        raw = json.dumps({"error": {"message": "slow down", "code": "context_length_exceeded"}})
        self.assertIsInstance(make_status_error(429, {}, raw), openai2.RateLimitError)
        self.assertNotIsInstance(make_status_error(429, {}, raw), ContextLengthError)

    def test_the_class_can_be_built_by_hand(self):
        exc = ContextLengthError("too long", limit=10, requested=12)
        self.assertEqual((exc.status_code, exc.limit, exc.requested, exc.hint), (400, 10, 12, None))
        self.assertEqual(str(exc), "Error code: 400 - too long")


class ThroughTheClientTest(unittest.TestCase):
    def test_create_raises_context_length_error_and_sends_once(self):
        body = {
            "error": {
                "message": "This model's maximum context length is 8192 tokens. However, your messages resulted in "
                "9000 tokens. Please reduce the length of the messages.",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        }
        ai, transport = client(Reply(status=400, body=body), Reply("never sent"), max_retries=3)
        with self.assertRaises(ContextLengthError) as caught:
            ai.chat.completions.create(model="m", messages=MESSAGES)
        self.assertEqual((caught.exception.limit, caught.exception.requested), (8192, 9000))
        self.assertEqual(caught.exception.status_code, 400)
        self.assertEqual(len(transport.requests), 1)
        self.assertNotIn(KEY, str(caught.exception))

    def test_create_with_max_retries_0_raises_context_length_error(self):
        body = (
            '{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it",'
            '"type":"exceed_context_size_error","n_prompt_tokens":5000,"n_ctx":4096}}'
        )
        ai, _ = client(Reply(status=400, body=body))
        with self.assertRaises(ContextLengthError) as caught:
            ai.chat.completions.create(model="m", messages=MESSAGES)
        self.assertEqual((caught.exception.limit, caught.exception.requested), (4096, 5000))

    def test_the_llama_cpp_500_is_not_retried(self):
        body = '{"error":{"code":500,"message":"Context size has been exceeded.","type":"server_error"}}'
        ai, transport = client(Reply(status=500, body=body), Reply("a retry was sent"), max_retries=2)
        with self.assertRaises(ContextLengthError) as caught:
            ai.chat.completions.create(model="m", messages=MESSAGES)
        self.assertEqual(caught.exception.status_code, 500)
        self.assertEqual(len(transport.requests), 1)


if __name__ == "__main__":
    unittest.main()
