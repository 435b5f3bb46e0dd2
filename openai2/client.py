"""The low-level client, shaped like the official SDK: ``OpenAI(...).chat.completions.create(...)``.

It owns request shaping (headers, body, environment fallbacks), the retry policy (backoff,
``Retry-After``, ``x-should-retry``), API-key failover across an :class:`AKPool`, and turning
response bodies into :class:`AttrDict` results or a :class:`ChatCompletionStream`.  Bytes move
through :class:`HTTPTransport`; SSE is decoded by :class:`SSEDecoder`; chunks are merged by
:class:`ChatAccumulator`.
"""

from __future__ import annotations

import itertools
import os
import threading
import time

from .common import TYPE_CHECKING, USER_AGENT, get_logger, mask_key, redact
from .errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    IncompleteStreamError,
    OpenAIError,
    RequestCancelledError,
    make_status_error,
    redact_error,
)
from .keypool import AKPool
from .objects import AttrDict, to_attr
from .sse import SSEDecoder
from .streaming import ChatAccumulator, accumulator_from_completion, iter_chunk_dicts
from .transport import CancelScope, HTTPResponse, HTTPTransport, Timeout, coerce_timeout

if TYPE_CHECKING:
    from typing import Any, Callable, Iterator, Mapping

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MAX_RETRIES = 2
#: A non-streaming answer larger than this is refused (ResponseTooLargeError): 64 MiB.
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
_RETRY_STATUSES = frozenset((408, 409, 429))
_CLIENT_OPTION_NAMES = frozenset(
    (
        "api_key",
        "organization",
        "project",
        "base_url",
        "timeout",
        "max_retries",
        "default_headers",
        "proxy",
        "verify",
        "ca_file",
        "max_response_bytes",
        "transport",
        "sleep",
    )
)


def no_answer_error(result: object) -> APIError:
    """The error for a 200 answer without any choice (a relay reporting an error as 200, say)."""
    import json

    try:
        excerpt = json.dumps(result, ensure_ascii=False)[:200]
    except (TypeError, ValueError):
        excerpt = repr(result)[:200]
    return APIError("The server answered without any choice (an error reported as 200?): %s" % excerpt, body=result)


def require_choices(result: object) -> None:
    """Raise :func:`no_answer_error` unless ``result`` is a completion with a first choice."""
    choices = result.get("choices") if isinstance(result, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise no_answer_error(result)


def split_request_options(params: dict[str, Any]) -> dict[str, Any]:
    """Pop the SDK's per-call options out of ``params`` (in place): ``timeout`` and
    ``extra_headers`` are returned (for ``post``), ``extra_body`` is merged into ``params``.

    :raises TypeError: ``extra_query`` (put query parameters in ``base_url``)
    """
    options: dict[str, Any] = {
        "timeout": params.pop("timeout", None),
        "extra_headers": params.pop("extra_headers", None),
    }
    extra_body = params.pop("extra_body", None)
    if params.pop("extra_query", None):
        raise TypeError("extra_query is not supported by openai2; put query parameters in base_url")
    if extra_body:
        params.update(extra_body)
    return options


def client_from_options(
    api_key: str | AKPool | None, client: OpenAI | None, kwargs: dict[str, Any], owner: str
) -> OpenAI:
    """The client for a ``Chat``/``GroupChat``: ``client``, or a new one from the client options
    popped out of ``kwargs`` (what stays in ``kwargs`` are default request parameters).

    :raises TypeError: both ``client=`` and client options, or ``messages``/``stream`` as defaults
    """
    options = {k: kwargs.pop(k) for k in list(kwargs) if k in _CLIENT_OPTION_NAMES}
    for reserved in ("messages", "stream"):
        if reserved in kwargs:
            raise TypeError("%s= is managed by %s and cannot be a default parameter" % (reserved, owner))
    if client is None:
        return OpenAI(api_key, **options)
    if options or api_key is not None:
        raise TypeError("pass either client=... or client options (api_key, base_url, …), not both")
    return client


def reset_client_key(client: OpenAI, api_key: str | AKPool) -> None:
    """``reset_api_key`` of Chat/GroupChat: another key or pool from the next request on."""
    if not isinstance(api_key, (str, AKPool)) or (isinstance(api_key, str) and not api_key):
        raise ValueError("reset_api_key needs a non-empty key string or an AKPool")
    client.api_key = api_key


def add_usage(total: dict[str, int], usage: object) -> None:
    """Add a response's ``usage`` token counts to a running ``total`` (ignores what is not a count)."""
    if isinstance(usage, dict):
        for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
            value = usage.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                total[name] = total.get(name, 0) + value


def _client_default_sleep(seconds: float, cancel: CancelScope | None) -> None:
    if cancel is not None:
        if cancel.wait(seconds):
            raise RequestCancelledError()
    else:
        time.sleep(seconds)


def retry_delay(attempt: int, headers: Mapping[str, str] | None = None, *, now: float | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based).

    ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date) win, capped at 60 seconds;
    otherwise exponential backoff: 0.5 s doubling, capped at 8 s, minus up to 25 % jitter.
    """
    if headers:
        wait = _client_parse_retry_after(headers, now)
        if wait is not None and wait >= 0:
            return min(wait, 60.0)
    import random

    base = min(0.5 * (2.0**attempt), 8.0)
    return base * (1.0 - 0.25 * random.random())


def _client_parse_retry_after(headers: Mapping[str, str], now: float | None) -> float | None:
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000.0
        except ValueError:  # noqa: S110 - best effort, nothing to report
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:  # noqa: S110 - best effort, nothing to report
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # asctime form, or "-0000": HTTP dates are in GMT (RFC 9110)
        from datetime import timezone

        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp() - (time.time() if now is None else now)


def should_retry(status: int, headers: Mapping[str, str], code: object = None) -> bool:
    """Whether a status is worth retrying: 408, 409, 429 and >= 500, unless the server says
    ``x-should-retry: false`` (or ``true``, which wins over the status), and never a 429 whose
    error code is ``insufficient_quota`` (waiting does not bring back quota)."""
    hint = headers.get("x-should-retry")
    if hint == "true":
        return True
    if hint == "false":
        return False
    if status == 429 and code == "insufficient_quota":
        return False
    return status in _RETRY_STATUSES or status >= 500


def _client_is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    return host in ("localhost", "::1") or host.startswith("127.") or host.endswith(".localhost")


class ChatCompletionStream:
    """An iterator of ``chat.completion.chunk`` objects (:class:`AttrDict`), as they arrive.

    Use it in a ``for`` loop or as a context manager; ``close()`` (or leaving the ``with``
    block, or breaking out of the loop and closing) stops reading and frees the connection.
    After the loop, :attr:`accumulator` holds the assembled answer (content, reasoning,
    tool calls, finish reason, usage).

    :raises IncompleteStreamError: the connection ended before ``[DONE]`` or a finish reason
    :raises APIError: the server sent an error event inside the stream
    """

    def __init__(
        self, response: HTTPResponse, *, secrets: tuple[str, ...] = (), max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    ) -> None:
        self.response = response
        self._max_bytes = max_bytes
        self.accumulator = ChatAccumulator()
        self._secrets = secrets
        self._closed = False
        self._iterator: Iterator[tuple[dict[str, Any], str]] | None = None
        self._block_iterator: Iterator[list[tuple[dict[str, Any], str]]] | None = None

    def __repr__(self) -> str:
        return "<ChatCompletionStream status=%d closed=%s>" % (self.response.status, self._closed)

    def _blocks(self) -> Iterator[list[tuple[dict[str, Any], str]]]:
        """The one reading loop, one list of ``(chunk, choice-0 content delta)`` per network read."""
        if self._block_iterator is None:
            self._block_iterator = self._read()
        return self._block_iterator

    def _pairs(self) -> Iterator[tuple[dict[str, Any], str]]:
        """``(chunk, choice-0 content delta)`` one by one (the accumulator is fed as they are read)."""
        if self._iterator is None:
            self._iterator = itertools.chain.from_iterable(self._blocks())
        return self._iterator

    def iter_text_batches(self) -> Iterator[list[str]]:
        """The answer's text pieces, one list per network read (for handing over between threads)."""
        for block in self._blocks():
            pieces = [piece for _, piece in block if piece]
            if pieces:
                yield pieces

    def iter_dicts(self) -> Iterator[dict[str, Any]]:
        """Yield each chunk as a plain dict (no attribute wrapping)."""
        for chunk, _ in self._pairs():
            yield chunk

    def iter_text(self) -> Iterator[str]:
        """Yield the answer's text pieces (choice 0), never empty strings; reasoning excluded."""
        for _, piece in self._pairs():
            if piece:
                yield piece

    def _read(self) -> Iterator[list[tuple[dict[str, Any], str]]]:
        acc = self.accumulator
        response = self.response
        try:
            ctype = response.headers.get("content-type", "")
            if "json" in ctype and "event-stream" not in ctype:
                import json

                body = _client_parse_body(response.read(limit=self._max_bytes), response, self._secrets)
                if isinstance(body, dict) and "error" in body and "choices" not in body:
                    raise make_status_error(
                        response.status if response.status >= 400 else 500,
                        response.headers,
                        json.dumps(body),
                        secrets=self._secrets,
                    )
                whole = accumulator_from_completion(body)
                self.accumulator = whole
                yield [(_client_chunk_from_completion(body), whole.content)]
                return
            decoder = SSEDecoder()
            add = acc.add
            reads = response.iter_bytes()
            for data in reads:
                events = decoder.feed(data)
                if events:
                    yield _client_block(events, acc, add)
                    if acc.done:
                        _client_finish_body(response, reads)
                        break
            else:
                block = _client_block(decoder.close(), acc, add)
                if block:
                    yield block
            if not acc.complete:
                raise IncompleteStreamError(
                    "The stream ended before the answer was complete (no [DONE] and no finish_reason); "
                    "%d characters had arrived." % len(acc.content),
                    partial=acc.content,
                )
        except RequestCancelledError:
            raise
        except IncompleteStreamError as exc:
            if not exc.partial:
                exc.partial = acc.content
            raise
        except APIConnectionError as exc:
            if type(exc) is APIConnectionError:
                raise IncompleteStreamError(
                    "The stream broke off: %s" % exc.message, partial=acc.content, cause=exc
                ) from exc
            raise
        except APIError as exc:
            # an error event inside the stream: the server may have echoed the key
            redact_error(exc, self._secrets)
            raise
        finally:
            self.close()

    def __iter__(self) -> Iterator[AttrDict]:
        for chunk in self.iter_dicts():
            yield AttrDict(chunk)

    def __next__(self) -> AttrDict:
        chunk, _ = next(self._pairs())
        return AttrDict(chunk)

    def close(self) -> None:
        """Stop reading; an unfinished body means the connection is discarded, not reused."""
        if not self._closed:
            self._closed = True
            self.response.close()

    def __enter__(self) -> ChatCompletionStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: S110 - pragma: no cover - interpreter shutdown
            pass


def _client_finish_body(response: HTTPResponse, reads: Iterator[bytes]) -> None:
    """After ``[DONE]``: read the end of the body (normally already there: the chunked
    terminator) so the kept-alive connection goes back to the pool instead of being discarded.
    Whatever comes after ``[DONE]`` is ignored; a server that does not end the body within a
    second only costs its connection."""
    response.limit_read_timeout(1.0)
    try:
        for _ in reads:
            pass
    except OpenAIError:  # noqa: S110 - the transport discarded the connection; the answer is complete
        pass


def _client_parse_body(raw: bytes, response: HTTPResponse, secrets: tuple[str, ...]) -> Any:
    """Parse a whole JSON answer; a body that is not JSON (or absurdly nested) is an
    ``APIStatusError`` quoting a short excerpt, with any key the server echoed masked."""
    import json

    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        excerpt = redact(raw[:200].decode("utf-8", "replace"), secrets)
        raise APIStatusError(
            "The server answered %d with a body that is not usable JSON: %r" % (response.status, excerpt),
            status_code=response.status,
            headers=response.headers,
            request_id=response.headers.get("x-request-id"),
        ) from None


def _client_block(
    events: list[Any], acc: ChatAccumulator, add: Callable[[dict[str, Any]], str]
) -> list[tuple[dict[str, Any], str]]:
    """Parse and accumulate the events of one network read (an error event raises)."""
    return [(chunk, add(chunk)) for chunk in iter_chunk_dicts(events, acc)]


def _client_chunk_from_completion(body: dict[str, Any]) -> dict[str, Any]:
    """Turn a whole chat.completion into one equivalent chunk (message -> delta)."""
    choices = []
    for choice in body.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        delta = dict(choice.get("message") or {})
        choices.append({"index": choice.get("index", 0), "delta": delta, "finish_reason": choice.get("finish_reason")})
    chunk = {k: v for k, v in body.items() if k != "choices"}
    chunk["object"] = "chat.completion.chunk"
    chunk["choices"] = choices
    return chunk


class OpenAI:
    """A client for ``{base_url}/chat/completions``, shaped like ``openai.OpenAI``.

    Every option falls back to the official SDK's environment variable when not given:
    ``api_key`` (``OPENAI_API_KEY``), ``base_url`` (``OPENAI_BASE_URL``, default
    ``https://api.openai.com/v1``), ``organization`` (``OPENAI_ORG_ID``), ``project``
    (``OPENAI_PROJECT_ID``).  No key at all is allowed (local servers need none).

    :param api_key: a key, or an :class:`AKPool` to rotate keys per request
    :param timeout: seconds (both limits), ``(connect, read)`` or :class:`Timeout`; the read limit
        is the longest silence between bytes, so a stalled stream is caught. Default (10, 600).
    :param max_retries: retries after connection errors, timeouts, 408/409/429/5xx (default 2)
    :param proxy: ``http://``, ``https://``, ``socks5://`` or ``socks5h://`` URL (user:password
        allowed); None uses HTTP(S)_PROXY / ALL_PROXY / NO_PROXY from the environment
    :param verify: False turns TLS verification off (explicitly; no environment variable does)
    :param ca_file: a PEM bundle to trust instead of the system store (corporate proxies)
    :param max_response_bytes: cap on a non-streaming body (default 64 MiB)
    :param transport: an :class:`HTTPTransport` to share between clients (connection reuse)
    :param sleep: ``sleep(seconds, cancel_scope)`` used between retries (tests inject one)
    """

    def __init__(
        self,
        api_key: str | AKPool | None = None,
        *,
        organization: str | None = None,
        project: str | None = None,
        base_url: str | None = None,
        timeout: float | tuple[float, float] | Timeout | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        default_headers: Mapping[str, str] | None = None,
        proxy: str | None = None,
        verify: bool = True,
        ca_file: str | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        transport: HTTPTransport | None = None,
        sleep: Callable[[float, CancelScope | None], None] | None = None,
    ) -> None:
        if api_key is None:
            api_key = os.environ.get("OPENAI_API_KEY") or None
        if api_key is not None and not isinstance(api_key, (str, AKPool)):
            raise TypeError("api_key must be a string or an AKPool, not %s" % type(api_key).__name__)
        if isinstance(api_key, str) and not api_key.strip():
            api_key = None
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise ValueError("max_retries must be an integer >= 0, got %r" % (max_retries,))
        self._api_key = api_key
        self.organization = organization if organization is not None else os.environ.get("OPENAI_ORG_ID") or None
        self.project = project if project is not None else os.environ.get("OPENAI_PROJECT_ID") or None
        base = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        if "://" not in base:
            raise ValueError("base_url must start with http:// or https://, got %r" % base)
        self.base_url = base.rstrip("/")
        self.timeout = coerce_timeout(timeout)
        self.max_retries = max_retries
        self.default_headers = dict(default_headers or {})
        self.proxy = proxy
        self.max_response_bytes = max_response_bytes
        self._owns_transport = transport is None
        self._transport = (
            transport if transport is not None else HTTPTransport(proxy=proxy, verify=verify, ca_file=ca_file)
        )
        self._sleep = sleep or _client_default_sleep
        self._plain_http_warned = False
        self._lock = threading.Lock()
        self.chat = _ClientChat(self)

    # -- keys ---------------------------------------------------------------------------------
    @property
    def api_key(self) -> str | AKPool | None:
        """The key or pool in use (``repr`` of either never shows a raw key)."""
        return self._api_key

    @api_key.setter
    def api_key(self, value: str | AKPool | None) -> None:
        if value is not None and not isinstance(value, (str, AKPool)):
            raise TypeError("api_key must be a string or an AKPool, not %s" % type(value).__name__)
        self._api_key = value or None

    def _secrets(self) -> tuple[str, ...]:
        key = self._api_key
        if isinstance(key, AKPool):
            return tuple(key.keys())
        return (key,) if key else ()

    def __repr__(self) -> str:
        key = self._api_key
        shown = repr(key) if isinstance(key, AKPool) else mask_key(key) if key else "None"
        return "OpenAI(base_url=%r, api_key=%s)" % (self.base_url, shown)

    def close(self) -> None:
        """Close pooled connections (only those of a transport this client created)."""
        if self._owns_transport:
            self._transport.close()

    def __enter__(self) -> OpenAI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def with_options(self, **options: Any) -> OpenAI:
        """A copy of this client with some options changed, sharing its connection pool."""
        unknown = set(options) - _CLIENT_OPTION_NAMES
        if unknown:
            raise TypeError("unknown client option(s): %s" % ", ".join(sorted(unknown)))
        kwargs: dict[str, Any] = {
            "api_key": self._api_key,
            "organization": self.organization,
            "project": self.project,
            "base_url": self.base_url,
            "timeout": self.timeout,
            "max_retries": self.max_retries,
            "default_headers": self.default_headers,
            "max_response_bytes": self.max_response_bytes,
            "sleep": self._sleep,
        }
        if not ({"proxy", "verify", "ca_file"} & set(options)):
            kwargs["transport"] = self._transport
        kwargs.update(options)
        return OpenAI(**kwargs)

    # -- requests -----------------------------------------------------------------------------
    def _headers(self, key: str | None, stream: bool) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
            "User-Agent": USER_AGENT,
        }
        if key:
            headers["Authorization"] = "Bearer " + key
        if self.organization:
            headers["OpenAI-Organization"] = self.organization
        if self.project:
            headers["OpenAI-Project"] = self.project
        headers.update(self.default_headers)
        return headers

    def _warn_plain_http(self) -> None:
        if self._plain_http_warned or not self.base_url.startswith("http://"):
            return
        from urllib.parse import urlsplit

        host = urlsplit(self.base_url).hostname or ""
        self._plain_http_warned = True
        if not _client_is_loopback(host):
            import warnings

            warnings.warn(
                "openai2: sending an API key over plain http:// to %s; use https:// unless this "
                "network is trusted" % host,
                RuntimeWarning,
                stacklevel=4,
            )

    def post(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        stream: bool = False,
        cancel: CancelScope | None = None,
        timeout: float | tuple[float, float] | Timeout | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> HTTPResponse:
        """POST a JSON body to ``{base_url}{path}`` with retries and key failover.

        Returns the successful (2xx) response, unread.  Used by ``chat.completions.create``
        and by :class:`Chat`; other endpoints can use it too.

        :raises APIStatusError: (a subclass per status) once retries are exhausted
        :raises APIConnectionError: the server could not be reached (or timed out)
        """
        import json

        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        url = self.base_url + path
        limits = self.timeout if timeout is None else coerce_timeout(timeout)
        pool = self._api_key if isinstance(self._api_key, AKPool) else None
        attempt = 0
        failovers = 0
        log = get_logger()
        while True:
            key = pool.next_key() if pool is not None else self._api_key
            assert not isinstance(key, AKPool)
            if key:
                self._warn_plain_http()
            headers = self._headers(key, stream)
            if extra_headers:
                headers.update(extra_headers)
            try:
                response = self._transport.request(
                    "POST", url, headers=headers, body=payload, timeout=limits, cancel=cancel
                )
            except RequestCancelledError:
                raise
            except APIConnectionError as exc:
                if attempt >= self.max_retries or not getattr(exc, "retryable", True):
                    raise
                delay = retry_delay(attempt)
                attempt += 1
                log.info("openai2: connection failed, retry %d/%d in %.2fs", attempt, self.max_retries, delay)
                self._sleep(delay, cancel)
                continue
            if response.status < 300:
                return response
            try:
                raw = response.read(limit=1024 * 1024)
            except OpenAIError:
                raw = b""
            finally:
                response.close()
            error = make_status_error(
                response.status, response.headers, raw, secrets=self._secrets(), sent_key=bool(key)
            )
            status = response.status
            if pool is not None and key:
                if status in (401, 403) or (status == 429 and error.code == "insufficient_quota"):
                    pool.mark_invalid(key, status)
                    if pool.usable_count > 0:
                        log.warning("openai2: key %s rejected (%d); trying the next key", mask_key(key), status)
                        continue
                    raise _client_pool_exhausted(pool, error)
                if status == 429:
                    wait = _client_parse_retry_after(response.headers, None)
                    pool.mark_rate_limited(key, min(wait, 3600.0) if wait is not None and wait >= 0 else None)
                    if failovers < len(pool) - 1 and pool.seconds_until_available() == 0:
                        failovers += 1
                        log.info("openai2: key %s rate limited; moving to the next key", mask_key(key))
                        continue
            if attempt >= self.max_retries or not should_retry(status, response.headers, error.code):
                raise error
            delay = retry_delay(attempt, response.headers)
            if pool is not None and status == 429:
                delay = max(delay, min(pool.seconds_until_available(), 60.0))
            attempt += 1
            log.info("openai2: HTTP %d, retry %d/%d in %.2fs", status, attempt, self.max_retries, delay)
            self._sleep(delay, cancel)

    def _complete(
        self,
        body: Mapping[str, Any],
        *,
        cancel: CancelScope | None = None,
        timeout: Any = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Non-streaming chat completion as a plain dict."""
        response = self.post("/chat/completions", body, cancel=cancel, timeout=timeout, extra_headers=extra_headers)
        try:
            raw = response.read(limit=self.max_response_bytes)
        finally:
            response.close()
        result = _client_parse_body(raw, response, self._secrets())
        if isinstance(result, dict) and "error" in result and "choices" not in result:
            raise make_status_error(
                500 if response.status < 400 else response.status, response.headers, raw, secrets=self._secrets()
            )
        return result  # type: ignore[no-any-return]

    def _stream(
        self,
        body: Mapping[str, Any],
        *,
        cancel: CancelScope | None = None,
        timeout: Any = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> ChatCompletionStream:
        response = self.post(
            "/chat/completions", body, stream=True, cancel=cancel, timeout=timeout, extra_headers=extra_headers
        )
        return ChatCompletionStream(response, secrets=self._secrets(), max_bytes=self.max_response_bytes)


class _ClientCompletions:
    """``client.chat.completions``: ``create(**params)``."""

    def __init__(self, client: OpenAI) -> None:
        self._client = client

    def create(self, **params: Any) -> Any:
        """Create a chat completion. Every parameter passes through to the request body.

        ``model`` and ``messages`` are required by the API.  Besides the body parameters, the
        SDK's ``extra_headers``, ``extra_body``, ``extra_query`` (ignored with a clear error if
        used) and ``timeout`` are accepted.

        :returns: an :class:`AttrDict` (``r.choices[0].message.content``) or, with
            ``stream=True``, a :class:`ChatCompletionStream` of chunks
        """
        body = dict(params)
        options = split_request_options(body)
        if "messages" in body and not isinstance(body["messages"], (list, tuple)):
            raise TypeError("messages must be a list of {'role': ..., 'content': ...} dicts")
        if body.get("stream"):
            return self._client._stream(body, **options)
        return to_attr(self._client._complete(body, **options))


class _ClientChat:
    """``client.chat``: holds ``completions``."""

    def __init__(self, client: OpenAI) -> None:
        self.completions = _ClientCompletions(client)


def _client_pool_exhausted(pool: AKPool, error: APIStatusError) -> APIStatusError:
    listed = ", ".join("%s (%d)" % pair for pair in pool.set_aside)
    error.hint = "Every key in the pool was rejected: %s. Add a working key." % listed
    return error
