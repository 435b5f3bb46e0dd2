"""The local gateway (openai2.gateway.Gateway, `openai2 serve`) in front of the socket FakeServer,
with openai2's own client (and http.client for raw looks) as the gateway's client."""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
import sys
import threading
import unittest
from unittest import mock

from openai2 import AKPool, OpenAI
from openai2.gateway import Gateway, GatewayError
from openai2.testing import FakeServer, Reply

KEY_A = "sk-gatewaytestkeyAAAA1111"
KEY_B = "sk-gatewaytestkeyBBBB2222"
KEY_C = "sk-gatewaytestkeyCCCC3333"
ALL_KEYS = (KEY_A, KEY_B, KEY_C)


def _raw(gw: Gateway, method: str, path: str, body: object = None, headers: dict | None = None):
    conn = http.client.HTTPConnection(gw.host, gw.port, timeout=10)
    try:
        data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
        conn.request(
            method,
            path,
            body=data,
            headers=dict(headers or {}, **({"Content-Type": "application/json"} if data else {})),
        )
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


class _GatewayCase(unittest.TestCase):
    def setUp(self) -> None:
        self.log = io.StringIO()

    def gateway(self, upstream: FakeServer, key: object = KEY_A, **kw: object) -> Gateway:
        gw = Gateway(upstream.base_url, key, log=self.log, **kw)  # type: ignore[arg-type]
        gw.start()
        self.addCleanup(gw.stop)
        return gw

    def server(self, replies: list | None = None, **kw: object) -> FakeServer:
        srv = FakeServer(replies, **kw)  # type: ignore[arg-type]
        srv.start()
        self.addCleanup(srv.stop)
        return srv

    def client(self, gw: Gateway, key: str = "unused-client-key") -> OpenAI:
        c = OpenAI(key, base_url=gw.base_url, max_retries=0)
        self.addCleanup(c.close)
        return c

    def logged(self, gw: Gateway) -> str:
        """The access log once every worker finished (stop() joins them: no race with the line)."""
        gw.stop()
        return self.log.getvalue()

    def assertNoKey(self, *texts: object) -> None:
        for text in texts:
            raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
            for key in ALL_KEYS:
                self.assertNotIn(key, raw)


class TestPassThrough(_GatewayCase):
    def test_non_streaming_answer_and_body_reach_upstream_unchanged(self) -> None:
        srv = self.server([Reply("hello there")])
        gw = self.gateway(srv)
        body = {"model": "m1", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5, "x_extra": [1]}
        result = self.client(gw).complete(body)
        self.assertEqual(result["choices"][0]["message"]["content"], "hello there")
        self.assertEqual(srv.last_request.json, body)
        self.assertEqual(srv.last_request.headers["authorization"], "Bearer " + KEY_A)
        self.assertIn("model=m1", self.logged(gw))

    def test_streaming_answer_relayed(self) -> None:
        srv = self.server([Reply("streamed!", usage={"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})])
        gw = self.gateway(srv)
        stream = self.client(gw).stream({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True})
        self.assertEqual("".join(stream.iter_text()), "streamed!")
        self.assertTrue(stream.accumulator.done)
        self.assertIn("tokens=7", self.logged(gw))

    def test_client_headers_not_forwarded(self) -> None:
        srv = self.server([Reply("ok")])
        gw = self.gateway(srv)
        _raw(
            gw,
            "POST",
            "/v1/chat/completions",
            {"model": "m", "messages": []},
            {"X-Secret-Thing": "leak", "Cookie": "c=1"},
        )
        headers = srv.last_request.headers
        self.assertNotIn("x-secret-thing", headers)
        self.assertNotIn("cookie", headers)

    def test_alias_rewrites_model_only(self) -> None:
        srv = self.server([Reply("ok")])
        gw = self.gateway(srv, aliases={"fast": "real-model-x"})
        self.client(gw).complete({"model": "fast", "messages": [{"role": "user", "content": "q"}]})
        self.assertEqual(srv.last_request.json["model"], "real-model-x")
        self.assertEqual(srv.last_request.json["messages"], [{"role": "user", "content": "q"}])

    def test_models_lists_aliases_when_upstream_has_none(self) -> None:
        srv = self.server()
        gw = self.gateway(srv, aliases={"fast": "real-model-x"})
        status, _, raw = _raw(gw, "GET", "/v1/models")
        self.assertEqual(status, 200)
        self.assertEqual([m["id"] for m in json.loads(raw)["data"]], ["fast"])

    def test_health_and_unknown_path(self) -> None:
        gw = self.gateway(self.server())
        status, _, raw = _raw(gw, "GET", "/health")
        self.assertEqual((status, json.loads(raw)["status"]), (200, "ok"))
        status, _, raw = _raw(gw, "GET", "/v1/nothing-here")
        self.assertEqual(status, 404)
        self.assertEqual(json.loads(raw)["error"]["code"], "not_found")

    def test_root_serves_the_chat_page_with_its_security_headers(self) -> None:
        from openai2.chatpage import CHAT_PAGE_CSP, chat_page

        srv = self.server()
        gw = self.gateway(srv, token="tok-page-secret-1")  # the page itself needs no token
        status, headers, raw = _raw(gw, "GET", "/")
        self.assertEqual(status, 200)
        self.assertEqual(raw, chat_page(token_required=True, title="openai2"))
        self.assertEqual(headers["content-type"], "text/html; charset=utf-8")
        self.assertEqual(headers["content-security-policy"], CHAT_PAGE_CSP)
        self.assertEqual(headers["x-content-type-options"], "nosniff")
        self.assertEqual(headers["referrer-policy"], "no-referrer")
        self.assertEqual(headers["cache-control"], "no-store")
        self.assertNoKey(raw, headers)
        self.assertNotIn(b"tok-page-secret-1", raw)
        self.assertEqual(srv.requests, [])
        status, headers, raw = _raw(gw, "HEAD", "/")
        self.assertEqual((status, raw), (200, b""))
        self.assertEqual(headers["content-security-policy"], CHAT_PAGE_CSP)

    def test_page_without_token_and_only_at_the_root(self) -> None:
        from openai2.chatpage import chat_page

        gw = self.gateway(self.server())
        self.assertEqual(_raw(gw, "GET", "/")[2], chat_page(token_required=False, title="openai2"))
        self.assertEqual(_raw(gw, "GET", "/?lang=zh")[0], 200)
        for path in ("/v1/", "/index.html"):
            status, _, raw = _raw(gw, "GET", path)
            self.assertEqual(status, 404, path)
            self.assertEqual(json.loads(raw)["error"]["code"], "not_found")

    def test_no_ui_answers_the_root_with_an_openai_shaped_404(self) -> None:
        status, headers, raw = _raw(self.gateway(self.server(), ui=False), "GET", "/")
        self.assertEqual(status, 404)
        self.assertEqual(headers["content-type"], "application/json")
        self.assertEqual(json.loads(raw)["error"]["code"], "not_found")


class TestKeysAndFailover(_GatewayCase):
    def test_keys_rotate_per_request(self) -> None:
        srv = self.server(["a", "b"])
        gw = self.gateway(srv, key=AKPool([KEY_A, KEY_B]))
        c = self.client(gw)
        for _ in range(2):
            c.complete({"model": "m", "messages": []})
        used = [r.headers["authorization"] for r in srv.requests]
        self.assertEqual(sorted(used), sorted(["Bearer " + KEY_A, "Bearer " + KEY_B]))

    def test_429_moves_to_next_key_and_401_sets_aside(self) -> None:
        pool = AKPool([KEY_A, KEY_B, KEY_C])
        srv = self.server(
            [Reply(status=429, headers={"Retry-After": "30"}), Reply(status=401), Reply("third key works")]
        )
        gw = self.gateway(srv, key=pool)
        result = self.client(gw).complete({"model": "m", "messages": []})
        self.assertEqual(result["choices"][0]["message"]["content"], "third key works")
        used = [r.headers["authorization"][7:] for r in srv.requests]
        self.assertEqual(len(set(used)), 3)
        self.assertEqual(len(pool.set_aside), 1)
        self.assertNoKey(self.logged(gw))

    def test_5xx_and_connection_error_fall_back_to_next_base_url(self) -> None:
        bad = self.server([Reply(status=503)])
        good = self.server([Reply("from fallback")])
        dead = socket.socket()
        dead.bind(("127.0.0.1", 0))
        dead_url = "http://127.0.0.1:%d/v1" % dead.getsockname()[1]
        dead.close()
        gw = Gateway(bad.base_url, KEY_A, fallbacks=[dead_url, (good.base_url, KEY_B)], log=self.log).start()
        self.addCleanup(gw.stop)
        result = self.client(gw).complete({"model": "m", "messages": []})
        self.assertEqual(result["choices"][0]["message"]["content"], "from fallback")
        self.assertEqual(good.last_request.headers["authorization"], "Bearer " + KEY_B)

    def test_every_upstream_failed_relays_the_upstream_error_masked(self) -> None:
        echo = {"error": {"message": "bad key " + KEY_A, "type": "invalid_request_error", "code": "teapot"}}
        srv = self.server([Reply(status=418, body=echo)])
        gw = self.gateway(srv)
        status, headers, raw = _raw(gw, "POST", "/v1/chat/completions", {"model": "m", "messages": []})
        self.assertEqual(status, 418)
        self.assertEqual(json.loads(raw)["error"]["code"], "teapot")
        self.assertNoKey(raw, headers, self.logged(gw))


class _HoldingUpstream:
    """A one-shot upstream that sends a stream head and one event, then holds the connection
    until the gateway closes it (``closed`` is set), breaks it (``break_now``), or finishes the
    stream (``finish_now``: a second event, ``[DONE]``, the last chunk)."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.base_url = "http://127.0.0.1:%d/v1" % self.listener.getsockname()[1]
        self.closed = threading.Event()
        self.break_now = threading.Event()
        self.finish_now = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, rest = data.partition(b"\r\n\r\n")
            length = int(
                [ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")][0]
            )
            while len(rest) < length:
                rest += conn.recv(65536)
            event = b'data: {"choices":[{"index":0,"delta":{"content":"first"}}]}\n\n'
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b"%x\r\n%s\r\n" % (len(event), event)
            )
            conn.settimeout(0.05)
            for _ in range(200):
                if self.break_now.is_set():
                    conn.sendall(b"5\r\ndata:")  # half a chunk, then the connection drops
                    return
                if self.finish_now.is_set():
                    self.finish_now.clear()
                    tail = b'data: {"choices":[{"index":0,"delta":{"content":"second"}}]}\n\ndata: [DONE]\n\n'
                    conn.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(tail), tail))
                try:
                    if conn.recv(1) == b"":
                        self.closed.set()
                        return
                except socket.timeout:
                    continue
                except OSError:
                    self.closed.set()
                    return

    def stop(self) -> None:
        self.break_now.set()
        self.thread.join(10)
        self.listener.close()


class TestStreams(_GatewayCase):
    def test_upstream_breaking_mid_stream_ends_with_an_error_event(self) -> None:
        up = _HoldingUpstream()
        self.addCleanup(up.stop)
        gw = Gateway(up.base_url, KEY_A, log=self.log).start()
        self.addCleanup(gw.stop)
        conn = http.client.HTTPConnection(gw.host, gw.port, timeout=10)
        self.addCleanup(conn.close)
        conn.request("POST", "/v1/chat/completions", body=json.dumps({"model": "m", "messages": [], "stream": True}))
        resp = conn.getresponse()
        first = resp.read1(65536) if hasattr(resp, "read1") else resp.read(10)
        self.assertIn(b"first", first)
        up.break_now.set()
        rest = resp.read()
        self.assertIn(b'data: {"error"', rest)
        self.assertNotIn(b"data:data", first + rest)  # the half event was not relayed
        self.assertNoKey(first, rest, self.logged(gw))

    def test_client_disconnect_closes_upstream_at_once(self) -> None:
        up = _HoldingUpstream()
        self.addCleanup(up.stop)
        gw = Gateway(up.base_url, KEY_A, log=self.log).start()
        self.addCleanup(gw.stop)
        conn = http.client.HTTPConnection(gw.host, gw.port, timeout=10)
        conn.request("POST", "/v1/chat/completions", body=json.dumps({"model": "m", "messages": [], "stream": True}))
        resp = conn.getresponse()
        self.assertIn(b"first", resp.read1(65536) if hasattr(resp, "read1") else resp.read(10))
        resp.close()
        conn.close()
        self.assertTrue(up.closed.wait(8), "the upstream connection stayed open after the client left")


def _open_stream(gw: Gateway, headers: dict | None = None):
    conn = http.client.HTTPConnection(gw.host, gw.port, timeout=10)
    body = json.dumps({"model": "m", "messages": [], "stream": True})
    conn.request("POST", "/v1/chat/completions", body=body, headers=headers or {})
    return conn, conn.getresponse()


def _read_until(resp, marker: bytes, seen: bytes = b"") -> bytes:
    """Read the (de-chunked) stream until ``marker`` came; fail if it ends first."""
    while marker not in seen:
        piece = resp.read1(65536)
        if not piece:
            raise AssertionError("the stream ended before %r; it had %r" % (marker, seen))
        seen += piece
    return seen


def _sse(raw: bytes):
    from openai2.sse import SSEDecoder

    decoder = SSEDecoder()
    events = decoder.feed(raw) + decoder.close()
    return [e.data for e in events], decoder.comments


class TestKeepAlive(_GatewayCase):
    def test_silent_upstream_stream_gets_keepalive_comments_between_events(self) -> None:
        up = _HoldingUpstream()
        self.addCleanup(up.stop)
        gw = Gateway(up.base_url, KEY_A, log=self.log, keepalive=0.02).start()
        self.addCleanup(gw.stop)
        conn, resp = _open_stream(gw)
        self.addCleanup(conn.close)
        seen = _read_until(resp, b"first")
        at = seen.index(b"first")
        # the upstream is silent after "first": only the gateway speaks (a ping before it, on a
        # slow machine, does not count)
        seen = seen[:at] + _read_until(resp, b": keep-alive", seen[at:])
        up.finish_now.set()
        whole = seen + resp.read()
        first = whole.index(b"first")
        self.assertLess(whole.index(b": keep-alive", first), whole.index(b"second"))
        data, comments = _sse(whole)
        self.assertEqual([json.loads(d)["choices"][0]["delta"]["content"] for d in data[:-1]], ["first", "second"])
        self.assertEqual(data[-1], "[DONE]")
        self.assertGreaterEqual(comments, 1)
        self.assertNoKey(whole)

    def test_no_keepalive_after_the_last_chunk(self) -> None:
        # A ping written after the terminating chunk would be read as the start of the next
        # answer on the kept-alive connection.
        from openai2.gateway import _GatewayStream

        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        wfile = a.makefile("wb", buffering=0)
        self.addCleanup(wfile.close)
        handler = type("H", (), {"connection": a, "wfile": wfile})()
        out = _GatewayStream(handler, True, 0.01)
        out.write(b"data: x\n\n")
        out.ping()
        out.finish()
        out.ping()
        a.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            piece = b.recv(65536)
            if not piece:
                break
            data += piece
        self.assertEqual(data.count(b": keep-alive"), 1)
        self.assertTrue(data.endswith(b"0\r\n\r\n"), data)

    def test_keepalive_none_sends_no_comment(self) -> None:
        srv = self.server([Reply("abc", keepalive_comments=0)])
        gw = self.gateway(srv, keepalive=None)
        _, _, raw = _raw(gw, "POST", "/v1/chat/completions", {"model": "m", "messages": [], "stream": True})
        self.assertEqual(_sse(raw)[1], 0)
        self.assertIn(b"[DONE]", raw)

    def test_keepalive_must_be_positive(self) -> None:
        for bad in (0, -1.0):
            with self.assertRaises(ValueError):
                Gateway("http://127.0.0.1:9/v1", KEY_A, keepalive=bad)


class TestShutdown(_GatewayCase):
    def _wait_refused(self, gw: Gateway) -> None:
        self.assertTrue(_refused(gw.host, gw.port), "the gateway still accepts connections")

    def test_stream_in_flight_finishes_within_the_grace(self) -> None:
        up = _HoldingUpstream()
        self.addCleanup(up.stop)
        gw = Gateway(up.base_url, KEY_A, log=self.log, keepalive=None).start()
        self.addCleanup(gw.stop)
        conn, resp = _open_stream(gw)
        self.addCleanup(conn.close)
        seen = _read_until(resp, b"first")
        closer = threading.Thread(target=gw.shutdown, kwargs={"grace": 60})
        closer.start()
        self._wait_refused(gw)
        self.assertFalse(gw.accepting)
        self.assertTrue(closer.is_alive())  # waiting for the stream
        up.finish_now.set()
        whole = seen + resp.read()
        closer.join(20)
        self.assertFalse(closer.is_alive())
        data, _ = _sse(whole)
        self.assertEqual(data[-1], "[DONE]")
        self.assertNotIn(b'"error"', whole)

    def test_stream_past_the_grace_ends_with_an_error_event(self) -> None:
        up = _HoldingUpstream()
        self.addCleanup(up.stop)
        gw = Gateway(up.base_url, KEY_A, log=self.log, keepalive=None).start()
        self.addCleanup(gw.stop)
        conn, resp = _open_stream(gw)
        self.addCleanup(conn.close)
        seen = _read_until(resp, b"first")
        gw.shutdown(grace=0.05)
        whole = seen + resp.read()
        data, _ = _sse(whole)
        error = json.loads(data[-1])["error"]
        self.assertEqual(error["code"], "gateway_shutdown")
        self.assertNotIn("[DONE]", data)
        self.assertTrue(up.closed.wait(8), "the upstream request stayed open")
        self.assertIn("200+shutdown", self.log.getvalue())
        self.assertNoKey(whole, self.log.getvalue())

    def test_request_waiting_for_its_upstream_past_the_grace_gets_503(self) -> None:
        gate = threading.Event()
        self.addCleanup(gate.set)
        srv = self.server([Reply("late", gate=gate)])
        gw = self.gateway(srv)
        got: list = []
        asker = threading.Thread(
            target=lambda: got.append(_raw(gw, "POST", "/v1/chat/completions", {"model": "m", "messages": []}))
        )
        asker.start()
        self.assertTrue(srv.wait_for_requests(1))
        gw.shutdown(grace=0.05)
        asker.join(10)
        status, headers, raw = got[0]
        self.assertEqual(status, 503)
        self.assertIn("retry-after", headers)
        self.assertEqual(json.loads(raw)["error"]["code"], "gateway_shutdown")

    def test_idle_keepalive_connections_do_not_hold_the_shutdown(self) -> None:
        srv = self.server(["one"])
        gw = self.gateway(srv, idle_timeout=120)
        conn = http.client.HTTPConnection(gw.host, gw.port, timeout=10)
        self.addCleanup(conn.close)
        conn.request("GET", "/health")
        self.assertEqual(conn.getresponse().read(), b'{"status":"ok"}')  # the connection stays open, idle
        closer = threading.Thread(target=gw.shutdown, kwargs={"grace": 120})
        closer.start()
        closer.join(10)  # hang guard: an idle connection kept open would hold it for the whole grace
        self.assertFalse(closer.is_alive())

    def test_close_twice_and_stop_after_close(self) -> None:
        gw = self.gateway(self.server())
        gw.close()
        gw.close()
        gw.stop()
        self.assertFalse(gw.accepting)


def _refused(gw_host: str, port: int) -> bool:
    """Wait (bounded) until a new connection to the port is refused: the server stopped accepting."""
    for _ in range(1000):
        try:
            socket.create_connection((gw_host, port), timeout=1).close()
        except OSError:
            return True
        threading.Event().wait(0.01)  # hang guard while the shutdown starts elsewhere
    return False


class TestSignals(_GatewayCase):
    def test_ctrl_c_in_serve_forever_closes_gracefully_and_is_raised_again(self) -> None:
        import signal

        if threading.current_thread() is not threading.main_thread():
            self.skipTest("signals reach the main thread only")
        up = _HoldingUpstream()
        self.addCleanup(up.stop)
        gw = Gateway(up.base_url, KEY_A, log=self.log, keepalive=None, shutdown_grace=60).start()
        self.addCleanup(gw.stop)
        conn, resp = _open_stream(gw)
        self.addCleanup(conn.close)
        seen = _read_until(resp, b"first")
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job ignores it
        self.addCleanup(signal.signal, signal.SIGINT, previous)
        main = threading.main_thread()
        got: dict = {}

        def in_serve_forever() -> bool:
            frame = sys._current_frames().get(main.ident)
            while frame is not None:
                if frame.f_code.co_name == "serve_forever" and frame.f_code.co_filename.endswith("gateway.py"):
                    return True
                frame = frame.f_back
            return False

        def press_ctrl_c() -> None:
            for _ in range(1000):
                if in_serve_forever():
                    break
                threading.Event().wait(0.005)
            os.kill(os.getpid(), signal.SIGINT)
            got["refused"] = _refused(gw.host, gw.port)
            up.finish_now.set()
            got["whole"] = seen + resp.read()

        helper = threading.Thread(target=press_ctrl_c)
        with self.assertRaises(KeyboardInterrupt):
            helper.start()
            gw.serve_forever()
        helper.join(20)
        self.assertTrue(got["refused"])
        self.assertEqual(_sse(got["whole"])[0][-1], "[DONE]")
        self.assertNotIn(b'"error"', got["whole"])
        self.assertFalse(gw.accepting)


class TestOrganizationHeaders(_GatewayCase):
    ORG = {"OpenAI-Organization": "org-from-client", "OpenAI-Project": "proj-from-client"}

    def test_configured_organization_and_project_go_upstream(self) -> None:
        srv = self.server(["ok"])
        gw = self.gateway(srv, organization="org-conf", project="proj-conf")
        self.client(gw).complete({"model": "m", "messages": []})
        headers = srv.last_request.headers
        self.assertEqual((headers["openai-organization"], headers["openai-project"]), ("org-conf", "proj-conf"))

    def test_client_copies_dropped_unless_allowed(self) -> None:
        srv = self.server(["ok", "ok", "ok"])
        with mock.patch.dict(os.environ, {"OPENAI_ORG_ID": "", "OPENAI_PROJECT_ID": ""}):
            plain = self.gateway(srv)
            configured = self.gateway(srv, organization="org-conf")
            allowed = self.gateway(srv, organization="org-conf", forward_org_headers=True)
        _raw(plain, "POST", "/v1/chat/completions", {"model": "m", "messages": []}, self.ORG)
        self.assertNotIn("openai-organization", srv.requests[0].headers)
        self.assertNotIn("openai-project", srv.requests[0].headers)
        _raw(configured, "POST", "/v1/chat/completions", {"model": "m", "messages": []}, self.ORG)
        self.assertEqual(srv.requests[1].headers["openai-organization"], "org-conf")
        self.assertNotIn("openai-project", srv.requests[1].headers)
        _raw(allowed, "POST", "/v1/chat/completions", {"model": "m", "messages": []}, self.ORG)
        self.assertEqual(srv.requests[2].headers["openai-organization"], "org-from-client")
        self.assertEqual(srv.requests[2].headers["openai-project"], "proj-from-client")

    def test_a_fallback_with_its_own_keys_gets_no_organization(self) -> None:
        bad = self.server([Reply(status=503), Reply(status=503)])
        shared = self.server([Reply(status=503)])
        own = self.server(["from its own account"])
        with mock.patch.dict(os.environ, {"OPENAI_ORG_ID": "org-from-env", "OPENAI_PROJECT_ID": ""}):
            gw = Gateway(
                bad.base_url,
                KEY_A,
                fallbacks=[shared.base_url, (own.base_url, KEY_B)],
                forward_org_headers=True,
                log=self.log,
            ).start()
        self.addCleanup(gw.stop)
        status, _, raw = _raw(gw, "POST", "/v1/chat/completions", {"model": "m", "messages": []},
                              {"OpenAI-Project": "proj-from-client"})
        self.assertEqual(status, 200)
        self.assertEqual(bad.last_request.headers["openai-organization"], "org-from-env")
        self.assertEqual(shared.last_request.headers["openai-organization"], "org-from-env")
        self.assertEqual(shared.last_request.headers["openai-project"], "proj-from-client")
        self.assertNotIn("openai-organization", own.last_request.headers)
        self.assertNotIn("openai-project", own.last_request.headers)


class TestSecurity(_GatewayCase):
    def test_token_required_and_checked(self) -> None:
        srv = self.server(["ok"])
        gw = self.gateway(srv, token="tok-secret-123")
        status, headers, raw = _raw(gw, "POST", "/v1/chat/completions", {"model": "m", "messages": []})
        self.assertEqual(status, 401)
        self.assertEqual(json.loads(raw)["error"]["code"], "invalid_api_key")
        status, _, _ = _raw(gw, "GET", "/v1/models", headers={"Authorization": "Bearer wrong"})
        self.assertEqual(status, 401)
        self.assertEqual(srv.requests, [])
        result = self.client(gw, key="tok-secret-123").complete({"model": "m", "messages": []})
        self.assertEqual(result["choices"][0]["message"]["content"], "ok")
        self.assertEqual(_raw(gw, "GET", "/v1/models", headers={"api-key": "tok-secret-123"})[0], 200)
        self.assertEqual(srv.last_request.headers["authorization"], "Bearer " + KEY_A)

    def test_non_loopback_bind_refused_without_token(self) -> None:
        with self.assertRaises(GatewayError):
            Gateway("http://127.0.0.1:9/v1", KEY_A, host="0.0.0.0")
        Gateway("http://127.0.0.1:9/v1", KEY_A, host="0.0.0.0", token="t0ken-value")  # allowed, not started

    def test_body_over_the_limit_is_413(self) -> None:
        srv = self.server()
        gw = self.gateway(srv, max_body=100)
        status, _, raw = _raw(gw, "POST", "/v1/chat/completions", {"model": "m", "messages": [{"content": "x" * 200}]})
        self.assertEqual(status, 413)
        self.assertEqual(json.loads(raw)["error"]["code"], "request_too_large")
        self.assertEqual(srv.requests, [])

    def test_cors_off_by_default_on_when_configured(self) -> None:
        srv = self.server()
        _, headers, _ = _raw(self.gateway(srv), "GET", "/health")
        self.assertFalse([h for h in headers if h.startswith("access-control")])
        _, headers, _ = _raw(self.gateway(srv, cors="https://app.example"), "GET", "/health")
        self.assertEqual(headers["access-control-allow-origin"], "https://app.example")

    def test_key_never_in_responses_or_log(self) -> None:
        srv = self.server([Reply("echo " + KEY_A), Reply(chunks=["streamed echo ", KEY_A, " done"])])
        gw = self.gateway(srv)
        _, h1, r1 = _raw(gw, "POST", "/v1/chat/completions", {"model": KEY_A, "messages": []})
        _, h2, r2 = _raw(gw, "POST", "/v1/chat/completions", {"model": "m", "messages": [], "stream": True})
        self.assertIn(b"echo", r1)
        self.assertIn(b"echo", r2)
        self.assertNoKey(r1, h1, r2, h2, repr(gw), self.logged(gw))


class TestConcurrency(_GatewayCase):
    def test_beyond_the_worker_bound_is_503_with_retry_after(self) -> None:
        gate = threading.Event()
        srv = self.server([Reply("slow", gate=gate)])
        gw = self.gateway(srv, max_workers=1, queue_timeout=0.0)
        holder = threading.Thread(
            target=_raw, args=(gw, "POST", "/v1/chat/completions", {"model": "m", "messages": []})
        )
        holder.start()
        try:
            self.assertTrue(srv.wait_for_requests(1))
            status, headers, raw = _raw(gw, "GET", "/health")
            self.assertEqual(status, 503)
            self.assertIn("retry-after", headers)
            self.assertEqual(json.loads(raw)["error"]["code"], "overloaded")
        finally:
            gate.set()
            holder.join(10)

    def test_client_connections_send_at_once_without_nagle(self) -> None:
        # Without TCP_NODELAY the body written after the head waits for the client's delayed ACK
        # (about 40 ms per answer on Linux).
        gate = threading.Event()
        self.addCleanup(gate.set)
        srv = self.server([Reply("held", gate=gate)])
        gw = self.gateway(srv)
        asker = threading.Thread(target=_raw, args=(gw, "POST", "/v1/chat/completions", {"model": "m", "messages": []}))
        asker.start()
        self.addCleanup(asker.join, 10)
        self.assertTrue(srv.wait_for_requests(1))
        conns = list(gw._server.gw_conns.values())
        self.assertEqual(len(conns), 1)
        self.assertNotEqual(conns[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), 0)
        gate.set()

    @unittest.skipUnless(os.path.isdir("/proc/self/fd"), "counts open descriptors in /proc/self/fd")
    def test_200_concurrent_streams_complete_and_leave_no_threads_or_fds(self) -> None:
        def fds() -> int:
            return len(os.listdir("/proc/self/fd"))

        n = 200
        threads0, fds0 = threading.active_count(), fds()
        barrier = threading.Barrier(n, timeout=30)  # every upstream answer waits until all 200 are in

        def answer(req):
            who = req.json["messages"][0]["content"]
            return Reply(chunks=["stream ", who, " ", "done"], gate=barrier)

        srv = FakeServer(handler=answer)
        srv.start()
        gw = Gateway(srv.base_url, KEY_A, log=self.log, max_workers=n + 8).start()
        client = OpenAI("x", base_url=gw.base_url, max_retries=0, timeout=60)
        texts: dict = {}
        errors: list = []
        lock = threading.Lock()

        def one(i: int) -> None:
            try:
                s = client.stream({"model": "m", "messages": [{"role": "user", "content": str(i)}], "stream": True})
                text = "".join(s.iter_text())
                done = s.accumulator.done
            except Exception as exc:  # noqa: BLE001 - collected, reported below
                with lock:
                    errors.append(repr(exc))
                return
            with lock:
                texts[i] = (text, done)

        workers = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
        client.close()
        gw.stop()
        srv.stop()
        self.assertEqual(errors, [])
        self.assertEqual(texts, {i: ("stream %d done" % i, True) for i in range(n)})
        self.assertEqual(srv.max_in_flight, n)
        for _ in range(200):  # the threads were told to end; wait (bounded) until they have
            if threading.active_count() <= threads0 and fds() <= fds0:
                break
            threading.Event().wait(0.05)
        self.assertEqual(threading.active_count(), threads0)
        self.assertEqual(fds(), fds0)


class TestServeCommand(unittest.TestCase):
    def test_serve_refuses_a_public_address_without_token(self) -> None:
        from openai2.cli import main

        err = io.StringIO()
        code = main(["serve", "--host", "0.0.0.0", "--api-key", KEY_A], stdout=io.StringIO(), stderr=err)
        self.assertEqual(code, 2)
        self.assertIn("token", err.getvalue())
        self.assertNotIn(KEY_A, err.getvalue())

    def test_serve_options_reach_the_gateway(self) -> None:
        from unittest import mock

        from openai2 import gateway as gateway_module
        from openai2.cli import main

        seen = {}

        class Recording(gateway_module.Gateway):
            def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
                seen.update(kwargs)
                raise gateway_module.GatewayError("recorded")

        argv = ["serve", "--api-key", KEY_A, "--max-body", "2k", "--max-workers", "3", "--organization", "org-1",
                "--project", "proj-1", "--forward-org-headers", "--shutdown-grace", "0.5"]
        with mock.patch.object(gateway_module, "Gateway", Recording):
            code = main(argv, stdout=io.StringIO(), stderr=io.StringIO())
        self.assertEqual(code, 2)
        self.assertEqual(
            {k: seen[k] for k in ("max_body", "max_workers", "organization", "project", "forward_org_headers", "shutdown_grace")},
            {"max_body": 2048, "max_workers": 3, "organization": "org-1", "project": "proj-1",
             "forward_org_headers": True, "shutdown_grace": 0.5},
        )
        seen.clear()
        with mock.patch.object(gateway_module, "Gateway", Recording):
            main(["serve", "--api-key", KEY_A], stdout=io.StringIO(), stderr=io.StringIO())
        self.assertNotIn("max_body", seen)  # the Gateway's own defaults apply
        self.assertIs(seen["forward_org_headers"], False)

    def test_sigterm_lets_the_stream_in_flight_finish(self) -> None:
        import re
        import signal
        import subprocess
        import tempfile

        up = _HoldingUpstream()
        self.addCleanup(up.stop)
        home = tempfile.mkdtemp()
        self.addCleanup(__import__("shutil").rmtree, home, True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "HTTP", "http", "ALL_PROXY"))}
        env.update(OPENAI_API_KEY=KEY_A, OPENAI2_HOME=home, OPENAI2_LOG="0")
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        proc = subprocess.Popen(
            [sys.executable, "-m", "openai2", "serve", "--port", "0", "--base-url", up.base_url, "--quiet"],
            cwd=repo, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        self.addCleanup(lambda: proc.poll() is None and (proc.kill(), proc.wait(10)))
        self.addCleanup(proc.stderr.close)
        line = proc.stderr.readline().decode()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/v1", line)
        self.assertIsNotNone(found, line)
        port = int(found.group(1))  # type: ignore[union-attr]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.addCleanup(conn.close)
        conn.request("POST", "/v1/chat/completions", body=json.dumps({"model": "m", "messages": [], "stream": True}))
        resp = conn.getresponse()
        seen = _read_until(resp, b"first")
        proc.send_signal(signal.SIGTERM)
        self.assertTrue(_refused("127.0.0.1", port))
        up.finish_now.set()
        whole = seen + resp.read()
        self.assertEqual(proc.wait(20), 0)
        rest = proc.stderr.read().decode()
        self.assertEqual(_sse(whole)[0][-1], "[DONE]")
        self.assertNotIn(b'"error"', whole)
        self.assertIn("stopped", rest)
        self.assertNotIn(KEY_A, line + rest)

    def test_serve_rejects_a_malformed_alias(self) -> None:
        from openai2.cli import main

        err = io.StringIO()
        self.assertEqual(main(["serve", "--alias", "nomodel", "--api-key", KEY_A], stdout=io.StringIO(), stderr=err), 2)
        self.assertIn("--alias", err.getvalue())


if __name__ == "__main__":
    unittest.main()
