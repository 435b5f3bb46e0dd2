"""Getting a connected, pooled ``http.client`` connection: timeouts, cancellation, proxies, TLS.

This module answers one question: given a scheme, a host and a port, hand me an
``http.client.HTTPConnection`` whose socket is connected, whether it comes from the keep-alive
pool or is new.  New ones are connected directly, through an HTTP(S) proxy (a CONNECT tunnel
for https origins; plain http goes in absolute-URI form, shaped by the transport), or through
a SOCKS5 proxy (see ``socks``); TLS on top, TLS inside TLS for an https origin behind an https
proxy.  Proxies are explicit or read once from the environment (HTTP_PROXY / HTTPS_PROXY /
ALL_PROXY / NO_PROXY).  Idle connections are kept per (scheme, host, port, proxy) and checked
for staleness before reuse.  ``Timeout`` and ``CancelScope`` are the limits every step obeys.

What happens to a request and its errors is ``transport``'s job; failures here propagate as the
raw socket/ssl exceptions (or ``APIConnectionError`` for a proxy's refusal) and are translated
there, in one place.
"""

from __future__ import annotations

import os
import sys
import threading

from .common import TYPE_CHECKING, USER_AGENT, get_logger
from .errors import APIConnectionError, RequestCancelledError
from .socks import socks5_handshake

if TYPE_CHECKING:
    import http.client
    import ssl
    from typing import Any

_CONN_DEFAULT_PORTS = {"http": 80, "https": 443}
_CONN_PROXY_PORTS = {"http": 80, "https": 443, "socks5": 1080, "socks5h": 1080}
#: How much of a proxy's answer to CONNECT is read before it is taken for broken.
_CONN_MAX_CONNECT_ANSWER = 65536
#: Lazily built http.client subclasses (http.client takes milliseconds to import).
_conn_lazy_classes: dict[str, Any] = {}


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
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._conns: list[_PooledConn] = []

    @property
    def cancelled(self) -> bool:
        """True once ``cancel()`` was called."""
        return self._event.is_set()

    def cancel(self) -> None:
        """Cancel: set the flag, wake ``wait()`` and shut down any socket in use."""
        with self._lock:
            self._event.set()
            conns = list(self._conns)
        for conn in conns:
            conn.abort()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds`` (retry backoff), waking early on cancel.

        :returns: True if the scope was cancelled
        """
        return self._event.wait(max(0.0, seconds))

    def _attach(self, conn: _PooledConn) -> None:
        with self._lock:
            if self._event.is_set():
                raise RequestCancelledError()
            self._conns.append(conn)

    def _detach(self, conn: _PooledConn) -> None:
        with self._lock:
            try:
                self._conns.remove(conn)
            except ValueError:  # noqa: S110 - best effort, nothing to report
                pass


class _RequestContext:
    """One request's limits and whereabouts: its timeout and cancel scope, whom it is talking to
    (``where``, ``host``) and in which ``phase`` (``connect``, ``response``, ``body``).

    Made by the transport for each request, filled in while connecting, carried by the response:
    the error translator reads it, so an error says where and when it happened.
    """

    __slots__ = ("timeout", "cancel", "where", "host", "phase")

    def __init__(self, timeout: Timeout, cancel: CancelScope | None) -> None:
        self.timeout = timeout
        self.cancel = cancel
        self.where = ""
        self.host = ""
        self.phase = "connect"


class _ConnProxy:
    """A parsed proxy URL; ``display`` masks the password, ``key`` tells pools apart."""

    __slots__ = ("scheme", "host", "port", "username", "password", "display", "auth", "key")

    def __init__(self, url: str) -> None:
        from urllib.parse import unquote, urlsplit

        if "://" not in url:
            url = "http://" + url
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _CONN_PROXY_PORTS:
            raise ValueError(
                "Unsupported proxy scheme %r: use http://, https://, socks5:// or socks5h://" % parts.scheme
            )
        try:
            port = parts.port
        except ValueError:
            raise ValueError("Invalid port in the proxy URL %s" % _conn_mask_url(url)) from None
        if not parts.hostname:
            raise ValueError("No host in the proxy URL %s" % _conn_mask_url(url))
        self.scheme = scheme
        self.host = parts.hostname
        self.port = port or _CONN_PROXY_PORTS[scheme]
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


def _conn_final(err: APIConnectionError) -> APIConnectionError:
    """Mark ``err`` as one that retrying the same request cannot fix (``retryable = False``)."""
    err.retryable = False
    return err


def _conn_mask_url(url: str) -> str:
    """A URL with any password replaced by ****, for messages."""
    scheme, sep, rest = url.partition("://")
    auth, at, hostpart = rest.partition("@")
    if not at or "/" in auth:
        return url
    user, colon, _ = auth.partition(":")
    return scheme + sep + user + (":****" if colon else "") + "@" + hostpart


def _conn_split_hostport(netloc: str, default_port: int) -> tuple[str, int]:
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


class _PooledConn:
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


class _ConnTLSInTLS:
    """A TLS session carried inside another TLS socket (https origin through an https proxy).

    ``ssl.SSLSocket`` cannot wrap an SSLSocket, so this drives an ``ssl.SSLObject`` over memory
    BIOs and offers the few socket methods http.client uses.
    """

    def __init__(self, outer: ssl.SSLSocket, ctx: ssl.SSLContext, server_hostname: str) -> None:
        import ssl

        self._outer = outer
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = ctx.wrap_bio(self._in, self._out, server_hostname=server_hostname)
        self._run(self._obj.do_handshake)

    def _run(self, fn: Any, *args: Any) -> Any:
        import ssl

        while True:
            try:
                result = fn(*args)
            except ssl.SSLWantReadError:
                self._flush()
                data = self._outer.recv(65536)
                if data:
                    self._in.write(data)
                else:
                    self._in.write_eof()
                continue
            except ssl.SSLWantWriteError:
                self._flush()
                continue
            self._flush()
            return result

    def _flush(self) -> None:
        data = self._out.read()
        if data:
            self._outer.sendall(data)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        import ssl

        try:
            return int(self._run(self._obj.read, nbytes or len(buffer), buffer))
        except ssl.SSLZeroReturnError:
            return 0

    def recv(self, n: int) -> bytes:
        buf = bytearray(n)
        got = self.recv_into(buf)
        return bytes(buf[:got])

    def send(self, data: Any) -> int:
        return int(self._run(self._obj.write, data))

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
        self._outer.settimeout(value)

    def gettimeout(self) -> float | None:
        return self._outer.gettimeout()

    def fileno(self) -> int:
        return self._outer.fileno()

    def pending(self) -> int:
        return self._obj.pending()

    def getpeercert(self, binary_form: bool = False) -> Any:
        return self._obj.getpeercert(binary_form)

    def shutdown(self, how: int) -> None:
        self._outer.shutdown(how)

    def close(self) -> None:
        self._outer.close()


#: Largest request body sent in the same write as the headers (see _conn_http_class).
_CONN_COALESCE_BODY = 262144


def _conn_http_class() -> Any:
    """``http.client.HTTPConnection`` that sends the headers and a bytes body in one write.

    ``http.client`` (3.8 to 3.13 alike) writes the header block and the body with two
    ``sendall`` calls; with ``TCP_NODELAY`` each becomes its own packet and wakes the server
    twice per request.  Here :meth:`endheaders` keeps a bytes body of up to
    ``_CONN_COALESCE_BODY`` bytes back and :meth:`send` appends it to the header block, which is
    the only thing ``endheaders`` sends then.  Only public ``http.client`` methods are overridden.

    Its responses (see ``_conn_response_class``) record in ``tp_heard[0]`` whether any byte of
    the status line or headers arrived, so that a reused connection failing in
    ``getresponse()`` is sent again only when the server said nothing at all.
    """
    cls = _conn_lazy_classes.get("connection")
    if cls is None:
        import functools
        import http.client

        response_class = _conn_response_class()

        class _TPHTTPConnection(http.client.HTTPConnection):
            _tp_body: bytes | None = None

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self.tp_heard = [False]
                # An instance attribute: http.client calls self.response_class(sock, method=...).
                self.response_class = functools.partial(response_class, tp_heard=self.tp_heard)  # type: ignore[assignment]

            def endheaders(self, message_body: Any = None, *, encode_chunked: bool = False) -> None:
                if message_body.__class__ is bytes and not encode_chunked and len(message_body) <= _CONN_COALESCE_BODY:
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

        cls = _conn_lazy_classes["connection"] = _TPHTTPConnection
    return cls


class _ConnRecordingReader:
    """Wraps a response's ``fp`` while the status line and headers are read: notes any byte."""

    def __init__(self, fp: Any, heard: list[bool]) -> None:
        self._fp = fp
        self._heard = heard

    def _seen(self, data: Any) -> Any:
        if data:
            self._heard[0] = True
        return data

    def readline(self, *args: Any) -> Any:
        return self._seen(self._fp.readline(*args))

    def read(self, *args: Any) -> Any:
        return self._seen(self._fp.read(*args))

    def read1(self, *args: Any) -> Any:
        return self._seen(self._fp.read1(*args))

    def peek(self, *args: Any) -> Any:
        return self._seen(self._fp.peek(*args))

    def readinto(self, buffer: Any) -> Any:
        n = self._fp.readinto(buffer)
        if n:
            self._heard[0] = True
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fp, name)


#: Informational (1xx) answers skipped before the final one; more is taken for a broken server
#: (each may come just within the read timeout, so without a bound the request could never end).
_CONN_MAX_INTERIM = 100


def _conn_response_class() -> Any:
    """``http.client.HTTPResponse`` whose ``begin()`` skips informational answers and notes
    whether any byte of the answer came.

    A server may send any number of 1xx answers before the final one (RFC 9110 section 15.2):
    ``103 Early Hints``, ``102 Processing``, an unsolicited ``100 Continue``.  ``http.client``
    (3.8 to 3.13 alike) skips only 100 and would return a 103 as the answer, leaving the real one
    unread on the connection; here every 1xx but ``101 Switching Protocols`` is skipped.

    ``fp`` is wrapped only during ``begin()`` (status line and headers); the body is read from
    the buffered file itself, at full speed.
    """
    cls = _conn_lazy_classes.get("response")
    if cls is None:
        import http.client

        class _TPHTTPResponse(http.client.HTTPResponse):
            def __init__(self, sock: Any, *args: Any, tp_heard: list[bool], **kwargs: Any) -> None:
                super().__init__(sock, *args, **kwargs)
                self._tp_heard = tp_heard

            def begin(self) -> None:
                real = self.fp
                wrapper = _ConnRecordingReader(real, self._tp_heard)
                self.fp = wrapper  # type: ignore[assignment]
                try:
                    for _ in range(_CONN_MAX_INTERIM + 1):
                        super().begin()
                        if not 100 <= self.status < 200 or self.status == 101:
                            return
                        # Its headers are read; begin() reads the next status line once
                        # ``headers`` is None again (it sets every other field anew).
                        self.headers = self.msg = None  # type: ignore[assignment]
                    raise http.client.HTTPException(
                        "more than %d informational (1xx) responses before the answer" % _CONN_MAX_INTERIM
                    )
                finally:
                    current: Any = self.fp  # None if begin() closed it (through the wrapper)
                    if current is wrapper:
                        self.fp = real

        cls = _conn_lazy_classes["response"] = _TPHTTPResponse
    return cls


class _ConnPool:
    """The connections of one transport: settings (proxy, TLS verification, CA file), the idle
    keep-alive connections per (scheme, host, port, proxy) — thread-safe, LIFO, checked for
    staleness before reuse — and the code that makes new ones.

    :param proxy: a proxy URL for every request; None = the environment (if ``trust_env``)
    :raises ValueError: for an unsupported proxy URL or a missing ``ca_file``
    """

    def __init__(
        self, proxy: str | None, verify: bool, ca_file: str | None, trust_env: bool, max_idle_per_origin: int
    ) -> None:
        self.verify = bool(verify)
        self.ca_file = os.fspath(ca_file) if ca_file is not None else None
        if self.ca_file is not None and self.verify and not os.path.exists(self.ca_file):
            raise ValueError("ca_file not found: %s" % self.ca_file)
        self._proxy = _ConnProxy(proxy) if proxy else None
        self._env_raw: dict[str, str] = {}
        self._env: dict[str, _ConnProxy | str] = {}
        if self._proxy is None and trust_env:
            import urllib.request

            self._env_raw = dict(urllib.request.getproxies())
            for scheme in ("http", "https", "all"):
                value = self._env_raw.get(scheme)
                if value:
                    try:
                        self._env[scheme] = _ConnProxy(value)
                    except ValueError as exc:
                        self._env[scheme] = "%s_PROXY=%s: %s" % (scheme.upper(), _conn_mask_url(value), exc)
        self._bypass: dict[str, bool] = {}
        self._lock = threading.Lock()
        self._idle: dict[tuple[Any, ...], list[_PooledConn]] = {}
        self._per_origin = max_idle_per_origin
        self._ctx: ssl.SSLContext | None = None
        if not self.verify:
            get_logger().warning(
                "TLS certificate verification is disabled (verify=False): anyone on the network "
                "path can read and alter the traffic, including the API key."
            )

    def proxy_display(self) -> str | None:
        """The explicit proxy (password masked), "environment", or None: for reprs."""
        return self._proxy.display if self._proxy else ("environment" if self._env else None)

    # -- the idle connections ---------------------------------------------------------------

    def acquire(
        self, scheme: str, host: str, port: int, proxy: _ConnProxy | None, where: str, ctx: _RequestContext, reuse: bool
    ) -> tuple[_PooledConn, bool]:
        """A connection to (scheme, host, port) through ``proxy``: an idle one if ``reuse`` and
        one is left, else a new one.  It is attached to the request's cancel scope and has the
        request's read timeout.

        :returns: (the connection, whether it was reused)
        """
        key = (scheme, host, port, proxy.key if proxy is not None else None)
        conn = self.get(key) if reuse else None
        if conn is None:
            return self.connect(scheme, host, port, proxy, key, where, ctx), False
        cancel = ctx.cancel
        if cancel is not None:
            try:
                cancel._attach(conn)
            except BaseException:  # cancelled since get(): the connection is ours to close
                conn.close()
                raise
        conn.http.sock.settimeout(ctx.timeout.read)
        return conn, True

    def get(self, key: tuple[Any, ...]) -> _PooledConn | None:
        while True:
            with self._lock:
                idle = self._idle.get(key)
                if not idle:
                    return None
                conn = idle.pop()
            if not conn.dropped():
                return conn
            conn.close()

    def put(self, conn: _PooledConn) -> None:
        with self._lock:
            idle = self._idle.setdefault(conn.key, [])
            if len(idle) < self._per_origin:
                idle.append(conn)
                return
        conn.close()

    def idle_count(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._idle.values())

    def close_all(self) -> None:
        with self._lock:
            conns = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for conn in conns:
            conn.close()

    # -- new connections --------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        """The one SSL context of this pool, built on first use."""
        ctx = self._ctx
        if ctx is not None:
            return ctx
        with self._lock:
            if self._ctx is None:
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
                self._ctx = ctx
            return self._ctx

    def proxy_for(self, scheme: str, host: str) -> _ConnProxy | None:
        """The proxy for a request to ``host`` (None: direct).

        :raises APIConnectionError: (not retryable) for an unusable proxy from the environment
        """
        if self._proxy is not None:
            return self._proxy
        if not self._env:
            return None
        proxy = self._env.get(scheme) or self._env.get("all")
        if proxy is None:
            return None
        bypass = self._bypass.get(host)
        if bypass is None:
            import urllib.request

            if "no" in self._env_raw or sys.platform not in ("darwin", "win32"):
                bypass = bool(urllib.request.proxy_bypass_environment(host, self._env_raw))  # type: ignore[attr-defined]
            else:  # macOS / Windows system proxy settings
                bypass = bool(urllib.request.proxy_bypass(host))
            self._bypass[host] = bypass
        if bypass:
            return None
        if isinstance(proxy, str):
            raise _conn_final(APIConnectionError("Unusable proxy from the environment: " + proxy))
        return proxy

    def connect(
        self,
        scheme: str,
        host: str,
        port: int,
        proxy: _ConnProxy | None,
        key: tuple[Any, ...],
        where: str,
        ctx: _RequestContext,
    ) -> _PooledConn:
        """A new connection to the origin, directly or through the proxy, TLS included."""
        cancel = ctx.cancel
        ct = ctx.timeout.connect
        ctx.phase = "connect"
        http_conn: http.client.HTTPConnection = _conn_http_class()(host, port, timeout=ct)
        http_conn.auto_open = 0  # never let http.client reconnect around the proxy
        conn = _PooledConn(http_conn, key, where)
        if cancel is not None:
            cancel._attach(conn)
        try:
            if proxy is None:
                ctx.where, ctx.host = ("[%s]:%d" if ":" in host else "%s:%d") % (host, port), host
                sock = self._tcp(host, port, ct, conn, cancel)
                if scheme == "https":
                    sock = self._tls(sock, host, conn, cancel)
            else:
                ctx.where, ctx.host = "proxy " + proxy.display, proxy.host
                sock = self._tcp(proxy.host, proxy.port, ct, conn, cancel)
                if proxy.scheme == "https":
                    sock = self._tls(sock, proxy.host, conn, cancel)
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
                            _conn_final(err)
                        raise
                elif scheme == "https":
                    _conn_tunnel(sock, host, port, proxy)
                if scheme == "https":
                    ctx.where, ctx.host = where, host
                    sock = self._tls(sock, host, conn, cancel)
            sock.settimeout(ctx.timeout.read)
            http_conn.sock = sock
        except BaseException:
            if cancel is not None:
                cancel._detach(conn)
            conn.close()
            raise
        return conn

    def _tcp(self, host: str, port: int, ct: float, conn: _PooledConn, cancel: CancelScope | None) -> Any:
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
                    _conn_cancellable_connect(sock, addr, ct, cancel)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return sock
            except OSError as exc:
                error = exc
                sock.close()
        raise error or OSError("getaddrinfo returned no address for %s" % host)

    def _tls(self, sock: Any, hostname: str, conn: _PooledConn, cancel: CancelScope | None) -> Any:
        context = self.ssl_context()
        if cancel is not None and cancel.cancelled:
            raise RequestCancelledError()
        import ssl

        if isinstance(sock, ssl.SSLSocket):  # https origin inside a TLS connection to the proxy
            return _ConnTLSInTLS(sock, context, hostname)
        tls = context.wrap_socket(sock, server_hostname=hostname, do_handshake_on_connect=False)
        conn.raw = tls  # before the handshake, so cancel() can cut it short
        if cancel is not None and cancel.cancelled:
            raise RequestCancelledError()
        tls.do_handshake()
        return tls


def _conn_cancellable_connect(sock: Any, addr: Any, timeout: float, cancel: CancelScope) -> None:
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


def _conn_tunnel(sock: Any, host: str, port: int, proxy: _ConnProxy) -> None:
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
        if len(buf) > _CONN_MAX_CONNECT_ANSWER:
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
            _conn_final(err)
        raise err
