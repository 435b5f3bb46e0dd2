"""The gateway (openai2.gateway.Gateway) against hostile clients (raw sockets: smuggling, slow
senders, floods, cross-site pages, log injection) and lying upstreams (keys echoed in headers,
odd bodies), all on loopback.  Each test names the promise of README's "Local gateway" section
it holds the gateway to."""

from __future__ import annotations

import http.client
import io
import json
import socket
import threading
import unittest

from openai2.gateway import Gateway, GatewayError
from openai2.testing import FakeServer, Reply

KEY = "sk-hostiletestkeyZZZZ9999"


def _recv_all(sock: socket.socket, limit: int = 1 << 22) -> bytes:
    """Everything the peer sends until it closes (or the socket's timeout passes)."""
    data = b""
    try:
        while len(data) < limit:
            piece = sock.recv(65536)
            if not piece:
                break
            data += piece
    except (socket.timeout, ConnectionResetError):
        pass
    return data


def _statuses(raw: bytes) -> list[int]:
    return [int(line.split()[1]) for line in raw.split(b"\r\n") if line.startswith(b"HTTP/1.")]


class _Case(unittest.TestCase):
    def setUp(self) -> None:
        self.log = io.StringIO()

    def server(self, replies: list | None = None, **kw: object) -> FakeServer:
        srv = FakeServer(replies, **kw)  # type: ignore[arg-type]
        srv.start()
        self.addCleanup(srv.stop)
        return srv

    def gateway(self, upstream: FakeServer, **kw: object) -> Gateway:
        gw = Gateway(upstream.base_url, KEY, log=self.log, **kw)  # type: ignore[arg-type]
        gw.start()
        self.addCleanup(gw.stop)
        return gw

    def connect(self, gw: Gateway, timeout: float = 10) -> socket.socket:
        sock = socket.create_connection((gw.host, gw.port), timeout=timeout)
        self.addCleanup(sock.close)
        return sock

    def exchange(self, gw: Gateway, raw: bytes, timeout: float = 10) -> bytes:
        sock = self.connect(gw, timeout)
        sock.sendall(raw)
        return _recv_all(sock)


def _post(path: str, body: bytes, extra: str = "") -> bytes:
    head = "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n%s" % (path, extra)
    if "content-length" not in extra.lower():
        head += "Content-Length: %d\r\n" % len(body)
    return head.encode() + b"Connection: close\r\n\r\n" + body


CHAT = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()


class TestFraming(_Case):
    """Request smuggling: a body length the gateway reads differently from a proxy in front."""

    def test_two_different_content_lengths_are_refused(self) -> None:
        srv = self.server(["ok"])
        gw = self.gateway(srv)
        raw = _post("/v1/chat/completions", CHAT, "Content-Length: %d\r\nContent-Length: 5\r\n" % len(CHAT))
        out = self.exchange(gw, raw)
        self.assertEqual(_statuses(out)[:1], [400], out[:200])
        self.assertEqual(srv.requests, [])

    def test_content_length_with_sign_or_underscore_is_refused(self) -> None:
        # int() reads "+10" and "1_0" as 10; a proxy in front reads them as invalid (or as 1)
        srv = self.server(["ok", "ok", "ok"])
        gw = self.gateway(srv)
        for value in ("+%d" % len(CHAT), "%s_%s" % (str(len(CHAT))[:1], str(len(CHAT))[1:]), " 0x10"):
            out = self.exchange(gw, _post("/v1/chat/completions", CHAT, "Content-Length: %s\r\n" % value))
            self.assertEqual(_statuses(out)[:1], [400], (value, out[:200]))
        self.assertEqual(srv.requests, [])

    def test_transfer_encoding_with_content_length_is_refused_and_closed(self) -> None:
        srv = self.server(["ok", "ok"])
        gw = self.gateway(srv)
        smuggled = _post("/v1/chat/completions", CHAT)
        body = b"0\r\n\r\n" + smuggled
        raw = _post("/v1/chat/completions", body, "Transfer-Encoding: chunked\r\nContent-Length: %d\r\n" % len(body))
        out = self.exchange(gw, raw.replace(b"Connection: close\r\n", b""))
        self.assertEqual(_statuses(out), [411], out[:300])
        self.assertEqual(srv.requests, [])

    def test_obs_fold_transfer_encoding_is_refused(self) -> None:
        srv = self.server(["ok"])
        gw = self.gateway(srv)
        raw = _post("/v1/chat/completions", CHAT, "Transfer-Encoding:\r\n chunked\r\n")
        self.assertIn(_statuses(self.exchange(gw, raw))[:1], ([400], [411]))
        self.assertEqual(srv.requests, [])

    def test_options_body_is_not_read_as_the_next_request(self) -> None:
        srv = self.server(["ok"])
        gw = self.gateway(srv, cors="https://app.example")
        inner = _post("/v1/chat/completions", CHAT)
        raw = b"OPTIONS /v1/models HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(inner) + inner
        sock = self.connect(gw, timeout=2)
        sock.sendall(raw)
        out = _recv_all(sock)
        self.assertEqual(_statuses(out)[:1], [204])
        self.assertEqual(srv.requests, [], "the OPTIONS body was served as a request of its own")

    def test_a_closing_answer_says_connection_close(self) -> None:
        gw = self.gateway(self.server(), max_body=10)
        conn = http.client.HTTPConnection(gw.host, gw.port, timeout=10)
        self.addCleanup(conn.close)
        conn.request("POST", "/v1/chat/completions", body=CHAT, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        self.assertEqual(resp.status, 413)
        self.assertEqual(resp.getheader("Connection"), "close")

    def test_deeply_nested_json_is_400_not_a_dropped_connection(self) -> None:
        srv = self.server(["ok"])
        gw = self.gateway(srv)
        for body in (b"[" * 200000, b'{"model": "m", "messages": ' + b"[" * 200000 + b"]" * 200000 + b"}"):
            out = self.exchange(gw, _post("/v1/chat/completions", body))
            self.assertEqual(_statuses(out)[:1], [400], out[:200])
        self.assertEqual(srv.requests, [])

    def test_body_over_the_limit_gets_413_even_while_the_client_still_sends(self) -> None:
        gw = self.gateway(self.server(), max_body=1000)
        conn = http.client.HTTPConnection(gw.host, gw.port, timeout=10)
        self.addCleanup(conn.close)
        big = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * (8 << 20)}]}).encode()
        conn.request("POST", "/v1/chat/completions", body=big, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        self.assertEqual(resp.status, 413)
        self.assertEqual(json.loads(resp.read())["error"]["code"], "request_too_large")


class TestLog(_Case):
    def test_one_request_is_one_log_line_whatever_the_model_or_path(self) -> None:
        srv = self.server(["ok", "ok"])
        gw = self.gateway(srv)
        forged = "m\n2026-01-01T00:00:00 10.0.0.1 \"POST /v1/chat/completions\" 200 model=x key=- 1ms tokens=-"
        body = json.dumps({"model": forged + "\x1b[2J\r", "messages": []}).encode()
        self.exchange(gw, _post("/v1/chat/completions", body))
        self.exchange(gw, b"GET /v1/\x1b[31mred HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        gw.stop()
        lines = self.log.getvalue().splitlines()
        self.assertEqual(len(lines), 2, lines)
        self.assertNotIn("\x1b", self.log.getvalue())
        self.assertNotIn("\r", self.log.getvalue())


class TestCrossSite(_Case):
    """A web page the user visits must not spend the keys: no CSRF, no DNS rebinding."""

    def test_cross_site_simple_post_is_refused(self) -> None:
        srv = self.server(["ok"])
        gw = self.gateway(srv)
        raw = _post("/v1/chat/completions", CHAT, "Origin: https://evil.example\r\n").replace(
            b"Content-Type: application/json", b"Content-Type: text/plain"
        )
        out = self.exchange(gw, raw)
        self.assertEqual(_statuses(out)[:1], [403], out[:200])
        self.assertEqual(srv.requests, [])

    def test_dns_rebinding_host_is_refused_without_a_token(self) -> None:
        srv = self.server(["ok"])
        gw = self.gateway(srv)
        raw = _post("/v1/chat/completions", CHAT).replace(b"Host: 127.0.0.1", b"Host: rebind.evil.example:%d" % gw.port)
        out = self.exchange(gw, raw)
        self.assertEqual(_statuses(out)[:1], [403], out[:200])
        self.assertEqual(srv.requests, [])

    def test_same_origin_page_and_allowed_origin_and_plain_clients_pass(self) -> None:
        srv = self.server(["a", "b", "c", "d"])
        gw = self.gateway(srv, cors="https://app.example")
        own = "Origin: http://127.0.0.1:%d\r\n" % gw.port
        for extra in ("", own, "Origin: https://app.example\r\n"):
            raw = _post("/v1/chat/completions", CHAT, extra).replace(b"Host: 127.0.0.1", b"Host: 127.0.0.1:%d" % gw.port)
            out = self.exchange(gw, raw)
            self.assertEqual(_statuses(out)[:1], [200], (extra, out[:200]))
        raw = _post("/v1/chat/completions", CHAT, "Origin: http://localhost:%d\r\n" % gw.port)
        out = self.exchange(gw, raw.replace(b"Host: 127.0.0.1", b"Host: localhost:%d" % gw.port))
        self.assertEqual(_statuses(out)[:1], [200], out[:200])


class TestBehindAProxy(_Case):
    def test_the_page_behind_a_tls_proxy_with_a_token_is_its_own_origin(self) -> None:
        srv = self.server(["ok"])
        gw = self.gateway(srv, token="tok-hostile-42")
        extra = "Origin: https://gw.example\r\nAuthorization: Bearer tok-hostile-42\r\n"
        raw = _post("/v1/chat/completions", CHAT, extra).replace(b"Host: 127.0.0.1", b"Host: gw.example")
        self.assertEqual(_statuses(self.exchange(gw, raw))[:1], [200])


class TestToken(_Case):
    def test_cors_any_origin_without_a_token_is_refused(self) -> None:
        # every web page the user visits could read the answers and spend the keys
        with self.assertRaises(GatewayError):
            Gateway("http://127.0.0.1:9/v1", KEY, cors="*")
        Gateway("http://127.0.0.1:9/v1", KEY, cors="*", token="tok-hostile-42")  # allowed, not started
        Gateway("http://127.0.0.1:9/v1", KEY, cors="https://app.example")


    def test_a_token_no_client_can_send_is_refused_at_start(self) -> None:
        for bad in ("пароль-secret", " padded-token ", "tab\there"):
            with self.assertRaises(GatewayError, msg=bad):
                Gateway("http://127.0.0.1:9/v1", KEY, token=bad)

    def test_token_forms(self) -> None:
        srv = self.server(["ok"] * 4)
        gw = self.gateway(srv, token="tok-hostile-42")
        for extra, status in (
            ("Authorization: bearer tok-hostile-42\r\n", 200),
            ("api-key: tok-hostile-42\r\n", 200),
            ("Authorization: Bearer \r\n", 401),
            ("Authorization: Bearer tok-hostile-4\r\n", 401),
            ("Authorization: Basic tok-hostile-42\r\n", 401),
        ):
            out = self.exchange(gw, _post("/v1/chat/completions", CHAT, extra))
            self.assertEqual(_statuses(out)[:1], [status], extra)
        out = self.exchange(gw, _post("/v1/chat/completions?api-key=tok-hostile-42&token=tok-hostile-42", CHAT))
        self.assertEqual(_statuses(out)[:1], [401])


class TestLyingUpstream(_Case):
    def test_key_echoed_in_upstream_headers_is_masked(self) -> None:
        echo = {"X-Request-Id": "req-" + KEY, "Content-Type": "application/json; note=" + KEY}
        srv = self.server(
            [
                Reply("ok", headers=echo),
                Reply("streamed", headers={"Content-Type": "text/event-stream; k=" + KEY}),
                Reply(status=429, headers={"Retry-After": KEY, "Content-Type": "text/plain; " + KEY}, body="slow"),
            ]
        )
        gw = self.gateway(srv)
        for body in (CHAT, json.dumps({"model": "m", "messages": [], "stream": True}).encode(), CHAT):
            out = self.exchange(gw, _post("/v1/chat/completions", body))
            self.assertTrue(_statuses(out), out[:200])
            self.assertNotIn(KEY.encode(), out)
        gw.stop()
        self.assertNotIn(KEY, self.log.getvalue())

    def test_control_characters_in_upstream_headers_are_not_relayed(self) -> None:
        srv = self.server([Reply("ok", headers={"Content-Type": "application/json\x00\x1b[2J", "X-Request-Id": "r\x7f1"})])
        gw = self.gateway(srv)
        head = self.exchange(gw, _post("/v1/chat/completions", CHAT)).partition(b"\r\n\r\n")[0]
        self.assertIn(b"Content-Type: application/json[2J\r\n", head)
        self.assertIn(b"X-Request-Id: r1\r\n", head)

    def test_retry_after_of_any_shape_is_relayed_without_a_crash(self) -> None:
        for value in ("99999999999999999999999", "-5", "Wed, 21 Oct 2015 07:28:00 GMT", "soon", "1e400"):
            srv = self.server([Reply(status=429, headers={"Retry-After": value})])
            gw = self.gateway(srv)
            out = self.exchange(gw, _post("/v1/chat/completions", CHAT))
            self.assertEqual(_statuses(out)[:1], [429], (value, out[:300]))
            self.assertIn(b"Retry-After: " + value.encode(), out)


def _drip(sock: socket.socket, data: bytes, stop: threading.Event, every: float = 0.05) -> bool:
    """Send ``data`` one byte at a time (a slow client); True if the gateway closed on us first."""
    for i in range(len(data)):
        if stop.is_set():
            return False
        try:
            sock.send(data[i : i + 1])
        except OSError:
            return True
        stop.wait(every)  # the client's pace, not an ordering of threads
    return False


class TestSlowClients(_Case):
    def test_a_head_sent_one_byte_at_a_time_does_not_pin_a_worker(self) -> None:
        gw = self.gateway(self.server(), idle_timeout=0.5)
        sock = self.connect(gw)
        stop = threading.Event()
        self.addCleanup(stop.set)
        head = b"GET /health HTTP/1.1\r\n" + b"".join(b"X-Slow-%d: y\r\n" % i for i in range(8)) + b"\r\n"
        got: list = []
        reader = threading.Thread(target=lambda: got.append(_recv_all(sock)))
        reader.start()
        cut = _drip(sock, head, stop)  # 6 s at this pace, every byte well within idle_timeout
        stop.set()
        reader.join(10)
        self.assertTrue(cut or (got and b"408" in got[0][:20]), "the gateway read the dripped head to its end")

    def test_a_body_sent_one_byte_at_a_time_does_not_pin_a_worker(self) -> None:
        srv = self.server(["ok"])
        gw = self.gateway(srv, idle_timeout=0.5)
        sock = self.connect(gw)
        stop = threading.Event()
        self.addCleanup(stop.set)
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 60}]}).encode()
        head = _post("/v1/chat/completions", body)[: -len(body)]
        sock.sendall(head)
        got: list = []
        reader = threading.Thread(target=lambda: got.append(_recv_all(sock)))
        reader.start()
        cut = _drip(sock, body, stop)
        stop.set()
        reader.join(10)
        self.assertTrue(cut or (got and b"408" in got[0][:20]), "the gateway read the dripped body to its end")
        self.assertEqual(srv.requests, [])


class TestFlood(_Case):
    def test_a_slow_client_beyond_the_workers_does_not_hold_the_accept_loop(self) -> None:
        gate = threading.Event()
        self.addCleanup(gate.set)
        srv = self.server([Reply("held", gate=gate)])
        gw = self.gateway(srv, max_workers=1, queue_timeout=0.0)
        holder = self.connect(gw)
        holder.sendall(_post("/v1/chat/completions", CHAT))
        self.assertTrue(srv.wait_for_requests(1))
        slow = self.connect(gw)  # beyond the worker: refused, but it never closes and keeps sending
        stop = threading.Event()
        self.addCleanup(stop.set)
        dripper = threading.Thread(target=_drip, args=(slow, b"x" * 400, stop))
        dripper.start()
        self.addCleanup(dripper.join, 30)
        self.assertIn(b" 503 ", slow.recv(65536)[:20])
        other = self.connect(gw, timeout=5)
        other.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = other.recv(65536)
        except socket.timeout:
            answer = b""
        stop.set()
        self.assertIn(b" 503 ", answer[:20], "the next client got no answer while the slow one dripped")

    def test_connections_beyond_the_workers_wait_side_by_side(self) -> None:
        # The accept loop itself waited queue_timeout for each connection in turn: the n-th of a
        # burst waited n times as long, and nobody was accepted meanwhile.
        gate = threading.Event()
        self.addCleanup(gate.set)
        srv = self.server([Reply("held", gate=gate, gate_timeout=60)])
        gw = self.gateway(srv, max_workers=1, queue_timeout=60)
        holder = self.connect(gw)
        holder.sendall(_post("/v1/chat/completions", CHAT))
        self.assertTrue(srv.wait_for_requests(1))
        socks = [self.connect(gw, timeout=30) for _ in range(5)]
        for s in socks:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        for _ in range(1000):  # bounded wait until the five are all waiting for the worker
            if getattr(gw, "_waiting", 0) == 5:
                break
            threading.Event().wait(0.01)
        self.assertEqual(getattr(gw, "_waiting", 0), 5)
        gate.set()
        self.assertEqual(_statuses(_recv_all(holder))[:1], [200])
        for s in socks:
            self.assertEqual(_statuses(_recv_all(s)), [200])


class TestKnownLimits(_Case):
    @unittest.expectedFailure
    def test_a_key_streamed_a_character_per_event_is_masked(self) -> None:
        # Not fixed: masking works on the bytes of each event, and a lying upstream that sends
        # the key one character per delta gets it to the client, which joins the deltas.
        # Masking the joined text would need the gateway to parse and re-emit every delta.
        srv = self.server([Reply(KEY)])  # streamed one character per chunk
        gw = self.gateway(srv)
        body = json.dumps({"model": "m", "messages": [], "stream": True}).encode()
        out = _dechunk(self.exchange(gw, _post("/v1/chat/completions", body)))
        text = "".join(
            json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
            for line in out.decode().splitlines()
            if line.startswith("data: {") and json.loads(line[6:]).get("choices")
        )
        self.assertNotIn(KEY, text)


class TestPageMarkdown(unittest.TestCase):
    """The chat page's inline Markdown pattern, run by node (when installed) on answers built to
    make a backtracking engine quadratic.  Chromium's V8 gives up on such backtracking and
    switches engines, but Firefox and Safari run the pattern as written: 200,000 "[" froze the
    tab for over a minute."""

    def test_inline_markdown_pattern_is_linear_on_hostile_answers(self) -> None:
        import re
        import shutil
        import subprocess

        from openai2.chatpage import _CHATPAGE_SCRIPT

        node = shutil.which("node")
        if node is None:
            self.skipTest("needs node")
        found = re.search(r"^const INLINE = (/.*/g);$", _CHATPAGE_SCRIPT, re.M)
        assert found is not None
        script = (
            "const INLINE = %s;\n"
            "for (const s of ['['.repeat(200000), '**a'.repeat(70000), '`a'.repeat(100000), '[a]('.repeat(50000),"
            " '*a '.repeat(70000)]) { let n = 0; for (const m of s.matchAll(INLINE)) n++; }\n"
            "console.log('done');\n" % found.group(1)
        )
        try:  # the timeout is a hang guard: linear takes milliseconds, quadratic minutes
            out = subprocess.run([node, "-e", script], capture_output=True, timeout=30, check=False)
        except subprocess.TimeoutExpired:
            self.fail("the inline Markdown pattern is quadratic on a hostile answer")
        self.assertEqual(out.stdout.strip(), b"done", out.stderr[-500:])


def _dechunk(raw: bytes) -> bytes:
    head, _, body = raw.partition(b"\r\n\r\n")
    if b"chunked" not in head.lower():
        return body
    out = b""
    while body:
        size, _, body = body.partition(b"\r\n")
        n = int(size.split(b";")[0] or b"0", 16)
        if n == 0:
            break
        out, body = out + body[:n], body[n + 2 :]
    return out


class TestStreamsHostile(_Case):
    def test_a_key_across_the_parts_of_a_huge_event_is_masked(self) -> None:
        # One event over 1 MiB is relayed in parts; a key cut in two by a part boundary was
        # masked in neither part, and reached the client whole.
        event = b"data: " + (KEY.encode() + b" ") * 120000 + b"\n\n"
        srv = self.server([Reply(raw_stream=event, content_type="text/event-stream", write_size=70001)])
        gw = self.gateway(srv)
        out = self.exchange(gw, _post("/v1/chat/completions", json.dumps({"model": "m", "stream": True}).encode()))
        body = _dechunk(out)
        self.assertGreater(len(body), 1 << 20, out[:300])
        self.assertEqual(body.count(KEY.encode()), 0, "the key reached the client")
        self.assertEqual(body.count(b"sk-\xe2\x80\xa69999"), 120000)

    def test_http_1_0_stream_ends_with_the_connection(self) -> None:
        srv = self.server([Reply("abc")])
        gw = self.gateway(srv)
        body = json.dumps({"model": "m", "messages": [], "stream": True}).encode()
        raw = b"POST /v1/chat/completions HTTP/1.0\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        out = self.exchange(gw, raw)
        self.assertTrue(out.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")), out[:100])
        self.assertNotIn(b"chunked", out.partition(b"\r\n\r\n")[0].lower())
        self.assertIn(b"data: [DONE]", out)

    def test_pipelined_requests_are_answered_in_order(self) -> None:
        srv = self.server(["one", "two"])
        gw = self.gateway(srv)
        first = _post("/v1/chat/completions", CHAT).replace(b"Connection: close\r\n", b"")
        second = json.dumps({"model": "m", "messages": [], "stream": True}).encode()
        raw = first + _post("/v1/chat/completions", second) + b"GET /never HTTP/1.1\r\n\r\n"
        out = self.exchange(gw, raw)
        self.assertEqual(out.count(b"HTTP/1.1 200 OK\r\n"), 2, out[:500])
        self.assertNotIn(b"HTTP/1.1 404", out)  # the gateway closed after the second, as it asked (not "404" alone: a "created" time may hold it)
        self.assertLess(out.index(b'"one"'), out.index(b"text/event-stream"))
        self.assertIn(b"data: [DONE]", out)


class TestManyConnections(_Case):
    @unittest.skipUnless(__import__("os").path.isdir("/proc/self/fd"), "counts /proc/self/fd")
    def test_a_thousand_connections_at_once_get_answers_and_leave_nothing_behind(self) -> None:
        import os

        def fds() -> int:
            return len(os.listdir("/proc/self/fd"))

        srv = self.server()
        threads0, fds0 = threading.active_count(), fds()
        gw = Gateway(srv.base_url, KEY, log=self.log, max_workers=8, queue_timeout=0.2).start()
        socks = []
        try:
            for _ in range(1000):
                s = socket.create_connection((gw.host, gw.port), timeout=30)
                s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                socks.append(s)
            answers = []
            for s in socks:
                try:
                    answers.append(_statuses(_recv_all(s))[:1])
                except OSError as exc:  # a refusal beyond the waiting room may be a reset
                    answers.append([repr(exc)])
        finally:
            for s in socks:
                s.close()
            gw.stop()
        got = {a[0] if a else "nothing" for a in answers}
        self.assertLessEqual(got, {200, 503}, got)
        for _ in range(200):  # bounded: the threads were told to end
            if threading.active_count() <= threads0 and fds() <= fds0:
                break
            threading.Event().wait(0.05)
        self.assertEqual(threading.active_count(), threads0)
        self.assertEqual(fds(), fds0)


class _SilentUpstream:
    """Accepts one request and never answers; ``closed`` is set when the gateway hangs up."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.base_url = "http://127.0.0.1:%d/v1" % self.listener.getsockname()[1]
        self.asked = threading.Event()
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(20)
            try:
                while conn.recv(65536):
                    self.asked.set()
                self.closed.set()
            except OSError:
                self.closed.set()

    def stop(self) -> None:
        self.listener.close()


class TestHangUps(_Case):
    def test_shutdown_while_a_client_waits_for_a_worker_answers_it_and_ends(self) -> None:
        gate = threading.Event()
        self.addCleanup(gate.set)
        srv = self.server([Reply("held", gate=gate, gate_timeout=60)])
        gw = self.gateway(srv, max_workers=1, queue_timeout=60)
        holder = self.connect(gw)
        holder.sendall(_post("/v1/chat/completions", CHAT))
        self.assertTrue(srv.wait_for_requests(1))
        waiter = self.connect(gw, timeout=20)
        waiter.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        for _ in range(1000):  # bounded wait until it waits for the worker
            if getattr(gw, "_waiting", 0) == 1:
                break
            threading.Event().wait(0.01)
        self.assertEqual(getattr(gw, "_waiting", 0), 1)
        closer = threading.Thread(target=gw.shutdown, kwargs={"grace": 0})
        closer.start()
        self.assertEqual(_statuses(_recv_all(waiter))[:1], [503])
        closer.join(20)  # hang guard: the accept loop waited queue_timeout (60 s) for a worker
        self.assertFalse(closer.is_alive())
        self.assertIn(b"503", _recv_all(holder)[:20])

    def test_a_client_that_hangs_up_before_a_whole_answer_closes_the_upstream_request(self) -> None:
        up = _SilentUpstream()
        self.addCleanup(up.stop)
        gw = Gateway(up.base_url, KEY, log=self.log, timeout=60).start()
        self.addCleanup(gw.stop)
        sock = self.connect(gw)
        sock.sendall(_post("/v1/chat/completions", CHAT))
        self.assertTrue(up.asked.wait(10))
        sock.close()
        self.assertTrue(up.closed.wait(10), "the upstream request stayed open after the client left")
        gw.stop()
        self.assertIn(" 499 ", self.log.getvalue())

    def test_a_refused_large_body_still_gets_its_answer(self) -> None:
        # 401, 403, 404 closed the connection without reading a body over 64 KiB: a client
        # still sending it got a connection reset instead of the answer.
        srv = self.server()
        gw = self.gateway(srv, token="tok-hostile-42")
        big = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * (4 << 20)}]}).encode()
        for path, headers, status in (
            ("/v1/chat/completions", {}, 401),
            ("/v1/nothing", {"Authorization": "Bearer tok-hostile-42"}, 404),
            ("/v1/chat/completions", {"Origin": "https://evil.example"}, 403),
        ):
            conn = http.client.HTTPConnection(gw.host, gw.port, timeout=10)
            self.addCleanup(conn.close)
            conn.request("POST", path, body=big, headers=dict(headers, **{"Content-Type": "application/json"}))
            resp = conn.getresponse()
            self.assertEqual(resp.status, status, path)
            resp.read()
        self.assertEqual(srv.requests, [])


class TestHeld(_Case):
    """Promises the hostile tests found kept (guards against their regression)."""

    def test_path_tricks_get_404_and_reach_no_upstream(self) -> None:
        srv = self.server()
        gw = self.gateway(srv)
        for target in (
            "/v1/chat/completions/",
            "/v1/%2e%2e/v1/chat/completions",
            "/v1/../v1/chat/completions",
            "http://evil.example/v1/chat/completions",
            "/V1/chat/completions",
            "*",
        ):
            out = self.exchange(gw, _post(target, CHAT))
            self.assertIn(_statuses(out)[:1], ([404], [400]), (target, out[:200]))
        self.assertEqual(srv.requests, [])

    def test_too_many_or_too_long_headers_are_refused(self) -> None:
        gw = self.gateway(self.server())
        many = b"".join(b"X-H%d: v\r\n" % i for i in range(200))
        out = self.exchange(gw, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + many + b"\r\n")
        self.assertEqual(_statuses(out)[:1], [431])
        out = self.exchange(gw, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n")
        self.assertEqual(_statuses(out)[:1], [431])

    def test_body_exactly_at_the_limit_passes_one_byte_over_is_413(self) -> None:
        srv = self.server(["ok"])
        gw = self.gateway(srv, max_body=len(CHAT))
        self.assertEqual(_statuses(self.exchange(gw, _post("/v1/chat/completions", CHAT)))[:1], [200])
        over = CHAT[:-1] + b" }"
        self.assertEqual(_statuses(self.exchange(gw, _post("/v1/chat/completions", over)))[:1], [413])

    def test_odd_json_bodies_are_400_or_passed_through(self) -> None:
        srv = self.server(["ok"])
        gw = self.gateway(srv)
        for body in (b"\xff\xfe{}", b"[1, 2]", b'{"model": "m", "temperature": NaN}', b'"text"', b"", b"{"):
            self.assertEqual(_statuses(self.exchange(gw, _post("/v1/chat/completions", body)))[:1], [400], body)
        self.assertEqual(srv.requests, [])
        body = json.dumps({"model": ["not", "a", "string"], "messages": []}).encode()
        self.assertEqual(_statuses(self.exchange(gw, _post("/v1/chat/completions", body)))[:1], [200])
        self.assertEqual(srv.last_request.json["model"], ["not", "a", "string"])

    def test_preflight_gets_cors_headers_only_with_cors(self) -> None:
        srv = self.server()
        pre = (
            b"OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: https://app.example\r\n"
            b"Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n"
        )
        out = self.exchange(self.gateway(srv), pre)
        self.assertNotIn(b"access-control", out.lower())
        out = self.exchange(self.gateway(srv, cors="https://app.example"), pre)
        self.assertEqual(_statuses(out)[:1], [204])
        self.assertIn(b"Access-Control-Allow-Origin: https://app.example", out)

    def test_a_fallbacks_own_key_echoed_by_it_is_masked(self) -> None:
        own = "sk-fallbackownkeyYYYY8888"
        bad = self.server([Reply(status=503)])
        fb = self.server([Reply(status=400, body={"error": {"message": "bad key " + own + " and " + KEY}})])
        gw = Gateway(bad.base_url, KEY, fallbacks=[(fb.base_url, own)], log=self.log).start()
        self.addCleanup(gw.stop)
        out = self.exchange(gw, _post("/v1/chat/completions", CHAT))
        self.assertEqual(_statuses(out)[:1], [400])
        self.assertEqual(fb.last_request.headers["authorization"], "Bearer " + own)
        gw.stop()
        for text in (out.decode("utf-8", "replace"), self.log.getvalue(), repr(gw)):
            self.assertNotIn(own, text)
            self.assertNotIn(KEY, text)

    def test_every_key_limited_with_any_retry_after_relays_the_429(self) -> None:
        from openai2 import AKPool

        for value in ("99999999999999999999999", "-5", "Wed, 21 Oct 2015 07:28:00 GMT", "1e400", "nan"):
            srv = self.server([Reply(status=429, headers={"Retry-After": value})] * 2)
            gw = Gateway(srv.base_url, AKPool([KEY, KEY + "b"]), log=self.log).start()
            self.addCleanup(gw.stop)
            out = self.exchange(gw, _post("/v1/chat/completions", CHAT))
            self.assertEqual(_statuses(out)[:1], [429], (value, out[:300]))


class _MixedEndingsUpstream:
    """Sends a stream head and one event that ends in LF then CRLF, then holds the stream
    until ``release`` is set."""

    EVENT = b'data: {"choices":[{"index":0,"delta":{"content":"first"}}]}\n\r\n'

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.base_url = "http://127.0.0.1:%d/v1" % self.listener.getsockname()[1]
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(20)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b"%x\r\n%s\r\n" % (len(self.EVENT), self.EVENT)
            )
            self.release.wait(20)
            tail = b"data: [DONE]\n\n"
            conn.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(tail), tail))

    def stop(self) -> None:
        self.release.set()
        self.thread.join(10)
        self.listener.close()


class TestEventBoundaries(_Case):
    def test_an_event_ending_in_mixed_line_ends_is_relayed_as_it_arrives(self) -> None:
        up = _MixedEndingsUpstream()
        self.addCleanup(up.stop)
        gw = Gateway(up.base_url, KEY, log=self.log, keepalive=None).start()
        self.addCleanup(gw.stop)
        conn = http.client.HTTPConnection(gw.host, gw.port, timeout=5)
        self.addCleanup(conn.close)
        conn.request("POST", "/v1/chat/completions", body=json.dumps({"model": "m", "stream": True}))
        resp = conn.getresponse()
        try:
            first = resp.read1(65536)
        except socket.timeout:
            first = b""
        self.assertIn(b"first", first, "the event waited for the next one")
        up.release.set()
        self.assertIn(b"[DONE]", first + resp.read())
