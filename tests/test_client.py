"""The SDK-shaped low-level client: responses, streams, errors, retries, key failover, legacy layer.

The tests run in memory (tests/support/memory.py: a MemoryTransport where the FakeServer
stood; stalls simulated against the read timeout, or really blocking with ``stalls="block"``).
On the loopback FakeServer stay: TestEndToEndOverSockets (keep-alive on one connection, a
completed stream handing its connection back to the pool, a refused connection, the plain-http
warning for a host that does not resolve, and a few responses, errors and broken streams over
real sockets) and TestLegacyLayer (the module-level ``openai.api_base`` has no transport option).
"""
import io
import json
import logging
import os
import threading
import time
import unittest
import warnings
from email.utils import formatdate

import openai2
from openai2 import AKPool, OpenAI
from openai2.client import retry_delay, should_retry
from openai2.testing import Reply
from tests.support.memory import MemoryServer, memory_or_socket_server, server_options

KEY = "sk-test-client-9f8e7d6c5b4a3210"
CORPUS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "wire-corpus")


class Sleeps:
    """An injected sleep that records the delays instead of waiting."""

    def __init__(self):
        self.delays = []

    def __call__(self, seconds, cancel):
        self.delays.append(seconds)


class ClientCase(unittest.TestCase):
    #: True: a real FakeServer over loopback sockets; False: a MemoryServer (no sockets)
    sockets = False

    def setUp(self):
        self.server = memory_or_socket_server(self.sockets)
        self.addCleanup(self.server.stop)
        self.sleeps = Sleeps()

    def transport_option(self):
        """``{"transport": ...}`` for a MemoryServer (the base URL coming from elsewhere)."""
        return {"transport": self.server} if isinstance(self.server, MemoryServer) else {}

    def client(self, **kw):
        kw.setdefault("api_key", KEY)
        for name, value in server_options(self.server).items():
            kw.setdefault(name, value)
        kw.setdefault("sleep", self.sleeps)
        c = OpenAI(**kw)
        self.addCleanup(c.close)
        return c

    def create(self, client=None, **kw):
        kw.setdefault("model", "gpt-4o-mini")
        kw.setdefault("messages", [{"role": "user", "content": "hi"}])
        return (client or self.client()).chat.completions.create(**kw)


class TestResponses(ClientCase):
    def test_attribute_and_item_access(self):
        self.server.replies.append("Hello!")
        r = self.create()
        self.assertEqual(r.choices[0].message.content, "Hello!")
        self.assertEqual(r["choices"][0]["message"]["content"], "Hello!")
        self.assertEqual(r.get("choices")[0]["message"]["role"], "assistant")
        self.assertIsInstance(r.get("usage")["total_tokens"], int)
        self.assertIsNone(r.choices[0].message.tool_calls)
        self.assertEqual(json.loads(json.dumps(r))["choices"][0]["message"]["content"], "Hello!")

    def test_params_pass_through_unchanged(self):
        extra = {"temperature": 0.2, "max_tokens": 7, "tools": [{"type": "function", "function": {"name": "f"}}],
                 "response_format": {"type": "json_object"}, "n": 2, "logprobs": True, "seed": 1, "user": "u1"}
        self.create(**extra)
        body = self.server.requests[-1].json
        for k, v in extra.items():
            self.assertEqual(body[k], v)
        self.create(extra_body={"top_k": 5}, extra_headers={"X-Trace": "abc"})
        self.assertEqual(self.server.requests[-1].json["top_k"], 5)
        self.assertEqual(self.server.requests[-1].headers["x-trace"], "abc")

    def test_headers_and_environment_fallbacks(self):
        env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": self.server.base_url + "/", "OPENAI_ORG_ID": "org-1", "OPENAI_PROJECT_ID": "proj-1"}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            c = OpenAI(sleep=self.sleeps, **self.transport_option())
            self.addCleanup(c.close)
            self.create(c)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        req = self.server.requests[-1]
        self.assertEqual(req.path, "/v1/chat/completions")
        self.assertEqual(req.headers["authorization"], "Bearer " + KEY)
        self.assertEqual(req.headers["openai-organization"], "org-1")
        self.assertEqual(req.headers["openai-project"], "proj-1")
        self.assertTrue(req.headers["user-agent"].startswith("openai2/%s Python/" % openai2.__version__))
        self.assertEqual(req.headers["content-type"], "application/json")

    def test_json_body_is_utf8_not_escaped(self):
        self.create(messages=[{"role": "user", "content": "你好"}])
        self.assertIn("你好".encode(), self.server.requests[-1].body)

    def test_no_key_is_allowed(self):
        saved = os.environ.pop("OPENAI_API_KEY", None)
        try:
            c = OpenAI(**server_options(self.server))
            self.addCleanup(c.close)
            self.create(c)
        finally:
            if saved is not None:
                os.environ["OPENAI_API_KEY"] = saved
        self.assertNotIn("authorization", self.server.requests[-1].headers)

    def test_stream_chunks_and_context_manager(self):
        self.server.replies.append(Reply(content="abc"))
        with self.create(stream=True) as stream:
            chunks = list(stream)
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        self.assertEqual(text, "abc")
        self.assertEqual(stream.accumulator.content, "abc")
        self.assertEqual(stream.accumulator.finish_reason, "stop")

    def test_server_that_never_ends_the_body_after_done(self):
        # role, 3 content chunks, finish chunk, [DONE]: then the server holds the body open for
        # an hour (in memory the stall really blocks); the read timeout is an hour too, so only
        # the grace after [DONE] ends the stream.  A watchdog closes the response after 30 s,
        # so that a regression fails instead of hanging.
        self.server.stalls = "block"
        self.server.replies.append(Reply(content="abc", stall_after=6, stall_seconds=3600))
        c = self.client(timeout=(5, 3600))
        watchdog_fired = threading.Event()

        def watchdog():
            watchdog_fired.set()
            for response in self.server.responses:
                response.close()

        timer = threading.Timer(30, watchdog)
        timer.start()
        self.addCleanup(timer.cancel)
        stream = self.create(c, stream=True)
        self.assertEqual(stream.done_grace, 1.0)  # one second of grace, not the read timeout
        list(stream)
        self.assertFalse(watchdog_fired.is_set())
        self.assertEqual(stream.accumulator.content, "abc")
        self.server.stalls = "timeout"
        self.assertEqual(self.create(c).choices[0].message.content, "(demo) You said: hi")

    def test_stream_closed_early_then_next_request_ok(self):
        self.server.replies.append(Reply(content="x" * 200))
        stream = self.create(stream=True)
        next(iter(stream))
        stream.close()
        self.assertEqual(self.create().choices[0].message.content, "(demo) You said: hi")

    def test_body_that_is_not_json_masks_an_echoed_key(self):
        self.server.replies.append(Reply(body="<pre>Authorization: Bearer %s</pre>" % KEY, content_type="text/html"))
        with self.assertRaises(openai2.APIStatusError) as cm:
            self.create()
        self.assertNotIn(KEY, str(cm.exception))
        self.assertNotIn(KEY, repr(cm.exception))
        self.assertIn(openai2.mask_key(KEY), str(cm.exception))

    def test_json_body_for_a_stream_is_capped_and_wrapped(self):
        big = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "x" * 5000}, "finish_reason": "stop"}]}
        self.server.replies.append(Reply(body=big))
        with self.assertRaises(openai2.ResponseTooLargeError):
            list(self.create(self.client(max_response_bytes=1000), stream=True))
        for raw in ("<html>oops</html>", "[" * 100000):
            self.server.replies.append(Reply(body=raw, content_type="application/json"))
            with self.assertRaises(openai2.APIStatusError):
                list(self.create(stream=True))
            self.server.replies.append(Reply(body=raw, content_type="application/json"))
            with self.assertRaises(openai2.APIStatusError):
                self.create()

    def test_json_answer_to_stream_request(self):
        body = {"id": "c1", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "whole"}, "finish_reason": "stop"}]}
        self.server.replies.append(Reply(body=body))
        stream = self.create(stream=True)
        chunks = list(stream)
        self.assertEqual(chunks[0].choices[0].delta.content, "whole")
        self.assertEqual(stream.accumulator.content, "whole")

    def test_stream_without_done_or_finish_is_broken(self):
        self.server.replies.append(Reply(content="abc", finish_reason=None, done=False))
        with self.assertRaises(openai2.IncompleteStreamError) as cm:
            list(self.create(stream=True))
        self.assertEqual(cm.exception.partial, "abc")

    def test_stream_broken_partial_holds_what_arrived(self):
        self.server.replies.append(Reply(content="abcdefghij", disconnect_after=4))
        got = []
        with self.assertRaises(openai2.IncompleteStreamError) as cm:
            for chunk in self.create(stream=True):
                got.append(chunk.choices[0].delta.content or "")
        self.assertEqual(cm.exception.partial, "".join(got))
        self.assertTrue(cm.exception.partial)

    def test_stream_reset_mid_body(self):
        self.server.replies.append(Reply(content="abcdefghij", disconnect_after=3))
        with self.assertRaises(openai2.IncompleteStreamError):
            list(self.create(stream=True))
        self.assertEqual(self.create().choices[0].message.content, "(demo) You said: hi")

    def test_stall_caught_by_read_timeout(self):
        self.server.replies.append(Reply(content="abcdef", stall_after=2, stall_seconds=5))
        c = self.client(timeout=(2, 0.3), max_retries=0)
        with self.assertRaises(openai2.APITimeoutError) as cm:
            list(self.create(c, stream=True))
        self.assertIn("sent nothing for 0.3s in the middle of the response", str(cm.exception))

    def test_line_endings(self):
        for ending in ("\n", "\r\n", "\r"):
            self.server.replies.append(Reply(content="你好世界", line_ending=ending, write_size=5))
            stream = self.create(stream=True)
            list(stream)
            self.assertEqual(stream.accumulator.content, "你好世界", repr(ending))


class TestErrors(ClientCase):
    def test_status_classes_and_fields(self):
        cases = [(400, openai2.BadRequestError), (401, openai2.AuthenticationError), (403, openai2.PermissionDeniedError),
                 (404, openai2.NotFoundError), (422, openai2.UnprocessableEntityError)]
        for status, cls in cases:
            self.server.replies.append(Reply(status=status, headers={"x-request-id": "req_%d" % status},
                                             body={"error": {"message": "msg %d" % status, "type": "t", "code": "c", "param": "p"}}))
            with self.assertRaises(cls) as cm:
                self.create()
            e = cm.exception
            self.assertEqual((e.status_code, e.request_id, e.message, e.code, e.type, e.param), (status, "req_%d" % status, "msg %d" % status, "c", "t", "p"))
            self.assertIn("msg %d" % status, str(e))
            self.assertIsInstance(e, openai2.APIStatusError)
        self.assertEqual(self.sleeps.delays, [])  # none of these is retried

    def test_html_502_page(self):
        page = "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
        self.server.replies.extend([Reply(status=502, body=page, content_type="text/html")] * 3)
        with self.assertRaises(openai2.InternalServerError) as cm:
            self.create()
        text = str(cm.exception)
        self.assertIn("502", text)
        self.assertIn("Bad Gateway", text)
        self.assertNotIn("<html>", text)
        self.assertEqual(len(self.sleeps.delays), 2)

    def test_401_without_key_explains_how_to_provide_one(self):
        self.server.replies.append(Reply(status=401, body={"error": {"message": "Missing bearer authentication in header", "type": "invalid_request_error"}}))
        saved = os.environ.pop("OPENAI_API_KEY", None)
        try:
            c = OpenAI(**server_options(self.server))
            self.addCleanup(c.close)
            with self.assertRaises(openai2.AuthenticationError) as cm:
                self.create(c)
        finally:
            if saved is not None:
                os.environ["OPENAI_API_KEY"] = saved
        self.assertIn("OPENAI_API_KEY", str(cm.exception))
        self.assertIn("add_apikey", str(cm.exception))

    def test_server_echoing_the_key_is_masked(self):
        self.server.replies.append(Reply(status=401, body={"error": {"message": "Incorrect API key provided: %s." % KEY, "code": "invalid_api_key"}}))
        with self.assertRaises(openai2.AuthenticationError) as cm:
            self.create()
        self.assertNotIn(KEY, str(cm.exception))
        self.assertNotIn(KEY, repr(cm.exception.body))
        self.assertIn(openai2.mask_key(KEY), cm.exception.message)

    def test_key_echoed_in_stream_error_event_is_masked(self):
        self.server.replies.append(Reply(events=[{"error": {"message": "Incorrect API key provided: %s" % KEY}}], done=False))
        with self.assertRaises(openai2.APIError) as cm:
            list(self.create(stream=True))
        e = cm.exception
        for text in (str(e), repr(e), e.message, repr(e.body)):
            self.assertNotIn(KEY, text)
        self.assertIn(openai2.mask_key(KEY), e.message)

    def test_error_event_in_stream(self):
        self.server.replies.append(Reply(raw_stream=b'event: error\ndata: {"error": {"message": "tool_use_failed", "code": "tool_use_failed"}}\n\n'))
        with self.assertRaises(openai2.APIError) as cm:
            list(self.create(stream=True))
        self.assertEqual(cm.exception.code, "tool_use_failed")


class TestRetries(ClientCase):
    def test_retry_after_seconds_then_success(self):
        self.server.replies.extend([Reply(status=429, headers={"Retry-After": "2"}), "ok"])
        self.assertEqual(self.create().choices[0].message.content, "ok")
        self.assertEqual(self.sleeps.delays, [2.0])

    def test_retry_after_ms_and_http_date(self):
        self.server.replies.extend([Reply(status=503, headers={"retry-after-ms": "150"}), "ok"])
        self.create()
        self.assertEqual(self.sleeps.delays, [0.15])
        self.assertAlmostEqual(retry_delay(0, {"retry-after": formatdate(1000.0 + 30, usegmt=True)}, now=1000.0), 30.0, delta=1)
        # beyond 60 s: capped at 60; negative: ignored, exponential backoff instead
        self.assertEqual(retry_delay(1, {"retry-after": "3600"}), 60.0)
        d = retry_delay(1, {"retry-after": "-5"})
        self.assertTrue(0.75 <= d <= 1.0, d)
        # the asctime form carries no zone: it is GMT, whatever the local time zone
        asctime = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(1000.0 + 20))
        self.assertAlmostEqual(retry_delay(0, {"retry-after": asctime}, now=1000.0), 20.0, delta=1)

    def test_backoff_doubles_with_cap(self):
        for attempt, (low, high) in enumerate([(0.375, 0.5), (0.75, 1), (1.5, 2), (3, 4), (6, 8), (6, 8)]):
            d = retry_delay(attempt)
            self.assertTrue(low <= d <= high, (attempt, d))

    def test_retry_statuses(self):
        for status in (408, 409, 429, 500, 502, 503, 504):
            self.assertTrue(should_retry(status, {}), status)
        for status in (400, 401, 403, 404, 422):
            self.assertFalse(should_retry(status, {}), status)
        self.assertFalse(should_retry(429, {}, "insufficient_quota"))
        self.assertFalse(should_retry(500, {"x-should-retry": "false"}))
        self.assertTrue(should_retry(400, {"x-should-retry": "true"}))

    def test_max_retries_exhausted(self):
        self.server.replies.extend([Reply(status=500)] * 4)
        with self.assertRaises(openai2.InternalServerError):
            self.create(self.client(max_retries=3))
        self.assertEqual(len(self.sleeps.delays), 3)
        self.assertEqual(len(self.server.requests), 4)

    def test_insufficient_quota_not_retried(self):
        self.server.replies.append(Reply(status=429, body={"error": {"message": "You exceeded your current quota", "code": "insufficient_quota", "type": "insufficient_quota"}}))
        with self.assertRaises(openai2.RateLimitError) as cm:
            self.create()
        self.assertEqual(cm.exception.code, "insufficient_quota")
        self.assertEqual(self.sleeps.delays, [])

    def test_no_retry_after_stream_data(self):
        self.server.replies.append(Reply(content="abcdef", disconnect_after=3))
        with self.assertRaises(openai2.IncompleteStreamError):
            list(self.create(stream=True))
        self.assertEqual(len(self.server.requests), 1)


class TestKeyPool(ClientCase):
    def test_429_moves_to_next_key(self):
        keys = ["sk-pool-aaaa-000000000001", "sk-pool-bbbb-000000000002", "sk-pool-cccc-000000000003"]
        pool = AKPool(keys)
        self.server.replies.extend([Reply(status=429, headers={"Retry-After": "30"}), "ok", "ok", "ok"])
        c = self.client(api_key=pool)
        self.create(c)
        self.assertEqual([r.headers["authorization"][7:] for r in self.server.requests], keys[:2])
        self.assertEqual(self.sleeps.delays, [])
        # the limited key is skipped while it cools down
        self.create(c)
        self.create(c)
        used = [r.headers["authorization"][7:] for r in self.server.requests[2:]]
        self.assertNotIn(keys[0], used)

    def test_429_cool_down_follows_a_long_retry_after(self):
        clock = [1000.0]
        keys = ["sk-long-aaaa-000000000001", "sk-long-bbbb-000000000002"]
        pool = AKPool(keys, clock=lambda: clock[0])
        self.server.replies.extend([Reply(status=429, headers={"Retry-After": "120"}), "ok", "ok", "ok"])
        c = self.client(api_key=pool)
        self.create(c)
        clock[0] += 10  # beyond the 5 s default, well within the server's 120 s
        self.create(c)
        self.create(c)
        used = [r.headers["authorization"][7:] for r in self.server.requests]
        self.assertEqual(used, [keys[0], keys[1], keys[1], keys[1]])

    def test_401_sets_key_aside_and_reports_when_all_fail(self):
        keys = ["sk-bad1-xxxxxxxxxxxx1111", "sk-good-xxxxxxxxxxxx2222"]
        pool = AKPool(keys)
        self.server.replies.extend([Reply(status=401, body={"error": {"message": "invalid key"}}), "ok"])
        c = self.client(api_key=pool)
        self.assertEqual(self.create(c).choices[0].message.content, "ok")
        self.assertEqual(pool.usable_count, 1)
        self.server.replies.append(Reply(status=401, body={"error": {"message": "invalid key"}}))
        with self.assertRaises(openai2.AuthenticationError) as cm:
            self.create(c)
        text = str(cm.exception)
        for k in keys:
            self.assertNotIn(k, text)
            self.assertIn(openai2.mask_key(k), text)


class TestLegacyLayer(ClientCase):
    sockets = True  # openai.api_base is all the legacy layer is told: no transport to pass

    def test_seed_002_004_style(self):
        import openai2 as openai

        saved = (openai.api_key, openai.api_base, openai.proxy)
        self.addCleanup(lambda: setattr(openai, "api_key", saved[0]) or setattr(openai, "api_base", saved[1]) or setattr(openai, "proxy", saved[2]))
        openai.api_key = KEY
        openai.api_base = self.server.base_url
        self.server.replies.append("answer one")
        rsp = openai.ChatCompletion.create(
            model="gpt-3.5-turbo",
            messages=[{"role": "system", "content": "一个有10年Python开发经验的资深算法工程师"}, {"role": "user", "content": "q"}],
        )
        self.assertEqual(rsp.get("choices")[0]["message"]["content"], "answer one")
        self.assertEqual(rsp.get("choices")[0]["message"]["role"], "assistant")
        self.assertIsInstance(rsp.get("usage")["total_tokens"], int)
        self.assertEqual(rsp.choices[0].message["content"], "answer one")
        self.assertEqual(rsp.choices[0].message.content, "answer one")
        self.assertEqual(self.server.requests[-1].headers["authorization"], "Bearer " + KEY)


class TestKeyNeverLeaks(ClientCase):
    def test_reprs_errors_and_logs(self):
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        logger = logging.getLogger("openai2")
        logger.addHandler(handler)
        old_level = logger.level
        logger.setLevel(logging.DEBUG)
        self.addCleanup(logger.removeHandler, handler)
        self.addCleanup(logger.setLevel, old_level)
        seen = []
        pool = AKPool([KEY, KEY[::-1]])
        c = self.client(api_key=pool)
        seen += [repr(c), repr(pool), str(pool)]
        c2 = self.client()
        seen.append(repr(c2))
        self.server.replies.extend([Reply(status=500)] * 3 + [Reply(status=401, body={"error": {"message": "bad key " + KEY}})] * 2)
        for client in (c2, c):
            try:
                self.create(client)
            except openai2.OpenAIError as exc:
                seen += [str(exc), repr(exc), repr(getattr(exc, "body", None))]
        chat = openai2.Chat(api_key=KEY, model="m", **server_options(self.server))
        seen.append(repr(chat))
        seen.append(stream.getvalue())
        blob = "\n".join(seen)
        self.assertNotIn(KEY, blob)
        self.assertNotIn(KEY[::-1], blob)
        self.assertIn("…", blob)

    def test_run_wide_key_scan_can_fail(self):
        from tests.support.keyscan import KeyScan

        scan = KeyScan()
        # outside the "openai2" tree, so the deliberate leak does not reach the run-wide scan
        logger = logging.getLogger("keyscan-selftest")
        logger.propagate = False
        logger.addHandler(scan)
        self.addCleanup(logger.removeHandler, scan)
        logger.warning("masked %s is fine", openai2.mask_key(KEY))
        self.assertEqual(scan.found, [])
        logger.warning("leaked %s", KEY)
        self.assertEqual(scan.found, [("keyscan-selftest", KEY)])

@unittest.skipUnless(os.path.isdir(CORPUS), "the shared wire corpus is not beside the repository")
class TestWireCorpusThroughClient(ClientCase):
    """Every recorded stream, served byte-for-byte by the fake server and read by the real client."""

    def test_streams(self):
        with open(os.path.join(CORPUS, "expected.json"), encoding="utf-8") as f:
            expected = json.load(f)
        checked = 0
        for name, want in sorted(expected.items()):
            with open(os.path.join(CORPUS, name), "rb") as f:
                raw = f.read()
            if name.endswith(".jsonl"):
                raw = b"".join(b"data: " + line + b"\n\n" for line in raw.splitlines() if line.strip()) + b"data: [DONE]\n\n"
            with self.subTest(name):
                self.server.replies.append(Reply(raw_stream=raw, write_size=97))
                stream = self.create(stream=True)
                if want.get("errors"):
                    with self.assertRaises(openai2.APIError):
                        list(stream)
                    continue
                list(stream)
                acc = stream.accumulator
                self.assertEqual(acc.content, want.get("content", ""))
                self.assertEqual(acc.reasoning, want.get("reasoning", ""))
                self.assertEqual(acc.finish_reason, want.get("finish_reason"))
                self.assertEqual(acc.usage, want.get("usage"))
                if "tool_calls" in want:
                    self.assertEqual(acc.tool_calls, want["tool_calls"])
                checked += 1
        self.assertGreater(checked, 25)


class TestEndToEndOverSockets(ClientCase):
    """The subset that needs real sockets (see the module docstring)."""

    sockets = True

    test_attribute_and_item_access = TestResponses.test_attribute_and_item_access
    test_stream_chunks_and_context_manager = TestResponses.test_stream_chunks_and_context_manager
    test_stream_closed_early_then_next_request_ok = TestResponses.test_stream_closed_early_then_next_request_ok
    test_stream_broken_partial_holds_what_arrived = TestResponses.test_stream_broken_partial_holds_what_arrived
    test_stream_reset_mid_body = TestResponses.test_stream_reset_mid_body
    test_line_endings = TestResponses.test_line_endings
    test_html_502_page = TestErrors.test_html_502_page
    test_max_retries_exhausted = TestRetries.test_max_retries_exhausted

    def test_keep_alive_one_connection(self):
        c = self.client()
        for _ in range(5):
            self.create(c)
        self.assertEqual(len({r.connection_id for r in self.server.requests}), 1)

    def test_completed_stream_returns_its_connection_to_the_pool(self):
        c = self.client()
        for _ in range(3):
            self.server.replies.append(Reply(content="abc"))
            self.assertEqual(len(list(self.create(c, stream=True))), 5)
            self.create(c)
        self.assertEqual(self.server.connection_count, 1)

    def test_connection_refused_is_wrapped(self):
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        c = self.client(base_url="http://127.0.0.1:%d/v1" % port, max_retries=1)
        with self.assertRaises(openai2.APIConnectionError):
            self.create(c)
        self.assertEqual(len(self.sleeps.delays), 1)

    def test_plain_http_to_remote_host_warns_once(self):
        c = OpenAI(api_key=KEY, base_url="http://api.example.invalid/v1", max_retries=0, timeout=0.5)
        self.addCleanup(c.close)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(2):
                with self.assertRaises(openai2.APIConnectionError):
                    self.create(c)
        relevant = [w for w in caught if "plain http" in str(w.message)]
        self.assertEqual(len(relevant), 1)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.create()  # loopback: no warning
        self.assertEqual([w for w in caught if "plain http" in str(w.message)], [])


if __name__ == "__main__":
    unittest.main()
