"""The bare baseline of the benchmark: what the standard library does with no client library.

Sync: one ``http.client.HTTPConnection`` (keep-alive, TCP_NODELAY), ``json.loads`` of each
answer, and for streams ``read1`` blocks decoded once and split into lines, ``json.loads`` per
``data:`` line.  Async: asyncio
streams on a raw socket (asyncio imported only there), the HTTP/1.1 request written by hand, chunked framing and SSE lines
parsed by hand.  No error handling, no retries, no header checks beyond what is needed: this is
the ceiling a client library can approach, not something to ship.  Standard library only.
"""
import http.client
import json
import time

REQUEST_BODY = json.dumps(
    {"model": "bench-model", "messages": [{"role": "user", "content": "Say hello."}]}, separators=(",", ":")
).encode()
STREAM_BODY = json.dumps(
    {"model": "bench-model", "messages": [{"role": "user", "content": "Say hello."}], "stream": True},
    separators=(",", ":"),
).encode()
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}


def one_request(host, port, path):
    """One non-streaming request on a new connection; returns the answer's text."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("POST", path, REQUEST_BODY, HEADERS)
    answer = json.loads(conn.getresponse().read())
    conn.close()
    return answer["choices"][0]["message"]["content"]


def connect(host, port):
    """An HTTPConnection with TCP_NODELAY, as clients set it: http.client sends the headers and the
    body in two writes, and without it Nagle's algorithm holds the body back for an ACK."""
    import socket

    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def sequential(host, port, path, seconds):
    """Non-streaming requests back to back on one connection for ``seconds``; returns (count, elapsed)."""
    conn = connect(host, port)
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        conn.request("POST", path, REQUEST_BODY, HEADERS)
        answer = json.loads(conn.getresponse().read())
        if not answer["choices"][0]["message"]["content"]:
            raise RuntimeError("empty answer")
        count += 1
        now = time.perf_counter()
        if now >= deadline:
            break
    conn.close()
    return count, now - start


def _sse_lines(block, parts):
    """Parse the complete SSE lines of ``block`` (bytes ending at a line end); append content
    deltas to ``parts``; True at [DONE].  One decode per block (an LF never occurs inside a UTF-8
    sequence), then ``json.loads`` of a ``str`` per ``data:`` line: loads of bytes would detect
    the encoding and decode again for every line."""
    loads = json.loads
    for line in block.decode("utf-8").split("\n"):
        if line[:6] == "data: ":
            payload = line[6:]
            if payload == "[DONE]":
                return True
            piece = loads(payload)["choices"][0]["delta"].get("content")
            if piece:
                parts.append(piece)
    return False


def stream_sync(conn, path):
    """One streaming request on ``conn`` (an HTTPConnection); returns the answer's text."""
    conn.request("POST", path, STREAM_BODY, HEADERS)
    response = conn.getresponse()
    parts = []
    pending = b""
    read1 = response.read1
    while True:
        block = read1(65536)
        if not block:
            break
        block = pending + block
        end = block.rfind(b"\n") + 1
        pending = block[end:]
        if _sse_lines(block[:end], parts):
            break
    response.read()  # the final empty chunk, so the connection can be reused
    return "".join(parts)


async def _read_response_head(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lower = head.lower()
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError("unexpected answer: %r" % head[:100])
    length = None
    at = lower.find(b"\r\ncontent-length:")
    if at >= 0:
        length = int(lower[at + 17 : lower.find(b"\r\n", at + 2)])
    return length, b"transfer-encoding: chunked" in lower


def _raw_request(host, port, path, body):
    return (
        b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer sk-bench\r\nContent-Length: %d\r\n\r\n%s"
        % (path.encode(), host.encode(), port, len(body), body)
    )


async def async_stream(host, port, path):
    """One streaming request over asyncio streams on a new socket; returns the answer's text."""
    import asyncio

    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    writer.write(_raw_request(host, port, path, STREAM_BODY))
    _, chunked = await _read_response_head(reader)
    if not chunked:
        raise RuntimeError("expected a chunked stream")
    parts = []
    pending = b""
    while True:
        size = int((await reader.readline()).strip(), 16)
        if size == 0:
            await reader.readline()
            break
        block = await reader.readexactly(size + 2)
        block = pending + block[:-2]
        end = block.rfind(b"\n") + 1
        pending = block[end:]
        _sse_lines(block[:end], parts)  # at [DONE] keep reading: the terminating chunk follows
    writer.close()
    return "".join(parts)


async def async_request(host, port, path, connection=None):
    """One non-streaming request over asyncio streams; returns (text, connection) to reuse."""
    import asyncio

    if connection is None:
        connection = await asyncio.open_connection(host, port)
    reader, writer = connection
    writer.write(_raw_request(host, port, path, REQUEST_BODY))
    length, _ = await _read_response_head(reader)
    answer = json.loads(await reader.readexactly(length))
    return answer["choices"][0]["message"]["content"], connection


async def async_concurrent(host, port, path, count, connections):
    """``count`` concurrent requests, each on its own connection (kept in ``connections`` for reuse)."""
    import asyncio

    while len(connections) < count:
        connections.append(None)

    async def one(i):
        text, connections[i] = await async_request(host, port, path, connections[i])
        return text

    return await asyncio.gather(*(one(i) for i in range(count)))


def server_capacity(host, port, path, seconds):
    """Requests per second the bench server answers to a raw-socket client that parses nothing
    but the Content-Length (no json.loads): the ceiling set by the server, for comparison."""
    import socket

    sock = socket.create_connection((host, port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    request = _raw_request(host, port, path, REQUEST_BODY)
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    buf = b""
    while True:
        sock.sendall(request)
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                at = buf.find(b"Content-Length: ", 0, end)
                total = end + 4 + int(buf[at + 16 : buf.find(b"\r\n", at)])
                if len(buf) >= total:
                    buf = buf[total:]
                    break
            buf += sock.recv(65536)
        count += 1
        now = time.perf_counter()
        if now >= deadline:
            break
    sock.close()
    return count, now - start
