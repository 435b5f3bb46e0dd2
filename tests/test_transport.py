"""Transport tests against loopback servers: keep-alive, stale connections, timeouts, resets,
redirects, size caps, TLS, cancellation, error translation, logging and lazy imports."""
import os
import socket
import ssl
import subprocess
import sys
import threading
import unittest

from openai2.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    IncompleteStreamError,
    OpenAIError,
    RequestCancelledError,
    ResponseTooLargeError,
)
from openai2.transport import CancelScope, HTTPTransport, Timeout, coerce_timeout
from tests.support.proxies import ConnectProxy, OriginServer, ScriptedServer, Socks5Proxy, read_request_head
from tests.support.threads import wait_until_in

HERE = os.path.dirname(os.path.abspath(__file__))
CERTS = os.path.join(HERE, "certs")
CA = os.path.join(CERTS, "ca.pem")
SERVER_CERT = (os.path.join(CERTS, "server.pem"), os.path.join(CERTS, "server.key"))
WRONG_HOST_CERT = (os.path.join(CERTS, "wrong-host.pem"), os.path.join(CERTS, "wrong-host.key"))
OTHER_CA_CERT = (os.path.join(CERTS, "other-server.pem"), os.path.join(CERTS, "other-server.key"))
T = Timeout(2.0, 5.0)
KEY = "sk-test-transport-SECRET-0123456789abcdef"


def transport(**kw):
    kw.setdefault("trust_env", False)
    return HTTPTransport(**kw)


def get(t, url, **kw):
    kw.setdefault("headers", {})
    kw.setdefault("body", None)
    kw.setdefault("timeout", T)
    return t.request(kw.pop("method", "GET"), url, **kw)


class TimeoutTests(unittest.TestCase):
    def test_defaults_and_coercion(self):
        self.assertEqual((Timeout().connect, Timeout().read), (10.0, 600.0))
        self.assertEqual(coerce_timeout(None), Timeout())
        self.assertEqual(coerce_timeout(3), Timeout(3, 3))
        self.assertEqual(coerce_timeout((5, 60)), Timeout(5, 60))
        t = Timeout(1, 2)
        self.assertIs(coerce_timeout(t), t)
        for bad in (0, -1, float("inf"), (1, 0)):
            with self.assertRaises(ValueError):
                coerce_timeout(bad)
        for bad in ("5", True, (1, 2, 3)):
            with self.assertRaises(TypeError):
                coerce_timeout(bad)

    def test_cancel_scope_wait(self):
        scope = CancelScope()
        self.assertFalse(scope.wait(0.01))  # not cancelled: the wait runs out
        results = []
        waiter = threading.Thread(target=lambda: results.append(scope.wait(60)))
        waiter.start()
        scope.cancel()  # wakes the 60 s wait (or makes it return at once)
        waiter.join(30)
        self.assertEqual(results, [True])  # the wait ended by the cancel, not by its 60 s
        self.assertTrue(scope.cancelled)


class KeepAliveTests(unittest.TestCase):
    def test_sequential_requests_share_one_connection(self):
        with OriginServer() as o:
            t = transport()
            for i in range(5):
                r = get(t, o.url("/n%d" % i), method="POST", body=b'{"i": %d}' % i)
                self.assertEqual(r.status, 200)
                self.assertIn(b"/n%d" % i, r.read())
            self.assertEqual(o.connections, 1)
            self.assertEqual({rec.conn_id for rec in o.requests}, {1})
            self.assertEqual([rec.body for rec in o.requests], [b'{"i": %d}' % i for i in range(5)])
            t.close()

    def test_idle_connection_closed_by_server_is_replaced(self):
        hung_up = threading.Event()

        def app(h, rec):
            h.reply(200, b"ok")
            h.hang_up()  # closes the kept-alive connection after answering
            hung_up.set()

        with OriginServer(app) as o:
            t = transport()
            self.assertEqual(get(t, o.url("/a")).read(), b"ok")
            self.assertTrue(hung_up.wait(10))  # the connection in the pool is closed at the server's end
            self.assertEqual(get(t, o.url("/b")).read(), b"ok")
            self.assertEqual(o.connections, 2)
            self.assertEqual(len(o.requests), 2)
            t.close()

    def test_connection_closed_after_the_request_arrived_is_not_resent(self):
        # The race the poll check cannot see: the server takes the request on the kept-alive
        # connection and closes it without a byte of answer. It had the whole request (it may
        # have acted on it and billed it): only the caller's max_retries may send it again.
        def app(h, rec):
            if rec.path == "/second" and rec.conn_id == 1:
                h.hang_up()
                return
            h.reply(200, b"fine")

        with OriginServer(app) as o:
            t = transport()
            get(t, o.url("/first")).read()
            with self.assertRaises(APIConnectionError):
                get(t, o.url("/second"), method="POST", body=b"payload")
            self.assertEqual([(x.path, x.conn_id) for x in o.requests], [("/first", 1), ("/second", 1)])
            self.assertEqual(get(t, o.url("/third")).read(), b"fine")  # the transport carries on
            t.close()

    def test_no_retry_after_response_bytes(self):
        def app(h, rec):
            if rec.path == "/second":
                h.raw(b"HTT")
                h.hang_up()
                return
            h.reply(200, b"fine")

        with OriginServer(app) as o:
            t = transport()
            get(t, o.url("/first")).read()
            with self.assertRaises(APIConnectionError):
                get(t, o.url("/second"))
            self.assertEqual(len(o.requests), 2)

    def test_no_resend_after_status_line_then_reset(self):
        # A reused connection that answers part of the headers and is then reset: the server
        # was answering (it may have acted on the POST), so the request is not sent again.
        client = threading.get_ident()

        def app(h, rec):
            if rec.path == "/second":
                h.raw(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
                # the reset comes once the client read the status line and waits for more headers
                waiting.append(wait_until_in(client, ("parse_headers", "readinto")))
                h.reset()
                return
            h.reply(200, b"fine")

        waiting = []

        with OriginServer(app) as o:
            t = transport()
            get(t, o.url("/first")).read()
            with self.assertRaises(APIConnectionError):
                get(t, o.url("/second"), method="POST", body=b"payload")
            self.assertEqual(waiting, [True])
            self.assertEqual([(x.path, x.conn_id) for x in o.requests], [("/first", 1), ("/second", 1)])

    def test_reset_after_the_request_arrived_is_not_resent(self):
        def app(h, rec):
            if rec.path == "/second" and rec.conn_id == 1:
                h.reset()
                return
            h.reply(200, b"fine")

        with OriginServer(app) as o:
            t = transport()
            get(t, o.url("/first")).read()
            with self.assertRaises(APIConnectionError):
                get(t, o.url("/second"), method="POST", body=b"p")
            self.assertEqual([(x.path, x.conn_id) for x in o.requests], [("/first", 1), ("/second", 1)])

    def test_max_retries_zero_delivers_a_post_once(self):
        from openai2.client import OpenAI

        def app(h, rec):
            if rec.conn_id == 1 and len([x for x in o.requests if x.conn_id == 1]) == 2:
                h.hang_up()  # the second POST on the kept-alive connection: received, never answered
                return
            h.reply(200, b'{"id": "x", "object": "chat.completion", "choices": [{"index": 0, '
                         b'"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}')

        with OriginServer(app) as o:
            client = OpenAI(api_key="sk-test-once-0000", base_url=o.url("/v1"), max_retries=0, transport=transport())
            messages = [{"role": "user", "content": "pay once"}]
            client.chat.completions.create(model="m", messages=messages)
            with self.assertRaises(APIConnectionError):
                client.chat.completions.create(model="m", messages=messages)
            self.assertEqual(len(o.requests), 2)

    def test_reused_connection_failing_while_the_request_is_written_is_resent_once(self):
        # The server reset the idle connection, and the pool handed it out before noticing
        # (the window between its check and the write): writing fails, nothing reached the
        # server, so the request goes again on a new connection.
        import select

        gone = threading.Event()

        def app(h, rec):
            h.reply(200, b"fine")
            if rec.path == "/first":
                h.reset()
                gone.set()

        with OriginServer(app) as o:
            t = transport()
            get(t, o.url("/first")).read()
            self.assertTrue(gone.wait(5))
            pool = t._pool
            (idle,) = [c for conns in pool._idle.values() for c in conns]
            select.select([idle.http.sock], [], [], 5)  # the reset has arrived

            def unchecked_get(key):  # as if the reset came just after the pool's check
                with pool._lock:
                    conns = pool._idle.get(key)
                    return conns.pop() if conns else None

            pool.get = unchecked_get
            r = get(t, o.url("/second"), method="POST", body=b"x" * 100000)
            self.assertEqual(r.read(), b"fine")
            self.assertEqual([(x.path, x.conn_id) for x in o.requests], [("/first", 1), ("/second", 2)])
            self.assertEqual(o.requests[-1].body, b"x" * 100000)
            t.close()

    def test_no_retry_on_fresh_connection(self):
        def app(h, rec):
            h.hang_up()

        with OriginServer(app) as o:
            with self.assertRaises(APIConnectionError) as cm:
                get(transport(), o.url("/x"))
            self.assertIn("without answering", str(cm.exception))
            self.assertEqual(len(o.requests), 1)

    def test_early_stream_close_discards_connection(self):
        def app(h, rec):
            h.reply_chunked([b"data: %d\n\n" % i for i in range(50)])

        with OriginServer(app) as o:
            t = transport()
            r = get(t, o.url("/s"))
            it = r.iter_bytes()
            self.assertTrue(next(it).startswith(b"data: 0"))
            it.close()
            r.close()
            self.assertEqual(t._pool.idle_count(), 0)
            # the whole stream read: connection reused afterwards
            r = get(t, o.url("/s"))
            body = b"".join(r.iter_bytes())
            self.assertEqual(body, b"".join(b"data: %d\n\n" % i for i in range(50)))
            self.assertEqual(t._pool.idle_count(), 1)
            get(t, o.url("/s")).read()
            self.assertEqual(o.connections, 2)
            t.close()

    def test_close_without_reading_discards(self):
        with OriginServer() as o:
            t = transport()
            get(t, o.url("/a")).close()
            get(t, o.url("/b")).read()
            self.assertEqual(o.connections, 2)
            t.close()

    def test_concurrent_requests_use_separate_connections(self):
        barrier = threading.Barrier(3, timeout=5)

        def app(h, rec):
            if rec.path == "/together":
                barrier.wait()
            h.reply(200, b"x")

        with OriginServer(app) as o:
            t = transport()
            errors = []

            def worker():
                try:
                    get(t, o.url("/together")).read()
                except Exception as exc:  # pragma: no cover - reported below
                    errors.append(exc)

            threads = [threading.Thread(target=worker) for _ in range(3)]
            for th in threads:
                th.start()
            for th in threads:
                th.join(5)
            self.assertEqual(errors, [])
            self.assertEqual(o.connections, 3)
            self.assertEqual(len({r.conn_id for r in o.requests}), 3)
            self.assertEqual(t._pool.idle_count(), 3)
            for _ in range(3):
                get(t, o.url("/after")).read()
            self.assertEqual(o.connections, 3)
            t.close()


class _RecordingSocket:
    """Stands in for a connected socket: records each sendall()."""

    def __init__(self):
        self.writes = []

    def sendall(self, data):
        self.writes.append(bytes(data))

    def close(self):
        pass


class OneWriteTests(unittest.TestCase):
    """Headers and a small body leave in one write (http.client alone makes two)."""

    def writes(self, body, **kw):
        from openai2.connection import _conn_http_class

        conn = _conn_http_class()("example.invalid", 80)
        conn.sock = _RecordingSocket()
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"}, **kw)
        return conn.sock.writes

    def test_small_body_goes_with_the_headers(self):
        body = b'{"model": "m", "messages": []}'
        writes = self.writes(body)
        self.assertEqual(len(writes), 1)
        head, sep, rest = writes[0].partition(b"\r\n\r\n")
        self.assertEqual((sep, rest), (b"\r\n\r\n", body))
        self.assertTrue(head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n"))
        self.assertIn(b"\r\nContent-Length: %d" % len(body), head)
        # an empty body: one write, nothing after the header block
        writes = self.writes(b"")
        self.assertEqual(len(writes), 1)
        self.assertIn(b"\r\nContent-Length: 0\r\n", writes[0])
        self.assertTrue(writes[0].endswith(b"\r\n\r\n"))

    def test_large_or_streamed_bodies_are_sent_as_before(self):
        from openai2.connection import _CONN_COALESCE_BODY

        big = b"x" * (_CONN_COALESCE_BODY + 1)
        writes = self.writes(big)
        self.assertEqual(len(writes), 2)
        self.assertEqual(writes[1], big)
        self.assertTrue(writes[0].endswith(b"\r\n\r\n"))
        writes = self.writes(iter([b"ab", b"cd"]), encode_chunked=True)
        self.assertEqual(b"".join(writes).partition(b"\r\n\r\n")[2], b"2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n")
        writes = self.writes(bytearray(b"abc"))
        self.assertEqual(b"".join(writes).partition(b"\r\n\r\n")[2], b"abc")


class FailureTests(unittest.TestCase):
    def test_read_timeout_mid_stream(self):
        release = threading.Event()

        def app(h, rec):
            h.send_response(200)
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            h.raw(b"6\r\nfirst!\r\n")
            release.wait(30)  # holds the stream open until the client gave up

        with OriginServer(app) as o:
            r = get(transport(), o.url("/stall"), timeout=Timeout(1, 0.2))
            it = r.iter_bytes()
            self.assertEqual(next(it), b"first!")
            with self.assertRaises(APITimeoutError) as cm:
                next(it)  # the server is still holding the stream: only the read timeout ends it
            release.set()
            self.assertIn("read timeout", str(cm.exception))
            self.assertIn("0.2", str(cm.exception))

    def test_read_timeout_before_headers(self):
        release = threading.Event()

        def app(h, rec):
            release.wait(3)

        with OriginServer(app) as o:
            with self.assertRaises(APITimeoutError) as cm:
                get(transport(), o.url("/slow"), timeout=Timeout(1, 0.2))
            release.set()
            self.assertIn("read timeout", str(cm.exception))

    def test_connect_timeout(self):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(5):  # fill the accept backlog so new SYNs go unanswered
                c = socket.socket()
                c.setblocking(False)
                try:
                    c.connect(("127.0.0.1", port))
                except BlockingIOError:
                    pass
                fillers.append(c)
            with self.assertRaises(APITimeoutError) as cm:
                get(transport(), "http://127.0.0.1:%d/" % port, timeout=Timeout(0.3, 5))
            self.assertIn("connect timeout 0.3s", str(cm.exception))
        finally:
            for c in fillers:
                c.close()
            listener.close()

    def test_connection_refused_names_host_and_port(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        with self.assertRaises(APIConnectionError) as cm:
            get(transport(), "http://127.0.0.1:%d/v1" % port)
        self.assertIn("127.0.0.1:%d" % port, str(cm.exception))
        self.assertIn("refused", str(cm.exception))
        self.assertIsInstance(cm.exception.cause, ConnectionRefusedError)

    def test_dns_failure_names_host(self):
        with self.assertRaises(APIConnectionError) as cm:
            get(transport(), "http://no-such-host.invalid/v1")
        self.assertIn("no-such-host.invalid", str(cm.exception))
        self.assertIn("resolve", str(cm.exception))

    def test_reset_mid_stream(self):
        first_piece_read = threading.Event()
        waited = []

        def app(h, rec):
            h.send_response(200)
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            h.raw(b"5\r\nhello\r\n")
            waited.append(first_piece_read.wait(10))  # the reset comes after the client has "hello"
            h.reset()

        with OriginServer(app) as o:
            t = transport()
            r = get(t, o.url("/reset"))
            got = []
            with self.assertRaises(IncompleteStreamError):
                for piece in r.iter_bytes():
                    got.append(piece)
                    first_piece_read.set()
            self.assertEqual(got, [b"hello"])
            self.assertEqual(waited, [True])
            self.assertEqual(t._pool.idle_count(), 0)

    def test_short_content_length_body(self):
        def app(h, rec):
            h.raw(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
            h.hang_up()

        with OriginServer(app) as o:
            with self.assertRaises(IncompleteStreamError):
                get(transport(), o.url("/short")).read()
            with self.assertRaises(IncompleteStreamError):
                b"".join(get(transport(), o.url("/short")).iter_bytes())

    def test_response_size_cap(self):
        def app(h, rec):
            if rec.path == "/chunked":
                h.reply_chunked([b"x" * 500] * 10)
            else:
                h.reply(200, b"y" * 5000)

        with OriginServer(app) as o:
            t = transport()
            for path in ("/big", "/chunked"):
                with self.assertRaises(ResponseTooLargeError) as cm:
                    get(t, o.url(path)).read(limit=1000)
                self.assertIn("1000", str(cm.exception))
                self.assertEqual(t._pool.idle_count(), 0)
                self.assertEqual(len(get(t, o.url(path)).read(limit=5000)), 5000)

    def test_bad_header_value_does_not_leak_key(self):
        with OriginServer() as o:
            with self.assertRaises(APIConnectionError) as cm:
                get(transport(), o.url("/"), headers={"Authorization": "Bearer " + KEY + "\r\nX: y"})
            self.assertNotIn(KEY, str(cm.exception))
            self.assertNotIn(KEY, repr(cm.exception.__cause__) + repr(cm.exception.__context__))

    def test_bad_header_value_is_not_retryable(self):
        with OriginServer() as o:
            with self.assertRaises(APIConnectionError) as cm:
                get(transport(), o.url("/"), headers={"Authorization": "Bearer " + KEY + "\nX: y"})
            self.assertIs(cm.exception.retryable, False)
            self.assertEqual(len(o.requests), 0)

    def test_non_latin1_key_is_neither_chained_nor_retryable(self):
        key = "sk-proj-SECRET\u2019KEY-0123456789"  # pasted with a typographic apostrophe
        with OriginServer() as o:
            with self.assertRaises(APIConnectionError) as cm:
                get(transport(), o.url("/"), headers={"Authorization": "Bearer " + key})
            err = cm.exception
            self.assertIn("check the API key and default_headers", str(err))
            self.assertIsNone(err.cause)
            self.assertIsNone(err.__cause__)
            self.assertTrue(err.__suppress_context__ or err.__context__ is None)
            shown = repr(err) + repr(err.cause) + repr(err.__context__) + repr(vars(err))
            self.assertNotIn(key, shown)
            self.assertIs(err.retryable, False)
            self.assertEqual(len(o.requests), 0)

    def test_unsupported_scheme_is_not_retryable_but_a_refused_connection_is(self):
        with self.assertRaises(APIConnectionError) as cm:
            get(transport(), "ftp://127.0.0.1/x")
        self.assertIs(cm.exception.retryable, False)
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        with self.assertRaises(APIConnectionError) as cm:
            get(transport(), "http://127.0.0.1:%d/" % port)
        self.assertIs(cm.exception.retryable, True)

    def test_proxy_refusals_are_not_retryable(self):
        with OriginServer() as o, ConnectProxy(refuse=True) as p:
            scope = CancelScope()
            with self.assertRaises(APIConnectionError) as cm:
                get(HTTPTransport(proxy=p.url), o.url("/v1/chat"), cancel=scope)  # absolute-URI 403
            self.assertIs(cm.exception.retryable, False)
            self.assertEqual(scope._conns, [])  # detached before the connection was closed
        with OriginServer(certfile=SERVER_CERT[0], keyfile=SERVER_CERT[1], host="localhost") as o:
            with ConnectProxy(auth=("u", "right")) as p:  # CONNECT answered 407
                t = HTTPTransport(proxy="http://u:wrong@127.0.0.1:%d" % p.port, ca_file=CA)
                with self.assertRaises(APIConnectionError) as cm:
                    get(t, o.url("/"))
                self.assertIn("407", str(cm.exception))
                self.assertIs(cm.exception.retryable, False)
        with OriginServer() as o, Socks5Proxy(auth=("alice", "right")) as s:
            for creds in (("alice", "wrong"), None):
                with self.assertRaises(APIConnectionError) as cm:
                    get(HTTPTransport(proxy=s.url("socks5h", creds)), o.url("/"))
                self.assertIs(cm.exception.retryable, False)
        with OriginServer() as o, Socks5Proxy(reply_code=5) as s:  # the target refused: may pass
            with self.assertRaises(APIConnectionError) as cm:
                get(HTTPTransport(proxy=s.url("socks5h")), o.url("/"))
            self.assertIs(cm.exception.retryable, True)

    def test_only_openai2_exceptions_escape(self):
        scenarios = {
            "/garbage": lambda h: (h.raw(b"NOT HTTP AT ALL\r\n\r\n"), h.hang_up()),
            "/badchunk": lambda h: (h.raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"), h.hang_up()),
            "/hangup": lambda h: h.hang_up(),
            "/reset": lambda h: h.reset(),
            "/longline": lambda h: (h.raw(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n"), h.hang_up()),
            "/eof": lambda h: (h.raw(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab"), h.reset()),
        }

        def app(h, rec):
            scenarios[rec.path](h)

        urls = ["ftp://example.invalid/", "http://[::1/", "http://127.0.0.1:99999/"]
        with OriginServer(app) as o:
            t = transport()
            urls += [o.url(p) for p in scenarios]
            for url in urls:
                try:
                    r = get(t, url, timeout=Timeout(1, 1))
                    r.read()
                except OpenAIError:
                    pass
                except BaseException as exc:  # pragma: no cover - the failure we look for
                    self.fail("%s escaped for %s: %r" % (type(exc).__name__, url, exc))
                else:
                    self.fail("no error for %s" % url)


class RedirectTests(unittest.TestCase):
    def test_cross_origin_redirect_drops_credentials_and_keeps_post(self):
        with OriginServer() as other:
            def app(h, rec):
                h.reply(307, b"", headers={"Location": other.url("/landed?x=1")})

            with OriginServer(app) as first:
                headers = {
                    "Authorization": "Bearer " + KEY,
                    "api-key": KEY,
                    "OpenAI-Organization": "org-1",
                    "OpenAI-Project": "proj-1",
                    "Cookie": "a=b",
                    "x-api-key": KEY,
                    "X-Goog-Api-Key": KEY,
                    "X-Custom": "dropped",
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                    "User-Agent": "test-agent/1",
                }
                r = get(transport(), first.url("/v1/chat"), method="POST", body=b'{"q": 1}', headers=headers)
                self.assertEqual(r.status, 200)
                self.assertEqual(r.url, other.url("/landed?x=1"))
                r.read()
                self.assertIn("authorization", first.requests[0].headers)
                landed = other.requests[0]
                self.assertEqual((landed.method, landed.path, landed.body), ("POST", "/landed?x=1", b'{"q": 1}'))
                self.assertEqual(first.requests[0].headers.get("x-api-key"), KEY)
                for name in (
                    "authorization",
                    "api-key",
                    "openai-organization",
                    "openai-project",
                    "cookie",
                    "x-api-key",
                    "x-goog-api-key",
                    "x-custom",
                ):
                    self.assertNotIn(name, landed.headers)
                self.assertNotIn(KEY, repr(landed.headers))
                self.assertEqual(landed.headers.get("content-type"), "application/json")
                self.assertEqual(landed.headers.get("accept"), "application/json")
                self.assertEqual(landed.headers.get("user-agent"), "test-agent/1")

    def test_same_origin_redirect_keeps_credentials_and_method(self):
        def app(h, rec):
            if rec.path == "/old":
                h.reply(301, b"moved", headers={"Location": "/new"})
            else:
                h.reply(200, b"new")

        with OriginServer(app) as o:
            r = get(transport(), o.url("/old"), method="POST", body=b"B", headers={"Authorization": "Bearer x"})
            self.assertEqual(r.read(), b"new")
            self.assertEqual([(x.method, x.path, x.body) for x in o.requests], [("POST", "/old", b"B"), ("POST", "/new", b"B")])
            self.assertEqual(o.requests[1].headers["authorization"], "Bearer x")
            self.assertEqual(o.connections, 1)

    def test_redirect_to_an_invalid_url_is_a_connection_error(self):
        for location in ("http://127.0.0.1:99999/v1/chat", "http://[::1/v1/chat", "http://u:pw-SECRET@[::1/x?k=SECRET"):

            def app(h, rec, location=location):
                h.reply(307, b"", headers={"Location": location})

            with OriginServer(app) as o:
                with self.assertRaises(APIConnectionError) as cm:
                    get(transport(), o.url("/v1/chat"), method="POST", body=b"{}")
                err = cm.exception
                self.assertIn("Redirect to an invalid URL", str(err))
                self.assertIsNone(err.__cause__)
                self.assertIsNone(err.cause)
                self.assertNotIn("SECRET", str(err))
                self.assertIs(err.retryable, False)
                self.assertEqual(len(o.requests), 1)

    def test_303_is_refused(self):
        def app(h, rec):
            h.reply(303, b"see other", headers={"Location": "/elsewhere"})

        with OriginServer(app) as o:
            with self.assertRaises(APIStatusError) as cm:
                get(transport(), o.url("/v1/chat"), method="POST", body=b"{}")
            self.assertEqual(cm.exception.status_code, 303)
            self.assertIn("GET", str(cm.exception))
            self.assertEqual(len(o.requests), 1)

    def test_redirect_loop_stops(self):
        def app(h, rec):
            h.reply(302, b"", headers={"Location": "/loop"})

        with OriginServer(app) as o:
            with self.assertRaises(APIStatusError) as cm:
                get(transport(), o.url("/loop"), max_redirects=3)
            self.assertIn("Too many redirects", str(cm.exception))
            self.assertEqual(len(o.requests), 4)


class TLSTests(unittest.TestCase):
    def serve(self, cert):
        return OriginServer(certfile=cert[0], keyfile=cert[1], host="localhost")

    def test_https_with_ca_file_and_keep_alive(self):
        with self.serve(SERVER_CERT) as o:
            t = transport(ca_file=CA)
            for _ in range(3):
                self.assertIn(b"ok", get(t, o.url("/tls")).read())
            self.assertEqual(o.connections, 1)
            ctx = t._pool._ctx
            get(t, o.url("/again")).read()
            self.assertIs(t._pool._ctx, ctx)  # one SSL context per transport

    def test_ip_address_certificate(self):
        with self.serve(SERVER_CERT) as o:
            url = "https://127.0.0.1:%d/ip" % o.port
            self.assertIn(b"ok", get(transport(ca_file=CA), url).read())

    def test_unknown_ca_suggests_ca_file(self):
        for cert, ca in ((OTHER_CA_CERT, CA), (SERVER_CERT, None)):
            with self.serve(cert) as o:
                with self.assertRaises(APIConnectionError) as cm:
                    get(transport(ca_file=ca), o.url("/"))
                msg = str(cm.exception)
                self.assertIn("certificate verification failed", msg)
                self.assertIn("ca_file", msg)
                self.assertIn("--ca-file", msg)

    def test_hostname_mismatch(self):
        with self.serve(WRONG_HOST_CERT) as o:
            with self.assertRaises(APIConnectionError) as cm:
                get(transport(ca_file=CA), o.url("/"))
            self.assertIn("does not match the host name 'localhost'", str(cm.exception))

    def test_verify_false_warns_once_and_connects(self):
        with self.serve(OTHER_CA_CERT) as o:
            with self.assertLogs("openai2", level="WARNING") as logs:
                t = transport(verify=False)
                get(t, o.url("/")).read()
                get(t, o.url("/")).read()
            self.assertEqual(len([m for m in logs.output if "verification is disabled" in m]), 1)

    def test_ssl_cert_file_honoured_and_no_env_turns_verification_off(self):
        saved = {k: os.environ.get(k) for k in ("SSL_CERT_FILE", "PYTHONHTTPSVERIFY", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE")}
        try:
            with self.serve(SERVER_CERT) as o:
                os.environ["SSL_CERT_FILE"] = CA
                self.assertIn(b"ok", get(transport(), o.url("/env")).read())
                os.environ["SSL_CERT_FILE"] = os.path.join(CERTS, "other-ca.pem")
                os.environ["PYTHONHTTPSVERIFY"] = "0"
                os.environ["CURL_CA_BUNDLE"] = ""
                os.environ["REQUESTS_CA_BUNDLE"] = ""
                with self.assertRaises(APIConnectionError):
                    get(transport(), o.url("/env"))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def test_missing_ca_file(self):
        with self.assertRaises(ValueError):
            HTTPTransport(ca_file=os.path.join(CERTS, "missing.pem"))


class CancelTests(unittest.TestCase):
    def test_cancel_unblocks_waiting_request(self):
        arrived, release, gave_up = threading.Event(), threading.Event(), threading.Event()

        def app(h, rec):
            arrived.set()
            if not release.wait(30):
                gave_up.set()

        with OriginServer(app) as o:
            scope = CancelScope()
            threading.Thread(target=lambda: arrived.wait(30) and scope.cancel()).start()
            with self.assertRaises(RequestCancelledError):
                get(transport(), o.url("/wait"), cancel=scope, timeout=Timeout(2, 60))
            # woken by the cancel while the server still held the request (not by its hang-up)
            self.assertFalse(gave_up.is_set())
            release.set()

    def test_cancel_unblocks_stream(self):
        release, gave_up = threading.Event(), threading.Event()

        def app(h, rec):
            h.send_response(200)
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            h.raw(b"2\r\nhi\r\n")
            if not release.wait(30):
                gave_up.set()

        with OriginServer(app, certfile=SERVER_CERT[0], keyfile=SERVER_CERT[1], host="localhost") as o:
            scope = CancelScope()
            t = transport(ca_file=CA)
            r = get(t, o.url("/stream"), cancel=scope, timeout=Timeout(2, 30))
            it = r.iter_bytes()
            self.assertEqual(next(it), b"hi")
            threading.Thread(target=scope.cancel).start()  # before or during the next read
            with self.assertRaises(RequestCancelledError):
                next(it)
            self.assertFalse(gave_up.is_set())  # woken by the cancel, the server still holding
            release.set()
            self.assertEqual(t._pool.idle_count(), 0)

    def test_cancel_unblocks_a_connect_that_hangs(self):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(5):  # fill the backlog so a new connect() hangs
                c = socket.socket()
                c.setblocking(False)
                try:
                    c.connect(("127.0.0.1", port))
                except BlockingIOError:
                    pass
                fillers.append(c)
            scope = CancelScope()
            threading.Thread(target=scope.cancel).start()  # before or during the connect
            with self.assertRaises(RequestCancelledError) as cm:
                get(transport(), "http://127.0.0.1:%d/" % port, cancel=scope, timeout=Timeout(30, 30))
            # ended by the cancel, not by the connect timeout running out
            self.assertNotIsInstance(cm.exception.cause, (socket.timeout, TimeoutError))
        finally:
            for c in fillers:
                c.close()
            listener.close()

    def test_cancel_interrupts_a_tls_handshake_the_server_never_completes(self):
        silent = socket.socket()  # takes the connection and the ClientHello, never answers it
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        self.addCleanup(silent.close)
        hello, heard, done = [], threading.Event(), threading.Event()

        def take_the_hello_and_say_nothing():
            conn, _ = silent.accept()
            try:
                hello.append(conn.recv(5))  # the header of the first TLS record
                heard.set()
                done.wait(60)
            finally:
                conn.close()

        server = threading.Thread(target=take_the_hello_and_say_nothing, daemon=True)
        server.start()
        self.addCleanup(server.join, 10)
        self.addCleanup(done.set)
        scope, outcome = CancelScope(), []

        def send():
            try:  # the handshake's own limit is 30 s: far beyond the bounded join below
                get(transport(ca_file=CA), "https://127.0.0.1:%d/" % silent.getsockname()[1], cancel=scope,
                    timeout=Timeout(30, 30))
            except BaseException as exc:  # noqa: BLE001 - reported to the test
                outcome.append(exc)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        self.assertTrue(heard.wait(10))
        self.assertEqual(hello[0][:1], b"\x16")  # a handshake record: the client is in the TLS handshake
        self.assertTrue(sender.is_alive())  # waiting for the ServerHello that never comes
        scope.cancel()
        sender.join(10)
        self.assertFalse(sender.is_alive(), "the cancel did not interrupt the TLS handshake")
        self.assertEqual(len(outcome), 1, outcome)
        self.assertIsInstance(outcome[0], RequestCancelledError)
        self.assertNotIsInstance(outcome[0].cause, (socket.timeout, TimeoutError))

    def test_cancel_just_before_connect_is_not_missed(self):
        # A blocking connect() cannot be woken by shutdown() before it is under way: a cancel
        # landing between the last check and the call used to cost the whole connect timeout.
        from openai2.connection import _conn_cancellable_connect

        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(5):  # fill the backlog so a new connect() hangs
                c = socket.socket()
                c.setblocking(False)
                try:
                    c.connect(("127.0.0.1", port))
                except BlockingIOError:
                    pass
                fillers.append(c)
            scope = CancelScope()
            scope.cancel()  # already cancelled: nothing is registered to shut down
            sock = socket.socket()
            try:  # a missed cancel would end in socket.timeout after 30 s, not in this error
                with self.assertRaises(RequestCancelledError):
                    _conn_cancellable_connect(sock, ("127.0.0.1", port), 30.0, scope)
            finally:
                sock.close()
            # and an uncancelled connect still completes
            with OriginServer() as o:
                sock = socket.socket()
                try:
                    _conn_cancellable_connect(sock, ("127.0.0.1", o.port), 5.0, CancelScope())
                    self.assertEqual(sock.getpeername()[1], o.port)
                finally:
                    sock.close()
        finally:
            for c in fillers:
                c.close()
            listener.close()

    def test_good_tls_request_after_a_failed_verification_in_the_same_thread(self):
        # PyPy reported the failed handshake's error again on the next TLS read in the thread
        # ("certificate verify failed: ok") until the transport cleared OpenSSL's error queue.
        from openai2.testing import FakeServer

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(CERTS, "server.pem"), os.path.join(CERTS, "server.key"))
        with FakeServer(ssl_context=ctx) as srv:
            good, bad = transport(ca_file=CA), transport(ca_file=os.path.join(CERTS, "other-ca.pem"))
            for _ in range(4):
                with self.assertRaises(APIConnectionError):
                    get(bad, srv.base_url + "/chat/completions", method="POST", body=b"{}").read()
                body = get(good, srv.base_url + "/chat/completions", method="POST", body=b"{}").read()
                self.assertIn(b"chat.completion", body)

    def test_cancel_between_pool_get_and_attach_closes_the_connection(self):
        with OriginServer() as o:
            t = transport()
            get(t, o.url("/a")).read()
            self.assertEqual(t._pool.idle_count(), 1)
            scope = CancelScope()
            real_get = t._pool.get
            taken = []

            def racing_get(key):  # another thread cancels right after the pool handed one out
                conn = real_get(key)
                taken.append(conn)
                scope.cancel()
                return conn

            t._pool.get = racing_get
            with self.assertRaises(RequestCancelledError):
                get(t, o.url("/b"), cancel=scope)
            self.assertIsNotNone(taken[0])
            self.assertIsNone(taken[0].http.sock)  # closed, not left for the collector
            self.assertEqual(t._pool.idle_count(), 0)

    def test_cancelled_scope_refuses_new_request(self):
        with OriginServer() as o:
            scope = CancelScope()
            scope.cancel()
            with self.assertRaises(RequestCancelledError):
                get(transport(), o.url("/"), cancel=scope)
            self.assertEqual(o.requests, [])


def _answer_413_before_the_body(sock, conn_id):
    """Read request heads; answer small bodies 200 (keep-alive), a large one 413 at once."""
    # No Nagle delay: the 413 must leave before the close below resets the connection (a
    # close with unread data sends a RST and drops whatever the kernel still holds).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pending = b""
    while True:
        method, target, headers, rest = read_request_head_from(sock, pending)
        length = int(headers.get("content-length") or 0)
        if length > 1 << 20:
            body = b'{"error": {"message": "Request Entity Too Large", "type": "invalid_request_error"}}'
            sock.sendall(
                b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )
            socket.socket.shutdown(sock, socket.SHUT_WR)  # push the answer out, then
            return  # close with the body unread: the client's next write meets a reset
        while len(rest) < length:
            data = sock.recv(65536)
            if not data:
                return
            rest += data
        pending = rest[length:]
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")


def read_request_head_from(sock, pending):
    if b"\r\n\r\n" in pending:
        head, _, rest = pending.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return method, target, headers, rest
    if pending:
        raise AssertionError("pipelined partial head")
    return read_request_head(sock)


BIG = b"x" * (30 << 20)


class InterimAndEarlyAnswerTests(unittest.TestCase):
    def test_informational_responses_before_the_answer_are_skipped(self):
        # 103 Early Hints (and 102, and an unsolicited 100) may come before the final answer:
        # http.client skips only 100; a client must skip any number of them (RFC 9110 15.2).
        def app(h, rec):
            h.raw(
                b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
                b"HTTP/1.1 100 Continue\r\n\r\n"
                b"HTTP/1.1 102 Processing\r\n\r\n"
                b"HTTP/1.1 103 Early Hints\r\nLink: </app.js>; rel=preload\r\n\r\n"
            )
            h.reply(200, b'{"ok": "%s"}' % rec.path.encode())

        for tls in (False, True):
            kw = {"certfile": SERVER_CERT[0], "keyfile": SERVER_CERT[1], "host": "localhost"} if tls else {}
            with OriginServer(app, **kw) as o:
                t = transport(ca_file=CA)
                r = get(t, o.url("/a"), method="POST", body=b"{}")
                self.assertEqual((r.status, r.read()), (200, b'{"ok": "/a"}'))
                self.assertNotIn("link", r.headers)
                # nothing of the answer was left behind on the kept-alive connection
                self.assertEqual(get(t, o.url("/b")).read(), b'{"ok": "/b"}')
                self.assertEqual(o.connections, 1)
                t.close()

    def test_endless_informational_responses_are_an_error_not_a_hang(self):
        from openai2.connection import _CONN_MAX_INTERIM

        def app(h, rec):
            h.raw(b"HTTP/1.1 103 Early Hints\r\n\r\n" * (_CONN_MAX_INTERIM + 1))
            h.reply(200, b"late")

        with OriginServer(app) as o:
            with self.assertRaises(APIConnectionError) as cm:
                get(transport(), o.url("/x"))
            self.assertIn("informational", str(cm.exception))

    def test_413_sent_before_the_body_is_returned_not_a_broken_pipe(self):
        with ScriptedServer(_answer_413_before_the_body) as s:
            t = transport()
            r = get(t, s.url("/v1/chat/completions"), method="POST", body=BIG,
                    headers={"Content-Type": "application/json"})
            self.assertEqual(r.status, 413)
            self.assertIn(b"Too Large", r.read())
            self.assertEqual(s.connections, 1)
            self.assertEqual(t._pool.idle_count(), 0)  # a half-sent request: never reused

    def test_413_on_a_reused_connection_is_returned_and_not_resent(self):
        for tls in (False, True):
            kw = {"certfile": SERVER_CERT[0], "keyfile": SERVER_CERT[1]} if tls else {}
            with ScriptedServer(_answer_413_before_the_body, **kw) as s, self.subTest(tls=tls):
                t = transport(ca_file=CA)
                self.assertEqual(get(t, s.url("/small"), method="POST", body=b"{}").read(), b"{}")
                r = get(t, s.url("/big"), method="POST", body=BIG)
                self.assertEqual(r.status, 413)
                self.assertIn(b"Too Large", r.read())
                self.assertEqual(s.connections, 1)
                self.assertEqual(t._pool.idle_count(), 0)

    def test_413_through_the_client_is_raised_once_and_not_retried(self):
        from openai2.client import OpenAI
        from openai2.errors import APIStatusError

        with ScriptedServer(_answer_413_before_the_body) as s:
            client = OpenAI(api_key="sk-test-413-0000", base_url=s.url("/v1"), max_retries=2, transport=transport())
            with self.assertRaises(APIStatusError) as cm:
                client.chat.completions.create(model="m", messages=[{"role": "user", "content": BIG.decode()}])
            self.assertEqual(cm.exception.status_code, 413)
            self.assertIn("Too Large", cm.exception.message)
            self.assertEqual(s.connections, 1)


class CloseFromAnotherThreadTests(unittest.TestCase):
    """``HTTPResponse.close()`` from another thread (a stop button) ends a blocked read at once."""

    def _silent_after_first_piece(self, release):
        def app(h, rec):
            h.send_response(200)
            if rec.path == "/length":
                h.send_header("Content-Length", "1000")
            else:
                h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            h.raw(b"hi" if rec.path == "/length" else b"2\r\nhi\r\n")
            release.wait(30)

        return app

    def _servers(self, app):
        yield OriginServer(app), {}
        yield OriginServer(app, certfile=SERVER_CERT[0], keyfile=SERVER_CERT[1], host="localhost"), {"ca_file": CA}

    def test_close_from_another_thread_ends_iter_bytes_at_once(self):
        release = threading.Event()
        try:
            for server, kw in self._servers(self._silent_after_first_piece(release)):
                for path in ("/chunked", "/length"):
                    with server as o, self.subTest(url=o.url(path)):
                        t = transport(**kw)
                        r = get(t, o.url(path), timeout=Timeout(2, 60))
                        got, errors, first, done = [], [], threading.Event(), threading.Event()

                        def reader(r=r, got=got, errors=errors, first=first, done=done):
                            try:
                                for piece in r.iter_bytes():
                                    got.append(piece)
                                    first.set()
                            except BaseException as exc:  # reported below
                                errors.append(exc)
                            finally:
                                done.set()

                        threading.Thread(target=reader, daemon=True).start()
                        self.assertTrue(first.wait(5))
                        closer = threading.Thread(target=r.close, daemon=True)
                        closer.start()
                        closer.join(5)
                        self.assertFalse(closer.is_alive(), "close() waited for the server")
                        self.assertTrue(done.wait(5), "the reading thread is still blocked")
                        self.assertEqual(errors, [])
                        self.assertEqual(got, [b"hi"])
                        self.assertTrue(r.closed)
                        self.assertEqual(t._pool.idle_count(), 0)
                        self.assertEqual(list(r.iter_bytes()), [])  # a closed response stays ended
        finally:
            release.set()

    def test_close_from_another_thread_interrupts_read_with_request_cancelled(self):
        release = threading.Event()
        try:
            with OriginServer(self._silent_after_first_piece(release)) as o:
                t = transport()
                r = get(t, o.url("/length"), timeout=Timeout(2, 60))
                outcome, done = [], threading.Event()

                def reader():
                    try:
                        outcome.append(r.read())
                    except BaseException as exc:  # reported below
                        outcome.append(exc)
                    finally:
                        done.set()

                threading.Thread(target=reader, daemon=True).start()
                # wait until the reader is inside read(): the server's first bytes were consumed
                deadline = threading.Event()
                while not r._reading and not done.is_set():
                    deadline.wait(0.01)
                closer = threading.Thread(target=r.close, daemon=True)
                closer.start()
                closer.join(5)
                self.assertFalse(closer.is_alive(), "close() waited for the server")
                self.assertTrue(done.wait(5), "the reading thread is still blocked")
                self.assertEqual(len(outcome), 1)
                self.assertIsInstance(outcome[0], RequestCancelledError)
                with self.assertRaises(RequestCancelledError):
                    r.read()
        finally:
            release.set()

    def test_close_while_the_iterator_is_suspended_ends_it(self):
        release = threading.Event()
        try:
            with OriginServer(self._silent_after_first_piece(release)) as o:
                t = transport()
                r = get(t, o.url("/chunked"), timeout=Timeout(2, 60))
                it = r.iter_bytes()
                self.assertEqual(next(it), b"hi")
                conn = r._conn
                r.close()  # between two reads: nothing blocked, the connection goes at once
                self.assertIsNone(conn.http.sock)
                self.assertEqual(list(it), [])
                self.assertEqual(t._pool.idle_count(), 0)
        finally:
            release.set()


class HygieneTests(unittest.TestCase):
    def test_debug_log_has_method_url_status_only(self):
        with OriginServer() as o:
            with self.assertLogs("openai2", level="DEBUG") as logs:
                get(transport(), o.url("/v1/chat?token=q"), method="POST", body=b"SECRET-BODY",
                    headers={"Authorization": "Bearer " + KEY}).read()
            text = "\n".join(logs.output)
            self.assertIn("POST %s -> 200" % o.url("/v1/chat"), text)
            for secret in (KEY, "SECRET-BODY", "token=q", "Bearer"):
                self.assertNotIn(secret, text)

    def test_import_is_lazy(self):
        code = (
            # baseline: what the modules the house rules allow at top level import by themselves
            # (on PyPy, threading already brings in re)
            "import sys, os, threading, time, itertools, collections, functools; "
            "before = set(sys.modules); import openai2.transport, openai2.socks; "
            "print(sorted(m for m in ('socket', 'ssl', 'http.client', 'urllib.request', 'base64', 'json', 're', "
            "'select', 'logging', 'typing') if m in sys.modules and m not in before))"
        )
        out = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(HERE), capture_output=True,
                             text=True, timeout=30)
        self.assertEqual(out.stdout.strip(), "[]", out.stderr)


# A key holding a tab: a page excerpt collapses whitespace, so it must be masked before that.
TAB_KEY = "sk-transport-TAB\tkey-0123456789abcdef"


def _echo_credentials(status_line, extra_headers=b"", filler=190):
    """A raw server answering ``status_line`` with an HTML page quoting the request's
    Authorization header, the key starting just before the 200th character of the excerpt."""

    def script(sock, conn_id):
        _, _, headers, _ = read_request_head(sock)
        page = ("<html><body><p>" + "x" * filler + " " + headers.get("authorization", "") + "</p></body></html>").encode()
        sock.sendall(status_line + b"\r\nContent-Type: text/html\r\nContent-Length: %d\r\nConnection: close\r\n"
                     % len(page) + extra_headers + b"\r\n" + page)

    return script


class TransportBuiltErrorsMaskCredentials(unittest.TestCase):
    """Errors the transport builds itself quote what a server sent: the credentials of the
    request it answered are masked before any excerpt is cut or whitespace collapsed."""

    def assertNoKeyPart(self, text, secret):
        for piece in secret.replace("\t", " ").split(" "):
            for i in range(max(len(piece) - 11, 0)):
                self.assertNotIn(piece[i:i + 12], text)

    def test_303_page_quoting_the_key_is_masked(self):
        script = _echo_credentials(b"HTTP/1.1 303 See Other", b"Location: /other?sig=q\r\n")
        with ScriptedServer(script) as s:
            with self.assertRaises(APIStatusError) as cm:
                transport().request("POST", s.url("/v1/chat"), headers={"Authorization": "Bearer " + TAB_KEY},
                                    body=b"{}", timeout=T)
        e = cm.exception
        self.assertEqual(e.status_code, 303)
        self.assertNoKeyPart(str(e) + repr(e.args) + repr(e.body) + repr(e.headers), TAB_KEY)
        self.assertIn("Location: /other)", e.hint)

    def test_proxy_refusal_page_quoting_the_key_is_masked(self):
        script = _echo_credentials(b"HTTP/1.1 403 Forbidden", filler=100)
        with ScriptedServer(script) as proxy:
            with self.assertRaises(APIConnectionError) as cm:
                transport(proxy=proxy.url()).request(
                    "POST", "http://api.example.test/v1/chat", headers={"Authorization": "Bearer " + TAB_KEY},
                    body=b"{}", timeout=T)
        self.assertIn("refused the request (403", str(cm.exception))
        self.assertNoKeyPart(str(cm.exception) + repr(cm.exception.args), TAB_KEY)

    def test_log_url_strips_query_and_user_info_from_relative_urls(self):
        from openai2.transport import _tp_log_url

        self.assertEqual(_tp_log_url("/v1/new?key=sk-x#frag"), "/v1/new")
        self.assertEqual(_tp_log_url("new#k=sk-x"), "new")
        self.assertEqual(_tp_log_url("//user:pw@host.test/v1?key=sk-x"), "//host.test/v1")
        self.assertEqual(_tp_log_url("https://u:p@host.test/v1?k=1"), "https://host.test/v1")


if __name__ == "__main__":
    unittest.main()
