"""MemoryTransport (openai2.testing): the same Reply answered in memory as over FakeServer's sockets.

The table tests send each Reply once through the real HTTPTransport to a FakeServer and once
through a MemoryTransport and compare what comes back: at the transport level the status, the
headers and the body bytes (fresh ids and timestamps normalised), at the client level the
chunks, the assembled answer and the errors.  The rest pins what only the memory transport
does: simulated stalls (no waiting), the blocking stall mode, close and cancel from another
thread, redirects, the record of requests.
"""
import re
import threading
import unittest

from openai2 import Chat, OpenAI
from openai2.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    RequestCancelledError,
    ResponseTooLargeError,
)
from openai2.testing import MemoryTransport, Reply, chat_chunk, chat_completion
from openai2.transport import CancelScope, HTTPTransport, Timeout
from tests.support.serving import Gate  # a gate that is no Event: it tells when the request arrived

try:
    from openai2.testing import FakeServer
except ImportError:  # pragma: no cover
    FakeServer = None

KEY = "sk-memory-test-0123456789abcdef"
BASE = "https://api.test/v1"
MESSAGES = [{"role": "user", "content": "hi"}]
TOOL_CALLS = [{"id": "call_1", "function": {"name": "lookup", "arguments": '{"city": "Paris", "n": 12345}'}}]

# Reply options as the wire corpus uses them: (name, Reply keyword arguments)
TABLE = [
    ("plain", {"content": "Hello, world"}),
    ("chunks", {"chunks": ["Hel", "lo ", "wor", "ld"]}),
    ("reasoning", {"content": "51", "reasoning": "50 + 1"}),
    ("tool_calls", {"tool_calls": TOOL_CALLS}),
    ("tool_calls_and_text", {"content": "calling", "tool_calls": TOOL_CALLS}),
    ("usage_dict", {"content": "u", "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}),
    ("no_usage_length", {"content": "cut", "usage": None, "finish_reason": "length"}),
    ("no_finish_reason", {"content": "open", "finish_reason": None}),
    ("crlf", {"content": "line\nends", "line_ending": "\r\n"}),
    ("cr", {"content": "cr only", "line_ending": "\r"}),
    ("keepalive_comments", {"content": "kk", "keepalive_comments": 3}),
    ("write_size_splits_utf8", {"content": "自然数五十", "write_size": 2}),
    ("not_chunked", {"content": "to the close", "chunked": False}),
    ("custom_headers", {"content": "h", "headers": {"x-custom": "yes", "Server": "other"}}),
    ("model", {"content": "m", "model": "my-model"}),
    ("error_400", {"status": 400, "content": "bad request here"}),
    ("error_429_code", {"status": 429, "content": "quota", "error_code": "insufficient_quota"}),
    ("error_503", {"status": 503}),
    ("raw_body", {"body": b"not json at all", "content_type": "text/plain"}),
    ("json_body", {"body": chat_completion("whole body")}),
    ("events", {"events": [chat_chunk("e", role="assistant"), chat_chunk("v", finish_reason="stop")]}),
    ("events_no_done", {"events": [chat_chunk("e", role="assistant")], "done": False}),
    ("error_event", {"events": [chat_chunk("e", role="assistant"), {"error": {"message": "boom"}}]}),
    ("bad_json_event", {"events": ["not json"]}),
    ("raw_stream", {"raw_stream": b'data: {"choices":[{"index":0,"delta":{"content":"r"}}]}\n\ndata: [DONE]\n\n'}),
    ("disconnect", {"content": "abcdefgh", "disconnect_after": 4}),
    ("disconnect_not_chunked", {"content": "abcdefgh", "disconnect_after": 4, "chunked": False}),
    ("reset_mid_body", {"content": "abcdefgh", "disconnect_after": 4, "reset": True}),
    ("disconnect_json_body", {"content": "abcdefgh", "disconnect_after": 20}),
]

_IDS = re.compile(rb"-fake\d{6}|\"created\":\d+")


def normalised(data):
    return _IDS.sub(b"", data)


def clean_chunk(chunk):
    chunk = dict(chunk)
    chunk.pop("id", None)
    chunk.pop("created", None)
    return chunk


def transport_outcome(transport, base, body, stream):
    """What a transport gives back: (status, headers, body bytes, pieces joined, error type)."""
    headers = {"Content-Type": "application/json", "Authorization": "Bearer " + KEY}
    import json

    payload = json.dumps(dict(body, stream=stream)).encode()
    response = transport.request("POST", base + "/chat/completions", headers=headers, body=payload,
                                 timeout=Timeout(5, 5))
    got = []
    error = None
    try:
        for piece in response.iter_bytes():
            got.append(piece)
    except APIError as exc:
        error = type(exc).__name__
    finally:
        response.close()
    shown = {k: v for k, v in response.headers.items() if k != "x-request-id"}
    return response.status, shown, normalised(b"".join(got)), error


def client_outcome(transport, base, stream):
    """What a client makes of it: chunks or the completion, the error type and partial text."""
    client = OpenAI(api_key=KEY, base_url=base, transport=transport, max_retries=0)
    try:
        if stream:
            chunks = []
            s = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
            try:
                for chunk in s.iter_dicts():
                    chunks.append(clean_chunk(chunk))
            except APIError as exc:
                return ("error", type(exc).__name__, chunks, getattr(exc, "partial", None))
            acc = s.accumulator
            return ("stream", chunks, acc.content, acc.reasoning, acc.tool_calls, acc.finish_reason, acc.usage)
        answer = client.chat.completions.create(model="m", messages=MESSAGES)
        return ("whole", clean_chunk(answer.to_dict() if hasattr(answer, "to_dict") else dict(answer)))
    except APIError as exc:
        status = exc.status_code if isinstance(exc, APIStatusError) else None
        return ("error", type(exc).__name__, status, exc.message.replace("127.0.0.1", "HOST"))
    finally:
        client.close()


@unittest.skipIf(FakeServer is None, "no FakeServer")
class SameAnswerAsTheSocketServer(unittest.TestCase):
    """Each Reply of the table gives the same thing in memory as over loopback sockets."""

    def setUp(self):
        self.server = FakeServer().start()
        self.addCleanup(self.server.stop)
        self.http = HTTPTransport(trust_env=False)
        self.addCleanup(self.http.close)

    def test_transport_level_status_headers_and_bytes_are_the_same(self):
        for stream in (False, True):
            for name, kwargs in TABLE:
                with self.subTest(name=name, stream=stream):
                    self.server.add_replies(Reply(**kwargs))
                    over_sockets = transport_outcome(self.http, self.server.base_url, {"model": "m",
                                                     "messages": MESSAGES}, stream)
                    in_memory = transport_outcome(MemoryTransport([Reply(**kwargs)]), BASE,
                                                  {"model": "m", "messages": MESSAGES}, stream)
                    self.assertEqual(in_memory, over_sockets)

    def test_client_level_chunks_answers_and_errors_are_the_same(self):
        for stream in (False, True):
            for name, kwargs in TABLE:
                with self.subTest(name=name, stream=stream):
                    self.server.add_replies(Reply(**kwargs))
                    over_sockets = client_outcome(self.http, self.server.base_url, stream)
                    in_memory = client_outcome(MemoryTransport([Reply(**kwargs)]), "https://127.0.0.1/v1",
                                               stream)
                    if over_sockets[0] == "error" and isinstance(over_sockets[-1], str):
                        # the message names the server's address: host:port differ
                        over_sockets = over_sockets[:-1] + (re.sub(r"HOST:\d+", "HOST", over_sockets[-1]),)
                        in_memory = in_memory[:-1] + (re.sub(r"HOST:\d+", "HOST", in_memory[-1]),)
                    self.assertEqual(in_memory, over_sockets)

    def test_recorded_requests_are_the_same(self):
        self.server.add_replies(Reply("a"))
        memory = MemoryTransport([Reply("a")])
        for transport, base in ((self.http, self.server.base_url), (memory, BASE)):
            client = OpenAI(api_key=KEY, base_url=base, transport=transport, organization="org-1")
            client.chat.completions.create(model="m", messages=MESSAGES, temperature=0.5)
        sock, mem = self.server.last_request, memory.last_request
        self.assertEqual((mem.method, mem.path, mem.body, mem.json), (sock.method, sock.path, sock.body, sock.json))
        self.assertEqual({k: v for k, v in mem.headers.items() if k != "host"},
                         {k: v for k, v in sock.headers.items() if k != "host"})
        self.assertEqual(mem.headers["host"], "api.test:443")
        self.assertEqual(mem.messages, MESSAGES)
        self.assertEqual(mem.connection_id, 0)

    def test_default_handler_is_the_demo_model_on_both(self):
        chat_mem = Chat(api_key=KEY, base_url=BASE, transport=MemoryTransport(), model="m")
        chat_sock = Chat(api_key=KEY, base_url=self.server.base_url, transport=self.http, model="m")
        for chat in (chat_mem, chat_sock):
            self.assertEqual(chat.request("自然数50的后面是几?"), "51")
            self.assertEqual("".join(chat.stream_request("再往后是几?")), "52")


class SimulatedTime(unittest.TestCase):
    """Stalls and delays are simulated against the read timeout, never waited for."""

    def chat(self, *replies, timeout=5.0, **options):
        transport = MemoryTransport(list(replies), **options)
        return Chat(api_key=KEY, base_url=BASE, transport=transport, model="m", timeout=timeout,
                    max_retries=0), transport

    def test_a_stall_as_long_as_the_read_timeout_raises_the_read_timeout_error_at_once(self):
        chat, _ = self.chat(Reply("abcdef", stall_after=3, stall_seconds=30.0), timeout=5.0)
        with self.assertRaises(APITimeoutError) as caught:
            list(chat.stream_request("x"))
        self.assertIn("sent nothing for 5s in the middle of the response", str(caught.exception))

    def test_a_stall_shorter_than_the_read_timeout_passes(self):
        chat, _ = self.chat(Reply("abcdef", stall_after=3, stall_seconds=2.0), timeout=5.0)
        self.assertEqual("".join(chat.stream_request("x")), "abcdef")

    def test_a_delay_as_long_as_the_read_timeout_is_no_answer(self):
        chat, transport = self.chat(Reply("late", delay=10.0), timeout=5.0)
        with self.assertRaises(APITimeoutError) as caught:
            chat.request("x")
        self.assertIn("No answer from api.test:443 within 5s", str(caught.exception))
        self.assertEqual(transport.in_flight, 0)

    def test_a_stall_after_done_costs_only_the_tail(self):
        # the events: role, 6 pieces, finish (usage not asked for), then [DONE] is the 9th: the stall follows it
        chat, transport = self.chat(Reply("abcdef", stall_after=9, stall_seconds=3600.0), timeout=600.0)
        self.assertEqual("".join(chat.stream_request("x")), "abcdef")
        self.assertEqual(chat.fetch_messages()[-1]["content"], "abcdef")
        self.assertEqual(transport.in_flight, 0)

    def test_reset_before_the_head_is_a_connection_error_the_client_retries(self):
        transport = MemoryTransport([Reply(reset=True), Reply("second")])
        client = OpenAI(api_key=KEY, base_url=BASE, transport=transport, max_retries=1, sleep=lambda s, c: None)
        answer = client.chat.completions.create(model="m", messages=MESSAGES)
        self.assertEqual(answer.choices[0].message.content, "second")
        self.assertEqual(len(transport.requests), 2)

    def test_stalls_mode_is_checked(self):
        with self.assertRaises(ValueError):
            MemoryTransport(stalls="sleep")


class ClosingAndCancelling(unittest.TestCase):
    def test_close_from_another_thread_ends_a_blocked_stall_quietly(self):
        transport = MemoryTransport([Reply("abcdef", stall_after=3, stall_seconds=3600.0)], stalls="block")
        chat = Chat(api_key=KEY, base_url=BASE, transport=transport, model="m", timeout=3600.0)
        stream = chat.stream_request("x")
        first = threading.Event()
        pieces = []
        outcome = []

        def read():
            try:
                for piece in stream:
                    pieces.append(piece)
                    first.set()
                outcome.append("ended")
            except BaseException as exc:  # noqa: BLE001 - reported to the test
                outcome.append(exc)
            finally:
                first.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        self.assertTrue(first.wait(10))
        stream.close()
        reader.join(10)
        self.assertFalse(reader.is_alive())
        self.assertEqual(outcome, ["ended"])
        self.assertEqual("".join(pieces), "ab")
        self.assertEqual(transport.in_flight, 0)

    def test_cancel_scope_stops_a_blocked_stall_with_request_cancelled(self):
        transport = MemoryTransport([Reply("abcdef", stall_after=3, stall_seconds=3600.0)], stalls="block")
        client = OpenAI(api_key=KEY, base_url=BASE, transport=transport, timeout=3600.0)
        scope = CancelScope()
        stream = client.stream({"model": "m", "messages": MESSAGES, "stream": True}, cancel=scope)
        got = []
        outcome = []
        started = threading.Event()

        def read():
            try:
                for piece in stream.iter_text():
                    got.append(piece)
                    started.set()
            except BaseException as exc:  # noqa: BLE001 - reported to the test
                outcome.append(exc)
            finally:
                started.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        self.assertTrue(started.wait(10))
        scope.cancel()
        reader.join(10)
        self.assertFalse(reader.is_alive())
        self.assertEqual(len(outcome), 1)
        self.assertIsInstance(outcome[0], RequestCancelledError)

    def test_a_cancelled_scope_sends_nothing(self):
        transport = MemoryTransport(["x"])
        scope = CancelScope()
        scope.cancel()
        with self.assertRaises(RequestCancelledError):
            transport.request("POST", BASE + "/chat/completions", headers={}, body=b"{}", timeout=Timeout(), cancel=scope)
        self.assertEqual(transport.requests, [])

    def test_read_after_close_raises_and_iter_bytes_ends(self):
        transport = MemoryTransport(["whole"])
        response = transport.request("POST", BASE + "/chat/completions", headers={}, body=b"{}", timeout=Timeout())
        response.close()
        self.assertTrue(response.closed)
        self.assertEqual(list(response.iter_bytes()), [])
        with self.assertRaises(RequestCancelledError):
            response.read()
        self.assertEqual(transport.in_flight, 0)

    def test_read_limit(self):
        transport = MemoryTransport([Reply(body=b"x" * 100), Reply(body=b"y" * 100, chunked=True)])
        for _ in range(2):
            response = transport.request("POST", BASE + "/chat/completions", headers={}, body=b"{}",
                                         timeout=Timeout())
            with self.assertRaises(ResponseTooLargeError):
                response.read(limit=50)
        self.assertEqual(transport.in_flight, 0)


class GatesStopWithTheRequest(unittest.TestCase):
    """A request held at a Reply's gate (its answer not yet begun) ends as over sockets: at
    once on a cancel (RequestCancelledError), at the read timeout (APITimeoutError), whatever
    the gate; the same request over FakeServer shows what the socket transport does."""

    def hold(self, transport, url, gate, scope=None, read=3600.0):
        """Send one request whose answer waits on ``gate`` (never opened by the test), from a
        thread; returns the thread and the list that gets its outcome (the exception or the body)."""
        if transport.replies is not None:
            transport.replies.append(Reply("held", gate=gate, gate_timeout=3600.0))
        outcome = []

        def send():
            try:
                response = transport.request("POST", url + "/chat/completions", headers={}, body=b"{}",
                                             timeout=Timeout(5.0, read), cancel=scope)
                outcome.append(response.read())
            except BaseException as exc:  # noqa: BLE001 - reported to the test
                outcome.append(exc)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        self.assertTrue(transport.wait_for_requests(1, timeout=10))
        return sender, outcome

    def both(self):
        """(transport, base URL, cleanup) for memory, then for a FakeServer through HTTPTransport."""
        memory = MemoryTransport()
        yield memory, BASE
        server = FakeServer().start()
        http = HTTPTransport(trust_env=False)
        http.replies, http.wait_for_requests = server.replies, server.wait_for_requests
        try:
            yield http, server.base_url
        finally:
            http.close()
            server.stop()

    def assert_ends_with(self, sender, outcome, error_type):
        sender.join(10)  # bounded: before the fix the wait went on for the gate's whole hour
        self.assertFalse(sender.is_alive(), "still held at the gate")
        self.assertEqual(len(outcome), 1, outcome)
        self.assertIsInstance(outcome[0], error_type)

    def test_cancel_stops_a_request_held_by_an_event_gate_at_once(self):
        for transport, url in self.both():
            with self.subTest(transport=type(transport).__name__):
                gate = threading.Event()
                self.addCleanup(gate.set)
                scope = CancelScope()
                sender, outcome = self.hold(transport, url, gate, scope)
                scope.cancel()
                self.assert_ends_with(sender, outcome, RequestCancelledError)
                self.assertFalse(gate.is_set())

    def test_cancel_stops_a_request_held_by_a_gate_that_is_no_event(self):
        for transport, url in self.both():
            with self.subTest(transport=type(transport).__name__):
                gate = Gate()
                self.addCleanup(gate.release.set)
                scope = CancelScope()
                sender, outcome = self.hold(transport, url, gate, scope)
                self.assertTrue(gate.arrived.wait(10))
                scope.cancel()
                self.assert_ends_with(sender, outcome, RequestCancelledError)

    def test_cancel_stops_a_request_held_by_a_barrier_and_leaves_it_whole(self):
        for transport, url in self.both():
            with self.subTest(transport=type(transport).__name__):
                barrier = threading.Barrier(2, timeout=30)
                self.addCleanup(barrier.abort)
                scope = CancelScope()
                sender, outcome = self.hold(transport, url, barrier, scope)
                scope.cancel()
                self.assert_ends_with(sender, outcome, RequestCancelledError)
                # the server still stands at the barrier for the cancelled request: the next party opens it
                self.assertFalse(barrier.broken)
                barrier.wait(10)

    def test_a_gate_still_shut_after_the_read_timeout_is_no_answer(self):
        for transport, url in self.both():
            with self.subTest(transport=type(transport).__name__):
                gate = threading.Event()
                self.addCleanup(gate.set)
                sender, outcome = self.hold(transport, url, gate, read=0.2)
                self.assert_ends_with(sender, outcome, APITimeoutError)
                self.assertIn("read timeout", str(outcome[0]))

    def test_a_gate_opened_in_time_lets_the_answer_through(self):
        for transport, url in self.both():
            with self.subTest(transport=type(transport).__name__):
                gate = Gate()
                sender, outcome = self.hold(transport, url, gate, CancelScope())
                self.assertTrue(gate.arrived.wait(10))
                gate.release.set()
                sender.join(10)
                self.assertEqual(len(outcome), 1, outcome)
                self.assertIn(b'"held"', outcome[0])

    def test_an_async_cancel_frees_the_worker_held_by_a_gate(self):
        import asyncio

        gate = threading.Event()
        self.addCleanup(gate.set)
        transport = MemoryTransport([Reply("held", gate=gate, gate_timeout=3600.0), Reply("next")])
        chat = Chat(api_key=KEY, base_url=BASE, transport=transport, model="m", timeout=3600.0, max_retries=0)

        async def main():
            task = asyncio.ensure_future(chat.async_request("q"))
            while not transport.requests:  # the request is in, held at the gate
                await asyncio.sleep(0.005)
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task

        asyncio.run(main())
        freed = threading.Event()
        for _ in range(2000):  # bounded (10 s): the worker leaves the gate once the cancel lands
            if transport.in_flight == 0:
                freed.set()
                break
            freed.wait(0.005)
        self.assertTrue(freed.is_set(), "the worker is still held at the gate")
        self.assertFalse(gate.is_set())
        self.assertEqual(chat.fetch_messages(), [])
        self.assertEqual(chat.request("again"), "next")

    def test_stop_ends_a_fake_server_connection_held_by_a_gate_that_is_no_event(self):
        server = FakeServer([Reply("held", gate=Gate(), gate_timeout=3600.0)]).start()
        http = HTTPTransport(trust_env=False)
        self.addCleanup(http.close)
        scope = CancelScope()
        failed = []

        def send():
            try:
                http.request("POST", server.base_url + "/chat/completions", headers={}, body=b"{}",
                             timeout=Timeout(5.0, 3600.0), cancel=scope)
            except APIConnectionError as exc:  # stop() closes the connection: what the client sees
                failed.append(exc)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        self.assertTrue(server.wait_for_requests(1))
        server.stop(timeout=10)  # waits for the connection threads, bounded
        scope.cancel()
        sender.join(10)
        self.assertEqual(server.open_connections, 0)  # the connection's thread left the gate
        self.assertEqual(len(failed), 1)


class RecordAndRouting(unittest.TestCase):
    def test_redirect_is_followed_and_a_cross_origin_one_drops_the_key(self):
        transport = MemoryTransport([Reply(redirect_to="/v2/chat/completions"),
                                     Reply(redirect_to="https://other.test/v1/chat/completions"), "there"])
        client = OpenAI(api_key=KEY, base_url=BASE, transport=transport)
        answer = client.chat.completions.create(model="m", messages=MESSAGES)
        self.assertEqual(answer.choices[0].message.content, "there")
        paths = [(r.headers["host"], r.path, "authorization" in r.headers) for r in transport.requests]
        self.assertEqual(paths, [("api.test:443", "/v1/chat/completions", True),
                                 ("api.test:443", "/v2/chat/completions", True),
                                 ("other.test:443", "/v1/chat/completions", False)])

    def test_unknown_path_is_a_404_and_handler_errors_are_500s(self):
        def broken(request):
            raise RuntimeError("handler bug")

        transport = MemoryTransport(handler=broken)
        client = OpenAI(api_key=KEY, base_url=BASE + "/nowhere", transport=transport, max_retries=0)
        with self.assertRaises(APIStatusError) as caught:
            client.post("/x", {})
        self.assertEqual(caught.exception.status_code, 404)
        client = OpenAI(api_key=KEY, base_url=BASE, transport=transport, max_retries=0)
        with self.assertRaises(APIStatusError) as caught:
            client.chat.completions.create(model="m", messages=MESSAGES)
        self.assertEqual(caught.exception.status_code, 500)
        self.assertEqual([str(e) for e in transport.errors], ["handler bug"])

    def test_unsupported_url_is_not_retried(self):
        transport = MemoryTransport(["x"])
        with self.assertRaises(APIConnectionError) as caught:
            transport.request("POST", "ftp://api.test/x", headers={}, body=None, timeout=Timeout())
        self.assertFalse(caught.exception.retryable)

    def test_reset_and_add_replies_and_wait_for_requests(self):
        transport = MemoryTransport()
        transport.add_replies("one")
        chat = Chat(api_key=KEY, base_url=BASE, transport=transport, model="m")
        self.assertEqual(chat.request("q"), "one")
        self.assertTrue(transport.wait_for_requests(1, timeout=0))
        self.assertEqual(transport.max_in_flight, 1)
        transport.reset()
        self.assertEqual((transport.requests, transport.last_request), ([], None))
        self.assertIn("MemoryTransport", repr(transport))

    def test_key_never_in_repr(self):
        transport = MemoryTransport(["x"])
        OpenAI(api_key=KEY, base_url=BASE, transport=transport).chat.completions.create(model="m", messages=MESSAGES)
        self.assertNotIn(KEY, repr(transport) + repr(transport.last_request))


class Documentation(unittest.TestCase):
    def test_the_docstring_example_runs(self):
        import inspect
        import textwrap

        # Python 3.13 strips docstring indentation at compile time; cleandoc makes
        # every version's text the same before the example is cut out of it.
        doc = inspect.cleandoc(MemoryTransport.__doc__)
        start = doc.index("::\n") + 3
        end = doc.index("\n\nAny ")
        code = textwrap.dedent(doc[start:end])
        self.assertIn("MemoryTransport(", code)
        exec(compile(code, "<MemoryTransport docstring>", "exec"), {})


if __name__ == "__main__":
    unittest.main()
