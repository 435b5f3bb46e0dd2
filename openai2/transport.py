"""HTTP transport: urllib.request with a keep-alive pool, proxies, TLS, redirects and cancellation.

Every request is a ``urllib.request.Request`` opened through an ``OpenerDirector`` that holds
only this module's handler.  urllib's stock handlers close the connection after every response
and turn a redirected POST into a GET, so the handler here takes ``http.client`` connections
from a per-(scheme, host, port, proxy) keep-alive pool instead, and connects them itself:
directly, through an HTTP(S) proxy (absolute-URI requests for http, a CONNECT tunnel for
https), or through a SOCKS5 proxy (see ``socks``).

Every socket, ssl, http.client and urllib exception is translated into ``APIConnectionError``,
``APITimeoutError``, ``IncompleteStreamError`` or ``RequestCancelledError`` in exactly one
function, ``_tp_translate``.  Nothing here logs or reports request headers or bodies.
"""

from __future__ import annotations

import os
import sys
import threading

from .common import TYPE_CHECKING, USER_AGENT, get_logger, header_secrets
from .errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    IncompleteStreamError,
    RequestCancelledError,
    ResponseTooLargeError,
    _excerpt,
    make_status_error,
)
from .socks import socks5_handshake

if TYPE_CHECKING:
    import http.client
    import ssl
    import urllib.request
    from typing import Any, Iterator

#: The only request headers that follow a redirect to another origin: anything else may carry
#: a credential (authorization, api-key, x-api-key, x-goog-api-key, cookie, ...).
_TP_CROSS_ORIGIN_HEADERS = frozenset(
    ("content-type", "content-length", "accept", "accept-encoding", "accept-language", "user-agent")
)
_TP_REDIRECTS = (301, 302, 307, 308)
_TP_DEFAULT_PORTS = {"http": 80, "https": 443}
_TP_PROXY_PORTS = {"http": 80, "https": 443, "socks5": 1080, "socks5h": 1080}
#: How much of a redirect's or a 303's body is read (the rest discards the connection).
_TP_SMALL_BODY = 65536
#: Lazily built classes that subclass urllib.request types (see _tp_handler_class).
_tp_lazy_classes: dict[str, Any] = {}


class Timeout:
    """Connect and read limits in seconds.

    ``connect`` bounds the TCP connection, the TLS handshake and any proxy handshake; ``read``
    is then the socket timeout, i.e. the longest silence allowed between two bytes of the
    answer, so a stream that stalls half-way is caught too.
    """

    __slots__ = ("connect", "read")

    def __init__(self, connect: float = 10.0, read: float = 600.0) -> None:
        for name, value in (("connect", connect), ("read", read)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise ValueError("Timeout %s must be a positive finite number of seconds, not %r" % (name, value))
        self.connect = float(connect)
        self.read = float(read)

    def __repr__(self) -> str:
        return "Timeout(connect=%g, read=%g)" % (self.connect, self.read)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Timeout) and (self.connect, self.read) == (other.connect, other.read)

    def __hash__(self) -> int:
        return hash((self.connect, self.read))


def coerce_timeout(value: object = None) -> Timeout:
    """Turn a user's timeout into a ``Timeout``.

    :param value: None (defaults: connect 10 s, read 600 s), a number (both limits), a
        ``(connect, read)`` pair, or a ``Timeout``
    :returns: a ``Timeout``
    :raises ValueError: for negative, zero or infinite values
    :raises TypeError: for anything else
    """
    if value is None:
        return Timeout()
    if isinstance(value, Timeout):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Timeout(value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return Timeout(value[0], value[1])
    raise TypeError("timeout must be None, a number, a (connect, read) pair or a Timeout, not %r" % (value,))


class CancelScope:
    """A thread-safe cancel switch for one request (or a few in a row: retries).

    ``cancel()`` sets the flag and shuts down the socket the request is using, so a thread
    blocked in ``recv`` returns at once; the request (or the response being read) then raises
    ``RequestCancelledError``.  The owning thread closes the socket: closing it from here could
    let the SSL object in the other thread read a file descriptor number already reused.
    """

    def __init__(self) -> None:
        self._tp_lock = threading.Lock()
        self._tp_event = threading.Event()
        self._tp_conns: list[_TPConn] = []

    @property
    def cancelled(self) -> bool:
        """True once ``cancel()`` was called."""
        return self._tp_event.is_set()

    def cancel(self) -> None:
        """Cancel: set the flag, wake ``wait()`` and shut down any socket in use."""
        with self._tp_lock:
            self._tp_event.set()
            conns = list(self._tp_conns)
        for conn in conns:
            conn.abort()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds`` (retry backoff), waking early on cancel.

        :returns: True if the scope was cancelled
        """
        return self._tp_event.wait(max(0.0, seconds))

    def _tp_attach(self, conn: _TPConn) -> None:
        with self._tp_lock:
            if self._tp_event.is_set():
                raise RequestCancelledError()
            self._tp_conns.append(conn)

    def _tp_detach(self, conn: _TPConn) -> None:
        with self._tp_lock:
            try:
                self._tp_conns.remove(conn)
            except ValueError:  # noqa: S110 - best effort, nothing to report
                pass


class _TPProxy:
    """A parsed proxy URL; ``display`` masks the password, ``key`` tells pools apart."""

    __slots__ = ("scheme", "host", "port", "username", "password", "display", "auth", "key")

    def __init__(self, url: str) -> None:
        from urllib.parse import unquote, urlsplit

        if "://" not in url:
            url = "http://" + url
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _TP_PROXY_PORTS:
            raise ValueError(
                "Unsupported proxy scheme %r: use http://, https://, socks5:// or socks5h://" % parts.scheme
            )
        try:
            port = parts.port
        except ValueError:
            raise ValueError("Invalid port in the proxy URL %s" % _tp_mask_url(url)) from None
        if not parts.hostname:
            raise ValueError("No host in the proxy URL %s" % _tp_mask_url(url))
        self.scheme = scheme
        self.host = parts.hostname
        self.port = port or _TP_PROXY_PORTS[scheme]
        self.username = unquote(parts.username) if parts.username is not None else None
        self.password = unquote(parts.password or "") if parts.username is not None else None
        shown = "[%s]" % self.host if ":" in self.host else self.host
        user = ""
        if self.username is not None:
            user = parts.username + (":****" if parts.password else "") + "@"  # type: ignore[operator]
        self.display = "%s://%s%s:%d" % (scheme, user, shown, self.port)
        self.auth = None
        if self.username is not None and scheme in ("http", "https"):
            import base64

            token = ("%s:%s" % (self.username, self.password)).encode("utf-8")
            self.auth = "Basic " + base64.b64encode(token).decode("ascii")
        self.key = (scheme, self.host, self.port, self.username, self.password)

    def __repr__(self) -> str:
        return "<proxy %s>" % self.display


def _tp_final(err: APIConnectionError) -> APIConnectionError:
    """Mark ``err`` as one that retrying the same request cannot fix (``retryable = False``)."""
    err.retryable = False
    return err


def _tp_mask_url(url: str) -> str:
    """A URL with any password replaced by ****, for messages."""
    scheme, sep, rest = url.partition("://")
    auth, at, hostpart = rest.partition("@")
    if not at or "/" in auth:
        return url
    user, colon, _ = auth.partition(":")
    return scheme + sep + user + (":****" if colon else "") + "@" + hostpart


def _tp_log_url(url: str) -> str:
    """A URL safe to log and show: no user info, no query string, no fragment.

    Relative URLs too (a redirect's ``Location: /v1/new?key=...`` or ``//user:pw@host/x``).
    """
    url = url.split("#", 1)[0].split("?", 1)[0]
    scheme, sep, rest = url.partition("://")
    if not sep:
        if not url.startswith("//"):
            return url
        scheme, sep, rest = "", "//", url[2:]
    netloc, slash, path = rest.partition("/")
    return scheme + sep + netloc.rpartition("@")[2] + slash + path


def _tp_split_hostport(netloc: str, default_port: int) -> tuple[str, int]:
    """``host[:port]`` (IPv6 in brackets, user info ignored) -> (host, port)."""
    netloc = netloc.rpartition("@")[2]
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise ValueError("Invalid IPv6 address in URL: %r" % netloc)
        host, rest = netloc[1:end], netloc[end + 1 :]
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = netloc.partition(":")
    if port:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("Invalid port in URL: %r" % netloc)
        return host.lower(), int(port)
    return host.lower(), default_port


def _tp_origin(url: str) -> tuple[str, str, int]:
    scheme = url.partition(":")[0].lower()
    netloc = url.partition("://")[2].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    host, port = _tp_split_hostport(netloc, _TP_DEFAULT_PORTS.get(scheme, 0))
    return scheme, host, port


class _TPState:
    """Per-request bookkeeping carried on the urllib Request (read by the error translation)."""

    __slots__ = ("timeout", "cancel", "where", "host", "phase")

    def __init__(self, timeout: Timeout, cancel: CancelScope | None) -> None:
        self.timeout = timeout
        self.cancel = cancel
        self.where = ""
        self.host = ""
        self.phase = "connect"


class _TPConn:
    """One pooled ``http.client.HTTPConnection`` plus what the pool and cancellation need."""

    __slots__ = ("http", "key", "raw", "aborted", "where")

    def __init__(self, http_conn: http.client.HTTPConnection, key: tuple[Any, ...], where: str) -> None:
        self.http = http_conn
        self.key = key
        self.raw: Any = None  # the outermost real socket, for abort()
        self.aborted = False
        self.where = where

    def abort(self) -> None:
        """Shut the socket down (from any thread): a blocked recv returns at once."""
        self.aborted = True
        raw = self.raw
        if raw is not None:
            import socket

            try:
                # socket.socket's own shutdown: SSLSocket.shutdown would drop its SSL object
                # under the feet of the thread reading from it.
                socket.socket.shutdown(raw, socket.SHUT_RDWR)
            except (OSError, ValueError, TypeError):  # noqa: S110 - best effort, nothing to report
                pass

    def close(self) -> None:
        try:
            self.http.close()
        except Exception:  # noqa: S110, BLE001 - closing must never raise
            pass
        raw = self.raw
        if raw is not None:
            try:
                raw.close()
            except Exception:  # noqa: S110, BLE001
                pass

    def dropped(self) -> bool:
        """True if the idle connection was closed by the server (or has unexpected bytes)."""
        sock = self.http.sock
        if sock is None or self.aborted:
            return True
        try:
            import select

            if hasattr(select, "poll"):
                poller = select.poll()
                poller.register(sock.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
                return bool(poller.poll(0))
            return bool(select.select([sock], [], [], 0)[0])
        except (OSError, ValueError):
            return True


class _TPPool:
    """Idle keep-alive connections per (scheme, host, port, proxy); thread-safe, LIFO."""

    def __init__(self, per_origin: int) -> None:
        self._tp_lock = threading.Lock()
        self._tp_idle: dict[tuple[Any, ...], list[_TPConn]] = {}
        self._tp_per_origin = per_origin

    def get(self, key: tuple[Any, ...]) -> _TPConn | None:
        while True:
            with self._tp_lock:
                idle = self._tp_idle.get(key)
                if not idle:
                    return None
                conn = idle.pop()
            if not conn.dropped():
                return conn
            conn.close()

    def put(self, conn: _TPConn) -> None:
        with self._tp_lock:
            idle = self._tp_idle.setdefault(conn.key, [])
            if len(idle) < self._tp_per_origin:
                idle.append(conn)
                return
        conn.close()

    def idle_count(self) -> int:
        with self._tp_lock:
            return sum(len(v) for v in self._tp_idle.values())

    def close_all(self) -> None:
        with self._tp_lock:
            conns = [c for idle in self._tp_idle.values() for c in idle]
            self._tp_idle.clear()
        for conn in conns:
            conn.close()


class _TPTLSInTLS:
    """A TLS session carried inside another TLS socket (https origin through an https proxy).

    ``ssl.SSLSocket`` cannot wrap an SSLSocket, so this drives an ``ssl.SSLObject`` over memory
    BIOs and offers the few socket methods http.client uses.
    """

    def __init__(self, outer: ssl.SSLSocket, ctx: ssl.SSLContext, server_hostname: str) -> None:
        import ssl

        self._tp_outer = outer
        self._tp_in = ssl.MemoryBIO()
        self._tp_out = ssl.MemoryBIO()
        self._tp_obj = ctx.wrap_bio(self._tp_in, self._tp_out, server_hostname=server_hostname)
        self._tp_run(self._tp_obj.do_handshake)

    def _tp_run(self, fn: Any, *args: Any) -> Any:
        import ssl

        while True:
            try:
                result = fn(*args)
            except ssl.SSLWantReadError:
                self._tp_flush()
                data = self._tp_outer.recv(65536)
                if data:
                    self._tp_in.write(data)
                else:
                    self._tp_in.write_eof()
                continue
            except ssl.SSLWantWriteError:
                self._tp_flush()
                continue
            self._tp_flush()
            return result

    def _tp_flush(self) -> None:
        data = self._tp_out.read()
        if data:
            self._tp_outer.sendall(data)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        import ssl

        try:
            return int(self._tp_run(self._tp_obj.read, nbytes or len(buffer), buffer))
        except ssl.SSLZeroReturnError:
            return 0

    def recv(self, n: int) -> bytes:
        buf = bytearray(n)
        got = self.recv_into(buf)
        return bytes(buf[:got])

    def send(self, data: Any) -> int:
        return int(self._tp_run(self._tp_obj.write, data))

    def sendall(self, data: Any) -> None:
        view = memoryview(data)
        while len(view):
            view = view[self.send(view) :]

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> Any:
        import io
        import socket

        return io.BufferedReader(socket.SocketIO(self, "rb"))  # type: ignore[arg-type]

    def _decref_socketios(self) -> None:
        pass

    def settimeout(self, value: float | None) -> None:
        self._tp_outer.settimeout(value)

    def gettimeout(self) -> float | None:
        return self._tp_outer.gettimeout()

    def fileno(self) -> int:
        return self._tp_outer.fileno()

    def pending(self) -> int:
        return self._tp_obj.pending()

    def getpeercert(self, binary_form: bool = False) -> Any:
        return self._tp_obj.getpeercert(binary_form)

    def shutdown(self, how: int) -> None:
        self._tp_outer.shutdown(how)

    def close(self) -> None:
        self._tp_outer.close()


def _tp_handler_class() -> Any:
    """The urllib handler class, built on first use (urllib.request takes ~10 ms to import)."""
    cls = _tp_lazy_classes.get("handler")
    if cls is None:
        import urllib.request

        class _TPHandler(urllib.request.BaseHandler):
            """Opens http/https Requests with pooled keep-alive connections of one transport."""

            handler_order = 100

            def __init__(self, transport: HTTPTransport) -> None:
                self.tp_transport = transport

            def http_open(self, req: urllib.request.Request) -> HTTPResponse:
                return self.tp_transport._tp_send(req)

            https_open = http_open

        cls = _tp_lazy_classes["handler"] = _TPHandler
    return cls


#: Largest request body sent in the same write as the headers (see _tp_connection_class).
_TP_COALESCE_BODY = 262144


def _tp_connection_class() -> Any:
    """``http.client.HTTPConnection`` that sends the headers and a bytes body in one write.

    ``http.client`` (3.8 to 3.13 alike) writes the header block and the body with two
    ``sendall`` calls; with ``TCP_NODELAY`` each becomes its own packet and wakes the server
    twice per request.  Here :meth:`endheaders` keeps a bytes body of up to
    ``_TP_COALESCE_BODY`` bytes back and :meth:`send` appends it to the header block, which is
    the only thing ``endheaders`` sends then.  Only public ``http.client`` methods are overridden.

    Its responses (see ``_tp_response_class``) record in ``tp_heard[0]`` whether any byte of
    the status line or headers arrived, so that a reused connection failing in
    ``getresponse()`` is sent again only when the server said nothing at all.
    """
    cls = _tp_lazy_classes.get("connection")
    if cls is None:
        import functools
        import http.client

        response_class = _tp_response_class()

        class _TPHTTPConnection(http.client.HTTPConnection):
            _tp_body: bytes | None = None

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self.tp_heard = [False]
                # An instance attribute: http.client calls self.response_class(sock, method=...).
                self.response_class = functools.partial(response_class, tp_heard=self.tp_heard)  # type: ignore[assignment]

            def endheaders(self, message_body: Any = None, *, encode_chunked: bool = False) -> None:
                if message_body.__class__ is bytes and not encode_chunked and len(message_body) <= _TP_COALESCE_BODY:
                    self._tp_body = message_body
                    try:
                        super().endheaders()
                    finally:
                        self._tp_body = None
                else:
                    super().endheaders(message_body, encode_chunked=encode_chunked)

            def send(self, data: Any) -> None:
                body = self._tp_body
                if body is not None:
                    self._tp_body = None
                    data = data + body
                super().send(data)

        cls = _tp_lazy_classes["connection"] = _TPHTTPConnection
    return cls


class _TPRecordingReader:
    """Wraps a response's ``fp`` while the status line and headers are read: notes any byte."""

    def __init__(self, fp: Any, heard: list[bool]) -> None:
        self._tp_fp = fp
        self._tp_heard = heard

    def _tp_seen(self, data: Any) -> Any:
        if data:
            self._tp_heard[0] = True
        return data

    def readline(self, *args: Any) -> Any:
        return self._tp_seen(self._tp_fp.readline(*args))

    def read(self, *args: Any) -> Any:
        return self._tp_seen(self._tp_fp.read(*args))

    def read1(self, *args: Any) -> Any:
        return self._tp_seen(self._tp_fp.read1(*args))

    def peek(self, *args: Any) -> Any:
        return self._tp_seen(self._tp_fp.peek(*args))

    def readinto(self, buffer: Any) -> Any:
        n = self._tp_fp.readinto(buffer)
        if n:
            self._tp_heard[0] = True
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tp_fp, name)


#: Informational (1xx) answers skipped before the final one; more is taken for a broken server
#: (each may come just within the read timeout, so without a bound the request could never end).
_TP_MAX_INTERIM = 100


def _tp_response_class() -> Any:
    """``http.client.HTTPResponse`` whose ``begin()`` skips informational answers and notes
    whether any byte of the answer came.

    A server may send any number of 1xx answers before the final one (RFC 9110 section 15.2):
    ``103 Early Hints``, ``102 Processing``, an unsolicited ``100 Continue``.  ``http.client``
    (3.8 to 3.13 alike) skips only 100 and would return a 103 as the answer, leaving the real one
    unread on the connection; here every 1xx but ``101 Switching Protocols`` is skipped.

    ``fp`` is wrapped only during ``begin()`` (status line and headers); the body is read from
    the buffered file itself, at full speed.
    """
    cls = _tp_lazy_classes.get("response")
    if cls is None:
        import http.client

        class _TPHTTPResponse(http.client.HTTPResponse):
            def __init__(self, sock: Any, *args: Any, tp_heard: list[bool], **kwargs: Any) -> None:
                super().__init__(sock, *args, **kwargs)
                self._tp_heard = tp_heard

            def begin(self) -> None:
                real = self.fp
                wrapper = _TPRecordingReader(real, self._tp_heard)
                self.fp = wrapper  # type: ignore[assignment]
                try:
                    for _ in range(_TP_MAX_INTERIM + 1):
                        super().begin()
                        if not 100 <= self.status < 200 or self.status == 101:
                            return
                        # Its headers are read; begin() reads the next status line once
                        # ``headers`` is None again (it sets every other field anew).
                        self.headers = self.msg = None  # type: ignore[assignment]
                    raise http.client.HTTPException(
                        "more than %d informational (1xx) responses before the answer" % _TP_MAX_INTERIM
                    )
                finally:
                    current: Any = self.fp  # None if begin() closed it (through the wrapper)
                    if current is wrapper:
                        self.fp = real

        cls = _tp_lazy_classes["response"] = _TPHTTPResponse
    return cls


class HTTPTransport:
    """Sends requests through urllib.request with keep-alive, proxies, TLS and cancellation.

    :param proxy: ``http://``, ``https://``, ``socks5://`` or ``socks5h://`` URL (optional
        ``user:password@``) used for every request; None = the environment (if ``trust_env``)
    :param verify: verify TLS certificates (default True); False disables it (logged once)
    :param ca_file: a PEM file (or a directory of hashed certificates) to trust instead of
        the system store, for corporate proxies and private CAs
    :param trust_env: honour HTTP_PROXY / HTTPS_PROXY / ALL_PROXY / NO_PROXY (read once, here)
    :param max_idle_per_origin: idle keep-alive connections kept per origin and proxy
    :raises ValueError: for an unsupported proxy URL or a missing ``ca_file``
    """

    def __init__(
        self,
        *,
        proxy: str | None = None,
        verify: bool = True,
        ca_file: str | None = None,
        trust_env: bool = True,
        max_idle_per_origin: int = 10,
    ) -> None:
        self.verify = bool(verify)
        self.ca_file = os.fspath(ca_file) if ca_file is not None else None
        if self.ca_file is not None and self.verify and not os.path.exists(self.ca_file):
            raise ValueError("ca_file not found: %s" % self.ca_file)
        self._tp_proxy = _TPProxy(proxy) if proxy else None
        self._tp_env_raw: dict[str, str] = {}
        self._tp_env: dict[str, _TPProxy | str] = {}
        if self._tp_proxy is None and trust_env:
            import urllib.request

            self._tp_env_raw = dict(urllib.request.getproxies())
            for scheme in ("http", "https", "all"):
                value = self._tp_env_raw.get(scheme)
                if value:
                    try:
                        self._tp_env[scheme] = _TPProxy(value)
                    except ValueError as exc:
                        self._tp_env[scheme] = "%s_PROXY=%s: %s" % (scheme.upper(), _tp_mask_url(value), exc)
        self._tp_bypass: dict[str, bool] = {}
        self._tp_pool = _TPPool(max_idle_per_origin)
        self._tp_ctx: ssl.SSLContext | None = None
        self._tp_lock = threading.Lock()
        self._tp_opener: urllib.request.OpenerDirector | None = None
        if not self.verify:
            get_logger().warning(
                "TLS certificate verification is disabled (verify=False): anyone on the network "
                "path can read and alter the traffic, including the API key."
            )

    def __repr__(self) -> str:
        proxy = self._tp_proxy.display if self._tp_proxy else ("environment" if self._tp_env else None)
        return "<HTTPTransport proxy=%s verify=%s ca_file=%s>" % (proxy, self.verify, self.ca_file)

    # -- public API ---------------------------------------------------------------------

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
        """Send one request (following redirects) and return the response once its headers arrived.

        :param headers: request headers (never logged nor put in messages)
        :param body: the request body, re-sent unchanged on 301/302/307/308 redirects
        :param timeout: a ``Timeout`` (anything ``coerce_timeout`` takes is accepted too)
        :param cancel: a ``CancelScope`` another thread may cancel
        :param max_redirects: redirects followed before giving up
        :returns: an ``HTTPResponse``; read it, iterate it or close it
        :raises APIConnectionError: (or APITimeoutError / RequestCancelledError) on any network
            failure; ``APIStatusError`` for a 303 or when redirects run out
        """
        if type(timeout) is not Timeout:
            timeout = coerce_timeout(timeout)
        opener = self._tp_opener or self._tp_make_opener()
        import urllib.request

        hops = 0
        secrets = header_secrets(headers)  # masked in the errors built here (a server may echo them)
        while True:
            if cancel is not None and cancel.cancelled:
                raise RequestCancelledError()
            scheme = url.partition(":")[0].lower()
            if scheme not in _TP_DEFAULT_PORTS or "://" not in url:
                raise _tp_final(
                    APIConnectionError("Unsupported URL %r: only http:// and https:// URLs work" % _tp_log_url(url))
                )
            try:
                req = urllib.request.Request(url, data=body, headers=headers, method=method)
            except ValueError as exc:
                raise _tp_final(APIConnectionError("Invalid URL %r: %s" % (_tp_log_url(url), exc))) from None
            state = req.tp_state = _TPState(timeout, cancel)  # type: ignore[attr-defined]
            failure: APIConnectionError | None = None
            try:
                resp: HTTPResponse = opener.open(req)
            except APIError:
                raise
            except Exception as exc:  # noqa: BLE001 - translated in one place
                failure = _tp_translate(exc, state)
            if failure is not None:  # raised outside the except: no implicit __context__
                raise failure from failure.cause
            log = get_logger()
            if log.isEnabledFor(10):
                log.debug("%s %s -> %d", method, _tp_log_url(url), resp.status)
            status = resp.status
            if status in _TP_REDIRECTS and resp.headers.get("location"):
                new_url = self._tp_redirect_url(url, resp)
                if hops >= max_redirects:
                    too_many = make_status_error(status, resp.headers, b"", secrets=secrets)
                    too_many.hint = "Too many redirects: gave up after %d (the next was to %s)." % (
                        hops,
                        _tp_log_url(new_url),
                    )
                    raise too_many
                if _tp_origin(new_url) != _tp_origin(url):
                    headers = {k: v for k, v in headers.items() if k.lower() in _TP_CROSS_ORIGIN_HEADERS}
                url = new_url
                hops += 1
                continue
            if status == 303:
                raw = self._tp_small_body(resp)
                err303 = make_status_error(303, resp.headers, raw, secrets=secrets)
                err303.hint = (
                    "The server answered 303 See Other (Location: %s), which asks for a GET: "
                    "openai2 does not turn a %s into a GET. Check the base URL."
                    % (_tp_log_url(resp.headers.get("location") or "?"), method)
                )
                raise err303
            return resp

    def close(self) -> None:
        """Close every idle connection (the transport stays usable)."""
        self._tp_pool.close_all()

    def __enter__(self) -> HTTPTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------

    def _tp_make_opener(self) -> urllib.request.OpenerDirector:
        import urllib.request

        with self._tp_lock:
            if self._tp_opener is None:
                opener = urllib.request.OpenerDirector()
                opener.add_handler(_tp_handler_class()(self))
                self._tp_opener = opener
            return self._tp_opener

    def _tp_small_body(self, resp: HTTPResponse) -> bytes:
        try:
            return resp.read(limit=_TP_SMALL_BODY)
        except APIError:
            return b""

    def _tp_redirect_url(self, url: str, resp: HTTPResponse) -> str:
        """The absolute URL a redirect points to.

        :raises APIConnectionError: (not retryable) for a ``Location`` that is no valid URL
            (a port out of range, an unclosed IPv6 bracket, ...)
        """
        from urllib.parse import urljoin, urlsplit

        self._tp_small_body(resp)
        location = (resp.headers.get("location") or "").strip()
        try:
            new_url = urljoin(url, location)
            urlsplit(new_url).port  # noqa: B018 - validates the port and the IPv6 brackets
            _tp_origin(new_url)
        except ValueError:
            # No chained cause: the exception text quotes the location, which may hold secrets;
            # the message shows it without query, fragment or user info.
            shown = location.split("#", 1)[0].split("?", 1)[0]
            scheme, sep, rest = shown.rpartition("://")
            shown = scheme + sep + rest.rpartition("@")[2]
            raise _tp_final(
                APIConnectionError(
                    "Redirect to an invalid URL from %s (%d, Location: %r): check the base URL."
                    % (_tp_log_url(url), resp.status, shown[:200])
                )
            ) from None
        get_logger().debug("redirect %d to %s", resp.status, _tp_log_url(new_url))
        return new_url

    def _tp_ssl_context(self) -> ssl.SSLContext:
        ctx = self._tp_ctx
        if ctx is not None:
            return ctx
        with self._tp_lock:
            if self._tp_ctx is None:
                import ssl

                if not self.verify:
                    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                elif self.ca_file and os.path.isdir(self.ca_file):
                    ctx = ssl.create_default_context(capath=self.ca_file)
                elif self.ca_file:
                    ctx = ssl.create_default_context(cafile=self.ca_file)
                else:
                    ctx = ssl.create_default_context()
                try:
                    ctx.set_alpn_protocols(["http/1.1"])
                except NotImplementedError:  # noqa: S110 - pragma: no cover - very old OpenSSL
                    pass
                self._tp_ctx = ctx
            return self._tp_ctx

    def _tp_proxy_for(self, scheme: str, host: str) -> _TPProxy | None:
        if self._tp_proxy is not None:
            return self._tp_proxy
        if not self._tp_env:
            return None
        proxy = self._tp_env.get(scheme) or self._tp_env.get("all")
        if proxy is None:
            return None
        bypass = self._tp_bypass.get(host)
        if bypass is None:
            import urllib.request

            if "no" in self._tp_env_raw or sys.platform not in ("darwin", "win32"):
                bypass = bool(urllib.request.proxy_bypass_environment(host, self._tp_env_raw))  # type: ignore[attr-defined]
            else:  # macOS / Windows system proxy settings
                bypass = bool(urllib.request.proxy_bypass(host))
            self._tp_bypass[host] = bypass
        if bypass:
            return None
        if isinstance(proxy, str):
            raise _tp_final(APIConnectionError("Unusable proxy from the environment: " + proxy))
        return proxy

    def _tp_send(self, req: urllib.request.Request) -> HTTPResponse:
        """Body of the urllib handler's http_open/https_open: pool, connect, send, get headers."""
        state: _TPState = req.tp_state  # type: ignore[attr-defined]
        cancel = state.cancel
        scheme = req.type
        host, port = _tp_split_hostport(req.host, _TP_DEFAULT_PORTS[scheme])
        state.host = host
        proxy = self._tp_proxy_for(scheme, host)
        key = (scheme, host, port, proxy.key if proxy is not None else None)
        headers = dict(req.header_items())
        if "User-agent" not in headers:
            headers["User-Agent"] = USER_AGENT
        shown = "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)
        if proxy is not None and proxy.scheme in ("http", "https") and scheme == "http":
            target = "http://" + req.host.rpartition("@")[2] + req.selector  # absolute-URI form
            if proxy.auth:
                headers["Proxy-Authorization"] = proxy.auth
        else:
            target = req.selector
        where = shown if proxy is None else "%s (through proxy %s)" % (shown, proxy.display)
        method = req.get_method()
        body = req.data
        for attempt in (0, 1):
            conn = self._tp_pool.get(key) if attempt == 0 else None
            reused = conn is not None
            if conn is None:
                conn = self._tp_connect(scheme, host, port, proxy, key, where, state)
            else:
                if cancel is not None:
                    try:
                        cancel._tp_attach(conn)
                    except BaseException:  # cancelled since pool.get(): the connection is ours to close
                        conn.close()
                        raise
                conn.http.sock.settimeout(state.timeout.read)
            state.where = where
            state.phase = "response"
            heard: list[bool] = conn.http.tp_heard  # type: ignore[attr-defined]
            heard[0] = False
            cut_short: BaseException | None = None
            try:
                try:
                    conn.http.request(method, target, body, headers)
                except Exception as exc:  # noqa: BLE001
                    if not _tp_write_refused(exc):
                        raise
                    # The server stopped reading the request.  It may have answered first (a
                    # 413 as soon as it saw the headers, say): that answer is in the socket's
                    # receive buffer, and it is what the caller must see.
                    cut_short = exc
                try:
                    raw = conn.http.getresponse()
                except Exception:
                    if cut_short is None:
                        raise
                    raise cut_short from None
                if cut_short is not None:
                    raw.will_close = True  # half a request went out: the connection is done
                    get_logger().debug("%s answered %d before the request was sent whole", where, raw.status)
            except Exception as exc:  # noqa: BLE001
                if cancel is not None:
                    cancel._tp_detach(conn)
                conn.close()
                if reused and exc is cut_short and not heard[0] and not (cancel is not None and cancel.cancelled):
                    # Writing to a pooled connection failed and not a byte came back: the server
                    # had closed it while idle and never saw this request whole, so it goes again.
                    # Once the request is written, a lost answer is the caller's to retry.
                    get_logger().debug("kept-alive connection to %s was closed by the server; reconnecting", where)
                    continue
                raise
            if proxy is not None and target[0] != "/" and raw.status in (403, 407):
                refusal = _tp_proxy_refusal(raw, proxy, target, header_secrets(headers))
                if refusal is not None:
                    if cancel is not None:
                        cancel._tp_detach(conn)
                    conn.close()
                    raise refusal
            return HTTPResponse(self, conn, raw, req.full_url, cancel)
        raise AssertionError("unreachable")  # pragma: no cover

    def _tp_connect(
        self,
        scheme: str,
        host: str,
        port: int,
        proxy: _TPProxy | None,
        key: tuple[Any, ...],
        where: str,
        state: _TPState,
    ) -> _TPConn:
        """A new connection to the origin, directly or through the proxy, TLS included."""
        cancel = state.cancel
        ct = state.timeout.connect
        state.phase = "connect"
        http_conn: http.client.HTTPConnection = _tp_connection_class()(host, port, timeout=ct)
        http_conn.auto_open = 0  # never let http.client reconnect around the proxy
        conn = _TPConn(http_conn, key, where)
        if cancel is not None:
            cancel._tp_attach(conn)
        try:
            if proxy is None:
                state.where, state.host = ("[%s]:%d" if ":" in host else "%s:%d") % (host, port), host
                sock = self._tp_tcp(host, port, ct, conn, cancel)
                if scheme == "https":
                    sock = self._tp_tls(sock, host, conn, cancel)
            else:
                state.where, state.host = "proxy " + proxy.display, proxy.host
                sock = self._tp_tcp(proxy.host, proxy.port, ct, conn, cancel)
                if proxy.scheme == "https":
                    sock = self._tp_tls(sock, proxy.host, conn, cancel)
                if proxy.scheme in ("socks5", "socks5h"):
                    try:
                        socks5_handshake(
                            sock,
                            host,
                            port,
                            remote_dns=proxy.scheme == "socks5h",
                            username=proxy.username,
                            password=proxy.password,
                            proxy_name=proxy.display,
                        )
                    except APIConnectionError as err:
                        # The proxy's authentication step failed (credentials rejected, missing
                        # or unacceptable): the same request cannot fare better.
                        text = str(err).replace(proxy.display, "")
                        if "password" in text or "authentication methods" in text:
                            _tp_final(err)
                        raise
                elif scheme == "https":
                    _tp_tunnel(sock, host, port, proxy)
                if scheme == "https":
                    state.where, state.host = where, host
                    sock = self._tp_tls(sock, host, conn, cancel)
            sock.settimeout(state.timeout.read)
            http_conn.sock = sock
        except BaseException:
            if cancel is not None:
                cancel._tp_detach(conn)
            conn.close()
            raise
        return conn

    def _tp_tcp(self, host: str, port: int, ct: float, conn: _TPConn, cancel: CancelScope | None) -> Any:
        import socket

        error: Exception | None = None
        for family, kind, proto, _, addr in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
            sock = socket.socket(family, kind, proto)
            conn.raw = sock
            try:
                if cancel is not None and cancel.cancelled:
                    raise RequestCancelledError()
                if cancel is None:
                    sock.settimeout(ct)
                    sock.connect(addr)
                else:
                    _tp_cancellable_connect(sock, addr, ct, cancel)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return sock
            except OSError as exc:
                error = exc
                sock.close()
        raise error or OSError("getaddrinfo returned no address for %s" % host)

    def _tp_tls(self, sock: Any, hostname: str, conn: _TPConn, cancel: CancelScope | None) -> Any:
        ctx = self._tp_ssl_context()
        if cancel is not None and cancel.cancelled:
            raise RequestCancelledError()
        import ssl

        if isinstance(sock, ssl.SSLSocket):  # https origin inside a TLS connection to the proxy
            return _TPTLSInTLS(sock, ctx, hostname)
        tls = ctx.wrap_socket(sock, server_hostname=hostname, do_handshake_on_connect=False)
        conn.raw = tls  # before the handshake, so cancel() can cut it short
        if cancel is not None and cancel.cancelled:
            raise RequestCancelledError()
        tls.do_handshake()
        return tls


def _tp_cancellable_connect(sock: Any, addr: Any, timeout: float, cancel: CancelScope) -> None:
    """Connect so that ``cancel()`` always interrupts it.

    A blocking ``connect()`` can only be woken by ``shutdown()`` once it is under way; a cancel
    that lands between the last check and the call would be missed and the caller would wait the
    whole connect timeout.  So the connect is started without blocking, the flag is checked once
    it is under way, and the wait for the handshake is one that ``shutdown()`` does wake.
    """
    import errno
    import socket

    sock.setblocking(False)
    err = sock.connect_ex(addr)
    in_progress = (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN, getattr(errno, "WSAEWOULDBLOCK", -1))
    if err in in_progress:
        if cancel.cancelled:
            raise RequestCancelledError()
        import select

        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLOUT | select.POLLERR | select.POLLHUP)
            ready = bool(poller.poll(max(0.0, timeout) * 1000.0))
        else:  # pragma: no cover - Windows
            _, writable, failed = select.select([], [sock], [sock], max(0.0, timeout))
            ready = bool(writable or failed)
        if cancel.cancelled:
            raise RequestCancelledError()
        if not ready:
            raise socket.timeout("timed out")
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err not in (0, errno.EISCONN):
        raise OSError(err, os.strerror(err))
    sock.getpeername()  # ENOTCONN if the handshake did not complete
    sock.settimeout(timeout)


def _tp_tunnel(sock: Any, host: str, port: int, proxy: _TPProxy) -> None:
    """Open a CONNECT tunnel through an HTTP(S) proxy; raises APIConnectionError on refusal."""
    try:
        name = host.encode("idna").decode("ascii")
    except UnicodeError:
        name = host
    hostport = ("[%s]:%d" if ":" in name else "%s:%d") % (name, port)
    lines = ["CONNECT %s HTTP/1.1" % hostport, "Host: %s" % hostport, "User-Agent: " + USER_AGENT]
    if proxy.auth:
        lines.append("Proxy-Authorization: " + proxy.auth)
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(4096)
        if not data:
            raise APIConnectionError(
                "Proxy %s closed the connection instead of answering CONNECT %s" % (proxy.display, hostport)
            )
        buf += data
        if len(buf) > _TP_SMALL_BODY:
            raise APIConnectionError("Proxy %s sent an oversized answer to CONNECT" % proxy.display)
    status_line = buf.split(b"\r\n", 1)[0].decode("latin-1", "replace")
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise APIConnectionError("Proxy %s gave an invalid answer to CONNECT: %r" % (proxy.display, status_line[:100]))
    code = int(parts[1])
    if code // 100 != 2:
        hint = ""
        if code == 407:
            hint = " (proxy authentication required: check the user:password in the proxy URL)"
        err = APIConnectionError(
            "Proxy %s refused to open a tunnel to %s: %d %s%s"
            % (proxy.display, hostport, code, parts[2] if len(parts) > 2 else "", hint)
        )
        if code in (403, 407):  # the proxy's policy or credentials: asking again cannot help
            _tp_final(err)
        raise err


def _tp_proxy_refusal(
    raw: http.client.HTTPResponse, proxy: _TPProxy, target: str, secrets: list[str]
) -> APIConnectionError | None:
    """For plain http sent through an HTTP proxy (absolute-URI form): the proxy's own refusal.

    A 407 always comes from the proxy.  A 403 is taken for the proxy's when it is not JSON (APIs
    answer JSON) and carries no ``Via`` header (proxies add one to what they forward, not to
    their own error pages, e.g. tinyproxy's "Access denied").  Returns None for the origin's 403.
    """
    if raw.status == 403:
        if "json" in (raw.getheader("content-type") or "").lower() or raw.getheader("via"):
            return None
    try:
        page = raw.read(4096).decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - the excerpt is a courtesy
        page = ""
    excerpt = _excerpt(page, 200, secrets)  # the page may quote the request's credentials
    if raw.status == 407:
        what = "requires authentication (407 Proxy Authentication Required): check the user:password in the proxy URL"
    else:
        what = "refused the request (403 %s)" % (raw.reason or "Forbidden")
    return _tp_final(
        APIConnectionError(
            "Proxy %s %s for %s%s" % (proxy.display, what, _tp_log_url(target), (": " + excerpt) if excerpt else ".")
        )
    )


def _tp_write_refused(exc: BaseException) -> bool:
    """True when writing the request failed because the server closed or reset the connection.

    The request cannot have reached the server whole.  Whether it answered anyway is found out
    by reading; only a pooled connection that gives back nothing is sent the request again.
    """
    if isinstance(exc, (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)):
        return True
    ssl = sys.modules.get("ssl")
    return ssl is not None and isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError))


def _tp_clear_tls_errors() -> None:
    """Empty OpenSSL's per-thread error queue after a TLS failure, on PyPy.

    PyPy's ``ssl`` (cffi) leaves a failed handshake's error in the queue and reports it again on
    a later TLS read in the same thread, so a good request after a failed one raised
    "certificate verify failed: ok". CPython clears the queue itself. ``_pypy_openssl`` ships
    with PyPy (its standard library's OpenSSL binding); it is looked up by name because it does
    not exist on CPython.
    """
    if sys.implementation.name != "pypy":
        return
    try:
        import importlib

        importlib.import_module("_pypy_openssl").lib.ERR_clear_error()
    except Exception:  # noqa: S110, BLE001 - another PyPy layout: nothing to clear this way
        pass


_TP_BAD_HEADER = (
    "A request header contains characters HTTP cannot send (a line break, a non-Latin-1 character, "
    "say); check the API key and default_headers."
)


def _tp_translate(exc: BaseException, state: _TPState) -> APIConnectionError:
    """The one place where socket/ssl/http.client/urllib exceptions become openai2 errors.

    :param state: where the failure happened (``where``/``host``), in which phase
        (``connect``, ``response``, ``body``), with which timeout and cancel scope
    """
    # First, before anything may chain ``exc``: these quote the header line or URL being
    # encoded ("Bearer <key>"), so they are never chained nor repeated.
    if isinstance(exc, UnicodeEncodeError):
        # http.client encodes header values as Latin-1 (the URL and header names as ASCII);
        # PyPy spells the codec "latin1", CPython "latin-1".
        if exc.encoding.replace("-", "").replace("_", "").lower() in ("latin1", "iso88591"):
            return _tp_final(APIConnectionError(_TP_BAD_HEADER))
        return _tp_final(
            APIConnectionError(
                "The URL for %s contains characters HTTP cannot send: quote them (%%XX)."
                % (state.where or state.host or "the server")
            )
        )
    if isinstance(exc, ValueError) and "header" in str(exc).lower():
        return _tp_final(APIConnectionError(_TP_BAD_HEADER))
    ssl_module = sys.modules.get("ssl")
    if ssl_module is not None and isinstance(exc, ssl_module.SSLError):
        _tp_clear_tls_errors()
    if state.cancel is not None and state.cancel.cancelled:
        return RequestCancelledError(cause=exc)
    if isinstance(exc, APIConnectionError):
        return exc
    import http.client
    import socket

    where, phase = state.where or state.host or "the server", state.phase
    ssl = sys.modules.get("ssl")
    if isinstance(exc, (socket.timeout, TimeoutError)):
        if phase == "connect":
            msg = "Timed out connecting to %s (connect timeout %gs)." % (where, state.timeout.connect)
        elif phase == "body":
            msg = (
                "The server at %s sent nothing for %gs in the middle of the response "
                "(read timeout): the stream stalled." % (where, state.timeout.read)
            )
        else:
            msg = "No answer from %s within %gs (read timeout)." % (where, state.timeout.read)
        return APITimeoutError(msg, cause=exc)
    if isinstance(exc, socket.gaierror):
        return APIConnectionError(
            "Could not resolve host name %r (DNS lookup failed: %s). Check the URL and your network."
            % (state.host, exc.strerror or exc),
            cause=exc,
        )
    if ssl is not None and isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or str(exc)
        if exc.verify_code == 62 or "mismatch" in reason or "match" in reason:
            msg = "TLS certificate of %s does not match the host name %r (hostname mismatch: %s)." % (
                where,
                state.host,
                reason,
            )
        else:
            msg = (
                "TLS certificate verification failed for %s: %s. If a corporate proxy or a private "
                "CA signs this certificate, pass ca_file='/path/to/ca.pem' (command line: --ca-file) "
                "with that CA certificate." % (where, reason)
            )
        return APIConnectionError(msg, cause=exc)
    if ssl is not None and isinstance(exc, ssl.SSLError):
        if phase == "body":
            return IncompleteStreamError(
                "TLS error from %s in the middle of the response: %s" % (where, exc), cause=exc
            )
        return APIConnectionError("TLS error with %s: %s" % (where, exc), cause=exc)
    if isinstance(exc, ConnectionRefusedError):
        return APIConnectionError(
            "Connection refused by %s: nothing is listening there (is the server running?)." % where, cause=exc
        )
    if isinstance(exc, http.client.IncompleteRead):
        return IncompleteStreamError("The connection to %s closed before the response was complete." % where, cause=exc)
    if isinstance(exc, http.client.RemoteDisconnected):
        return APIConnectionError("%s closed the connection without answering." % where, cause=exc)
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        if phase == "body":
            return IncompleteStreamError(
                "The connection to %s was reset in the middle of the response." % where, cause=exc
            )
        return APIConnectionError("The connection to %s was reset: %s" % (where, exc), cause=exc)
    if isinstance(exc, http.client.HTTPException):
        if phase == "body":
            return IncompleteStreamError("Broken response body from %s: %r" % (where, exc), cause=exc)
        return APIConnectionError("Invalid HTTP response from %s: %s: %s" % (where, type(exc).__name__, exc), cause=exc)
    urllib_error = sys.modules.get("urllib.error")
    if urllib_error is not None and isinstance(exc, urllib_error.URLError):
        if isinstance(exc.reason, BaseException):
            return _tp_translate(exc.reason, state)
        return APIConnectionError("Request to %s failed: %s" % (where, exc.reason), cause=exc)
    if isinstance(exc, OSError):
        return APIConnectionError("Connection error with %s: %s" % (where, exc.strerror or exc), cause=exc)
    return APIConnectionError("Request to %s failed: %s: %s" % (where, type(exc).__name__, exc), cause=exc)


#: What a guarded read returns when ``HTTPResponse.close()`` came before or during it.
_TP_CLOSED: Any = object()


class HTTPResponse:
    """A response whose headers have arrived; the body is read with ``read`` or ``iter_bytes``.

    Thread safety: one thread reads the body; any thread may call :meth:`close` at any time (a
    "stop" button), and a read blocked in that first thread then returns at once.

    :ivar status: the HTTP status code
    :ivar reason: the reason phrase
    :ivar headers: dict with lower-case names (repeated headers joined with ", ")
    :ivar url: the URL that answered (after redirects)
    """

    def __init__(
        self,
        transport: HTTPTransport,
        conn: _TPConn,
        raw: http.client.HTTPResponse,
        url: str,
        cancel: CancelScope | None,
    ) -> None:
        self.status: int = raw.status
        self.reason: str = raw.reason
        headers: dict[str, str] = {}
        for name, value in raw.getheaders():
            name = name.lower()
            headers[name] = headers[name] + ", " + value if name in headers else value
        self.headers = headers
        self.url = url
        self._tp_transport = transport
        self._tp_conn: _TPConn | None = conn
        self._tp_raw = raw
        self._tp_cancel = cancel
        self._tp_body: bytes | None = None
        # close() from another thread: _tp_closed is set under the lock; while _tp_reading, the
        # reading thread owns the socket and close() only shuts it down (see _tp_guarded).
        self._tp_lock = threading.Lock()
        self._tp_reading = False
        self._tp_closed = False

    def __repr__(self) -> str:
        return "<HTTPResponse %d %s>" % (self.status, _tp_log_url(self.url))

    def __enter__(self) -> HTTPResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (from any thread)."""
        return self._tp_closed

    def _tp_state(self, phase: str) -> _TPState:
        state = _TPState(Timeout(), self._tp_cancel)
        conn = self._tp_conn
        sock = conn.http.sock if conn is not None else None
        try:
            read = sock.gettimeout() if sock is not None else None
        except OSError:
            read = None
        if read:
            state.timeout = Timeout(state.timeout.connect, read)
        state.where = conn.where if conn is not None else _tp_log_url(self.url)
        state.host = _tp_origin(self.url)[1]
        state.phase = phase
        return state

    def _tp_guarded(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)``, one blocking read of the body, or ``_TP_CLOSED`` if :meth:`close` was
        called before it started or while it ran (whatever the read returned or raised then:
        close() shut the socket down under it)."""
        with self._tp_lock:
            if self._tp_closed:
                return _TP_CLOSED
            self._tp_reading = True
        try:
            result = fn(*args)
        except Exception:
            if self._tp_stop_reading():
                return _TP_CLOSED
            raise
        except BaseException:
            self._tp_stop_reading()
            raise
        return _TP_CLOSED if self._tp_stop_reading() else result

    def _tp_stop_reading(self) -> bool:
        """End a guarded read; True if close() was called."""
        with self._tp_lock:
            self._tp_reading = False
            return self._tp_closed

    def read(self, limit: int | None = None) -> bytes:
        """Read the whole body, then hand the connection back to the pool.

        :param limit: maximum body size in bytes; None for no limit
        :returns: the body
        :raises ResponseTooLargeError: the body is larger than ``limit`` (connection discarded)
        :raises RequestCancelledError: :meth:`close` was called (from any thread) before the
            whole body had arrived: a partial body is never returned as if it were whole
        :raises APIConnectionError: (IncompleteStreamError, APITimeoutError, RequestCancelledError)
        """
        if self._tp_body is not None:
            return self._tp_body
        if self._tp_conn is None:
            if self._tp_closed:
                raise _tp_closed_error()
            return b""
        raw = self._tp_raw
        guarded = self._tp_guarded
        try:
            if limit is None:
                data = guarded(raw.read)
            else:
                length = raw.length
                if length is not None and length > limit:
                    raise self._tp_too_large(limit)
                if length is not None:
                    data = guarded(raw.read)
                else:
                    parts = []
                    size = 0
                    while True:
                        chunk = guarded(raw.read1, 65536)
                        if not chunk or chunk is _TP_CLOSED:
                            data = chunk
                            break
                        size += len(chunk)
                        if size > limit:
                            raise self._tp_too_large(limit)
                        parts.append(chunk)
                    if data is not _TP_CLOSED:
                        data = guarded(raw.read)  # closes a chunked body's final state
                    if data is not _TP_CLOSED:
                        data = b"".join(parts)
            if data is _TP_CLOSED:
                raise _tp_closed_error()
            if self._tp_cancel is not None and self._tp_cancel.cancelled:
                raise RequestCancelledError()
        except APIError:
            self._tp_discard()
            raise
        except Exception as exc:  # noqa: BLE001
            state = self._tp_state("body")
            self._tp_discard()
            err = _tp_translate(exc, state)
            raise err from err.cause
        body: bytes = data
        self._tp_body = body
        self._tp_release()
        return body

    def _tp_too_large(self, limit: int) -> ResponseTooLargeError:
        return ResponseTooLargeError(
            "The response body from %s is larger than the %d-byte limit; it was not read."
            % (_tp_log_url(self.url), limit)
        )

    def iter_bytes(self) -> Iterator[bytes]:
        """Yield the body as it arrives (each piece is what one network read returned).

        Closing the iterator early discards the connection.  After :meth:`close` — called from
        any thread, also while this iterator is blocked waiting for the server — the iterator
        simply ends, without raising: the caller asked for it, and can tell this end from the
        body's own end by :attr:`closed`.  A cancelled :class:`CancelScope` still raises.

        :raises APITimeoutError: the server fell silent for longer than the read timeout
        :raises IncompleteStreamError: the connection closed or reset before the body ended
        :raises RequestCancelledError: the cancel scope was cancelled
        """
        if self._tp_conn is None:
            if self._tp_body:
                yield self._tp_body
            return
        raw = self._tp_raw
        read1 = raw.read1
        guarded = self._tp_guarded
        finished = False
        try:
            while True:
                data = guarded(read1, 65536)
                if data is _TP_CLOSED:
                    return
                if not data:
                    break
                yield data
            if raw.length:  # the server closed before Content-Length bytes came
                raise _tp_incomplete(raw.length)
            if guarded(raw.read) is _TP_CLOSED:
                return
            if self._tp_cancel is not None and self._tp_cancel.cancelled:
                raise RequestCancelledError()
            finished = True
        except APIError:
            raise
        except Exception as exc:  # noqa: BLE001
            state = self._tp_state("body")
            err = _tp_translate(exc, state)
            raise err from err.cause
        finally:
            if finished:
                self._tp_release()
            else:
                self._tp_discard()

    def limit_read_timeout(self, seconds: float) -> None:
        """Allow at most ``seconds`` of silence from now on (used to read the end of a stream
        after ``[DONE]``: a server that never ends the body must not hold the caller long).
        The next request on this connection gets its own read timeout again."""
        conn = self._tp_conn
        sock = conn.http.sock if conn is not None else None
        if sock is not None:
            current = sock.gettimeout()
            sock.settimeout(seconds if current is None else min(current, seconds))

    def close(self) -> None:
        """Stop: release the connection, back to the pool if the body was read, else discarded.

        Safe from any thread and immediate: a thread blocked reading this response is woken at
        once (the socket is shut down under it; that thread then closes it, so its file
        descriptor cannot be reused while it is still being read).  Afterwards ``iter_bytes``
        ends without an error and ``read`` raises ``RequestCancelledError`` unless the whole
        body had already arrived.  Calling it again does nothing.
        """
        with self._tp_lock:
            self._tp_closed = True
            conn = self._tp_conn
            if conn is not None and self._tp_reading:
                conn.abort()  # the reading thread discards the connection on its way out
                return
        if conn is None:
            return
        if self._tp_raw.isclosed():
            self._tp_release()
        else:
            self._tp_discard()

    def _tp_take(self) -> _TPConn | None:
        """Take the connection away from this response (once), detached from its cancel scope."""
        with self._tp_lock:
            conn, self._tp_conn = self._tp_conn, None
        if conn is not None and self._tp_cancel is not None:
            self._tp_cancel._tp_detach(conn)
        return conn

    def _tp_release(self) -> None:
        conn = self._tp_take()
        if conn is None:
            return
        raw = self._tp_raw
        if raw.isclosed() and not raw.will_close and conn.http.sock is not None and not conn.aborted:
            self._tp_transport._tp_pool.put(conn)
        else:
            conn.close()

    def _tp_discard(self) -> None:
        conn = self._tp_take()
        if conn is None:
            return
        try:
            self._tp_raw.close()
        except Exception:  # noqa: S110, BLE001
            pass
        conn.close()


def _tp_closed_error() -> RequestCancelledError:
    return RequestCancelledError("The response was closed (close() was called) before its whole body had arrived.")


def _tp_incomplete(missing: int) -> Exception:
    """An ``http.client.IncompleteRead`` for a body that ended ``missing`` bytes short."""
    import http.client

    return http.client.IncompleteRead(b"", missing)
