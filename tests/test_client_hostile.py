"""The low-level client against hostile or odd servers and misuse: echoed keys (also in excerpts
and hand-given headers), no-choice answers, close() from another thread, pings after [DONE],
event streams labelled JSON, NaN in a request, misused constructor options.

The tests run in memory (tests/support/memory.py: a MemoryTransport where the FakeServer
stood).  On the loopback FakeServer stay: TestPingsAfterDone (a connection discarded or kept
after [DONE] is a real pooled connection, and the pings come paced by write_pause, which the
memory transport does not wait), TestTransportErrorsAreMasked (the 303 and too-many-redirects
errors of the real transport's one translator) and TestEndToEndOverSockets (close() from
another thread of a stream blocked in a real socket read).
"""
import itertools
import json
import threading
import unittest

import openai2
from openai2 import Chat, OpenAI
from openai2.client import ChatCompletionStream, no_answer_error
from openai2.testing import Reply
from tests.support.memory import memory_or_socket_server, server_options

KEY = "sk-hostile-client-5e4d3c2b1a09f8e7d6c5"
AZURE_KEY = "sk-azure-hostile-00112233445566778899aabb"
MESSAGES = [{"role": "user", "content": "hi"}]


def sse(*payloads, done=True):
    out = b"".join(b"data: " + json.dumps(p).encode() + b"\n\n" for p in payloads)
    return out + (b"data: [DONE]\n\n" if done else b"")


def chunk(content=None, finish=None):
    delta = {} if content is None else {"content": content}
    return {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


class Sleeps:
    def __init__(self):
        self.delays = []

    def __call__(self, seconds, cancel):
        self.delays.append(seconds)


class BlockingResponse:
    """An in-memory HTTPResponse: sends ``data``, then blocks until close() (from any thread),
    which ends the body as the transport does: an error, a clean early end, or a timeout."""

    status = 200
    headers = {"content-type": "text/event-stream"}

    def __init__(self, data, ending):
        self.data = data
        self.ending = ending
        self.blocked = threading.Event()
        self.released = threading.Event()
        self.closed = False

    def iter_bytes(self):
        yield self.data
        self.blocked.set()
        self.released.wait(30)
        if self.ending == "error":
            raise openai2.APIConnectionError("Connection error: the socket was shut down.")
        if self.ending == "timeout":
            raise openai2.APITimeoutError()

    def limit_read_timeout(self, seconds):
        pass

    def close(self):
        self.closed = True
        self.released.set()


class HostileCase(unittest.TestCase):
    #: True: a real FakeServer over loopback sockets; False: a MemoryServer (no sockets)
    sockets = False
    #: the MemoryServer's stall mode ("block": stalls really wait, until close/cancel)
    stalls = "timeout"

    def setUp(self):
        self.server = memory_or_socket_server(self.sockets, stalls=self.stalls)
        self.addCleanup(self.server.stop)
        self.sleeps = Sleeps()

    def client(self, **kw):
        kw.setdefault("api_key", KEY)
        for name, value in server_options(self.server).items():
            kw.setdefault(name, value)
        kw.setdefault("sleep", self.sleeps)
        kw.setdefault("max_retries", 0)
        c = OpenAI(**kw)
        self.addCleanup(c.close)
        return c

    def create(self, client=None, **kw):
        kw.setdefault("model", "m")
        kw.setdefault("messages", MESSAGES)
        return (client or self.client()).chat.completions.create(**kw)

    def assertNoSecretPart(self, text, secret):
        """Not even a piece of the secret: no 12 characters of it in a row."""
        for i in range(len(secret) - 11):
            self.assertNotIn(secret[i:i + 12], text)


class TestNoChoiceAnswers(HostileCase):
    def test_no_choice_answer_raises_with_the_key_masked(self):
        echo = {"detail": "Invalid token %s for this relay" % KEY}
        self.server.replies.append(Reply(body=echo))
        c = self.client()
        with self.assertRaises(openai2.APIError) as cm:
            c.complete({"model": "m", "messages": MESSAGES})
        e = cm.exception
        for text in (str(e), repr(e), e.message, json.dumps(e.body)):
            self.assertNoSecretPart(text, KEY)
        self.assertIn(openai2.mask_key(KEY), e.message)
        self.assertIn("without any choice", e.message)

    def test_chat_request_gets_the_masked_error(self):
        self.server.replies.append(Reply(body={"detail": "bad key " + KEY}))
        chat = Chat(api_key=KEY, model="m", max_retries=0, **server_options(self.server))
        with self.assertRaises(openai2.APIError) as cm:
            chat.request("hi")
        self.assertNoSecretPart(str(cm.exception) + json.dumps(cm.exception.body), KEY)
        self.assertEqual(chat.fetch_messages(), [])

    def test_stream_without_an_answer_raises_with_the_key_masked(self):
        # a relay that put the key where the model name goes, then [DONE] and nothing else
        raw = sse({"id": "x", "model": "echo " + KEY, "choices": []})
        self.server.replies.append(Reply(raw_stream=raw))
        stream = self.client().stream({"model": "m", "messages": MESSAGES, "stream": True})
        with self.assertRaises(openai2.APIError) as cm:
            list(stream.iter_dicts())
        self.assertNotIsInstance(cm.exception, openai2.APIConnectionError)
        self.assertNoSecretPart(str(cm.exception) + json.dumps(cm.exception.body), KEY)

    def test_create_still_returns_what_the_server_sent(self):
        self.server.replies.append(Reply(body={"object": "list", "data": []}))
        self.assertEqual(self.create(), {"object": "list", "data": []})

    def test_excerpt_is_cut_after_masking(self):
        prefix = '{"detail": "'
        filler = "x" * (200 - 20 - len(prefix))  # the key starts 20 characters before the cut
        self.assertEqual(json.dumps({"detail": filler + KEY}).index(KEY), 180)
        error = no_answer_error({"detail": filler + KEY + " tail"}, (KEY,))
        self.assertNoSecretPart(error.message, KEY)
        self.assertNoSecretPart(json.dumps(error.body), KEY)
        # the old call (no secrets) still works
        self.assertIn("without any choice", no_answer_error({"a": 1}).message)

    def test_non_json_excerpt_is_cut_after_masking(self):
        for stream in (False, True):
            page = "<p>" + "y" * (200 - 15 - 3) + KEY + "</p>"
            self.server.replies.append(Reply(body=page, content_type="text/html" if not stream else "application/json"))
            with self.assertRaises(openai2.APIStatusError) as cm:
                result = self.create(stream=stream)
                if stream:
                    list(result)
            self.assertIn("not usable JSON", str(cm.exception))
            self.assertNoSecretPart(str(cm.exception), KEY)


class TestHeaderSecrets(HostileCase):
    def echo_401(self, secret):
        return Reply(status=401, body={"error": {"message": "Incorrect API key provided: %s." % secret}})

    def test_keys_in_hand_given_headers_are_masked(self):
        cases = [
            ({"default_headers": {"api-key": AZURE_KEY}}, {}),
            ({"default_headers": {"x-api-key": AZURE_KEY}}, {}),
            ({"default_headers": {"Authorization": "Bearer " + AZURE_KEY}}, {}),
            ({}, {"extra_headers": {"X-Api-Key": AZURE_KEY}}),
            ({}, {"extra_headers": {"Authorization": "Bearer " + AZURE_KEY}}),
        ]
        for options, call in cases:
            with self.subTest(options=options, call=call):
                self.server.replies.append(self.echo_401(AZURE_KEY))
                with self.assertRaises(openai2.AuthenticationError) as cm:
                    self.create(self.client(**options), **call)
                e = cm.exception
                for text in (str(e), repr(e), e.message, json.dumps(e.body)):
                    self.assertNoSecretPart(text, AZURE_KEY)
                self.assertIn(openai2.mask_key(AZURE_KEY), e.message)
        sent = [r.headers.get("api-key") or r.headers.get("x-api-key") or r.headers["authorization"] for r in self.server.requests]
        self.assertTrue(all(AZURE_KEY in value for value in sent))  # sent as given, masked only in errors

    def test_stream_error_event_masks_a_header_key(self):
        self.server.replies.append(Reply(events=[{"error": {"message": "key %s is over quota" % AZURE_KEY}}], done=False))
        stream = self.create(self.client(default_headers={"api-key": AZURE_KEY}), stream=True)
        with self.assertRaises(openai2.APIError) as cm:
            list(stream)
        self.assertNoSecretPart(cm.exception.message + json.dumps(cm.exception.body), AZURE_KEY)

    def test_ordinary_header_values_are_not_masked(self):
        self.server.replies.append(Reply(status=400, body={"error": {"message": "unknown tenant acme-corporation-tenant"}}))
        with self.assertRaises(openai2.BadRequestError) as cm:
            self.create(self.client(default_headers={"X-Tenant": "acme-corporation-tenant"}))
        self.assertIn("acme-corporation-tenant", cm.exception.message)


class TestCloseFromAnotherThread(HostileCase):
    stalls = "block"  # in memory a stall holds the stream until it is closed

    def test_close_from_another_thread_stops_at_once_and_quietly(self):
        # two content events, then the server goes silent (far longer than the test may take)
        self.server.replies.append(Reply(content="abcdefgh", stall_after=3, stall_seconds=60))
        stream = self.create(self.client(timeout=(5, 60)), stream=True)
        first = threading.Event()
        outcome = {}

        def consume():
            got = []
            try:
                for piece in stream.iter_text():
                    got.append(piece)
                    first.set()
                outcome["ended"] = "quietly"
            except BaseException as exc:  # noqa: BLE001 - reported to the test
                outcome["ended"] = exc
            outcome["got"] = got

        worker = threading.Thread(target=consume, daemon=True)
        worker.start()
        self.assertTrue(first.wait(10))
        closer = threading.Thread(target=stream.close, daemon=True)
        closer.start()
        # failure detectors only: the stall lasts 60 s
        closer.join(10)
        self.assertFalse(closer.is_alive(), "close() from another thread waits for the blocked reader")
        worker.join(10)
        self.assertFalse(worker.is_alive(), "the reading thread is still blocked after close()")
        self.assertEqual(outcome["ended"], "quietly")
        self.assertTrue(outcome["got"])
        self.assertEqual(list(stream.iter_text()), [])  # a closed stream stays ended

    def test_stream_part_of_close_from_another_thread(self):
        # the transport's contract: close() from any thread makes a blocked read return at once,
        # by an error or an early end of the body; either way the stream ends quietly
        for ending in ("error", "eof", "timeout"):
            with self.subTest(ending=ending):
                response = BlockingResponse(sse(chunk("ab"), done=False), ending)
                stream = ChatCompletionStream(response)
                outcome = {}

                def consume(stream=stream, outcome=outcome):
                    try:
                        outcome["got"] = list(stream.iter_text())
                    except BaseException as exc:  # noqa: BLE001 - reported to the test
                        outcome["error"] = exc

                worker = threading.Thread(target=consume, daemon=True)
                worker.start()
                self.assertTrue(response.blocked.wait(10))
                stream.close()
                worker.join(10)
                self.assertFalse(worker.is_alive())
                self.assertNotIn("error", outcome)
                self.assertEqual(outcome["got"], ["ab"])
                self.assertTrue(response.closed)

    def test_closed_before_reading_yields_nothing(self):
        self.server.replies.append(Reply(content="abc"))
        stream = self.create(stream=True)
        stream.close()
        self.assertEqual(list(stream), [])


class TestPingsAfterDone(HostileCase):
    sockets = True  # real pooled connections (connection_count) and pings paced by write_pause

    def pinging_reply(self):
        body = sse(chunk("he"), chunk("llo", "stop")) + b": ping\n" * 3000
        # every write is its own HTTP chunk, 2 ms apart: the server never falls silent
        return Reply(raw_stream=body, write_size=7, write_pause=0.002)

    def test_done_ends_the_stream_even_while_the_server_keeps_pinging(self):
        c = self.client()
        self.server.replies.append(self.pinging_reply())
        stream = self.create(c, stream=True)
        stream.done_grace = 0.0
        self.assertEqual("".join(stream.iter_text()), "hello")
        self.assertEqual(stream.accumulator.finish_reason, "stop")
        self.create(c)
        # the pinging connection was discarded, not read to its end and reused
        self.assertEqual(self.server.connection_count, 2)

    def test_tail_deadline_follows_the_injected_clock(self):
        c = self.client()
        self.server.replies.append(self.pinging_reply())
        stream = self.create(c, stream=True)
        ticks = itertools.count(0.0, 0.25)
        stream.clock = lambda: next(ticks)
        stream.done_grace = 1.0  # four readings of the injected clock, whatever the wall clock says
        self.assertEqual("".join(stream.iter_text()), "hello")
        self.create(c)
        self.assertEqual(self.server.connection_count, 2)

    def test_a_clean_end_after_done_keeps_the_connection(self):
        c = self.client()
        for _ in range(2):
            self.server.replies.append(Reply(content="abc"))
            self.assertEqual("".join(self.create(c, stream=True).iter_text()), "abc")
        self.assertEqual(self.server.connection_count, 1)

    def test_default_grace(self):
        self.assertEqual(ChatCompletionStream.__init__.__kwdefaults__["done_grace"], openai2.client.DONE_GRACE_SECONDS)


class TestEventStreamLabelledJSON(HostileCase):
    def test_event_stream_labelled_json_is_read_as_events(self):
        body = sse(chunk("he"), chunk("llo", "stop"))
        for raw in (body, b"\xef\xbb\xbf\r\n" + body, b": hello\n\n" + body, b"event: message\n" + body,
                    b"id: 1\n" + body, b"retry: 10\n" + body):
            with self.subTest(raw=raw[:12]):
                self.server.replies.append(Reply(raw_stream=raw, content_type="application/json", write_size=3))
                stream = self.create(stream=True)
                self.assertEqual("".join(stream.iter_text()), "hello")
                self.assertEqual(stream.accumulator.finish_reason, "stop")

    def test_labelled_json_stream_is_not_read_whole_first(self):
        # the first events arrive, then the server stalls: they must reach the caller now
        self.server.replies.append(Reply(content="abcdef", content_type="application/json", stall_after=3, stall_seconds=120))
        stream = self.create(self.client(timeout=(5, 60)), stream=True)
        pieces = stream.iter_text()
        self.assertEqual(next(pieces), "a")
        stream.close()

    def test_a_real_json_body_keeps_the_whole_response_path(self):
        body = {"id": "c1", "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "whole"}, "finish_reason": "stop"}]}
        self.server.replies.append(Reply(body=b"\n  " + json.dumps(body).encode(), content_type="application/json"))
        stream = self.create(stream=True)
        self.assertEqual([c.choices[0].delta.content for c in stream], ["whole"])
        self.server.replies.append(Reply(body={"error": {"message": "quota gone", "code": "q"}}))
        with self.assertRaises(openai2.APIStatusError) as cm:
            list(self.create(stream=True))
        self.assertEqual(cm.exception.code, "q")


class TestNonFiniteNumbers(HostileCase):
    def test_nan_and_infinity_are_refused_before_sending(self):
        cases = [
            ({"temperature": float("nan")}, "temperature"),
            ({"top_p": float("inf")}, "top_p"),
            ({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                           {"role": "user", "content": float("-inf")}]}, "messages[2].content"),
            ({"extra_body": {"logit_bias": {"42": float("nan")}}}, "logit_bias.42"),
        ]
        c = self.client()
        for params, where in cases:
            with self.subTest(where=where):
                for stream in (False, True):
                    with self.assertRaises(ValueError) as cm:
                        self.create(c, stream=stream, **params)
                    self.assertIn(where, str(cm.exception))
                    self.assertIn("JSON", str(cm.exception))
        self.assertEqual(self.server.requests, [])

    def test_other_unencodable_bodies_keep_their_error(self):
        with self.assertRaises(TypeError):
            self.create(temperature=object())
        self.assertEqual(self.server.requests, [])


class TestConstructorMisuse(HostileCase):
    def test_misused_options_fail_at_the_constructor_naming_the_option(self):
        cases = [
            ({"max_response_bytes": "10"}, TypeError, "max_response_bytes"),
            ({"max_response_bytes": -1}, ValueError, "max_response_bytes"),
            ({"max_response_bytes": 0}, ValueError, "max_response_bytes"),
            ({"max_response_bytes": True}, TypeError, "max_response_bytes"),
            ({"proxy": 5}, TypeError, "proxy"),
            ({"base_url": "ftp://files.example.com/v1"}, ValueError, "base_url"),
            ({"base_url": "http://"}, ValueError, "base_url"),
            ({"base_url": 5}, TypeError, "base_url"),
            ({"timeout": "10"}, TypeError, "timeout"),
            ({"timeout": -1}, ValueError, "imeout"),
            ({"timeout": (1, 2, 3)}, TypeError, "timeout"),
            ({"default_headers": [("X-A", "b")]}, TypeError, "default_headers"),
            ({"default_headers": {"X-Retry": 3}}, TypeError, "default_headers"),
            ({"default_headers": {"X-A": "b\r\nX-Injected: 1"}}, ValueError, "default_headers"),
            ({"default_headers": {"Bad Name": "x"}}, ValueError, "default_headers"),
            ({"organization": 5}, TypeError, "organization"),
            ({"project": ["p"]}, TypeError, "project"),
            ({"verify": "no"}, TypeError, "verify"),
            ({"ca_file": 5}, TypeError, "ca_file"),
            ({"transport": object()}, TypeError, "transport"),
            ({"sleep": 5}, TypeError, "sleep"),
        ]
        base = self.client()
        for options, error, name in cases:
            with self.subTest(options=options):
                kw = dict(options)
                kw.setdefault("base_url", self.server.base_url)
                with self.assertRaises(error) as cm:
                    OpenAI(api_key=KEY, **kw)
                self.assertIn(name, str(cm.exception))
                with self.assertRaises(error) as cm:
                    base.with_options(**options)
                self.assertIn(name, str(cm.exception))
        self.assertEqual(self.server.requests, [])

    def test_chat_passes_misused_options_through_to_the_check(self):
        for options, error, name in (({"proxy": 5}, TypeError, "proxy"), ({"max_response_bytes": "10"}, TypeError, "max_response_bytes"),
                                     ({"base_url": "ftp://x.example/v1"}, ValueError, "base_url")):
            with self.subTest(options=options):
                with self.assertRaises(error) as cm:
                    Chat(api_key=KEY, model="m", **options)
                self.assertIn(name, str(cm.exception))

    def test_environment_base_url_is_checked_and_named(self):
        import os

        saved = os.environ.get("OPENAI_BASE_URL")
        os.environ["OPENAI_BASE_URL"] = "ftp://files.example.com/v1"
        try:
            with self.assertRaises(ValueError) as cm:
                OpenAI(api_key=KEY)
        finally:
            if saved is None:
                del os.environ["OPENAI_BASE_URL"]
            else:
                os.environ["OPENAI_BASE_URL"] = saved
        self.assertIn("OPENAI_BASE_URL", str(cm.exception))

    def test_extra_headers_are_checked_per_call(self):
        with self.assertRaises(TypeError) as cm:
            self.create(extra_headers={"X-Retry": 3})
        self.assertIn("extra_headers", str(cm.exception))
        self.assertEqual(self.server.requests, [])

    def test_good_options_still_work(self):
        c = self.client(default_headers={"X-Trace": "t1"}, organization="org-1", project="", max_response_bytes=10**6,
                        timeout=(3, 30))
        self.assertEqual(self.create(c).choices[0].message.content, "(demo) You said: hi")
        self.assertEqual(self.server.requests[-1].headers["x-trace"], "t1")


class TestTransportErrorsAreMasked(HostileCase):
    """Errors the transport raises (a 303, too many redirects) and a 200 body that is not JSON
    quote what the server sent: every key of the client is masked in them."""

    sockets = True  # the real transport's 303 and redirect errors

    def assertMasked(self, e, secret):
        texts = [str(e), repr(e), e.message, repr(e.args), json.dumps(e.body), repr(e.headers),
                 str(e.hint), str(e.request_id)]
        for text in texts:
            self.assertNoSecretPart(text, secret)

    def test_303_echoing_the_key_in_body_and_relative_location_is_masked(self):
        for options, call, secret in (({}, {}, KEY), ({}, {"extra_headers": {"api-key": AZURE_KEY}}, AZURE_KEY)):
            with self.subTest(secret=secret):
                self.server.replies.append(Reply(
                    status=303, body={"error": {"message": "moved, key " + secret}},
                    headers={"Location": "/v1/new?key=" + secret, "X-Echo": secret}))
                with self.assertRaises(openai2.APIStatusError) as cm:
                    self.create(self.client(**options), **call)
                self.assertMasked(cm.exception, secret)
                self.assertIn("Location: /v1/new)", cm.exception.hint)
                self.assertIn(openai2.mask_key(secret), cm.exception.message)

    def test_too_many_redirects_masks_echoed_header_keys(self):
        for _ in range(6):
            self.server.replies.append(Reply(redirect_to=self.server.base_url + "/chat/completions",
                                             headers={"X-Echo": KEY}))
        with self.assertRaises(openai2.APIStatusError) as cm:
            self.create()
        self.assertIn("Too many redirects", cm.exception.hint)
        self.assertMasked(cm.exception, KEY)

    def test_200_non_json_body_masks_echoed_headers_and_request_id(self):
        for stream in (False, True):
            with self.subTest(stream=stream):
                self.server.replies.append(Reply(body=b"garbage", content_type="application/json",
                                                 headers={"X-Echo": KEY, "x-request-id": "req_" + KEY}))
                with self.assertRaises(openai2.APIStatusError) as cm:
                    result = self.create(stream=stream)
                    list(result)
                self.assertMasked(cm.exception, KEY)
                self.assertIn("not usable JSON", cm.exception.message)

    def test_redact_error_masks_the_hint(self):
        error = openai2.APIStatusError("m", status_code=400, hint="see " + KEY)
        openai2.errors.redact_error(error, [KEY])
        self.assertNoSecretPart(error.hint + str(error), KEY)


class TestEndToEndOverSockets(HostileCase):
    """close() from another thread of a stream blocked in a real socket read."""

    sockets = True

    test_close_from_another_thread_stops_at_once_and_quietly = (
        TestCloseFromAnotherThread.test_close_from_another_thread_stops_at_once_and_quietly)
    test_closed_before_reading_yields_nothing = TestCloseFromAnotherThread.test_closed_before_reading_yields_nothing


class TestKeyAndBaseURLMisuse(unittest.TestCase):
    def test_key_with_whitespace_or_control_characters_is_refused(self):
        for bad in (KEY + "\n", " " + KEY, KEY[:6] + " " + KEY[6:], KEY + "\x00", KEY + "\r"):
            with self.subTest(key=bad):
                with self.assertRaises(ValueError) as cm:
                    OpenAI(api_key=bad)
                self.assertNotIn(KEY[4:16], str(cm.exception))
                client = OpenAI(api_key=KEY)
                with self.assertRaises(ValueError):
                    client.api_key = bad
                with self.assertRaises(ValueError):
                    Chat(KEY, model="m").reset_api_key(bad)
        self.assertIsNone(OpenAI(api_key="  ").api_key)  # only whitespace: no key, as before
        client = OpenAI(api_key=KEY)
        client.api_key = ""
        self.assertIsNone(client.api_key)

    def test_repr_masks_a_key_in_the_base_url_query_and_a_password(self):
        text = repr(OpenAI(api_key=KEY, base_url="http://user:pass-secret-123456@x.test/v1?api-key=" + KEY))
        self.assertNotIn("pass-secret-123456", text)
        self.assertNotIn(KEY[4:16], text)
        self.assertIn("http://user:****@x.test/v1?api-key=…", text)
        self.assertIn("x.test/v1", repr(Chat(api_key=KEY, model="m", base_url="https://x.test/v1?key=" + KEY)))
        self.assertNotIn(KEY[4:16], repr(Chat(api_key=KEY, model="m", base_url="https://x.test/v1?key=" + KEY)))


if __name__ == "__main__":
    unittest.main()
