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

Both take ``token_counter=`` (``text -> int``, e.g. ``lambda t: len(enc.encode(t))`` with a real
tokenizer): ``usage.prompt_tokens`` is then what a server that counts the prompt its own way
reports, the request rendered as the ChatML chat template (Qwen, DeepSeek-style servers, vLLM's
default for many models) and counted with it, so that openai2's token calibration
(``openai2.tokens.Calibration``, which learns the ratio of a server's counts to openai2's own
estimate) can be tested and benchmarked against a count that differs from that estimate.

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

from .common import TYPE_CHECKING, USER_AGENT
from .demo import DemoBrain
from .errors import (
    APIConnectionError,
    APITimeoutError,
    IncompleteStreamError,
    RequestCancelledError,
    ResponseTooLargeError,
    make_status_error,
)
from .fakewire import (
    RecordedRequest,
    Reply,
    WirePlan,
    _fake_check_counter,
    _FakeCounterError,
    chat_chunk,  # noqa: F401 - re-exported: openai2.testing is its public path
    chat_completion,  # noqa: F401 - re-exported
    choose_reply,
    fold_headers,
    openai_error_body,
    parse_request,
    plan_handler_error,
    plan_json,
    plan_refusal,
    plan_reply,
)
from .transport import CancelScope, HTTPResponse, HTTPTransport, Timeout, coerce_timeout

if TYPE_CHECKING:
    import ssl
    from typing import Any, Callable, Dict, Iterator, Sequence, Union

    _FakeHandler = Callable[["RecordedRequest"], Union["Reply", str, Dict[str, Any]]]
    _FakeReplyLike = Union["Reply", str, Dict[str, Any]]
    _FakeCounter = Callable[[str], int]


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
    :param token_counter: ``text -> int`` (e.g. ``lambda t: len(enc.encode(t))``): the ``usage``
        of ``Reply(usage="auto")`` is then counted as a server that renders the prompt with the
        ChatML chat template counts it (None: about four characters a token).  Each message is
        ``<|im_start|>{role}\\n{content}<|im_end|>\\n``, the two markers one token each, ``"{role}\\n"``
        (``"{role} name={name}\\n"`` with a ``name``), the content and the ``"\\n"`` each counted
        with the counter; content parts: the text parts joined with ``"\\n"``, 85 tokens per image
        part (OpenAI's low-detail price); an assistant's ``tool_calls`` after its content, one
        ``<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>`` each; ``tools`` as their
        JSON, one per line, in a system block of their own before the messages
        (``<|im_start|>system\\n# Tools\\n...<|im_end|>\\n``); then the priming
        ``<|im_start|>assistant\\n``.  ``completion_tokens``: the counts of the content, the
        reasoning and each tool call's name and arguments, plus one (the end token).  The same in
        a stream's usage chunk.  An explicit ``Reply(usage={...})`` is sent as is.  The counter
        is called from the connection threads, several at once: it must be thread-safe (a pure
        function is).  A counter that raises or returns anything but a non-negative int (bool
        excluded) gets the request a 500, as a handler that raised, and the error (naming
        ``token_counter``) lands in ``errors``.
    :raises TypeError: ``token_counter`` is neither None nor callable

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
        token_counter: _FakeCounter | None = None,
    ) -> None:
        #: ``text -> int`` counting the usage of ``Reply(usage="auto")``, or None (see above)
        self.token_counter = _fake_check_counter(token_counter)
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.keepalive_timeout = keepalive_timeout
        self.handler: _FakeHandler = handler if handler is not None else DemoBrain()
        #: handler (and ``token_counter``) exceptions (each also answered with a 500)
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
        try:
            plan = plan_reply(reply, request, token_counter=self.token_counter)
        except _FakeCounterError as exc:  # a counter bug: tell the test, answer 500
            with self._lock:
                self.errors.append(exc)
            return self._send_simple(conn, plan_handler_error(request, exc))
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
    """Wait on a reply's ``gate`` (see ``_fake_gate_poller``), at most ``timeout``, cut short by
    ``stop`` (a Barrier is waited on whole: ``FakeServer.stop()`` aborts it)."""
    if isinstance(gate, threading.Barrier):
        try:
            gate.wait(timeout)
        except threading.BrokenBarrierError:
            pass
        return
    is_open, pause = _fake_gate_poller(gate)
    deadline = time.monotonic() + timeout
    while not stop.is_set() and not is_open():
        left = deadline - time.monotonic()
        if left <= 0:
            break
        pause(min(_FAKE_GATE_POLL, left))


def _fake_gate_poller(
    gate: Any, cancel: CancelScope | None = None
) -> tuple[Callable[[], bool], Callable[[float], Any]]:
    """``(is_open, pause)`` for a gate that is no Barrier, to wait on it a slice at a time.

    An Event is looked at with ``is_set``; the pause waits on it, or on ``cancel`` when given
    (which then wakes at once, the gate being looked at after each slice).  Anything else is
    polled: the pause is ``gate.wait(seconds)``, and the gate is open once that returned a
    true value (as ``Event.wait`` does).
    """
    if isinstance(gate, threading.Event):
        return gate.is_set, (gate.wait if cancel is None else cancel.wait)
    opened: list[bool] = []

    def pause(seconds: float) -> None:
        if gate.wait(seconds):
            opened.append(True)

    return (lambda: bool(opened)), pause


#: how long one slice of a gate's wait lasts (a stop or a cancel is noticed after one at most)
_FAKE_GATE_POLL = 0.005


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


# ---------------------------------------------------------------------------------------------
# The in-memory transport
# ---------------------------------------------------------------------------------------------

#: The only request headers that follow a redirect to another origin (as HTTPTransport does).
_MEM_CROSS_ORIGIN_HEADERS = frozenset(
    ("content-type", "content-length", "accept", "accept-encoding", "accept-language", "user-agent")
)
_MEM_STALL_MODES = ("timeout", "block")


class MemoryTransport(HTTPTransport):
    """An :class:`~openai2.transport.HTTPTransport` that answers in memory, from ``Reply`` objects.

    The same replies as :class:`FakeServer` (the same ``openai2.fakewire`` plans: content,
    chunks, reasoning, tool calls, status and error bodies, headers, usage, line endings,
    keep-alive comments, disconnects, resets, redirects), without sockets or threads, so the
    tests of code above the transport run in microseconds::

        from openai2 import OpenAI
        from openai2.testing import MemoryTransport, Reply

        transport = MemoryTransport([Reply("Hello!"), Reply(status=429, content="slow down")])
        client = OpenAI(api_key="sk-test", base_url="https://api.test/v1", transport=transport, max_retries=0)
        answer = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content == "Hello!"
        assert transport.last_request.json["messages"][0]["content"] == "hi"

    Any ``http://`` or ``https://`` URL answers (``base_url`` needs no server); paths other than
    ``…/chat/completions`` get the same 404 as from ``FakeServer``.

    Time is simulated, never waited for.  With ``stalls="timeout"`` (the default) a
    ``Reply(delay=…)`` or ``stall_after``/``stall_seconds`` at least as long as the read timeout
    (``Timeout.read``, or what ``limit_read_timeout`` left) raises the ``APITimeoutError`` the
    real transport raises, at once; a shorter one passes at once.  With ``stalls="block"`` a
    stall really blocks, up to its length or the read timeout, and ends as soon as the response is
    closed (``close()`` from another thread: the read ends quietly) or the request's
    ``CancelScope`` is cancelled (``RequestCancelledError``) — for tests of stopping a stuck stream.

    What differs from the sockets: no connections (``RecordedRequest.connection_id`` is 0, no
    keep-alive, no TLS, no proxies, ``close_connection``/``chunked`` change only how the body's
    end is judged), ``write_size`` splits the pieces ``iter_bytes`` yields but ``write_pause`` is
    not waited, and ``gate`` is waited on in the calling thread (really, up to ``gate_timeout``),
    cut short at once by the request's ``CancelScope`` (``RequestCancelledError``) and ended by
    the read timeout (``APITimeoutError``), as over sockets.  ``close()`` closes nothing: like
    ``HTTPTransport.close()``, which closes only idle connections, it stops no request in flight.

    :param replies: scripted replies, used first, in order (a ``str`` means ``Reply(content=str)``)
    :param handler: ``callable(RecordedRequest) -> Reply | str | dict`` for the rest (default
        :class:`~openai2.demo.DemoBrain`)
    :param stalls: ``"timeout"`` or ``"block"`` (see above)
    :param token_counter: ``text -> int``: the ``usage`` of ``Reply(usage="auto")`` counted as a
        server using the ChatML chat template counts it, exactly as :class:`FakeServer`'s
        ``token_counter`` (None: about four characters a token).  It is called on the thread that
        sends the request, so it must be thread-safe when requests are sent from several; one
        that raises or returns anything but a non-negative int (bool excluded) gets the request a
        500 and lands in ``errors``, as a handler that raised.
    :raises TypeError: ``token_counter`` is neither None nor callable
    """

    def __init__(
        self,
        replies: Sequence[_FakeReplyLike] | None = None,
        *,
        handler: _FakeHandler | None = None,
        stalls: str = "timeout",
        token_counter: _FakeCounter | None = None,
    ) -> None:
        # HTTPTransport.__init__ is deliberately not called: no proxies, pool nor TLS to set up.
        if stalls not in _MEM_STALL_MODES:
            raise ValueError("stalls must be 'timeout' or 'block', not %r" % (stalls,))
        self.verify = True
        self.ca_file = None
        self.stalls = stalls
        #: ``text -> int`` counting the usage of ``Reply(usage="auto")``, or None (see above)
        self.token_counter = _fake_check_counter(token_counter)
        self.handler: _FakeHandler = handler if handler is not None else DemoBrain()
        #: handler (and ``token_counter``) exceptions (each also answered with a 500)
        self.errors: list[BaseException] = []
        #: scripted replies still to send, in order (a deque: ``append``/``extend`` it at any time)
        self.replies: collections.deque[_FakeReplyLike] = collections.deque(replies or ())
        self._mem_lock = threading.Lock()
        self._mem_cond = threading.Condition(self._mem_lock)
        self._mem_requests: list[RecordedRequest] = []
        self._mem_in_flight = 0
        self._mem_max_in_flight = 0

    def __repr__(self) -> str:
        return "<MemoryTransport requests=%d replies queued=%d>" % (len(self._mem_requests), len(self.replies))

    def close(self) -> None:
        """Nothing to close (no connections); the transport stays usable."""

    # -- the record (as FakeServer's) -----------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the record of every request received, in arrival order."""
        with self._mem_lock:
            return list(self._mem_requests)

    @property
    def last_request(self) -> RecordedRequest | None:
        """The latest request, or None."""
        with self._mem_lock:
            return self._mem_requests[-1] if self._mem_requests else None

    @property
    def in_flight(self) -> int:
        """How many requests are being answered right now (sent, body not yet read or closed)."""
        return self._mem_in_flight

    @property
    def max_in_flight(self) -> int:
        """The most requests ever in flight at the same moment (since creation or reset())."""
        return self._mem_max_in_flight

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> bool:
        """Wait until at least ``n`` requests were recorded (for requests sent from other threads).

        :returns: True when they were, False on timeout
        """
        deadline = time.monotonic() + timeout
        with self._mem_cond:
            while len(self._mem_requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._mem_cond.wait(left)
            return True

    def reset(self) -> None:
        """Forget the record: requests, errors and max in flight (queued replies are kept)."""
        with self._mem_lock:
            self._mem_requests = []
            self.errors = []
            self._mem_max_in_flight = self._mem_in_flight

    def add_replies(self, *replies: _FakeReplyLike) -> None:
        """Queue more scripted replies (used before the handler)."""
        with self._mem_lock:
            self.replies.extend(replies)

    # -- one exchange -------------------------------------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        body: bytes | None,
        timeout: Timeout,
        cancel: CancelScope | None = None,
        max_redirects: int = 5,
    ) -> HTTPResponse:
        """Answer one request in memory (following redirects), as :meth:`HTTPTransport.request`.

        :returns: a response with the interface of :class:`~openai2.transport.HTTPResponse`
        :raises APIConnectionError: (APITimeoutError, RequestCancelledError) as the real transport
        """
        if type(timeout) is not Timeout:
            timeout = coerce_timeout(timeout)
        hops = 0
        while True:
            if cancel is not None and cancel.cancelled:
                raise RequestCancelledError()
            where, target = _mem_split_url(url)
            raw = [("Host", where), ("Accept-Encoding", "identity")]
            raw.extend((k, v) for k, v in headers.items() if k.lower() not in ("host", "accept-encoding"))
            if not any(k.lower() == "user-agent" for k, _ in raw):
                raw.append(("User-Agent", USER_AGENT))
            if body is not None:
                raw.append(("Content-Length", str(len(body))))
            with self._mem_cond:
                record = parse_request(method, target, raw, body or b"", index=len(self._mem_requests))
                self._mem_requests.append(record)
                self._mem_in_flight += 1
                self._mem_max_in_flight = max(self._mem_max_in_flight, self._mem_in_flight)
                self._mem_cond.notify_all()
            response = MemoryResponse(self, url, where, cancel, timeout)
            try:
                plan = self._mem_plan(record, response)
            except BaseException:
                response.close()
                raise
            response._mem_start(plan)
            location = response.headers.get("location")
            if plan.status in (301, 302, 307, 308) and location:
                from urllib.parse import urljoin

                response.close()
                new_url = urljoin(url, location.strip())
                if hops >= max_redirects:
                    too_many = make_status_error(plan.status, response.headers, b"")
                    too_many.hint = "Too many redirects: gave up after %d (the next was to %s)." % (hops, new_url)
                    raise too_many
                if _mem_split_url(new_url)[0] != where or new_url.partition(":")[0] != url.partition(":")[0]:
                    headers = {k: v for k, v in headers.items() if k.lower() in _MEM_CROSS_ORIGIN_HEADERS}
                url = new_url
                hops += 1
                continue
            if plan.status == 303:
                raw_body = response.read()
                err303 = make_status_error(303, response.headers, raw_body)
                err303.hint = (
                    "The server answered 303 See Other (Location: %s), which asks for a GET: "
                    "openai2 does not turn a %s into a GET. Check the base URL." % (location or "?", method)
                )
                raise err303
            return response  # type: ignore[return-value]

    def _mem_plan(self, record: RecordedRequest, response: MemoryResponse) -> WirePlan:
        """The plan answering ``record``, after the reply's gate, delay or reset (before the head)."""
        refusal = plan_refusal(record)
        if refusal is not None:
            return refusal
        try:
            reply = choose_reply(self.replies, self.handler, record)
        except Exception as exc:  # a handler bug: tell the test, answer 500
            with self._mem_lock:
                self.errors.append(exc)
            return plan_handler_error(record, exc)
        if reply.gate is not None:
            response._mem_wait_gate(reply.gate, reply.gate_timeout)
        if reply.delay:
            response._mem_wait(reply.delay, "head")
        if reply.reset and reply.disconnect_after is None:
            cause = ConnectionResetError(104, "Connection reset by peer")
            raise APIConnectionError("The connection to %s was reset: %s" % (response._mem_where, cause), cause=cause)
        try:
            return plan_reply(reply, record, token_counter=self.token_counter)
        except _FakeCounterError as exc:  # a counter bug: tell the test, answer 500
            with self._mem_lock:
                self.errors.append(exc)
            return plan_handler_error(record, exc)

    def _mem_done(self) -> None:
        with self._mem_lock:
            self._mem_in_flight -= 1


class MemoryResponse:
    """The answer of a :class:`MemoryTransport`, with the interface of ``HTTPResponse``:
    ``status``, ``reason``, ``headers`` (lower-case names), ``url``, ``closed``, ``read(limit)``,
    ``iter_bytes()``, ``limit_read_timeout(seconds)``, ``close()`` (from any thread)."""

    def __init__(
        self, transport: MemoryTransport, url: str, where: str, cancel: CancelScope | None, timeout: Timeout
    ) -> None:
        self.status = 0
        self.reason = ""
        self.headers: dict[str, str] = {}
        self.url = url
        self._mem_transport = transport
        self._mem_where = where
        self._mem_cancel = cancel
        self._mem_read_timeout = timeout.read
        self._mem_closed = threading.Event()
        self._mem_finished = False
        self._mem_body: bytes | None = None
        self._mem_iter: Any = None
        self._mem_length: int | None = None
        self._mem_chunked = False
        self._mem_lock = threading.Lock()

    def _mem_start(self, plan: WirePlan) -> None:
        from http import HTTPStatus

        self.status = plan.status
        try:
            self.reason = HTTPStatus(plan.status).phrase
        except ValueError:
            self.reason = "Unknown"
        self.headers = fold_headers(plan.headers)
        self._mem_chunked = plan.chunked
        length = self.headers.get("content-length", "")
        if not plan.chunked and length.isdigit():
            self._mem_length = int(length)
        self._mem_iter = plan.steps()

    def __repr__(self) -> str:
        return "<MemoryResponse %d %s>" % (self.status, self.url)

    def __enter__(self) -> MemoryResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (from any thread)."""
        return self._mem_closed.is_set()

    def close(self) -> None:
        """Stop: the body is not read any further.  Safe from any thread; a read blocked in a
        stall (``stalls="block"``) ends at once, quietly."""
        self._mem_closed.set()
        self._mem_finish()

    def limit_read_timeout(self, seconds: float) -> None:
        """Allow at most ``seconds`` of (simulated) silence from now on."""
        self._mem_read_timeout = min(self._mem_read_timeout, seconds)

    def _mem_finish(self) -> None:
        with self._mem_lock:
            if self._mem_finished:
                return
            self._mem_finished = True
        self._mem_transport._mem_done()

    def _mem_wait_gate(self, gate: Any, timeout: float) -> None:
        """Hold the answer on a reply's ``gate``, as FakeServer's connection thread does, for at
        most ``timeout``; what the client sees meanwhile is what it sees over sockets.

        The request's cancel scope ends the wait at once (``RequestCancelledError``): with an
        Event gate the scope is what is waited on, a slice at a time (``_fake_gate_poller``); a
        gate that is no Event is polled in short slices; a Barrier, which a wait with a timeout
        would break, gets a helper thread standing at it for the server.  If the read timeout
        comes first, the ``APITimeoutError`` of a head that never came.

        :raises RequestCancelledError: the cancel scope was cancelled
        :raises APITimeoutError: the gate was still shut after the read timeout
        """
        cancel = self._mem_cancel
        limit = self._mem_read_timeout
        if isinstance(gate, threading.Barrier):
            gate = _mem_barrier_arrival(gate, timeout)
        is_open, pause = _fake_gate_poller(gate, cancel)
        deadline = time.monotonic() + min(timeout, limit)
        while True:
            if cancel is not None and cancel.cancelled:
                raise RequestCancelledError()
            if is_open():
                return
            left = deadline - time.monotonic()
            if left <= 0:
                break
            pause(min(_FAKE_GATE_POLL, left))
        if limit <= timeout:
            raise APITimeoutError("No answer from %s within %gs (read timeout)." % (self._mem_where, limit))

    def _mem_wait(self, seconds: float, phase: str) -> None:
        """A silence of ``seconds``: passes, raises the read timeout, or (``stalls="block"``)
        really waits, cut short by close() or the cancel scope."""
        limit = self._mem_read_timeout
        if self._mem_transport.stalls == "block":
            cancel = self._mem_cancel
            deadline = time.monotonic() + min(seconds, limit)
            while not self._mem_closed.is_set() and not (cancel is not None and cancel.cancelled):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._mem_closed.wait(min(0.01, left))
            if cancel is not None and cancel.cancelled:
                raise RequestCancelledError()
            if self._mem_closed.is_set():
                return
        if seconds < limit:
            return
        if phase == "head":
            msg = "No answer from %s within %gs (read timeout)." % (self._mem_where, limit)
        else:
            msg = (
                "The server at %s sent nothing for %gs in the middle of the response "
                "(read timeout): the stream stalled." % (self._mem_where, limit)
            )
        raise APITimeoutError(msg)

    def iter_bytes(self) -> Iterator[bytes]:
        """Yield the body piece by piece (one piece per planned write).

        After :meth:`close` (from any thread) the iterator simply ends.

        :raises APITimeoutError: a stall at least as long as the read timeout
        :raises IncompleteStreamError: a disconnect or reset before the body's end
        :raises RequestCancelledError: the cancel scope was cancelled
        """
        if self._mem_body is not None:
            if self._mem_body:
                yield self._mem_body
            return
        steps = self._mem_iter
        cancel = self._mem_cancel
        length = self._mem_length
        got = 0
        try:
            for kind, value in steps:
                if self._mem_closed.is_set():
                    return
                if cancel is not None and cancel.cancelled:
                    raise RequestCancelledError()
                if kind == "data":
                    if length is not None:
                        value = value[: length - got]
                    got += len(value)
                    if value:
                        yield value
                    if length is not None and got >= length:
                        break
                elif kind == "stall":
                    self._mem_wait(value, "body")
                elif kind == "disconnect":
                    if value:
                        raise IncompleteStreamError(
                            "The connection to %s was reset in the middle of the response." % self._mem_where,
                            cause=ConnectionResetError(104, "Connection reset by peer"),
                        )
                    if self._mem_chunked or length is not None:
                        raise _mem_incomplete(self._mem_where)
                    break  # a body that ends with the connection: this is its end
                elif length is not None and got < length:
                    raise _mem_incomplete(self._mem_where)
            if self._mem_closed.is_set():
                return
            if cancel is not None and cancel.cancelled:
                raise RequestCancelledError()
        finally:
            self._mem_finish()

    def read(self, limit: int | None = None) -> bytes:
        """Read the whole body.

        :raises ResponseTooLargeError: the body is larger than ``limit``
        :raises RequestCancelledError: :meth:`close` came before the whole body
        :raises APIConnectionError: (IncompleteStreamError, APITimeoutError) as ``iter_bytes``
        """
        if self._mem_body is not None:
            return self._mem_body
        if self._mem_closed.is_set():
            raise _mem_closed_error()
        if limit is not None and self._mem_length is not None and self._mem_length > limit:
            self.close()
            raise _mem_too_large(self.url, limit)
        parts = []
        size = 0
        for piece in self.iter_bytes():
            size += len(piece)
            if limit is not None and size > limit:
                self.close()
                raise _mem_too_large(self.url, limit)
            parts.append(piece)
        if self._mem_closed.is_set():
            raise _mem_closed_error()
        self._mem_body = b"".join(parts)
        return self._mem_body


def _mem_barrier_arrival(barrier: threading.Barrier, timeout: float) -> threading.Event:
    """Arrive at ``barrier`` in a daemon thread (the server's side of a gated request); the
    Event is set when the barrier opened, broke or timed out: the answer may go."""
    passed = threading.Event()

    def arrive() -> None:
        try:
            barrier.wait(timeout)
        except threading.BrokenBarrierError:
            pass
        finally:
            passed.set()

    threading.Thread(target=arrive, name="openai2-memory-gate", daemon=True).start()
    return passed


def _mem_split_url(url: str) -> tuple[str, str]:
    """``(host:port, path?query)`` of an http(s) URL.

    :raises APIConnectionError: for any other URL (as HTTPTransport)
    """
    from urllib.parse import urlsplit

    scheme = url.partition(":")[0].lower()
    if scheme not in ("http", "https") or "://" not in url:
        error = APIConnectionError("Unsupported URL %r: only http:// and https:// URLs work" % (_mem_log_url(url),))
        error.retryable = False  # as HTTPTransport: retrying cannot help
        raise error
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if scheme == "https" else 80)
    where = "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)
    return where, (parts.path or "/") + ("?" + parts.query if parts.query else "")


def _mem_log_url(url: str) -> str:
    """A URL as shown in messages: no user info, query or fragment (they may hold secrets)."""
    scheme, sep, rest = url.split("#", 1)[0].split("?", 1)[0].rpartition("://")
    host, slash, path = rest.partition("/")
    return scheme + sep + host.rpartition("@")[2] + slash + path


def _mem_incomplete(where: str) -> IncompleteStreamError:
    return IncompleteStreamError("The connection to %s closed before the response was complete." % where)


def _mem_closed_error() -> RequestCancelledError:
    return RequestCancelledError("The response was closed (close() was called) before its whole body had arrived.")


def _mem_too_large(url: str, limit: int) -> ResponseTooLargeError:
    return ResponseTooLargeError(
        "The response body from %s is larger than the %d-byte limit; it was not read." % (_mem_log_url(url), limit)
    )
