"""The local OpenAI-compatible gateway behind ``openai2 serve``.

One job: accept OpenAI-shaped requests on a local address and answer them through openai2's own
client (so the key pool's rotation, 429 cool-downs, 401/403 set-aside, proxies, CA files and
stall timeouts apply to every program that speaks the OpenAI API), with failover to fallback
base URLs.  Built on the standard library's ``http.server`` (imported when a gateway is built,
never by ``import openai2``).

Endpoints: ``POST /v1/chat/completions`` (streaming or not), ``GET /v1/models``, ``GET /health``
(the same without ``/v1`` too); ``GET /`` serves the chat page (openai2.chatpage) unless
``ui=False``; anything else is an OpenAI-shaped 404.

Streams are relayed event by event; while the upstream is silent the client gets an SSE comment
(``: keep-alive``) every ``keepalive`` seconds.  :meth:`Gateway.shutdown` stops accepting, lets
the requests in flight finish within a grace period, then ends the rest (a stream with an SSE
error event, code ``gateway_shutdown``).
"""

from __future__ import annotations

import io
import os
import sys
import threading
import time

from .chatpage import CHAT_PAGE_CSP, chat_page
from .client import OpenAI
from .common import TYPE_CHECKING, mask_key, redact
from .errors import APIConnectionError, APIStatusError, APITimeoutError, OpenAIError, RequestCancelledError
from .keypool import AKPool
from .transport import CancelScope, HTTPResponse, HTTPTransport, Timeout

if TYPE_CHECKING:
    from typing import IO, Any, Callable, Iterable, Mapping, Sequence

#: Request bodies larger than this get 413 (16 MiB).
GATEWAY_MAX_BODY = 16 * 1024 * 1024
#: Connections served at the same time; one more waits ``queue_timeout`` seconds, then gets 503.
GATEWAY_MAX_WORKERS = 64
#: The only client request headers that shape the upstream request (by their meaning: the
#: upstream request is always JSON, and always asks for an event stream when streaming).
#: Nothing else a client sends — ``Authorization`` least of all — is forwarded.
GATEWAY_FORWARDED_HEADERS = ("content-type", "accept")
#: Client headers forwarded only with ``forward_org_headers=True`` (each overrides the configured
#: organization / project for that request).
GATEWAY_ORG_HEADERS = ("OpenAI-Organization", "OpenAI-Project")
#: Seconds of upstream silence after which a streaming client gets a ``: keep-alive`` comment.
GATEWAY_KEEPALIVE_SECONDS = 15.0
#: Seconds :meth:`Gateway.close` lets requests in flight finish before ending them.
GATEWAY_SHUTDOWN_GRACE = 5.0
_GW_LOOPBACK = ("127.0.0.1", "::1", "localhost")


class GatewayError(ValueError):
    """The gateway cannot start as configured (a non-loopback address without a token, ...)."""


def _gw_is_loopback(host: str) -> bool:
    return host in _GW_LOOPBACK or host.startswith("127.")


def _gw_socket_timeout() -> type[OSError]:
    import socket

    return socket.timeout


def _gw_loopback_host(header: str, bound: str) -> bool:
    """Whether a Host header (``name[:port]``, lower case) names this machine's loopback."""
    if header.startswith("["):
        name = header[1 : header.find("]")] if "]" in header else header
    else:
        name = header.rsplit(":", 1)[0] if header.count(":") == 1 else header
    name = name.rstrip(".")
    return (
        _gw_is_loopback(name)
        or name in ("0.0.0.0", "localhost")
        or name.endswith(".localhost")
        or name == bound.lower()
    )


class _GatewaySlowClient(OSError):
    """A request's head or body did not arrive within its deadline (a client sending a byte
    now and then would otherwise hold a worker for ever)."""


class _GatewayReader(io.RawIOBase):
    """A handler's socket as the raw stream under its ``rfile``: every read waits at most the
    idle timeout, and, once :attr:`deadline` is set, never past it.

    :meth:`arm` starts a request: its head must be complete within the idle timeout of its
    first byte (the wait for that first byte is the keep-alive idle wait)."""

    def __init__(self, sock: Any, idle: float | None) -> None:
        super().__init__()
        self.sock = sock
        self.idle = idle
        self.deadline: float | None = None
        self.armed = False

    def readable(self) -> bool:
        return True

    def arm(self) -> None:
        self.deadline = None
        self.armed = True

    def readinto(self, buffer: Any) -> int:
        wait = self.idle
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise _GatewaySlowClient("the request came too slowly")
            wait = left if wait is None else min(wait, left)
        self.sock.settimeout(wait)
        try:
            n: int = self.sock.recv_into(buffer)
        finally:
            self.sock.settimeout(self.idle)
        if n and self.armed:
            self.armed = False
            self.deadline = time.monotonic() + (self.idle or 15.0)
        return n


def _gw_error_body(message: str, kind: str, code: str | None = None) -> bytes:
    import json

    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()


class _GatewayTransport(HTTPTransport):
    """An HTTPTransport that remembers, per thread, which key the last request carried (the
    access log shows it masked)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._gw_local = threading.local()

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
        auth = headers.get("Authorization", "")
        self._gw_local.key = auth[7:] if auth.startswith("Bearer ") else ""
        return super().request(
            method, url, headers=headers, body=body, timeout=timeout, cancel=cancel, max_redirects=max_redirects
        )

    def last_key(self) -> str:
        return getattr(self._gw_local, "key", "") or ""


class _GatewayStream:
    """The client side of one relayed stream: the handler thread writes events, the watcher
    thread writes keep-alive comments while the upstream is silent; one lock orders them.

    A keep-alive is only written at an event boundary and never blocks (a client that stops
    reading must not stall the watcher, which serves every stream): whatever of it did not fit
    in the socket buffer (``tail``) is written by the handler before its next event."""

    __slots__ = ("sock", "wfile", "chunked", "interval", "lock", "last", "tail", "boundary", "started", "ended")

    def __init__(self, h: Any, chunked: bool, interval: float | None) -> None:
        self.sock = h.connection
        self.wfile = h.wfile
        self.chunked = chunked
        self.interval = interval
        self.lock = threading.Lock()
        self.last = time.monotonic()
        self.tail = b""
        self.boundary = True
        self.started = False
        self.ended = False  # the body is over: no ping may follow (the connection may carry the next answer)

    def _frame(self, data: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(data), data) if self.chunked else data

    def write(self, data: bytes, boundary: bool = True) -> None:
        """Write ``data`` (framed), after any keep-alive tail; ``boundary``: it ends on an event end."""
        if not self.started:
            self.started = True
            if data.startswith(b"\xef\xbb\xbf"):  # a BOM is only a BOM first, and a ping may precede it
                data = data[3:]
        frame = self._frame(data) if data else b""
        with self.lock:
            if self.tail:
                self.wfile.write(self.tail)
                self.tail = b""
            if frame:
                self.wfile.write(frame)
            self.wfile.flush()
            self.boundary = boundary
            self.last = time.monotonic()

    def finish(self) -> None:
        """The end of the body (the last chunk when chunked); no keep-alive after it."""
        self.write(b"")
        with self.lock:
            self.ended = True
            if self.chunked:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

    def end(self) -> None:
        """No more keep-alives (the stream failed or the client left)."""
        with self.lock:
            self.ended = True

    def due(self) -> float | None:
        return None if self.interval is None else self.last + self.interval

    def ping(self) -> None:
        """Write ``: keep-alive`` if the handler is not writing and the socket takes it now."""
        import socket

        self.last = time.monotonic()  # also when skipped: the next try is an interval away
        if not self.lock.acquire(blocking=False):
            return  # the handler is writing (or blocked writing: no ping would get through)
        try:
            if self.ended or self.tail or not self.boundary or not _gw_writable(self.sock):
                return
            frame = self._frame(b": keep-alive\n\n")
            try:
                sent = self.sock.send(frame, getattr(socket, "MSG_DONTWAIT", 0))
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                return
            self.tail = frame[sent:] if sent else b""
        finally:
            self.lock.release()


def _gw_writable(sock: Any) -> bool:
    import select

    try:
        if hasattr(select, "poll"):  # select.select cannot take descriptors over 1023
            poller = select.poll()
            poller.register(sock, select.POLLOUT)
            return bool(poller.poll(0))
        return bool(select.select([], [sock], [], 0)[1])
    except (OSError, ValueError):
        return False


class _GatewayWatcher:
    """One thread for every stream being relayed: it notices streaming clients hanging up and
    closes their upstream request at once (a handler thread is blocked reading the upstream and
    would only notice at its next write), and sends the keep-alive comments."""

    def __init__(self) -> None:
        import selectors
        import socket

        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._changes: list[tuple[bool, Any, Callable[[], None] | None]] = []
        self._streams: set[_GatewayStream] = set()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="openai2-gateway-watcher", daemon=True)
        self._thread.start()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def _change(self, add: bool, sock: Any, callback: Callable[[], None] | None) -> None:
        with self._lock:
            self._changes.append((add, sock, callback))
        self._wake()

    def watch(self, sock: Any, callback: Callable[[], None], stream: _GatewayStream | None = None) -> None:
        """Call ``callback`` when the client of ``sock`` hangs up; keep ``stream`` alive."""
        with self._lock:
            self._changes.append((True, sock, callback))
            if stream is not None and stream.interval is not None:
                self._streams.add(stream)
        self._wake()

    def unwatch(self, sock: Any, stream: _GatewayStream | None = None) -> None:
        with self._lock:
            self._changes.append((False, sock, None))
            self._streams.discard(stream)  # type: ignore[arg-type]
        self._wake()

    def _apply(self) -> None:
        import selectors

        with self._lock:
            changes, self._changes = self._changes, []
        for add, sock, callback in changes:
            try:
                if add:
                    self._selector.register(sock, selectors.EVENT_READ, callback)
                else:
                    self._selector.unregister(sock)
            except (KeyError, ValueError, OSError):
                pass

    def _keepalives(self) -> float:
        """Ping the streams that are due; :returns: seconds until the next one is (at most 5)."""
        now = time.monotonic()
        with self._lock:
            streams = list(self._streams)
        wait = 5.0
        for stream in streams:
            due = stream.due()
            if due is None:
                continue
            if due <= now:
                stream.ping()
                due = stream.due() or now + wait
            wait = min(wait, max(0.0, due - now))
        return wait

    def _run(self) -> None:
        import socket

        while not self._stopping:
            self._apply()
            wait = self._keepalives()
            try:
                ready = self._selector.select(wait)
            except OSError:
                ready = []
            for key, _ in ready:
                if key.fileobj is self._wake_r:
                    try:
                        self._wake_r.recv(4096)
                    except OSError:
                        pass
                    continue
                sock: Any = key.fileobj
                try:
                    gone = sock.recv(1, socket.MSG_PEEK | getattr(socket, "MSG_DONTWAIT", 0)) == b""
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    gone = True
                try:
                    self._selector.unregister(sock)
                except (KeyError, ValueError, OSError):
                    pass
                if gone and key.data is not None:
                    key.data()

    def close(self) -> None:
        self._stopping = True
        self._wake()
        self._thread.join(5.0)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()


class Gateway:
    """A local OpenAI-compatible HTTP server relaying to one or more upstreams.

    ``with Gateway(api_key=pool, base_url=URL) as gw:`` then point any OpenAI client at
    ``gw.base_url`` (``http://127.0.0.1:PORT/v1``).

    :param base_url: the upstream base URL (default: ``$OPENAI_BASE_URL`` or OpenAI's)
    :param api_key: the upstream key or an :class:`AKPool` (default: ``$OPENAI_API_KEY``)
    :param fallbacks: base URLs tried in order when the upstream (and each fallback before) fails
        with a connection error or a 5xx before any byte of the answer reached the client; an
        item is a URL (same keys as ``api_key``) or a ``(url, key_or_pool)`` pair (its own keys)
    :param token: the token clients must send (``Authorization: Bearer TOKEN`` or ``api-key:
        TOKEN``); required for any address but loopback; checked in constant time
    :param host: the address to listen on (default ``127.0.0.1``)
    :param port: the port (0: any free port; see :attr:`port` after :meth:`start`)
    :param aliases: ``{name: model}``: a request for ``name`` goes upstream as ``model``
    :param cors: an origin (``https://app.example``, or ``*``) sent in CORS headers; None: none
    :param max_body: request bodies larger than this (bytes) get 413
    :param max_workers: connections served at once; beyond, 503 with ``Retry-After``
    :param queue_timeout: how long a connection beyond ``max_workers`` waits for a free worker
    :param idle_timeout: a keep-alive connection idle this long is closed (frees its worker)
    :param proxy: :param ca_file: :param verify: :param timeout: for the upstream, as ``OpenAI``
    :param max_retries: upstream retries per request before failover (default 0: the clients
        retry themselves; key rotation on 429/401/403 happens regardless)
    :param organization: :param project: ``OpenAI-Organization`` / ``OpenAI-Project`` sent
        upstream (None: ``$OPENAI_ORG_ID`` / ``$OPENAI_PROJECT_ID``, as ``OpenAI`` reads them).
        They belong to the account of ``api_key``: sent to ``base_url`` and to the fallbacks that
        share its keys, never to a fallback with keys of its own
    :param forward_org_headers: forward a client's own ``OpenAI-Organization`` /
        ``OpenAI-Project`` (it overrides the configured one for that request, and goes where the
        configured one goes); default False: a client's copies are dropped like every other header
    :param keepalive: seconds of upstream silence after which a streaming client gets an SSE
        comment (``: keep-alive``), and again every as many seconds; None: never
    :param shutdown_grace: how long :meth:`close` lets requests in flight finish
    :param ui: serve the chat page at ``GET /``; False: 404
    :param log: where the access log goes (default ``sys.stderr``); None with ``quiet``
    :param quiet: no access log
    :raises GatewayError: a non-loopback ``host`` without a ``token``
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | AKPool | None = None,
        *,
        fallbacks: Sequence[str | tuple[str, str | AKPool | None]] = (),
        token: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        aliases: Mapping[str, str] | None = None,
        cors: str | None = None,
        max_body: int = GATEWAY_MAX_BODY,
        max_workers: int = GATEWAY_MAX_WORKERS,
        queue_timeout: float = 1.0,
        idle_timeout: float = 15.0,
        proxy: str | None = None,
        ca_file: str | None = None,
        verify: bool = True,
        timeout: float | tuple[float, float] | Timeout | None = None,
        max_retries: int = 0,
        organization: str | None = None,
        project: str | None = None,
        forward_org_headers: bool = False,
        keepalive: float | None = GATEWAY_KEEPALIVE_SECONDS,
        shutdown_grace: float = GATEWAY_SHUTDOWN_GRACE,
        ui: bool = True,
        log: IO[str] | None = None,
        quiet: bool = False,
    ) -> None:
        if token is not None and not token.strip():
            raise GatewayError("the token is empty")
        if token is not None and not (token.isascii() and token.isprintable() and token == token.strip()):
            # an HTTP header carries it: anything else could never be sent, or sent as typed
            raise GatewayError("the token must be printable ASCII, with no space at either end")
        if not _gw_is_loopback(host) and not token:
            raise GatewayError(
                "refusing to listen on %s without a token: anyone who can reach it could spend your keys "
                "(give --token, or keep the default 127.0.0.1)" % host
            )
        if cors is not None and cors.strip() == "*" and not token:
            raise GatewayError(
                "refusing --cors '*' without a token: every web page you visit could spend your keys "
                "(give --token, or name the one origin: --cors https://app.example)"
            )
        if max_workers < 1 or max_body < 1:
            raise ValueError("max_workers and max_body must be at least 1")
        if keepalive is not None and not keepalive > 0:
            raise ValueError("keepalive must be a number of seconds above 0, or None")
        if not shutdown_grace >= 0:
            raise ValueError("shutdown_grace must be a number of seconds, 0 or more")
        self.host = host
        self.port = port
        self.token = token
        self.aliases = dict(aliases or {})
        self.cors = cors
        self.max_body = max_body
        self.max_workers = max_workers
        self.queue_timeout = queue_timeout
        self.idle_timeout = idle_timeout
        self.ui = ui
        self.quiet = quiet
        self.keepalive = keepalive
        self.shutdown_grace = shutdown_grace
        self.forward_org_headers = bool(forward_org_headers)
        self._log = log
        self._transport = _GatewayTransport(proxy=proxy, verify=verify, ca_file=ca_file)
        options: dict[str, Any] = {"timeout": timeout, "max_retries": max_retries, "transport": self._transport}
        self._clients = [OpenAI(api_key, base_url=base_url, organization=organization, project=project, **options)]
        #: per upstream: does it belong to api_key's account (organization, project, forwarded copies)?
        self._same_account = [True]
        for item in fallbacks:
            shared = isinstance(item, str)
            url, key = (item, api_key) if isinstance(item, str) else item
            # "" (not None): the environment's organization is not read for another account
            org, proj = (organization, project) if shared else ("", "")
            self._clients.append(OpenAI(key, base_url=url, organization=org, project=proj, **options))
            self._same_account.append(shared)
        secrets: list[str] = []
        for client in self._clients:
            secrets.extend(client._secrets())
        self._secrets = tuple(dict.fromkeys(secrets))
        #: bytes of a stream held back when it is relayed in parts: the longest form of a key
        #: that masking looks for (JSON may escape each character as six)
        self._hold = max((6 * len(k.encode("utf-8")) for k in self._secrets), default=0)
        self._slots = threading.BoundedSemaphore(max_workers)
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._server: Any = None
        self._serve_thread: threading.Thread | None = None
        self._watcher: _GatewayWatcher | None = None
        self._log_lock = threading.Lock()
        self._draining = threading.Event()
        self._busy: set[Any] = set()  # connections with a request being served
        self._waiting = 0  # connections beyond max_workers waiting (each in its own thread) for one
        self._max_waiting = max(64, 4 * max_workers)  # beyond: refused at once, from the accept loop
        self._inflight: dict[int, dict[str, Any]] = {}  # request id -> {"cancel", "response", "done", "cut"}

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> Gateway:
        """Bind and serve in a background thread.  :returns: self"""
        if self._server is not None:
            return self
        self._server = _gw_make_server(self)
        self.port = self._server.server_address[1]
        self._watcher = _GatewayWatcher()
        self._serve_thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="openai2-gateway", daemon=True
        )
        self._serve_thread.start()
        return self

    def serve_forever(self) -> None:
        """Bind (if not yet) and serve until :meth:`shutdown` (from another thread), or until a
        KeyboardInterrupt (Ctrl-C, or SIGTERM turned into one, as ``openai2 serve`` does) reaches
        this thread: then :meth:`close` (the graceful stop, within ``shutdown_grace``) and the
        KeyboardInterrupt is raised again.  A second one during the grace stops waiting."""
        self.start()
        thread = self._serve_thread
        assert thread is not None
        try:
            while thread.is_alive():
                thread.join(0.5)
        except KeyboardInterrupt:
            self.close()
            raise

    def shutdown(self, grace: float | None = None) -> None:
        """Stop gracefully: stop accepting at once, close idle keep-alive connections, let the
        requests in flight finish for at most ``grace`` seconds (each answered with ``Connection:
        close``), then end the rest — a stream with an SSE error event (``code:
        "gateway_shutdown"``), a request still waiting for its upstream with 503 — and close the
        upstream connections.  Safe to call twice, and from any thread (not from a handler).

        :param grace: seconds (default: the gateway's ``shutdown_grace``); 0: end them at once
        """
        grace = self.shutdown_grace if grace is None else max(0.0, grace)
        server, self._server = self._server, None
        if server is None:
            return
        self._draining.set()
        server.shutdown()
        server.server_close()
        if self._serve_thread is not None:
            self._serve_thread.join(5.0)
        with self._lock:
            idle = [c for c in getattr(server, "gw_conns", {}).values() if c not in self._busy]
        for conn in idle:
            _gw_shutdown(conn)
        try:
            deadline = time.monotonic() + grace
            for thread in self._workers():
                thread.join(max(0.0, deadline - time.monotonic()))
        finally:  # also when a second Ctrl-C ends the grace early
            self._end(server)

    def _end(self, server: Any) -> None:
        self._cut_inflight()
        deadline = time.monotonic() + 5.0
        for thread in self._workers():
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            left = list(getattr(server, "gw_conns", {}).values())
        for conn in left:  # a worker that did not end (a client not reading): its socket goes
            _gw_shutdown(conn)
        for thread in self._workers():
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None
        for client in self._clients:
            client.close()
        self._transport.close()

    def close(self) -> None:
        """:meth:`shutdown` with the gateway's ``shutdown_grace``."""
        self.shutdown()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop at once: :meth:`shutdown` with no grace (streams in flight end with an error
        event).  ``timeout`` is kept for callers of earlier releases and not used."""
        self.shutdown(0.0)

    @property
    def accepting(self) -> bool:
        """True while the gateway takes new connections (after start(), before shutdown())."""
        return self._server is not None and not self._draining.is_set()

    def _workers(self) -> list[threading.Thread]:
        with self._lock:
            return list(self._threads)

    def _cut_inflight(self) -> None:
        with self._lock:
            records = [r for r in self._inflight.values() if not r["done"]]
            for record in records:
                record["cut"] = True
        for record in records:
            record["cancel"].cancel()
            response = record["response"]
            if response is not None:
                response.close()

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (after :meth:`start`)."""
        host = self.host if ":" not in self.host else "[%s]" % self.host
        return "http://%s:%d" % (host, self.port)

    @property
    def base_url(self) -> str:
        """The base URL to give OpenAI clients: ``url + "/v1"``."""
        return self.url + "/v1"

    def __repr__(self) -> str:
        return "Gateway(%s, upstreams=%d, token=%s)" % (self.url, len(self._clients), "set" if self.token else "none")

    # -- one request ------------------------------------------------------------------------------
    def _authorized(self, h: Any) -> bool:
        if not self.token:
            return True
        import hmac

        auth = h.headers.get("Authorization", "") or ""
        given = auth[7:].strip() if auth[:7].lower() == "bearer " else (h.headers.get("api-key", "") or "").strip()
        return hmac.compare_digest(given.encode("utf-8", "replace"), self.token.encode("utf-8"))

    def _cors_headers(self, h: Any) -> list[tuple[str, str]]:
        if not self.cors:
            return []
        return [
            ("Access-Control-Allow-Origin", self.cors),
            ("Access-Control-Allow-Headers", "Authorization, Content-Type, api-key"),
            ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
            ("Vary", "Origin"),
        ]

    def _send(
        self, h: Any, status: int, body: bytes, ctype: str = "application/json", extra: Iterable[Any] = ()
    ) -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        for name, value in list(extra) + self._cors_headers(h):
            h.send_header(name, value)
        self._closing_header(h)
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)
        h.gw_info["status"] = status

    def _closing_header(self, h: Any) -> None:
        """An answer after which the connection closes says so (while shutting down, every
        answer is the connection's last)."""
        if self._draining.is_set() or h.close_connection:
            h.send_header("Connection", "close")
            h.close_connection = True

    def _chat_page(self, h: Any) -> None:
        # Served without the token (the page asks for it); it never holds a key.
        page = chat_page(token_required=bool(self.token), title="openai2")
        headers = [
            ("Content-Security-Policy", CHAT_PAGE_CSP),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            ("Cache-Control", "no-store"),
        ]
        self._send(h, 200, page, "text/html; charset=utf-8", headers)

    def _handle(self, h: Any) -> None:
        start = time.monotonic()
        info: dict[str, Any] = {"status": 0, "model": "-", "key": "", "tokens": None}
        h.gw_info = info
        path = h.path.split("?", 1)[0]
        if path.startswith("/v1/"):
            path = path[3:]
        try:
            refusal = self._cross_site(h) if h.command != "OPTIONS" else None
            if refusal is not None:
                self._drain(h)
                self._send(h, 403, _gw_error_body(refusal, "invalid_request_error", "cross_site_refused"))
            elif h.command == "OPTIONS" and self.cors:
                self._drain(h)
                h.send_response(204)
                for name, value in self._cors_headers(h):
                    h.send_header(name, value)
                h.send_header("Content-Length", "0")
                h.end_headers()
                info["status"] = 204
            elif path == "/health" and h.command == "GET":
                self._send(h, 200, b'{"status":"ok"}')
            elif path == "/" and h.command in ("GET", "HEAD") and self.ui and h.path.split("?", 1)[0] == "/":
                self._chat_page(h)
            elif path not in ("/chat/completions", "/models") or h.command not in ("GET", "POST"):
                self._drain(h)
                self._send(
                    h,
                    404,
                    _gw_error_body("Unknown path: %s %s" % (h.command, path), "invalid_request_error", "not_found"),
                )
            elif not self._authorized(h):
                self._drain(h)
                self._send(
                    h,
                    401,
                    _gw_error_body(
                        "Missing or wrong gateway token (Authorization: Bearer TOKEN).",
                        "invalid_request_error",
                        "invalid_api_key",
                    ),
                    extra=[("WWW-Authenticate", "Bearer")],
                )
            elif path == "/models" and h.command == "GET":
                self._models(h)
            elif path == "/chat/completions" and h.command == "POST":
                self._chat(h, info)
            else:
                self._drain(h)
                self._send(
                    h,
                    405,
                    _gw_error_body("Method not allowed", "invalid_request_error"),
                    extra=[("Allow", "GET" if path == "/models" else "POST")],
                )
        except (BrokenPipeError, ConnectionError):
            h.close_connection = True
            if not info["status"]:
                info["status"] = 499
        except OSError as exc:
            h.close_connection = True
            if not isinstance(exc, (_GatewaySlowClient, _gw_socket_timeout())):
                raise
            if not info["status"]:  # the body did not arrive within its deadline
                self._try_send(h, 408, _gw_error_body("The request body came too slowly.", "invalid_request_error"))
        except Exception as exc:  # noqa: BLE001 - a hostile request must get an answer, not a dropped connection
            h.close_connection = True
            if not info["status"]:
                message = "The gateway failed: %s" % redact(type(exc).__name__, self._secrets)
                self._try_send(h, 500, _gw_error_body(message, "server_error"))
        finally:
            if getattr(h, "gw_discard", 0):
                self._discard_body(h, h.gw_discard)
                h.gw_discard = 0
            self._access_log(h, info, time.monotonic() - start)

    def _try_send(self, h: Any, status: int, body: bytes) -> None:
        try:
            self._send(h, status, body)
        except OSError:
            h.gw_info["status"] = status

    def _cross_site(self, h: Any) -> str | None:
        """Why a request that a web page made the browser send is refused (None: it is not).

        Without a token, a page on any site could have the browser POST here (a form or a
        ``text/plain`` fetch needs no CORS preflight), or reach it through a DNS name of its own
        that resolves to 127.0.0.1 (DNS rebinding): both would spend the keys.  So the Host must
        be a loopback name unless a token guards the gateway, and an Origin must be the
        gateway's own or the ``cors`` one."""
        host = (h.headers.get("Host") or "").strip().lower()
        if host and not self.token and not _gw_loopback_host(host, self.host):
            return (
                "Refused: Host %r is not a loopback name (a DNS-rebinding page?); use --token to serve other names."
                % (_gw_log_field(host[:100]),)
            )
        origin = (h.headers.get("Origin") or "").strip()
        own = origin.lower() in ("http://" + host, "https://" + host)  # https: behind a TLS proxy
        if not origin or own or self.cors == "*" or origin == self.cors:
            return None
        return "Cross-site request refused: Origin %r is not allowed (start the gateway with --cors ORIGIN)." % (
            _gw_log_field(origin[:100]),
        )

    def _drain(self, h: Any) -> None:
        """Read a small unread body so the connection can carry on; a large one closes it."""
        n = _gw_content_length(h)
        if n < 0 or n > 65536 or h.headers.get("Transfer-Encoding"):
            h.close_connection = True
            h.gw_discard = max(0, n)  # read after the answer: the client may be sending it still
        elif n:
            self._body_deadline(h, n)
            h.rfile.read(n)

    def _body_deadline(self, h: Any, n: int) -> None:
        """A body of ``n`` bytes must arrive within the idle timeout plus a second per 16 KiB: a
        client sending it a byte at a time does not hold a worker for ever."""
        reader = getattr(h, "gw_reader", None)
        if reader is not None:
            reader.deadline = time.monotonic() + (self.idle_timeout or 15.0) + n / 16384.0

    def _discard_body(self, h: Any, n: int) -> None:
        """Read and drop what is left of a refused body (within a bounded time), so a client
        still sending it reads the answer instead of a connection reset."""
        reader = getattr(h, "gw_reader", None)
        if reader is None:
            return
        reader.deadline = time.monotonic() + min(5.0, self.idle_timeout or 5.0)
        try:
            h.wfile.flush()
            while n > 0:
                piece = h.rfile.read1(min(n, 1 << 20))
                if not piece:
                    break
                n -= len(piece)
        except (OSError, ValueError):
            pass

    def _read_json(self, h: Any) -> dict[str, Any] | None:
        import json

        if h.headers.get("Transfer-Encoding"):
            h.close_connection = True
            self._send(h, 411, _gw_error_body("Send the body with a Content-Length.", "invalid_request_error"))
            return None
        n = _gw_content_length(h)
        if n < 0:
            h.close_connection = True
            self._send(h, 400, _gw_error_body("Bad Content-Length.", "invalid_request_error"))
            return None
        if n > self.max_body:
            h.close_connection = True
            self._send(
                h,
                413,
                _gw_error_body(
                    "Request body over the gateway's limit of %d bytes." % self.max_body,
                    "invalid_request_error",
                    "request_too_large",
                ),
            )
            h.gw_discard = n
            return None
        self._body_deadline(h, n)
        raw = h.rfile.read(n)
        try:
            body = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError):  # RecursionError: nested thousands of levels deep
            body = None
        if not isinstance(body, dict):
            self._send(h, 400, _gw_error_body("The body must be a JSON object.", "invalid_request_error"))
            return None
        return body

    def _org_headers(self, h: Any) -> dict[str, str]:
        """A client's own OpenAI-Organization / OpenAI-Project, when the gateway forwards them."""
        found: dict[str, str] = {}
        if not self.forward_org_headers:
            return found
        for name in GATEWAY_ORG_HEADERS:
            value = (h.headers.get(name) or "").strip()
            if value and len(value) <= 256 and value.isascii() and value.isprintable():
                found[name] = value
        return found

    def _chat(self, h: Any, info: dict[str, Any]) -> None:
        body = self._read_json(h)
        if body is None:
            return
        model = body.get("model")
        if isinstance(model, str):
            info["model"] = model
            if model in self.aliases:
                body["model"] = self.aliases[model]
        stream = body.get("stream") is True
        org = self._org_headers(h)
        record: dict[str, Any] = {"cancel": CancelScope(), "response": None, "done": False, "cut": False}
        with self._lock:
            self._inflight[id(record)] = record
        try:
            self._chat_upstreams(h, info, body, stream, org, record)
        finally:
            with self._lock:
                self._inflight.pop(id(record), None)

    def _chat_upstreams(
        self, h: Any, info: dict[str, Any], body: dict[str, Any], stream: bool, org: dict[str, str], record: Any
    ) -> None:
        cancel: CancelScope = record["cancel"]
        watcher = self._watcher
        if not stream and watcher is not None:
            # a client that hangs up while its answer is being made ends the upstream request
            # (a stream's client is watched from its first byte on, by _relay_stream)

            def on_gone() -> None:
                h.close_connection = True
                cancel.cancel()

            watcher.watch(h.connection, on_gone)
        try:
            self._chat_tries(h, info, body, stream, org, record)
        finally:
            if not stream and watcher is not None:
                watcher.unwatch(h.connection)

    def _chat_tries(
        self, h: Any, info: dict[str, Any], body: dict[str, Any], stream: bool, org: dict[str, str], record: Any
    ) -> None:
        cancel: CancelScope = record["cancel"]
        last: OpenAIError | None = None
        for client, same_account in zip(self._clients, self._same_account):
            if cancel.cancelled:
                break
            try:
                response = client.post(
                    "/chat/completions",
                    body,
                    stream=stream,
                    cancel=cancel,
                    extra_headers=(org or None) if same_account else None,
                )
            except (ValueError, RecursionError) as exc:  # NaN / Infinity, or nested too deep to encode
                self._send(h, 400, _gw_error_body(str(exc)[:200], "invalid_request_error"))
                return
            except RequestCancelledError as exc:
                last = exc
                break
            except APIConnectionError as exc:
                last = exc
                info["key"] = self._transport.last_key()
                continue
            except APIStatusError as exc:
                last = exc
                info["key"] = self._transport.last_key()
                if exc.status_code >= 500:
                    continue
                break
            info["key"] = self._transport.last_key()
            with self._lock:
                record["response"] = response
                cut = record["cut"]
            if cut:
                response.close()
                break
            if stream:
                self._relay_stream(h, response, info, record)
                return
            try:
                raw = response.read(limit=client.max_response_bytes)
            except OpenAIError as exc:
                last = exc
                continue
            finally:
                response.close()
            self._relay_whole(h, response, raw, info)
            return
        if isinstance(last, RequestCancelledError) and not record["cut"]:
            h.close_connection = True  # the client hung up: nobody to answer
            info["status"] = 499
            return
        if record["cut"]:
            self._send(
                h,
                503,
                _gw_error_body("The gateway is shutting down; retry shortly.", "server_error", "gateway_shutdown"),
                extra=[("Retry-After", "1")],
            )
            return
        self._send_upstream_error(h, last)

    def _relay_whole(self, h: Any, response: HTTPResponse, raw: bytes, info: dict[str, Any]) -> None:
        raw = self._mask_bytes(raw)
        ctype = self._mask_text(response.headers.get("content-type", "application/json"))
        if b'"usage"' in raw:
            import json

            try:
                info["tokens"] = _gw_tokens(json.loads(raw.decode("utf-8")))
            except ValueError:
                pass
        rid = response.headers.get("x-request-id")
        extra = [("X-Request-Id", self._mask_text(rid))] if rid else []
        self._send(h, response.status, raw, ctype, extra)

    def _mask_text(self, text: str) -> str:
        """An upstream header's value, fit to relay: keys masked, control characters dropped
        (a NUL or an escape in a header makes strict clients refuse the whole answer)."""
        if not text.isprintable():
            text = "".join(c for c in text if c.isprintable())
        return redact(text, self._secrets) if self._secrets else text

    def _mask_bytes(self, raw: bytes) -> bytes:
        if not self._secrets:
            return raw
        text = raw.decode("utf-8", "surrogateescape")
        masked = redact(text, self._secrets)
        return raw if masked == text else masked.encode("utf-8", "surrogateescape")

    def _send_upstream_error(self, h: Any, error: OpenAIError | None) -> None:
        import json

        message = redact(str(error) if error is not None else "no upstream", self._secrets)
        if isinstance(error, APIStatusError):
            body = error.body
            headers = error.headers or {}
            if isinstance(body, (dict, list)):
                raw = json.dumps(body).encode()
                ctype = "application/json"
            elif isinstance(body, str) and body:
                raw = body.encode("utf-8", "replace")
                ctype = self._mask_text(headers.get("content-type", "text/plain; charset=utf-8"))
            else:
                raw = _gw_error_body(message, "upstream_error")
                ctype = "application/json"
            extra = [("Retry-After", self._mask_text(headers["retry-after"]))] if "retry-after" in headers else []
            self._send(h, error.status_code, self._mask_bytes(raw), ctype, extra)
            return
        status = 504 if isinstance(error, APITimeoutError) else 502
        self._send(h, status, _gw_error_body("Upstream failed: %s" % message, "upstream_error", "upstream_unreachable"))

    def _relay_stream(self, h: Any, response: HTTPResponse, info: dict[str, Any], record: Any) -> None:
        import json

        chunked = h.request_version == "HTTP/1.1"
        sse = "event-stream" in response.headers.get("content-type", "text/event-stream")
        h.send_response(response.status)
        h.send_header("Content-Type", self._mask_text(response.headers.get("content-type", "text/event-stream")))
        h.send_header("Cache-Control", "no-cache")
        if chunked:
            h.send_header("Transfer-Encoding", "chunked")
        else:
            h.close_connection = True
        for name, value in self._cors_headers(h):
            h.send_header(name, value)
        self._closing_header(h)
        h.end_headers()
        h.wfile.flush()
        info["status"] = response.status
        out = _GatewayStream(h, chunked, self.keepalive if sse else None)

        def send(data: bytes, boundary: bool = True) -> None:
            data = self._mask_bytes(data)
            if b'"usage"' in data:
                info["tokens"] = _gw_stream_tokens(data) or info["tokens"]
            out.write(data, boundary)

        client_gone = threading.Event()

        def on_gone() -> None:
            client_gone.set()
            response.close()

        watcher = self._watcher
        if watcher is not None:
            watcher.watch(h.connection, on_gone, out)
        pending = b""
        failure: str | None = None
        try:
            try:
                hold = self._hold
                for piece in response.iter_bytes():
                    pending += piece
                    cut = _gw_event_end(pending) if sse else 0
                    if cut:
                        send(pending[:cut])
                        pending = pending[cut:]
                    elif len(pending) > (1024 * 1024 if sse else hold):
                        # one huge event (or a stream that is not SSE): relayed in parts, all
                        # but the last ``hold`` bytes, so a key near a part boundary
                        # is whole in one of them: masked before the cut, or held for the next
                        pending = self._mask_bytes(pending)
                        cut = len(pending) - hold
                        send(pending[:cut], False)
                        pending = pending[cut:]
            except OpenAIError as exc:
                failure = redact(str(exc), self._secrets)
            with self._lock:
                record["done"] = True
                shut = record["cut"]
            if client_gone.is_set():
                h.close_connection = True
                info["status"] = 499
                return
            if shut:
                failure, code = "The gateway is shutting down; the stream was ended before its end.", "gateway_shutdown"
                kind = "server_error"
            else:
                code, kind = "stream_interrupted", "upstream_error"
                if failure is not None:
                    failure = "Upstream stream failed: %s" % failure
            if pending and failure is None:
                send(pending)
            if failure is not None:
                event = {"error": {"message": failure, "type": kind, "code": code}}
                if not out.boundary:  # after part of a huge event: the error must be an event of its own
                    send(b"\n\n")
                send(b"data: " + json.dumps(event).encode() + b"\n\n")
                info["status"] = "%d+%s" % (response.status, "shutdown" if shut else "error")
                h.close_connection = True
            out.finish()
        except (BrokenPipeError, ConnectionError, OSError):
            h.close_connection = True
            info["status"] = 499
        finally:
            out.end()
            if watcher is not None:
                watcher.unwatch(h.connection, out)
            response.close()

    def _models(self, h: Any) -> None:
        import json

        data: list[Any] | None = None
        for client in self._clients:
            key = client.api_key
            if isinstance(key, AKPool):
                try:
                    key = key.next_key()
                except OpenAIError:
                    continue
            headers = {"Accept": "application/json"}
            if key:
                headers["Authorization"] = "Bearer " + key
            if client.organization:
                headers["OpenAI-Organization"] = client.organization
            if client.project:
                headers["OpenAI-Project"] = client.project
            try:
                response = self._transport.request(
                    "GET", client.base_url + "/models", headers=headers, body=None, timeout=client.timeout
                )
                try:
                    raw = response.read(limit=8 * 1024 * 1024) if response.status < 300 else b""
                finally:
                    response.close()
                listed = json.loads(raw.decode("utf-8")).get("data") if raw else None
            except (OpenAIError, ValueError, AttributeError):
                continue
            if isinstance(listed, list):
                data = listed
                break
        data = list(data or [])
        known = {m.get("id") for m in data if isinstance(m, dict)}
        for name in self.aliases:
            if name not in known:
                data.append({"id": name, "object": "model", "created": 0, "owned_by": "openai2-gateway-alias"})
        self._send(h, 200, self._mask_bytes(json.dumps({"object": "list", "data": data}).encode()))

    # -- the access log ---------------------------------------------------------------------------
    def _access_log(self, h: Any, info: dict[str, Any], seconds: float) -> None:
        if self.quiet:
            return
        stream = self._log if self._log is not None else sys.stderr
        tokens = info["tokens"]
        line = '%s %s "%s %s" %s model=%s key=%s %.0fms tokens=%s\n' % (
            time.strftime("%Y-%m-%dT%H:%M:%S"),
            h.client_address[0],
            h.command,
            _gw_log_field(h.path.split("?", 1)[0][:200]),
            info["status"],
            _gw_log_field(str(info["model"])[:100]),
            mask_key(info["key"]) if info["key"] else "-",
            seconds * 1000,
            tokens if tokens is not None else "-",
        )
        line = redact(line, self._secrets)
        with self._log_lock:
            try:
                stream.write(line)
                stream.flush()
            except (OSError, ValueError):
                pass


def _gw_log_field(text: str) -> str:
    """``text`` with its control characters escaped: one request stays one log line, and a
    client cannot send escape sequences to the terminal showing the log."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else "\\x%02x" % ord(c) if ord(c) < 256 else "\\u%04x" % ord(c) for c in text)


def _gw_content_length(h: Any) -> int:
    """The request's Content-Length (0 when absent); -1 when it is not one plain decimal number
    (two different ones, a sign, ``1_0``: a proxy in front would frame the body otherwise)."""
    values = {v.strip() for v in h.headers.get_all("Content-Length") or ()}
    if not values:
        return 0
    if len(values) > 1:
        return -1
    value = values.pop()
    if not value or len(value) > 18 or value.strip("0123456789"):
        return -1
    return int(value)


def _gw_event_end(data: bytes) -> int:
    """Where the last complete SSE event in ``data`` ends (0: none yet): after two line ends in
    a row, each CRLF, LF or CR, mixed as they come (``\\n\\r\\n`` too).  A cut between the CR and
    the LF of a CRLF leaves an empty line to the next part, which ends no event."""
    return max(
        data.rfind(b"\n\n") + 2 if b"\n\n" in data else 0,
        data.rfind(b"\r\n\r\n") + 4 if b"\r\n\r\n" in data else 0,
        data.rfind(b"\r\r") + 2 if b"\r\r" in data else 0,
        data.rfind(b"\n\r") + 2 if b"\n\r" in data else 0,
    )


def _gw_tokens(body: Any) -> int | None:
    usage = body.get("usage") if isinstance(body, dict) else None
    total = usage.get("total_tokens") if isinstance(usage, dict) else None
    return total if isinstance(total, int) and not isinstance(total, bool) else None


def _gw_stream_tokens(data: bytes) -> int | None:
    import json

    found = None
    for line in data.splitlines():
        if line.startswith(b"data:") and b'"usage"' in line:
            try:
                found = _gw_tokens(json.loads(line[5:].decode("utf-8"))) or found
            except ValueError:
                pass
    return found


def _gw_shutdown(sock: Any) -> None:
    import socket

    try:
        sock.shutdown(socket.SHUT_RDWR)
    except (OSError, ValueError):
        pass


def _gw_wait_slot(gw: Gateway) -> bool:
    """Wait up to ``queue_timeout`` for a free worker (not past the start of a shutdown)."""
    deadline = time.monotonic() + gw.queue_timeout
    while not gw._draining.is_set():
        left = deadline - time.monotonic()
        if gw._slots.acquire(timeout=max(0.0, min(left, 0.1))):
            if not gw._draining.is_set():
                return True
            gw._slots.release()  # freed by the shutdown itself: this connection was never taken in
            break
        if left <= 0:
            break
    return False


def _gw_refuse_busy(sock: Any, linger: float = 1.0) -> None:
    """Answer 503 with Retry-After on a connection no worker is free for.  Then read what the
    client still sends for at most ``linger`` seconds in all, so it reads the answer (a close
    with unread data would be a reset) but cannot hold the thread; 0: only what already came."""
    import socket

    body = _gw_error_body("The gateway is busy; retry shortly.", "server_error", "overloaded")
    head = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    head += "Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    deadline = time.monotonic() + linger
    try:
        sock.settimeout(max(0.05, linger))
        sock.sendall(head.encode() + body)
        sock.shutdown(socket.SHUT_WR)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                sock.setblocking(False)
            else:
                sock.settimeout(left)
            if not sock.recv(65536):
                break
    except OSError:  # the linger is over (BlockingIOError, timeout) or the client is gone
        pass


def _gw_make_server(gw: Gateway) -> Any:
    import http.server
    import socket

    class _GatewayHandler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "openai2-gateway"
        sys_version = ""
        timeout = gw.idle_timeout

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
            pass  # the gateway writes its own one-line access log

        def setup(self) -> None:
            super().setup()
            self.gw_reader = _GatewayReader(self.connection, self.timeout)
            # the base's makefile() reader is replaced: close it, or the socket's file stays
            # open after close() until the collector finds it (at once on CPython, late on PyPy)
            self.rfile.close()
            self.rfile = io.BufferedReader(self.gw_reader)
            try:  # the head and the body (or each event) go out at once, not after a delayed ACK
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (OSError, AttributeError):
                pass

        def parse_request(self) -> bool:
            with gw._lock:  # from the request line on, shutdown() lets it finish (grace)
                gw._busy.add(self.connection)
            return bool(super().parse_request())

        def handle_one_request(self) -> None:
            self.gw_reader.arm()
            try:
                super().handle_one_request()
            except _GatewaySlowClient:  # the head came too slowly
                self.close_connection = True
                try:
                    self.wfile.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    self.wfile.flush()
                except OSError:
                    pass
            except socket.timeout:
                self.close_connection = True
            finally:
                with gw._lock:
                    gw._busy.discard(self.connection)
                if gw._draining.is_set():
                    self.close_connection = True

        def do_GET(self) -> None:
            gw._handle(self)

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = do_GET

    class _GatewayServer(http.server.ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in gw.host else socket.AF_INET
        daemon_threads = True
        request_queue_size = 1024  # the listen backlog (5 by default: a burst of clients would wait for SYN retries)

        def __init__(self) -> None:
            self.gw_conns: dict[int, Any] = {}
            super().__init__((gw.host, gw.port), _GatewayHandler)

        def process_request(self, request: Any, client_address: Any) -> None:
            # Never wait here: the accept loop serves every connection (and the shutdown).  A
            # connection beyond max_workers waits for a worker in a thread of its own.
            slot = gw._slots.acquire(blocking=False)
            if not slot:
                with gw._lock:
                    wait = gw._waiting < gw._max_waiting
                    gw._waiting += wait
                if not wait:
                    _gw_refuse_busy(request, linger=0.0)
                    self.shutdown_request(request)
                    return
            thread = threading.Thread(target=self._gw_run, args=(request, client_address, slot), daemon=True)
            with gw._lock:
                gw._threads.add(thread)
                if slot:  # a waiting connection is not one shutdown() closes as idle: it answers it
                    self.gw_conns[id(thread)] = request
            thread.start()

        def _gw_run(self, request: Any, client_address: Any, slot: bool) -> None:
            me = threading.current_thread()
            try:
                if not slot:
                    slot = _gw_wait_slot(gw)
                    with gw._lock:
                        gw._waiting -= 1
                    if not slot:
                        _gw_refuse_busy(request)
                        self.shutdown_request(request)
                        return
                    with gw._lock:
                        self.gw_conns[id(me)] = request
                self.process_request_thread(request, client_address)
            finally:
                with gw._lock:
                    gw._threads.discard(me)
                    self.gw_conns.pop(id(me), None)
                if slot:
                    gw._slots.release()

    return _GatewayServer()


def gateway_keys_from_env(name: str) -> str | AKPool:
    """The keys of a ``--fallback URL=ENVVAR``: the variable holds one key, or several separated
    by commas or whitespace (a pool).

    :raises GatewayError: the variable is unset or empty
    """
    raw = os.environ.get(name, "")
    keys = [k for k in raw.replace(",", " ").split() if k]
    if not keys:
        raise GatewayError("the environment variable %s (named by --fallback) holds no key" % name)
    return keys[0] if len(keys) == 1 else AKPool(keys)
