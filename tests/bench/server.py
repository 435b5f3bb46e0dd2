"""A fast loopback OpenAI-compatible server for the benchmark, run in its own process.

    python tests/bench/server.py            # prints "PORT <n>" on stdout, then serves 127.0.0.1:<n>

One asyncio event loop, ``asyncio.Protocol`` (no streams, no thread per request), HTTP/1.1
keep-alive.  Every answer is prepared once and written with one ``transport.write``:

- ``POST {prefix}/chat/completions`` with a JSON body.  ``"stream": true`` gets an SSE stream
  (``Transfer-Encoding: chunked`` in 64 KiB HTTP chunks, as real servers do); otherwise a
  ``chat.completion`` JSON body with Content-Length.
- The ``{prefix}`` before ``/chat/completions`` picks the mode, so a client only changes its
  base URL: a segment ``slow`` answers after 300 ms (``loop.call_later``: 100 waiting requests
  cost nothing), ``n<count>`` makes a stream of ``count`` content chunks (default 20).
  Example base URL: ``http://127.0.0.1:PORT/n20000/v1``.

It stops when its standard input closes (the benchmark driver exits or dies), on SIGTERM, or after
an hour at the latest.  Standard library only; Python 3.8+.
"""
import asyncio
import json
import os
import sys

SLOW_SECONDS = 0.3
MAX_LIFETIME = 3600.0
HTTP_CHUNK = 65536

COMPLETION = {
    "id": "chatcmpl-bench0000000000000000000000",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "bench-model",
    "system_fingerprint": "fp_bench",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello! How can I help you today?", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
}


def _chunk(delta, finish=None, usage=None):
    chunk = {
        "id": "chatcmpl-bench0000000000000000000000",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "bench-model",
        "system_fingerprint": "fp_bench",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if usage is not None:
        chunk["usage"] = usage
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


def sse_payload(count):
    """The SSE body of a stream of ``count`` content chunks (one token each), [DONE] last."""
    parts = [_chunk({"role": "assistant", "content": ""})]
    words = [_chunk({"content": " tok%d" % i}) for i in range(10)]
    parts.extend(words[i % 10] for i in range(count))
    parts.append(_chunk({}, "stop"))
    parts.append(b"data: [DONE]\n\n")
    return b"".join(parts)


def _chunked(payload):
    out = []
    for i in range(0, len(payload), HTTP_CHUNK):
        piece = payload[i : i + HTTP_CHUNK]
        out.append(b"%x\r\n%s\r\n" % (len(piece), piece))
    out.append(b"0\r\n\r\n")
    return b"".join(out)


_JSON_BODY = json.dumps(COMPLETION, separators=(",", ":")).encode()
JSON_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
    b"x-request-id: req_bench\r\n\r\n%s" % (len(_JSON_BODY), _JSON_BODY)
)
_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
    b"Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\nx-request-id: req_bench\r\n\r\n"
)
_stream_cache = {}


def stream_response(count):
    data = _stream_cache.get(count)
    if data is None:
        data = _stream_cache[count] = _STREAM_HEAD + _chunked(sse_payload(count))
    return data


def _error(status, message):
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "code": None}}).encode()
    return b"HTTP/1.1 %d Error\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        status,
        len(body),
        body,
    )


class BenchProtocol(asyncio.Protocol):
    """One keep-alive connection: parse requests as they arrive, answer each with one write."""

    def __init__(self, loop):
        self.loop = loop
        self.buf = b""
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.transport = None

    def data_received(self, data):
        self.buf += data
        while True:
            buf = self.buf
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = buf[:end].lower()
            length = 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : stop if stop >= 0 else len(head)])
            elif b"\r\ntransfer-encoding:" in head:
                self._send(_error(411, "send a Content-Length"), close=True)
                return
            if len(buf) < end + 4 + length:
                return
            body = buf[end + 4 : end + 4 + length]
            self.buf = buf[end + 4 + length :]
            self.handle(head, body)

    def _send(self, data, close=False):
        if self.transport is not None:
            self.transport.write(data)
            if close:
                self.transport.close()

    def handle(self, head, body):
        line = head[: head.find(b"\r\n")] if b"\r\n" in head else head
        parts = line.split(b" ")
        close = b"\r\nconnection: close" in head
        if len(parts) < 2 or parts[0] != b"post" or not parts[1].endswith(b"/chat/completions"):
            self._send(_error(404, "unknown route"), close)
            return
        segments = parts[1].split(b"/")
        slow = b"slow" in segments
        count = 20
        for seg in segments:
            if seg.startswith(b"n") and seg[1:].isdigit():
                count = int(seg[1:])
        try:
            request = json.loads(body)
        except ValueError:
            self._send(_error(400, "body is not JSON"), close)
            return
        data = stream_response(count) if request.get("stream") else JSON_RESPONSE
        if slow:
            self.loop.call_later(SLOW_SECONDS, self._send, data, close)
        else:
            self._send(data, close)


def main():
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(
        loop.create_server(lambda: BenchProtocol(loop), "127.0.0.1", 0, backlog=1024, reuse_address=True)
    )
    port = server.sockets[0].getsockname()[1]
    stream_response(20000)  # build the big stream before anyone times it
    sys.stdout.write("PORT %d\n" % port)
    sys.stdout.flush()

    def stdin_closed():
        try:
            data = os.read(0, 4096)
        except OSError:
            data = b""
        if not data:
            loop.stop()

    try:
        loop.add_reader(0, stdin_closed)
    except (OSError, ValueError, NotImplementedError):
        pass
    loop.call_later(MAX_LIFETIME, loop.stop)
    try:
        loop.run_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


if __name__ == "__main__":
    main()
