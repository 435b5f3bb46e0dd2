"""Tests of the fake server itself (openai2.testing), through raw http.client and sockets only.

openai2's own client is deliberately not used here: these tests pin down what the fake server
puts on the wire, so that the client's tests can rely on it.
"""
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import unittest

from openai2.testing import (
    DemoBrain,
    FakeServer,
    RecordedRequest,
    Reply,
    chat_chunk,
    chat_completion,
    openai_error_body,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHAT = "/v1/chat/completions"


# -- small independent helpers (no code from openai2) ---------------------------------------------

def request_bytes(body, *, path=CHAT, method="POST", close=True, extra=""):
    data = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode("utf-8")
    head = "%s %s HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s%s\r\n" % (
        method, path, len(data), "Connection: close\r\n" if close else "", extra)
    return head.encode("latin-1") + data


def read_until_eof(sock, timeout=5.0):
    sock.settimeout(timeout)
    data = b""
    while True:
        piece = sock.recv(65536)
        if not piece:
            return data
        data += piece


def raw_exchange(srv, body, **kw):
    """Send one request with Connection: close and return every byte the server sent."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        sock.sendall(request_bytes(body, **kw))
        return read_until_eof(sock)


def split_response(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def dechunk(body):
    """Return (list of chunk payloads as framed on the wire, saw the terminating 0 chunk)."""
    chunks = []
    pos = 0
    while pos < len(body):
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            break
        size = int(body[pos:eol], 16)
        if size == 0:
            return chunks, True
        chunks.append(body[eol + 2:eol + 2 + size])
        pos = eol + 2 + size + 2
    return chunks, False


def sse_data(payload):
    """The data fields of an SSE payload (any line ending), comments dropped."""
    text = payload.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    out = []
    for block in text.split("\n\n"):
        lines = [line[5:].lstrip(" ") if line.startswith("data:") else None for line in block.split("\n")]
        lines = [line for line in lines if line is not None]
        if lines:
            out.append("\n".join(lines))
    return out


def stream_body(srv, messages=None, **extra):
    body = {"model": "m", "messages": messages or [{"role": "user", "content": "hi"}], "stream": True}
    body.update(extra)
    status, headers, raw = split_response(raw_exchange(srv, body))
    chunks, terminated = dechunk(raw)
    return status, headers, chunks, terminated


def contents(data_fields):
    text = ""
    for d in data_fields:
        if d == "[DONE]":
            continue
        for choice in json.loads(d).get("choices", []):
            text += choice.get("delta", {}).get("content") or ""
    return text


def post_json(conn, body, path=CHAT, headers=None):
    hdrs = {"Content-Type": "application/json"}
    hdrs.update(headers or {})
    conn.request("POST", path, json.dumps(body, ensure_ascii=False).encode("utf-8"), hdrs)
    resp = conn.getresponse()
    return resp, resp.read()


class ServerCase(unittest.TestCase):
    def serve(self, *args, **kw):
        srv = FakeServer(*args, **kw).start()
        self.addCleanup(srv.stop)
        return srv

    def connect(self, srv, timeout=5.0):
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=timeout)
        self.addCleanup(conn.close)
        return conn


# -- basics ------------------------------------------------------------------------------------

class TestBasics(ServerCase):
    def test_base_url_and_context_manager(self):
        with FakeServer() as srv:
            self.assertEqual(srv.base_url, "http://127.0.0.1:%d/v1" % srv.port)
            self.assertEqual(srv.url, "http://127.0.0.1:%d" % srv.port)
            self.assertNotEqual(srv.port, 0)
            conn = self.connect(srv)
            resp, _ = post_json(conn, {"messages": [{"role": "user", "content": "x"}]})
            self.assertEqual(resp.status, 200)
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()

    def test_keep_alive_two_requests_one_connection(self):
        srv = self.serve(["a", "b"])
        conn = self.connect(srv)
        for expected in ("a", "b"):
            resp, data = post_json(conn, {"model": "m", "messages": []})
            self.assertEqual(json.loads(data)["choices"][0]["message"]["content"], expected)
            self.assertFalse(resp.will_close)
        reqs = srv.requests
        self.assertEqual(len(reqs), 2)
        self.assertEqual(reqs[0].connection_id, reqs[1].connection_id)
        self.assertEqual(srv.connection_count, 1)

    def test_json_completion_shape(self):
        srv = self.serve([Reply(content="你好")])
        resp, data = post_json(self.connect(srv), {"model": "gpt-x", "messages": [{"role": "user", "content": "abcdefgh"}]})
        self.assertEqual(resp.getheader("Content-Type"), "application/json")
        self.assertEqual(int(resp.getheader("Content-Length")), len(data))
        self.assertTrue(resp.getheader("x-request-id"))
        body = json.loads(data)
        self.assertEqual(body["object"], "chat.completion")
        self.assertEqual(body["model"], "gpt-x")
        self.assertEqual(body["choices"][0]["message"], {"role": "assistant", "content": "你好", "refusal": None})
        self.assertEqual(body["choices"][0]["finish_reason"], "stop")
        self.assertEqual(body["usage"]["prompt_tokens"], 2)
        self.assertEqual(body["usage"]["completion_tokens"], 1)
        self.assertEqual(body["usage"]["total_tokens"], 3)

    def test_recording(self):
        srv = self.serve()
        conn = self.connect(srv)
        payload = {"model": "m", "messages": [{"role": "user", "content": "密钥"}]}
        post_json(conn, payload, headers={"Authorization": "Bearer sk-test-0000000000001234", "X-Custom": "v"})
        self.assertTrue(srv.wait_for_requests(1, 1.0))
        req = srv.last_request
        self.assertIsInstance(req, RecordedRequest)
        self.assertEqual(req.method, "POST")
        self.assertEqual(req.path, CHAT)
        self.assertEqual(req.headers["authorization"], "Bearer sk-test-0000000000001234")
        self.assertIn(("X-Custom", "v"), req.raw_headers)
        self.assertEqual(req.json, payload)
        self.assertEqual(json.loads(req.body.decode("utf-8")), payload)
        self.assertEqual(req.messages, payload["messages"])
        self.assertFalse(req.stream)
        self.assertEqual(req.client_address[0], "127.0.0.1")
        self.assertEqual(req.index, 0)
        self.assertNotIn("sk-test", repr(req))
        srv.reset()
        self.assertEqual(srv.requests, [])
        self.assertEqual(srv.connection_count, 0)
        self.assertFalse(srv.wait_for_requests(1, 0.05))

    def test_large_body(self):
        srv = self.serve()
        payload = {"messages": [{"role": "user", "content": "字" * 500000}]}
        _, body = post_json(self.connect(srv), payload)
        self.assertEqual(srv.last_request.json, payload)
        self.assertEqual(len(srv.last_request.body), len(json.dumps(payload, ensure_ascii=False).encode("utf-8")))

    def test_non_json_body_recorded_raw(self):
        srv = self.serve()
        raw_exchange(srv, b"not json")
        self.assertEqual(srv.last_request.body, b"not json")
        self.assertIsNone(srv.last_request.json)

    def test_scripted_replies_then_handler_then_handler_errors(self):
        calls = []

        def handler(req):
            calls.append(req.index)
            if len(calls) == 2:
                raise RuntimeError("boom")
            return "from handler"

        srv = self.serve(["one", Reply(content="two")], handler=handler)
        conn = self.connect(srv)
        got = []
        for _ in range(4):
            resp, data = post_json(conn, {"messages": []})
            got.append((resp.status, json.loads(data)))
        self.assertEqual([g[1]["choices"][0]["message"]["content"] for g in got[:3]], ["one", "two", "from handler"])
        self.assertEqual(got[3][0], 500)
        self.assertIn("boom", got[3][1]["error"]["message"])
        self.assertEqual(calls, [2, 3])
        self.assertEqual(len(srv.errors), 1)
        srv.add_replies("again")
        srv.replies.append("and again")
        for expected in ("again", "and again"):
            resp, data = post_json(conn, {"messages": []})
            self.assertEqual(json.loads(data)["choices"][0]["message"]["content"], expected)

    def test_unknown_path_404_and_wrong_method_405(self):
        srv = self.serve(["kept for chat"])
        conn = self.connect(srv)
        conn.request("GET", "/v1/models")
        resp = conn.getresponse()
        body = json.loads(resp.read())
        self.assertEqual(resp.status, 404)
        self.assertIn("/v1/models", body["error"]["message"])
        self.assertEqual(body["error"]["type"], "invalid_request_error")
        conn.request("GET", CHAT)
        resp = conn.getresponse()
        resp.read()
        self.assertEqual(resp.status, 405)
        self.assertEqual([r.path for r in srv.requests], ["/v1/models", CHAT])
        resp, data = post_json(conn, {"messages": []}, path="/proxy/prefix/v1/chat/completions?x=1")
        self.assertEqual(json.loads(data)["choices"][0]["message"]["content"], "kept for chat")
        self.assertEqual(srv.connection_count, 1)

    def test_client_connection_close_is_honoured(self):
        srv = self.serve(["x"])
        raw = raw_exchange(srv, {"messages": []}, close=True)  # returns only because the server closed
        status, headers, _ = split_response(raw)
        self.assertEqual(status, 200)
        self.assertEqual(headers["connection"], "close")

    def test_chunked_request_body_and_expect_continue(self):
        srv = self.serve(["ok"])
        body = json.dumps({"messages": [{"role": "user", "content": "块"}]}).encode("utf-8")
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                         b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
            sock.settimeout(5)
            self.assertTrue(sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n"))
            sock.sendall(b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (5, body[:5], len(body) - 5, body[5:]))
            status, _, data = split_response(read_until_eof(sock))
        self.assertEqual(status, 200)
        self.assertEqual(srv.last_request.body, body)
        self.assertEqual(srv.last_request.messages[0]["content"], "块")

    def test_http_1_0_gets_close_delimited_stream(self):
        srv = self.serve(["ab"])
        data = json.dumps({"messages": [], "stream": True}).encode()
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data))
            status, headers, body = split_response(read_until_eof(sock))
        self.assertNotIn("transfer-encoding", headers)
        self.assertEqual(contents(sse_data(body)), "ab")


# -- streaming ----------------------------------------------------------------------------------

class TestStreaming(ServerCase):
    def test_default_stream_one_character_per_chunk(self):
        srv = self.serve(["太平洋。"])
        status, headers, chunks, terminated = stream_body(srv)
        self.assertEqual(status, 200)
        self.assertEqual(headers["transfer-encoding"], "chunked")
        self.assertTrue(headers["content-type"].startswith("text/event-stream"))
        self.assertTrue(terminated)
        data = sse_data(b"".join(chunks))
        self.assertEqual(data[-1], "[DONE]")
        parsed = [json.loads(d) for d in data[:-1]]
        self.assertEqual(parsed[0]["choices"][0]["delta"], {"role": "assistant", "content": ""})
        self.assertEqual([p["choices"][0]["delta"].get("content") for p in parsed[1:-1]], ["太", "平", "洋", "。"])
        self.assertEqual(parsed[-1]["choices"][0]["finish_reason"], "stop")
        self.assertEqual(parsed[-1]["choices"][0]["delta"], {})
        self.assertTrue(all(p["object"] == "chat.completion.chunk" for p in parsed))
        self.assertEqual(len({p["id"] for p in parsed}), 1)
        self.assertTrue(all("usage" not in p for p in parsed))

    def test_usage_chunk_only_with_include_usage_or_explicit_usage(self):
        srv = self.serve(["ab", "ab", Reply(content="ab", usage={"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8}),
                          Reply(content="ab", usage=None)])
        opts = {"stream_options": {"include_usage": True}}
        data = sse_data(b"".join(stream_body(srv)[2]))
        self.assertFalse(any("usage" in d for d in data[:-1]))
        data = sse_data(b"".join(stream_body(srv, messages=[{"role": "user", "content": "12345678"}], **opts)[2]))
        last = json.loads(data[-2])
        self.assertEqual(last["choices"], [])
        self.assertEqual(last["usage"], {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3})
        self.assertTrue(all(json.loads(d)["usage"] is None for d in data[:-2]))
        data = sse_data(b"".join(stream_body(srv)[2]))  # an explicit usage dict is sent unasked
        self.assertEqual(json.loads(data[-2])["choices"], [])
        self.assertEqual(json.loads(data[-2])["usage"]["total_tokens"], 8)
        data = sse_data(b"".join(stream_body(srv, **opts)[2]))
        self.assertNotEqual(json.loads(data[-2])["choices"], [])

    def test_explicit_chunks_reasoning_and_finish_none(self):
        srv = self.serve([Reply(chunks=["Hel", "lo"], reasoning=["think", "ing"], finish_reason=None, model="r1")])
        data = sse_data(b"".join(stream_body(srv)[2]))
        deltas = [json.loads(d)["choices"][0]["delta"] for d in data[:-1]]
        self.assertEqual([d.get("reasoning_content") for d in deltas[1:3]], ["think", "ing"])
        self.assertEqual([d.get("content") for d in deltas[3:]], ["Hel", "lo"])
        self.assertTrue(all(json.loads(d)["choices"][0]["finish_reason"] is None for d in data[:-1]))
        self.assertEqual(json.loads(data[0])["model"], "r1")

    def test_tool_calls_stream_and_json(self):
        calls = [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "北京市朝阳区"}'}}]
        srv = self.serve([Reply(tool_calls=calls), Reply(tool_calls=calls)])
        data = sse_data(b"".join(stream_body(srv)[2]))
        parsed = [json.loads(d) for d in data[:-1]]
        args = ""
        for p in parsed:
            for tc in p["choices"][0]["delta"].get("tool_calls", []):
                self.assertEqual(tc["index"], 0)
                args += tc["function"].get("arguments", "")
                if "id" in tc:
                    self.assertEqual((tc["id"], tc["function"]["name"]), ("call_1", "get_weather"))
        self.assertEqual(args, calls[0]["function"]["arguments"])
        self.assertGreater(sum(1 for p in parsed if p["choices"][0]["delta"].get("tool_calls")), 2)
        self.assertEqual(parsed[-1]["choices"][0]["finish_reason"], "tool_calls")
        resp, body = post_json(self.connect(srv), {"messages": []})
        message = json.loads(body)["choices"][0]["message"]
        self.assertEqual(message["tool_calls"], calls)
        self.assertIsNone(message["content"])
        self.assertEqual(json.loads(body)["choices"][0]["finish_reason"], "tool_calls")

    def test_reasoning_in_json(self):
        srv = self.serve([Reply(content="42", reasoning="because")])
        _, body = post_json(self.connect(srv), {"messages": []})
        self.assertEqual(json.loads(body)["choices"][0]["message"]["reasoning_content"], "because")

    def test_line_endings_on_the_wire(self):
        srv = self.serve([Reply(content="ab", line_ending=le) for le in ("\n", "\r\n", "\r")])
        lf = b"".join(stream_body(srv)[2])
        crlf = b"".join(stream_body(srv)[2])
        cr = b"".join(stream_body(srv)[2])
        self.assertNotIn(b"\r", lf)
        self.assertIn(b"\n\n", lf)
        self.assertEqual(crlf.count(b"\n"), crlf.count(b"\r\n"))
        self.assertTrue(crlf.endswith(b"data: [DONE]\r\n\r\n"))
        self.assertNotIn(b"\n", cr)
        self.assertTrue(cr.endswith(b"data: [DONE]\r\r"))
        for payload in (lf, crlf, cr):
            self.assertEqual(contents(sse_data(payload)), "ab")
        with self.assertRaises(ValueError):
            Reply(line_ending="\n\n")

    def test_write_size_splits_bytes_including_utf8(self):
        srv = self.serve([Reply(content="海洋", write_size=5, line_ending="\r\n"), Reply(content="海洋", write_size=1, write_pause=0)])
        _, _, chunks, terminated = stream_body(srv)
        self.assertTrue(terminated)
        self.assertTrue(all(1 <= len(c) <= 5 for c in chunks))
        undecodable = 0
        for c in chunks:
            try:
                c.decode("utf-8")
            except UnicodeDecodeError:
                undecodable += 1
        self.assertGreater(undecodable, 0)  # some write ends inside a character
        self.assertEqual(contents(sse_data(b"".join(chunks))), "海洋")
        _, _, chunks, _ = stream_body(srv)
        self.assertEqual({len(c) for c in chunks}, {1})
        self.assertEqual(contents(sse_data(b"".join(chunks))), "海洋")

    def test_keepalive_comments(self):
        srv = self.serve([Reply(content="abc", keepalive_comments=3, line_ending="\r\n")])
        payload = b"".join(stream_body(srv)[2])
        self.assertEqual(payload.count(b": keep-alive\r\n"), 3)
        self.assertTrue(payload.startswith(b": keep-alive\r\n"))
        self.assertEqual(contents(sse_data(payload)), "abc")

    def test_hand_made_events_without_done(self):
        srv = self.serve([Reply(events=[chat_chunk("x"), "line1\nline2", b"event: error\ndata: {}\n\n"], done=False)])
        payload = b"".join(stream_body(srv)[2])
        self.assertIn(b"data: line1\ndata: line2\n\n", payload)
        self.assertTrue(payload.endswith(b"event: error\ndata: {}\n\n"))
        self.assertNotIn(b"[DONE]", payload)
        self.assertEqual(json.loads(sse_data(payload)[0])["choices"][0]["delta"], {"content": "x"})

    def test_raw_stream_exact_bytes_even_for_non_stream_request(self):
        raw = b"data: {\"a\":1}\r\rdata: [DONE]\r\r"
        srv = self.serve([Reply(raw_stream=raw)])
        status, headers, body = split_response(raw_exchange(srv, {"messages": []}))
        chunks, terminated = dechunk(body)
        self.assertEqual(b"".join(chunks), raw)
        self.assertTrue(terminated)

    def test_stream_without_chunked_encoding(self):
        srv = self.serve([Reply(content="ab", chunked=False)])
        status, headers, body = split_response(raw_exchange(srv, {"messages": [], "stream": True}))
        self.assertNotIn("transfer-encoding", headers)
        self.assertNotIn("content-length", headers)
        self.assertEqual(headers["connection"], "close")
        self.assertEqual(contents(sse_data(body)), "ab")

    def test_body_overrides_stream(self):
        srv = self.serve([Reply(body=chat_completion("whole"))])
        status, headers, body = split_response(raw_exchange(srv, {"messages": [], "stream": True}))
        self.assertEqual(headers["content-type"], "application/json")
        self.assertEqual(int(headers["content-length"]), len(body))
        self.assertEqual(json.loads(body)["choices"][0]["message"]["content"], "whole")


# -- failures -------------------------------------------------------------------------------------

class TestFailures(ServerCase):
    def test_status_headers_and_error_body(self):
        srv = self.serve([Reply(status=429, content="Rate limit reached", headers={"Retry-After": "1"}),
                          Reply(status=429, content="quota", error_code="insufficient_quota"),
                          Reply(status=503)])
        conn = self.connect(srv)
        resp, body = post_json(conn, {"messages": []})
        self.assertEqual(resp.status, 429)
        self.assertEqual(resp.getheader("Retry-After"), "1")
        self.assertEqual(json.loads(body)["error"]["message"], "Rate limit reached")
        self.assertEqual(json.loads(body)["error"]["type"], "rate_limit_error")
        resp, body = post_json(conn, {"messages": [], "stream": True})
        self.assertEqual(resp.getheader("Content-Type"), "application/json")
        self.assertEqual(json.loads(body)["error"]["code"], "insufficient_quota")
        resp, body = post_json(conn, {"messages": []})
        self.assertEqual(resp.status, 503)
        self.assertEqual(json.loads(body)["error"]["type"], "server_error")

    def test_raw_body_sent_as_is(self):
        page = "<html><body><h1>502 Bad Gateway</h1></body></html>"
        srv = self.serve([Reply(status=502, body=page, content_type="text/html")])
        resp, body = post_json(self.connect(srv), {"messages": []})
        self.assertEqual((resp.status, resp.getheader("Content-Type"), body), (502, "text/html", page.encode()))

    def test_headers_override_defaults(self):
        srv = self.serve([Reply(content="x", headers={"x-request-id": "req_123", "Content-Type": "text/plain"})])
        resp, _ = post_json(self.connect(srv), {"messages": []})
        self.assertEqual(resp.getheader("x-request-id"), "req_123")
        self.assertEqual(resp.getheader("Content-Type"), "text/plain")

    def test_redirect(self):
        srv = self.serve([Reply(redirect_to="http://elsewhere.invalid/v1/chat/completions"), Reply(redirect_to="/x", status=308)])
        conn = self.connect(srv)
        resp, _ = post_json(conn, {"messages": []})
        self.assertEqual((resp.status, resp.getheader("Location")), (307, "http://elsewhere.invalid/v1/chat/completions"))
        resp, _ = post_json(conn, {"messages": []})
        self.assertEqual((resp.status, resp.getheader("Location")), (308, "/x"))

    def test_delay_holds_the_status_line_until_it_ends_or_stop_cuts_it(self):
        srv = self.serve([Reply(content="x", delay=0.01)])
        resp, _ = post_json(self.connect(srv), {"messages": []})
        self.assertEqual(resp.status, 200)  # a short delay, then the answer
        srv = FakeServer([Reply(content="x", delay=3600)]).start()
        self.addCleanup(srv.stop)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
            sock.sendall(request_bytes({"messages": []}))
            self.assertTrue(srv.wait_for_requests(1, 5))  # the request is in ...
            sock.setblocking(False)
            with self.assertRaises(BlockingIOError):  # ... and not a byte of the answer
                sock.recv(1)
            sock.setblocking(True)
            srv.stop()  # cuts the hour-long delay: the connection ends, unanswered
            self.assertEqual(read_until_eof(sock, timeout=5), b"")

    def test_close_connection(self):
        srv = self.serve([Reply(content="x", close_connection=True), "y"])
        conn = self.connect(srv)
        resp, _ = post_json(conn, {"messages": []})
        self.assertEqual(resp.getheader("Connection"), "close")
        self.assertTrue(resp.will_close)
        post_json(conn, {"messages": []})
        self.assertEqual(srv.connection_count, 2)

    def test_disconnect_mid_stream(self):
        srv = self.serve([Reply(content="abcdef", disconnect_after=3)])
        _, _, chunks, terminated = stream_body(srv)
        self.assertFalse(terminated)
        data = sse_data(b"".join(chunks))
        self.assertEqual(len(data), 3)
        self.assertNotIn("[DONE]", data)

    def test_disconnect_mid_json_body(self):
        srv = self.serve([Reply(content="abcdef", disconnect_after=10)])
        status, headers, body = split_response(raw_exchange(srv, {"messages": []}))
        self.assertEqual(len(body), 10)
        self.assertGreater(int(headers["content-length"]), 10)

    def assert_reset(self, srv, body):
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
            sock.sendall(request_bytes(body, close=False))
            with self.assertRaises(ConnectionResetError):
                read_until_eof(sock)

    def test_reset_before_status_and_mid_stream(self):
        srv = self.serve([Reply(content="x", reset=True), Reply(content="abcdef", reset=True, disconnect_after=2)])
        self.assert_reset(srv, {"messages": []})
        self.assert_reset(srv, {"messages": [], "stream": True})
        self.assertEqual(len(srv.requests), 2)

    def test_stall_then_carry_on(self):
        srv = self.serve([Reply(content="abcd", stall_after=2, stall_seconds=1.0)])
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
            sock.sendall(request_bytes({"messages": [], "stream": True}))
            early = b""
            while early.count(b"\n\n") < 2:  # two whole events (chunk framing is \r\n)
                piece = sock.recv(65536)
                self.assertTrue(piece)
                early += piece
            sock.setblocking(False)
            with self.assertRaises(BlockingIOError):  # then the stall: nothing more yet
                early += sock.recv(65536)
            sock.setblocking(True)
            rest = read_until_eof(sock)
        _, _, body = split_response(early)
        self.assertEqual(len(sse_data(b"".join(dechunk(body)[0]))), 2)
        chunks, terminated = dechunk(split_response(early + rest)[2])
        self.assertTrue(terminated)
        self.assertEqual(contents(sse_data(b"".join(chunks))), "abcd")

    def test_stop_cuts_a_stall_and_idle_connections_fast(self):
        srv = FakeServer(["idle", Reply(content="abcd", stall_after=1, stall_seconds=3600)]).start()
        idle = self.connect(srv)
        post_json(idle, {"messages": []})  # this keep-alive connection now waits for its next request
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        self.addCleanup(sock.close)
        sock.sendall(request_bytes({"messages": [], "stream": True}))
        self.assertTrue(srv.wait_for_requests(2, 2))
        self.assertEqual(srv.open_connections, 2)
        stopper = threading.Thread(target=srv.stop)
        stopper.start()
        stopper.join(60)  # a guard only: the stall has an hour to go
        self.assertFalse(stopper.is_alive(), "stop() waited for the stall")
        read_until_eof(sock, timeout=2)  # the server closed it
        self.assertEqual(srv.open_connections, 0)
        srv.stop()  # idempotent
        self.assertFalse([t for t in threading.enumerate() if t.name.startswith("openai2-fake-") and t.is_alive()
                          and str(srv.port) in t.name])

    def test_close_idle_connections_and_keepalive_timeout(self):
        srv = self.serve()
        conn = self.connect(srv)
        post_json(conn, {"messages": []})
        self.assertEqual(srv.close_idle_connections(), 1)
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError)):
            post_json(conn, {"messages": []})
        srv2 = self.serve(keepalive_timeout=0.1)
        conn2 = self.connect(srv2)
        post_json(conn2, {"messages": []})
        deadline = time.monotonic() + 2
        while srv2.open_connections and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(srv2.open_connections, 0)


# -- concurrency ----------------------------------------------------------------------------------

class TestConcurrency(ServerCase):
    def test_gate_and_in_flight_with_20_clients(self):
        barrier = threading.Barrier(20)
        srv = self.serve(handler=lambda req: Reply(content="ok", gate=barrier, gate_timeout=5))
        results = []

        def client():
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
            try:
                resp, _ = post_json(conn, {"messages": []})
                results.append(resp.status)
            finally:
                conn.close()

        threads = [threading.Thread(target=client) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        self.assertEqual(results, [200] * 20)
        self.assertFalse(barrier.broken)
        self.assertEqual(srv.max_in_flight, 20)
        self.assertEqual(srv.in_flight, 0)
        self.assertEqual(srv.connection_count, 20)

    def test_event_gate(self):
        gate = threading.Event()
        srv = self.serve(handler=lambda req: Reply(content="ok", gate=gate))
        conn = self.connect(srv)
        done = []
        t = threading.Thread(target=lambda: done.append(post_json(conn, {"messages": []})[0].status))
        t.start()
        self.assertTrue(srv.wait_for_requests(1, 2))
        time.sleep(0.05)
        self.assertEqual((done, srv.in_flight), ([], 1))
        gate.set()
        t.join(5)
        self.assertEqual(done, [200])

    def test_200_concurrent_connections(self):
        n = 200
        barrier = threading.Barrier(n)
        srv = self.serve(handler=lambda req: Reply(content=str(req.json["i"]), gate=barrier, gate_timeout=10))
        socks = []
        try:
            for i in range(n):
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=15)
                socks.append(s)
                s.sendall(request_bytes({"i": i, "messages": []}))
            answers = [json.loads(split_response(read_until_eof(s, 15))[2])["choices"][0]["message"]["content"]
                       for s in socks]
        finally:
            for s in socks:
                s.close()
        self.assertEqual(answers, [str(i) for i in range(n)])
        self.assertEqual(srv.max_in_flight, n)
        self.assertEqual(srv.connection_count, n)


# -- TLS ---------------------------------------------------------------------------------------------

class TestTLS(ServerCase):
    def test_https_with_test_ca_certificate(self):
        # The committed test CA (tests/certs, valid for decades): a certificate made on the fly
        # with the openssl CLI failed verification intermittently on PyPy ("verify failed: ok").
        certs = os.path.join(os.path.dirname(os.path.abspath(__file__)), "certs")
        cert, key, ca = (os.path.join(certs, name) for name in ("server.pem", "server.key", "ca.pem"))
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert, key)
        srv = self.serve(["secure", "streamed"], ssl_context=server_ctx)
        self.assertEqual(srv.base_url, "https://localhost:%d/v1" % srv.port)
        client_ctx = ssl.create_default_context(cafile=ca)
        conn = http.client.HTTPSConnection("localhost", srv.port, context=client_ctx, timeout=5)
        self.addCleanup(conn.close)
        resp, body = post_json(conn, {"messages": []})
        self.assertEqual(json.loads(body)["choices"][0]["message"]["content"], "secure")
        resp, body = post_json(conn, {"messages": [], "stream": True})
        self.assertEqual(contents(sse_data(body)), "streamed")
        self.assertEqual(srv.connection_count, 1)
        # a client that does not trust the certificate fails the handshake; the server survives
        bad = http.client.HTTPSConnection("localhost", srv.port, context=ssl.create_default_context(), timeout=5)
        self.addCleanup(bad.close)
        with self.assertRaises(ssl.SSLError):
            post_json(bad, {"messages": []})
        # PyPy's ssl leaves that failure in OpenSSL's per-thread error queue and would report it
        # again on this thread's next TLS read; openai2's transport clears it the same way.
        from openai2.transport import _tp_clear_tls_errors

        _tp_clear_tls_errors()
        resp, body = post_json(conn, {"messages": []})
        self.assertEqual(resp.status, 200)


# -- DemoBrain ------------------------------------------------------------------------------------

class ChatSim:
    """What a Chat does with its history, written out by hand for these tests."""

    def __init__(self, conn, stream=False):
        self.conn = conn
        self.messages = []
        self.stream = stream

    def request(self, text):
        self.messages.append({"role": "user", "content": text})
        resp, body = post_json(self.conn, {"model": "gpt-3.5-turbo", "messages": self.messages, "stream": self.stream})
        if self.stream:
            pieces = [json.loads(d)["choices"][0]["delta"].get("content") for d in sse_data(body) if d != "[DONE]"]
            pieces = [p for p in pieces if p]
            answer = "".join(pieces)
        else:
            answer = json.loads(body)["choices"][0]["message"]["content"]
            pieces = None
        self.messages.append({"role": "assistant", "content": answer})
        return pieces if self.stream else answer

    def rollback(self, n=1):
        for _ in range(n):
            while self.messages and self.messages.pop()["role"] != "user":
                pass


class TestDemoBrain(ServerCase):
    def test_tony_lucy_and_jenny(self):
        srv = self.serve()
        tony, lucy = ChatSim(self.connect(srv)), ChatSim(self.connect(srv))
        self.assertEqual(tony.request("自然数50的后面是几?"), "51")
        self.assertEqual(lucy.request("自然数100的后面是几?"), "101")
        self.assertEqual(tony.request("再往后是几?"), "52")
        self.assertEqual(lucy.request("再往后是几?"), "102")
        self.assertEqual(tony.request("再往后呢?"), "53")
        self.assertEqual(lucy.request("再往后呢?"), "103")
        jenny = ChatSim(self.connect(srv))
        jenny.messages = list(tony.messages)
        self.assertEqual(jenny.request("再往后呢?"), "54")

    def test_anna_rollback(self):
        anna = ChatSim(self.connect(self.serve()))
        answers = [anna.request("自然数1的后面是几?"), anna.request("再往后是几?")]
        answers += [anna.request("再往后呢?") for _ in range(5)]
        self.assertEqual(answers, [str(i) for i in range(2, 9)])
        anna.rollback()
        self.assertEqual(anna.messages[-2:], [{"role": "user", "content": "再往后呢?"}, {"role": "assistant", "content": "7"}])
        anna.rollback(3)
        self.assertEqual(anna.messages[-1]["content"], "4")
        self.assertEqual(anna.request("再往后呢?"), "5")

    def test_capitals_and_facts_with_trimmed_history(self):
        expected = [("英国的首都是什么？", "伦敦"), ("日本首都是什么？", "东京"), ("意大利的首都是什么？", "罗马"),
                    ("美国的首都是什么？", "华盛顿"), ("世界上国土面积最大的国家是哪个？", "俄罗斯"),
                    ("法国的首都叫什么？", "巴黎"), ("青蛙的幼体叫什么？", "蝌蚪"), ("世界上最大的海洋是什么？", "太平洋")]
        ariel = ChatSim(self.connect(self.serve()))
        for question, answer in expected:
            self.assertEqual(ariel.request(question), answer)
            ariel.messages = ariel.messages[-6:]  # MsgMaxCount = 6
        # the pinned walk-through's last request: pinned, unpaired messages before the question
        pinned = [{"role": "user", "content": "英国的首都是什么？"}, {"role": "user", "content": "意大利的首都是什么？"},
                  {"role": "assistant", "content": "罗马"}, {"role": "user", "content": "美国的首都是什么？"},
                  {"role": "user", "content": "世界上最大的海洋是什么？"}]
        self.assertEqual(DemoBrain().answer(pinned), "太平洋")

    def test_streamed_ocean_one_character_per_piece(self):
        srv = self.serve()
        lucy = ChatSim(self.connect(srv), stream=True)
        self.assertEqual(lucy.request("世界上最大的海洋是哪个?"), list("世界上最大的海洋是太平洋。"))
        tony = ChatSim(self.connect(srv))
        self.assertEqual(tony.request("世界上最大的海洋是哪个"), "世界上最大的海洋是太平洋。")

    def test_forged_conversation_apology(self):
        mickey = ChatSim(self.connect(self.serve()))
        mickey.messages = [{"role": "user", "content": "请问1+1=几?"}, {"role": "assistant", "content": "1+1=10"},
                           {"role": "user", "content": "那10+10=几?"},
                           {"role": "assistant", "content": "10+10=你大爷, 你提的这些问题真弱智!"}]
        self.assertEqual(mickey.request("哦吼, 你还敢骂我呀?"),
                         "非常抱歉，我刚才的回答有些不适当。1+1=2, 10+10=20。非常抱歉给你带来困扰！")

    def test_english_equivalents(self):
        brain = DemoBrain()
        history = [{"role": "user", "content": "What comes after the natural number 50?"}]
        self.assertEqual(brain.answer(history), "51")
        history.append({"role": "assistant", "content": "51"})
        history.append({"role": "user", "content": "And the next?"})
        self.assertEqual(brain.answer(history), "52")
        self.assertEqual(brain.answer([{"role": "user", "content": "Which is the largest ocean?"}]), "The Pacific Ocean.")
        self.assertEqual(brain.answer([{"role": "user", "content": "What is the capital of Japan?"}]), "Tokyo")
        self.assertEqual(brain.answer([{"role": "user", "content": "What is the capital of the United States?"}]),
                         "Washington, D.C.")

    def test_fallback_content_parts_and_system_messages(self):
        brain = DemoBrain()
        self.assertEqual(brain.answer([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]),
                         "(demo) You said: hello there")
        parts = [{"type": "text", "text": "自然数7的后面是几?"}, {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]
        self.assertEqual(brain.answer([{"role": "user", "content": parts}]), "8")
        self.assertTrue(brain.answer([]).startswith("(demo)"))
        self.assertTrue(brain.answer([{"role": "user", "content": "再往后呢?"}]).startswith("(demo)"))

    def test_custom_rules_first(self):
        import re

        brain = DemoBrain(rules=[
            (re.compile(r"weather in (\w+)"), lambda m, msgs: "Sunny in %s (%d messages)" % (m.group(1), len(msgs))),
            (r"^ping$", "pong"),
            (lambda text: text.startswith("自然数"), Reply(content="overridden", finish_reason="length")),
        ])
        self.assertEqual(brain.answer([{"role": "user", "content": "weather in Paris"}]), "Sunny in Paris (1 messages)")
        self.assertEqual(brain.answer([{"role": "user", "content": "ping"}]), "pong")
        self.assertEqual(brain.answer([{"role": "user", "content": "自然数1的后面是几?"}]).finish_reason, "length")
        srv = self.serve(handler=brain)
        _, body = post_json(self.connect(srv), {"messages": [{"role": "user", "content": "ping"}]})
        self.assertEqual(json.loads(body)["choices"][0]["message"]["content"], "pong")


# -- builders and import cost ------------------------------------------------------------------------

class TestBuildersAndImport(unittest.TestCase):
    def test_builders(self):
        body = chat_completion("hi", model="m", usage={"total_tokens": 1}, id="chatcmpl-1", created=5)
        self.assertEqual(body["id"], "chatcmpl-1")
        self.assertEqual(body["created"], 5)
        self.assertEqual(body["choices"][0]["message"], {"role": "assistant", "content": "hi", "refusal": None})
        self.assertEqual(body["usage"], {"total_tokens": 1})
        chunk = chat_chunk("x", role="assistant", finish_reason="stop")
        self.assertEqual(chunk["choices"][0]["delta"], {"role": "assistant", "content": "x"})
        self.assertEqual(chunk["choices"][0]["finish_reason"], "stop")
        usage = chat_chunk(choices=[], usage={"total_tokens": 3})
        self.assertEqual((usage["choices"], usage["usage"]), ([], {"total_tokens": 3}))
        self.assertEqual(openai_error_body("m", code="c")["error"], {"message": "m", "type": "invalid_request_error",
                                                                    "param": None, "code": "c"})

    @unittest.skipIf(os.environ.get("OPENAI2_SINGLE_FILE") == "1", "one file has no submodules")
    def test_every_public_name_keeps_its_import_path_and_lives_in_its_module(self):
        import openai2.demo
        import openai2.fakewire
        import openai2.testing

        homes = {"DemoBrain": openai2.demo, "RecordedRequest": openai2.fakewire, "Reply": openai2.fakewire,
                 "chat_chunk": openai2.fakewire, "chat_completion": openai2.fakewire,
                 "openai_error_body": openai2.fakewire}
        for name, home in homes.items():
            with self.subTest(name=name):
                self.assertIs(getattr(openai2.testing, name), getattr(home, name))
        self.assertEqual(FakeServer.__module__, "openai2.testing")

    @unittest.skipIf(os.environ.get("OPENAI2_SINGLE_FILE") == "1", "one file has no openai2.demo submodule")
    def test_demo_import_loads_neither_the_fake_wire_nor_heavy_modules(self):
        code = ("import sys; import openai2; before = set(sys.modules); import openai2.demo; "
                "print(sorted(set(sys.modules) - before))")
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, timeout=60, text=True)
        self.assertEqual(out.returncode, 0, out.stderr)
        added = json.loads(out.stdout.replace("'", '"'))
        self.assertEqual(added, ["openai2.demo"])

    @unittest.skipIf(os.environ.get("OPENAI2_SINGLE_FILE") == "1", "one file has no openai2.testing submodule")
    def test_import_adds_no_heavy_modules(self):
        code = ("import sys; import openai2; before = set(sys.modules); import openai2.testing; "
                "print(sorted(set(sys.modules) - before))")
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, timeout=60, text=True)
        self.assertEqual(out.returncode, 0, out.stderr)
        added = json.loads(out.stdout.replace("'", '"'))
        self.assertIn("openai2.testing", added)
        heavy = {"json", "socket", "ssl", "re", "socketserver", "http", "http.client", "http.server", "struct",
                 "typing", "selectors", "email", "urllib", "urllib.request", "logging", "asyncio"}
        self.assertEqual(sorted(heavy.intersection(added)), [])

    def test_threads_are_daemon_and_named(self):
        with FakeServer(["x"]) as srv:
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
            post_json(conn, {"messages": []})
            mine = [t for t in threading.enumerate() if t.name.startswith("openai2-fake-")]
            conn.close()
        self.assertGreaterEqual(len(mine), 2)
        self.assertTrue(all(t.daemon for t in mine))

    def test_restart_on_same_port(self):
        srv = FakeServer(["a", "b"])
        srv.start()
        port = srv.port
        srv.stop()
        srv.start()
        try:
            self.assertEqual(srv.port, port)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            _, body = post_json(conn, {"messages": []})
            conn.close()
            self.assertEqual(json.loads(body)["choices"][0]["message"]["content"], "a")
        finally:
            srv.stop()


if __name__ == "__main__":
    unittest.main()
