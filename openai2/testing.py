"""The fake OpenAI-compatible servers for tests: ``FakeServer`` (loopback sockets) and
``MemoryTransport`` (in memory, no sockets), both answering from ``Reply`` objects.

Public and standard-library only, so users test their own code with them exactly as openai2's
own suite does.  What an answer looks like on the wire is decided in ``openai2.fakewire``
(sans-IO); this module acts it out.

``FakeServer`` is a plain socket server (one daemon thread per connection) with its own small
HTTP/1.1 parser, which gives full control over what goes on the wire: keep-alive, chunked
streams, LF / CRLF / CR line endings, writes of N bytes, stalls, disconnects, resets (RST),
keep-alive comments, status codes with headers, raw bodies and redirects.  Every request is
recorded (headers and body) for assertions.  It is what tests of the real transport need.

``MemoryTransport`` is an ``HTTPTransport`` that answers the same replies in memory (httpx's
``MockTransport`` idea): give it to ``OpenAI(transport=...)`` or ``Chat(transport=...)`` and the
client, conversation and CLI layers run in microseconds, with stalls and disconnects simulated
at once instead of waited for.

The public names of ``openai2.fakewire`` (``Reply``, ``RecordedRequest``, ``chat_completion``,
``chat_chunk``, ``openai_error_body``) and ``openai2.demo.DemoBrain`` are re-exported here:
``from openai2.testing import X`` keeps working.

Nothing heavy is imported at module level (json, socket, ssl are imported where used), and
``openai2/__init__`` does not import this module.
"""

from __future__ import annotations

import collections
import itertools
import os
import threading
import time

from .common import TYPE_CHECKING
from .demo import DemoBrain
from .fakewire import (
    RecordedRequest,
    Reply,
    WirePlan,
    chat_chunk,
    chat_completion,
    choose_reply,
    fold_headers,
    openai_error_body,
    parse_request,
    plan_handler_error,
    plan_json,
    plan_refusal,
    plan_reply,
)

if TYPE_CHECKING:
    import ssl
    from typing import Any, Callable, Dict, Sequence, Union

    _FakeHandler = Callable[["RecordedRequest"], Union["Reply", str, Dict[str, Any]]]
    _FakeReplyLike = Union["Reply", str, Dict[str, Any]]

__all__ = [
    "DemoBrain",
    "FakeServer",
    "MemoryTransport",
    "RecordedRequest",
    "Reply",
    "chat_chunk",
    "chat_completion",
    "openai_error_body",
]


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------


class _FakeAbort(Exception):
    """Internal: the connection is gone (closed by the client, reset, or stop())."""


class _FakeConn:
    __slots__ = ("sock", "cid", "addr", "buf", "idle", "closed", "pending", "held")

    def __init__(self, sock: Any, cid: int, addr: Any) -> None:
        self.sock = sock
        self.cid = cid
        self.addr = addr
        self.buf = b""
        self.idle = True
        self.closed = False
        self.pending = False  # a request is being answered (counted in in_flight)
        self.held: list[bytes] = []  # the latest write, held back until the next one


class FakeServer:
    """A loopback OpenAI-compatible HTTP/1.1 server running in daemon threads.

    ``POST …/chat/completions`` is answered from ``replies`` (consumed in order; a ``str`` means
    ``Reply(content=str)``), then by ``handler`` (default: ``DemoBrain()``).  Every request on
    any path is recorded in ``requests``; unknown paths get a 404 with an OpenAI-style body.

    :param replies: scripted replies, used first, in order
    :param handler: ``callable(RecordedRequest) -> Reply | str | dict`` for the rest
    :param host: the address to listen on (loopback by default)
    :param port: the port (0: any free port)
    :param ssl_context: a server-side ``ssl.SSLContext`` to serve HTTPS
    :param keepalive_timeout: close a connection idle this long (None: keep it until stop())

    Use it as a context manager (``with FakeServer() as srv:``) or call ``start()``/``stop()``.
    """

    def __init__(
        self,
        replies: Sequence[_FakeReplyLike] | None = None,
        *,
        handler: _FakeHandler | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_timeout: float | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.keepalive_timeout = keepalive_timeout
        self.handler: _FakeHandler = handler if handler is not None else DemoBrain()
        #: handler exceptions (each also answered with a 500)
        self.errors: list[BaseException] = []
        #: scripted replies still to send, in order (a deque: ``append``/``extend`` it at any time)
        self.replies: collections.deque[_FakeReplyLike] = collections.deque(replies or ())
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._requests: list[RecordedRequest] = []
        self._conns: dict[int, _FakeConn] = {}
        self._threads: set[threading.Thread] = set()
        self._gates: set[Any] = set()
        self._connection_count = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._cid = itertools.count(1)
        self._stop_event = threading.Event()
        self._listener: Any = None
        self._accept_thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> FakeServer:
        """Bind, listen and start accepting (no-op when already running).

        :returns: the server itself
        :raises OSError: when the address cannot be bound
        """
        import socket

        if self._accept_thread is not None:
            return self
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            if os.name != "nt":
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))
            listener.listen(512)
        except BaseException:
            listener.close()
            raise
        self.port = listener.getsockname()[1]
        listener.settimeout(0.5)  # a safety net; stop() wakes accept() by connecting
        self._listener = listener
        self._stop_event.clear()
        t = threading.Thread(
            target=self._accept_loop, args=(listener,), name="openai2-fake-accept-%d" % self.port, daemon=True
        )
        self._accept_thread = t
        t.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop accepting, close every live connection and wait (briefly) for the threads.

        Idempotent; stalls, delays and gates waiting in handlers are cut short.  The server can
        be started again afterwards, on the same port.

        :param timeout: the longest wait for the threads to finish, in seconds
        """
        import socket

        accept_thread = self._accept_thread
        if accept_thread is None:
            return
        self._stop_event.set()
        listener = self._listener
        try:  # wake accept()
            wake = socket.create_connection((self._connect_host(), self.port), timeout=0.5)
            wake.close()
        except OSError:
            pass
        with self._lock:
            conns = list(self._conns.values())
            gates = list(self._gates)
        for conn in conns:
            _fake_shutdown(conn.sock)
        for gate in gates:
            if isinstance(gate, threading.Barrier):
                gate.abort()
        deadline = time.monotonic() + timeout
        accept_thread.join(max(0.0, deadline - time.monotonic()))
        listener.close()
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._accept_thread = None
        self._listener = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self._accept_thread is not None else "stopped"
        return "<FakeServer %s %s requests=%d>" % (self.url, state, len(self._requests))

    # -- addresses ----------------------------------------------------------------------------

    def _connect_host(self) -> str:
        if self.host in ("", "0.0.0.0"):
            return "127.0.0.1"
        if self.host == "::":
            return "::1"
        return self.host

    @property
    def url(self) -> str:
        """The origin, e.g. ``http://127.0.0.1:PORT`` (``https://localhost:PORT`` with TLS)."""
        if self.ssl_context is not None:
            return "https://localhost:%d" % self.port
        host = self._connect_host()
        if ":" in host:
            host = "[%s]" % host
        return "http://%s:%d" % (host, self.port)

    @property
    def base_url(self) -> str:
        """The API base URL to give a client: ``url + "/v1"``."""
        return self.url + "/v1"

    # -- the record ----------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the record of every request received, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def last_request(self) -> RecordedRequest | None:
        """The latest request, or None."""
        with self._lock:
            return self._requests[-1] if self._requests else None

    @property
    def connection_count(self) -> int:
        """How many connections were accepted (since start or reset())."""
        return self._connection_count

    @property
    def open_connections(self) -> int:
        """How many connections are open right now."""
        with self._lock:
            return len(self._conns)

    @property
    def in_flight(self) -> int:
        """How many requests are being processed right now."""
        return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """The most requests ever processed at the same moment (since start or reset())."""
        return self._max_in_flight

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> bool:
        """Wait until at least ``n`` requests were recorded.

        :returns: True when they were, False on timeout
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def reset(self) -> None:
        """Forget the record: requests, errors, connection count and max in flight.

        Scripted replies still queued are kept (see ``add_replies``).
        """
        with self._lock:
            self._requests = []
            self.errors = []
            self._connection_count = 0
            self._max_in_flight = self._in_flight

    def add_replies(self, *replies: _FakeReplyLike) -> None:
        """Queue more scripted replies (used before the handler)."""
        with self._lock:
            self.replies.extend(replies)

    def close_idle_connections(self) -> int:
        """Close, without notice, every connection that waits for its next request.

        This is what a server's idle timeout does; a client's keep-alive pool must notice and
        retry on a fresh connection.

        :returns: how many connections were closed
        """
        with self._lock:
            idle = [c for c in self._conns.values() if c.idle and not c.buf]
        for conn in idle:
            _fake_shutdown(conn.sock)
        return len(idle)

    # -- threads ------------------------------------------------------------------------------

    def _accept_loop(self, listener: Any) -> None:
        import socket

        while not self._stop_event.is_set():
            try:
                sock, addr = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            if self._stop_event.is_set():
                sock.close()
                break
            with self._lock:
                self._connection_count += 1
                cid = next(self._cid)
            t = threading.Thread(
                target=self._serve_connection, args=(sock, addr, cid), name="openai2-fake-conn-%d" % cid, daemon=True
            )
            with self._lock:
                self._threads.add(t)
            t.start()

    def _serve_connection(self, sock: Any, addr: Any, cid: int) -> None:
        import socket

        conn = _FakeConn(sock, cid, addr)
        with self._lock:
            self._conns[cid] = conn
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._stop_event.is_set():
                return
            if self.ssl_context is not None:
                sock.settimeout(10.0)
                conn.sock = self.ssl_context.wrap_socket(sock, server_side=True)
            while not self._stop_event.is_set():
                conn.idle = True
                conn.sock.settimeout(self.keepalive_timeout)
                request = self._read_request(conn)
                if request is None:
                    break
                conn.idle = False
                if not self._answer(conn, request):
                    break
        except (_FakeAbort, OSError, ValueError):
            pass
        finally:
            conn.closed = True
            try:
                conn.sock.close()
            except OSError:
                pass
            with self._lock:
                self._conns.pop(cid, None)
                self._threads.discard(threading.current_thread())

    # -- reading --------------------------------------------------------------------------------

    def _recv(self, conn: _FakeConn) -> bytes:
        data = conn.sock.recv(65536)
        if not data:
            raise _FakeAbort()
        return data  # type: ignore[no-any-return]

    def _read_exact(self, conn: _FakeConn, n: int) -> bytes:
        if len(conn.buf) < n:  # gather the pieces, then join once: linear in the body size
            parts = [conn.buf]
            have = len(conn.buf)
            while have < n:
                piece = self._recv(conn)
                parts.append(piece)
                have += len(piece)
            conn.buf = b"".join(parts)
        data, conn.buf = conn.buf[:n], conn.buf[n:]
        return data

    def _read_line(self, conn: _FakeConn) -> bytes:
        while b"\n" not in conn.buf:
            if len(conn.buf) > 65536:
                raise _FakeAbort()
            conn.buf += self._recv(conn)
        line, conn.buf = conn.buf.split(b"\n", 1)
        return line.rstrip(b"\r")

    def _read_request(self, conn: _FakeConn) -> RecordedRequest | None:
        import socket

        try:
            while not conn.buf:
                data = conn.sock.recv(65536)
                if not data:
                    return None
                conn.buf += data
        except (socket.timeout, OSError):
            return None
        conn.idle = False
        conn.sock.settimeout(30.0)
        line = self._read_line(conn)
        while not line:  # tolerate stray CRLF between requests (RFC 9112 §2.2)
            line = self._read_line(conn)
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            self._send_simple(conn, plan_json(400, openai_error_body("Malformed request line"), close=True))
            return None
        method, target, version = parts
        raw_headers: list[tuple[str, str]] = []
        while True:
            hline = self._read_line(conn)
            if not hline:
                break
            name, sep, value = hline.decode("latin-1").partition(":")
            if sep:
                raw_headers.append((name.strip(), value.strip()))
            if len(raw_headers) > 200:
                raise _FakeAbort()
        headers = fold_headers(raw_headers)
        if headers.get("expect", "").lower() == "100-continue":
            conn.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = b""
            while True:
                size = int(self._read_line(conn).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self._read_line(conn):  # trailers
                        pass
                    break
                body += self._read_exact(conn, size)
                self._read_line(conn)
        elif "content-length" in headers:
            length = int(headers["content-length"])
            if length < 0 or length > 256 * 1024 * 1024:
                raise _FakeAbort()
            body = self._read_exact(conn, length)
        else:
            body = b""
        with self._cond:
            request = parse_request(
                method,
                target,
                raw_headers,
                body,
                connection_id=conn.cid,
                client_address=conn.addr,
                http_version=version,
                index=len(self._requests),
            )
            self._requests.append(request)
            self._cond.notify_all()
        return request

    # -- answering ------------------------------------------------------------------------------

    def _answer(self, conn: _FakeConn, request: RecordedRequest) -> bool:
        """Answer one request; returns whether the connection stays open."""
        with self._lock:
            self._in_flight += 1
            if self._in_flight > self._max_in_flight:
                self._max_in_flight = self._in_flight
        conn.pending = True
        try:
            refusal = plan_refusal(request)
            if refusal is not None:
                return self._send_simple(conn, refusal)
            try:
                reply = choose_reply(self.replies, self.handler, request)
            except Exception as exc:  # a handler bug: tell the test, answer 500
                with self._lock:
                    self.errors.append(exc)
                return self._send_simple(conn, plan_handler_error(request, exc))
            return self._send_reply(conn, request, reply)
        finally:
            self._finish_request(conn, False)

    def _finish_request(self, conn: _FakeConn, keep: bool) -> None:
        """Book the end of a request.  Called just before its last byte is written, so that a
        client which has read the whole response already sees ``in_flight`` and the idle state
        updated."""
        if conn.pending:
            conn.pending = False
            conn.idle = keep
            with self._lock:
                self._in_flight -= 1

    def _wait_gate(self, gate: Any, timeout: float) -> None:
        with self._lock:
            self._gates.add(gate)
        try:
            _fake_wait_gate(gate, timeout, self._stop_event)
        finally:
            with self._lock:
                self._gates.discard(gate)

    def _send_simple(self, conn: _FakeConn, plan: WirePlan) -> bool:
        self._finish_request(conn, not plan.close)
        conn.sock.sendall(plan.head_bytes() + plan.body())
        return not plan.close

    def _send_reply(self, conn: _FakeConn, request: RecordedRequest, reply: Reply) -> bool:
        stop = self._stop_event
        if reply.gate is not None:
            self._wait_gate(reply.gate, reply.gate_timeout)
        if reply.delay and stop.wait(reply.delay):
            return False
        if stop.is_set():
            return False
        if reply.reset and reply.disconnect_after is None:
            _fake_reset(conn.sock)
            return False
        plan = plan_reply(reply, request)
        conn.held = [plan.head_bytes()]
        return self._run_plan(conn, plan)

    def _run_plan(self, conn: _FakeConn, plan: WirePlan) -> bool:
        """Send the plan's steps (see ``WirePlan.steps``); returns whether the connection stays open."""
        keep = not plan.close
        pause = plan.reply.write_pause if plan.reply is not None and plan.reply.write_size else 0.0
        for kind, value in plan.steps():
            if kind == "data":
                if conn.held and pause > 0:
                    self._flush(conn)
                    time.sleep(pause)
                self._flush(conn)
                conn.held.append(b"%x\r\n" % len(value) + value + b"\r\n" if plan.chunked else value)
            elif kind == "stall":
                self._flush(conn)
                if self._stop_event.wait(value):
                    return False
            elif kind == "disconnect":
                self._flush(conn)
                if value:
                    _fake_reset(conn.sock)
                else:
                    _fake_shutdown(conn.sock)
                return False
        if plan.chunked:
            self._flush(conn)
            conn.held.append(b"0\r\n\r\n")
        self._finish_request(conn, keep)
        self._flush(conn)
        return keep

    def _flush(self, conn: _FakeConn) -> None:
        while conn.held:
            conn.sock.sendall(conn.held.pop(0))


def _fake_wait_gate(gate: Any, timeout: float, stop: threading.Event) -> None:
    """Wait on a reply's ``gate`` (an Event or a Barrier), at most ``timeout``, cut short by ``stop``."""
    if isinstance(gate, threading.Event):
        deadline = time.monotonic() + timeout
        while not gate.is_set() and not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            gate.wait(min(0.05, left))
    else:
        try:
            gate.wait(timeout)
        except threading.BrokenBarrierError:
            pass


def _fake_shutdown(sock: Any) -> None:
    """Shut a socket down from any thread (wakes a blocked recv); TLS layer bypassed on purpose."""
    import socket

    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except (OSError, ValueError):
        pass


def _fake_reset(sock: Any) -> None:
    """Close with SO_LINGER 0, so the peer receives a TCP RST instead of a FIN."""
    import socket
    import struct

    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("HH" if os.name == "nt" else "ii", 1, 0))
    except (OSError, ValueError):
        pass
    try:
        socket.socket.close(sock)
    except (OSError, ValueError):
        pass
