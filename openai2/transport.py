"""One HTTP exchange: send a request once, follow its redirects, read its response, and
translate every failure into openai2's errors — in exactly one function, ``_tp_translate``.

Getting the connection (pool, proxies, TLS, SOCKS, cancellation, timeouts) is ``connection``'s
job; this module asks it for one, writes the request on it, reads the answer's head and hands
back an ``HTTPResponse`` whose body the caller reads or streams; the connection goes back to the
pool once the body was read whole.  ``urllib.request`` stays the front door (``_tp_open``): it
parses the URL and dispatches by scheme to the one handler, which calls straight back here.

Every socket, ssl, http.client and urllib exception becomes ``APIConnectionError``,
``APITimeoutError``, ``IncompleteStreamError`` or ``RequestCancelledError`` in ``_tp_translate``,
from the request's context (where, which phase, which limits), which travels with the response.
Nothing here logs or reports request headers or bodies.

``Timeout``, ``CancelScope`` and ``coerce_timeout`` live in ``connection`` and are re-exported
here: ``from openai2.transport import HTTPTransport, Timeout, CancelScope`` keeps working.
"""

from __future__ import annotations

import sys
import threading

from .common import TYPE_CHECKING, USER_AGENT, get_logger, header_secrets
from .connection import (
    _CONN_DEFAULT_PORTS,
    _conn_final,
    _conn_split_hostport,
    _ConnPool,
    _PooledConn,
    _RequestContext,
)
from .connection import (
    CancelScope as CancelScope,  # re-exported: openai2.transport.CancelScope is a public path
)
from .connection import (
    Timeout as Timeout,
)
from .connection import (
    coerce_timeout as coerce_timeout,
)
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

if TYPE_CHECKING:
    import http.client
    import urllib.request
    from typing import Any, Callable, Iterator

    from .connection import _ConnProxy

#: The only request headers that follow a redirect to another origin: anything else may carry
#: a credential (authorization, api-key, x-api-key, x-goog-api-key, cookie, ...).
_TP_CROSS_ORIGIN_HEADERS = frozenset(
    ("content-type", "content-length", "accept", "accept-encoding", "accept-language", "user-agent")
)
_TP_REDIRECTS = (301, 302, 307, 308)
#: How much of a redirect's or a 303's body is read (the rest discards the connection).
_TP_SMALL_BODY = 65536
#: The urllib opener, built on first use (urllib.request takes ~10 ms to import).
_tp_lazy_opener: list[urllib.request.OpenerDirector] = []


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


def _tp_origin(url: str) -> tuple[str, str, int]:
    scheme = url.partition(":")[0].lower()
    netloc = url.partition("://")[2].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    host, port = _conn_split_hostport(netloc, _CONN_DEFAULT_PORTS.get(scheme, 0))
    return scheme, host, port


def _tp_open(url: str, method: str, send: Callable[..., HTTPResponse], *args: Any) -> HTTPResponse:
    """Send one request through ``urllib.request``, the front door the design keeps.

    The round trip, all of it here: ``urllib.request.Request`` parses the URL (a ValueError
    for a malformed one) and ``OpenerDirector.open`` dispatches by scheme to its only handler,
    ``_TPHandler``, which calls ``send(scheme, netloc, selector, full_url, *args)`` — the
    transport's own code for one exchange — with the parts urllib parsed.  Headers and body do
    not pass through urllib (their names keep the caller's spelling), and urllib's stock
    handlers, which would close the connection after every response and turn a redirected POST
    into a GET, are never installed.
    """
    import urllib.request

    if not _tp_lazy_opener:

        class _TPHandler(urllib.request.BaseHandler):
            handler_order = 100

            def http_open(self, req: urllib.request.Request) -> HTTPResponse:
                fn, rest = req.tp_send  # type: ignore[attr-defined]
                return fn(req.type, req.host, req.selector, req.full_url, *rest)  # type: ignore[no-any-return]

            https_open = http_open

        opener = urllib.request.OpenerDirector()
        opener.add_handler(_TPHandler())
        _tp_lazy_opener[:] = [opener]  # a race builds two equal openers: harmless
    try:
        req = urllib.request.Request(url, method=method)
    except ValueError as exc:
        raise _conn_final(APIConnectionError("Invalid URL %r: %s" % (_tp_log_url(url), exc))) from None
    req.tp_send = (send, args)  # type: ignore[attr-defined]
    return _tp_lazy_opener[0].open(req)  # type: ignore[no-any-return]


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
        self._pool = _ConnPool(proxy, verify, ca_file, trust_env, max_idle_per_origin)
        self.verify = self._pool.verify
        self.ca_file = self._pool.ca_file

    def __repr__(self) -> str:
        return "<HTTPTransport proxy=%s verify=%s ca_file=%s>" % (self._pool.proxy_display(), self.verify, self.ca_file)

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
        hops = 0
        secrets = header_secrets(headers)  # masked in the errors built here (a server may echo them)
        while True:
            if cancel is not None and cancel.cancelled:
                raise RequestCancelledError()
            scheme = url.partition(":")[0].lower()
            if scheme not in _CONN_DEFAULT_PORTS or "://" not in url:
                raise _conn_final(
                    APIConnectionError("Unsupported URL %r: only http:// and https:// URLs work" % _tp_log_url(url))
                )
            ctx = _RequestContext(timeout, cancel)
            failure: APIConnectionError | None = None
            try:
                resp = _tp_open(url, method, self._send_once, method, headers, body, ctx)
            except APIError:
                raise
            except Exception as exc:  # noqa: BLE001 - translated in one place
                failure = _tp_translate(exc, ctx)
            if failure is not None:  # raised outside the except: no implicit __context__
                raise failure from failure.cause
            log = get_logger()
            if log.isEnabledFor(10):
                log.debug("%s %s -> %d", method, _tp_log_url(url), resp.status)
            status = resp.status
            if status in _TP_REDIRECTS and resp.headers.get("location"):
                new_url = self._redirect_url(url, resp)
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
                raw = self._small_body(resp)
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
        self._pool.close_all()

    def __enter__(self) -> HTTPTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------

    def _small_body(self, resp: HTTPResponse) -> bytes:
        try:
            return resp.read(limit=_TP_SMALL_BODY)
        except APIError:
            return b""

    def _redirect_url(self, url: str, resp: HTTPResponse) -> str:
        """The absolute URL a redirect points to.

        :raises APIConnectionError: (not retryable) for a ``Location`` that is no valid URL
            (a port out of range, an unclosed IPv6 bracket, ...)
        """
        from urllib.parse import urljoin, urlsplit

        self._small_body(resp)
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
            raise _conn_final(
                APIConnectionError(
                    "Redirect to an invalid URL from %s (%d, Location: %r): check the base URL."
                    % (_tp_log_url(url), resp.status, shown[:200])
                )
            ) from None
        get_logger().debug("redirect %d to %s", resp.status, _tp_log_url(new_url))
        return new_url

    def _send_once(
        self,
        scheme: str,
        netloc: str,
        selector: str,
        full_url: str,
        method: str,
        headers: dict[str, str],
        body: bytes | None,
        ctx: _RequestContext,
    ) -> HTTPResponse:
        """Send the request once on a pooled or new connection and read the answer's head.

        A pooled connection the server had closed while idle is replaced and the request sent
        again, only when not a byte of it can have been processed (see below).
        """
        cancel = ctx.cancel
        host, port = _conn_split_hostport(netloc, _CONN_DEFAULT_PORTS[scheme])
        ctx.host = host
        pool = self._pool
        proxy = pool.proxy_for(scheme, host)
        headers = dict(headers)
        for name in headers:
            if name.lower() == "user-agent":
                break
        else:
            headers["User-Agent"] = USER_AGENT
        shown = "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)
        if proxy is not None and proxy.scheme in ("http", "https") and scheme == "http":
            target = "http://" + netloc.rpartition("@")[2] + selector  # absolute-URI form
            if proxy.auth:
                headers["Proxy-Authorization"] = proxy.auth
        else:
            target = selector
        where = shown if proxy is None else "%s (through proxy %s)" % (shown, proxy.display)
        for attempt in (0, 1):
            conn, reused = pool.acquire(scheme, host, port, proxy, where, ctx, reuse=attempt == 0)
            ctx.where = where
            ctx.phase = "response"
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
                    cancel._detach(conn)
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
                        cancel._detach(conn)
                    conn.close()
                    raise refusal
            return HTTPResponse(pool, conn, raw, full_url, ctx)
        raise AssertionError("unreachable")  # pragma: no cover


def _tp_proxy_refusal(
    raw: http.client.HTTPResponse, proxy: _ConnProxy, target: str, secrets: list[str]
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
    return _conn_final(
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


def _tp_translate(exc: BaseException, ctx: _RequestContext) -> APIConnectionError:
    """The one place where socket/ssl/http.client/urllib exceptions become openai2 errors.

    :param ctx: where the failure happened (``where``/``host``), in which phase
        (``connect``, ``response``, ``body``), with which timeout and cancel scope
    """
    # First, before anything may chain ``exc``: these quote the header line or URL being
    # encoded ("Bearer <key>"), so they are never chained nor repeated.
    if isinstance(exc, UnicodeEncodeError):
        # http.client encodes header values as Latin-1 (the URL and header names as ASCII);
        # PyPy spells the codec "latin1", CPython "latin-1".
        if exc.encoding.replace("-", "").replace("_", "").lower() in ("latin1", "iso88591"):
            return _conn_final(APIConnectionError(_TP_BAD_HEADER))
        return _conn_final(
            APIConnectionError(
                "The URL for %s contains characters HTTP cannot send: quote them (%%XX)."
                % (ctx.where or ctx.host or "the server")
            )
        )
    if isinstance(exc, ValueError) and "header" in str(exc).lower():
        return _conn_final(APIConnectionError(_TP_BAD_HEADER))
    ssl_module = sys.modules.get("ssl")
    if ssl_module is not None and isinstance(exc, ssl_module.SSLError):
        _tp_clear_tls_errors()
    if ctx.cancel is not None and ctx.cancel.cancelled:
        return RequestCancelledError(cause=exc)
    if isinstance(exc, APIConnectionError):
        return exc
    import http.client
    import socket

    where, phase = ctx.where or ctx.host or "the server", ctx.phase
    ssl = sys.modules.get("ssl")
    if isinstance(exc, (socket.timeout, TimeoutError)):
        if phase == "connect":
            msg = "Timed out connecting to %s (connect timeout %gs)." % (where, ctx.timeout.connect)
        elif phase == "body":
            msg = (
                "The server at %s sent nothing for %gs in the middle of the response "
                "(read timeout): the stream stalled." % (where, ctx.timeout.read)
            )
        else:
            msg = "No answer from %s within %gs (read timeout)." % (where, ctx.timeout.read)
        return APITimeoutError(msg, cause=exc)
    if isinstance(exc, socket.gaierror):
        return APIConnectionError(
            "Could not resolve host name %r (DNS lookup failed: %s). Check the URL and your network."
            % (ctx.host, exc.strerror or exc),
            cause=exc,
        )
    if ssl is not None and isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or str(exc)
        if exc.verify_code == 62 or "mismatch" in reason or "match" in reason:
            msg = "TLS certificate of %s does not match the host name %r (hostname mismatch: %s)." % (
                where,
                ctx.host,
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
            return _tp_translate(exc.reason, ctx)
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
        pool: _ConnPool,
        conn: _PooledConn,
        raw: http.client.HTTPResponse,
        url: str,
        ctx: _RequestContext,
    ) -> None:
        self.status: int = raw.status
        self.reason: str = raw.reason
        headers: dict[str, str] = {}
        for name, value in raw.getheaders():
            name = name.lower()
            headers[name] = headers[name] + ", " + value if name in headers else value
        self.headers = headers
        self.url = url
        self._pool = pool
        self._conn: _PooledConn | None = conn
        self._raw = raw
        self._ctx = ctx  # the request's context, for the errors of the body (phase "body")
        self._cancel = ctx.cancel
        self._body: bytes | None = None
        # close() from another thread: _closed is set under the lock; while _reading, the
        # reading thread owns the socket and close() only shuts it down (see _guarded).
        self._lock = threading.Lock()
        self._reading = False
        self._closed = False

    def __repr__(self) -> str:
        return "<HTTPResponse %d %s>" % (self.status, _tp_log_url(self.url))

    def __enter__(self) -> HTTPResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (from any thread)."""
        return self._closed

    def _body_context(self) -> _RequestContext:
        ctx = self._ctx
        ctx.phase = "body"
        return ctx

    def _guarded(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)``, one blocking read of the body, or ``_TP_CLOSED`` if :meth:`close` was
        called before it started or while it ran (whatever the read returned or raised then:
        close() shut the socket down under it)."""
        with self._lock:
            if self._closed:
                return _TP_CLOSED
            self._reading = True
        try:
            result = fn(*args)
        except Exception:
            if self._stop_reading():
                return _TP_CLOSED
            raise
        except BaseException:
            self._stop_reading()
            raise
        return _TP_CLOSED if self._stop_reading() else result

    def _stop_reading(self) -> bool:
        """End a guarded read; True if close() was called."""
        with self._lock:
            self._reading = False
            return self._closed

    def read(self, limit: int | None = None) -> bytes:
        """Read the whole body, then hand the connection back to the pool.

        :param limit: maximum body size in bytes; None for no limit
        :returns: the body
        :raises ResponseTooLargeError: the body is larger than ``limit`` (connection discarded)
        :raises RequestCancelledError: :meth:`close` was called (from any thread) before the
            whole body had arrived: a partial body is never returned as if it were whole
        :raises APIConnectionError: (IncompleteStreamError, APITimeoutError, RequestCancelledError)
        """
        if self._body is not None:
            return self._body
        if self._conn is None:
            if self._closed:
                raise _tp_closed_error()
            return b""
        raw = self._raw
        guarded = self._guarded
        try:
            if limit is None:
                data = guarded(raw.read)
            else:
                length = raw.length
                if length is not None and length > limit:
                    raise self._too_large(limit)
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
                            raise self._too_large(limit)
                        parts.append(chunk)
                    if data is not _TP_CLOSED:
                        data = guarded(raw.read)  # closes a chunked body's final state
                    if data is not _TP_CLOSED:
                        data = b"".join(parts)
            if data is _TP_CLOSED:
                raise _tp_closed_error()
            if self._cancel is not None and self._cancel.cancelled:
                raise RequestCancelledError()
        except APIError:
            self._discard()
            raise
        except Exception as exc:  # noqa: BLE001
            ctx = self._body_context()
            self._discard()
            err = _tp_translate(exc, ctx)
            raise err from err.cause
        body: bytes = data
        self._body = body
        self._release()
        return body

    def _too_large(self, limit: int) -> ResponseTooLargeError:
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
        if self._conn is None:
            if self._body:
                yield self._body
            return
        raw = self._raw
        read1 = raw.read1
        guarded = self._guarded
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
            if self._cancel is not None and self._cancel.cancelled:
                raise RequestCancelledError()
            finished = True
        except APIError:
            raise
        except Exception as exc:  # noqa: BLE001
            ctx = self._body_context()
            err = _tp_translate(exc, ctx)
            raise err from err.cause
        finally:
            if finished:
                self._release()
            else:
                self._discard()

    def limit_read_timeout(self, seconds: float) -> None:
        """Allow at most ``seconds`` of silence from now on (used to read the end of a stream
        after ``[DONE]``: a server that never ends the body must not hold the caller long).
        The next request on this connection gets its own read timeout again."""
        conn = self._conn
        sock = conn.http.sock if conn is not None else None
        if sock is not None:
            current = sock.gettimeout()
            limit = seconds if current is None else min(current, seconds)
            sock.settimeout(limit)
            if limit > 0:  # a later timeout error names the limit that ran out
                self._ctx.timeout = Timeout(self._ctx.timeout.connect, limit)

    def close(self) -> None:
        """Stop: release the connection, back to the pool if the body was read, else discarded.

        Safe from any thread and immediate: a thread blocked reading this response is woken at
        once (the socket is shut down under it; that thread then closes it, so its file
        descriptor cannot be reused while it is still being read).  Afterwards ``iter_bytes``
        ends without an error and ``read`` raises ``RequestCancelledError`` unless the whole
        body had already arrived.  Calling it again does nothing.
        """
        with self._lock:
            self._closed = True
            conn = self._conn
            if conn is not None and self._reading:
                conn.abort()  # the reading thread discards the connection on its way out
                return
        if conn is None:
            return
        if self._raw.isclosed():
            self._release()
        else:
            self._discard()

    def _take(self) -> _PooledConn | None:
        """Take the connection away from this response (once), detached from its cancel scope."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None and self._cancel is not None:
            self._cancel._detach(conn)
        return conn

    def _release(self) -> None:
        conn = self._take()
        if conn is None:
            return
        raw = self._raw
        if raw.isclosed() and not raw.will_close and conn.http.sock is not None and not conn.aborted:
            self._pool.put(conn)
        else:
            conn.close()

    def _discard(self) -> None:
        conn = self._take()
        if conn is None:
            return
        try:
            self._raw.close()
        except Exception:  # noqa: S110, BLE001
            pass
        conn.close()


def _tp_closed_error() -> RequestCancelledError:
    return RequestCancelledError("The response was closed (close() was called) before its whole body had arrived.")


def _tp_incomplete(missing: int) -> Exception:
    """An ``http.client.IncompleteRead`` for a body that ended ``missing`` bytes short."""
    import http.client

    return http.client.IncompleteRead(b"", missing)
