"""The low-level client, shaped like the official SDK: ``OpenAI(...).chat.completions.create(...)``.

It owns request shaping (headers, body, environment fallbacks), the retry policy (backoff,
``Retry-After``, ``x-should-retry``) and API-key failover across an :class:`AKPool` — decided by
one pure function, :func:`decide_retry`, and applied by :meth:`OpenAI.post` — and turning
response bodies into :class:`AttrDict` results or a :class:`ChatCompletionStream`.  Bytes move
through :class:`HTTPTransport`; SSE is decoded by :class:`SSEDecoder`; chunks are merged by
:class:`ChatAccumulator`.
"""

from __future__ import annotations

import itertools
import os
import threading
import time

from .common import TYPE_CHECKING, USER_AGENT, get_logger, header_secrets, mask_key, redact
from .completion import ChatAccumulator, iter_chunk_dicts
from .errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    IncompleteStreamError,
    OpenAIError,
    RateLimitError,
    RefusalError,
    RequestCancelledError,
    ResponseTooLargeError,
    make_status_error,
    redact_error,
    redact_value,
)
from .keypool import AKPool, PoolSnapshot
from .objects import AttrDict, to_attr
from .sse import SSEDecoder
from .tools import DEFAULT_MAX_TOOL_ROUNDS, ToolLoop, ToolSet, run_rounds
from .transport import CancelScope, HTTPResponse, HTTPTransport, Timeout, coerce_timeout

if TYPE_CHECKING:
    from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

    from .tokens import Calibration
    from .tools import ToolCall

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MAX_RETRIES = 2
#: A non-streaming answer larger than this is refused (ResponseTooLargeError): 64 MiB.
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
#: After ``[DONE]`` a stream reads the end of the body for at most this many seconds in all
#: (silence or not), then discards the connection: ``ChatCompletionStream.done_grace``.
DONE_GRACE_SECONDS = 1.0
#: When every key of an AKPool is cooling down after 429, a request waits for the first free
#: key at most this long (and never longer than its read timeout); beyond, RateLimitError at once.
POOL_WAIT_CAP_SECONDS = 60.0
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
#: A request header whose lower-case name contains one of these carries a credential: its value
#: (and the token after an ``Authorization`` scheme such as ``Bearer``) is masked in errors.
#: SSE fields a body may start with (after a BOM and whitespace): an event stream, whatever its label.
_CLIENT_SSE_STARTS = (b"data:", b"event:", b"id:", b"retry:")
_CLIENT_BOM = b"\xef\xbb\xbf"


def no_answer_error(result: object, secrets: Iterable[str | None] = ()) -> APIError:
    """The error for a 200 answer without any choice (a relay reporting an error as 200, say).

    :param result: the parsed answer; it becomes the error's ``body``
    :param secrets: keys to mask in the message and the body (a server may echo the key); the
        client's own paths (``OpenAI.complete`` / ``stream``) pass them already
    """
    import json

    known = tuple(s for s in secrets if s)
    body = redact_value(result, known)
    try:
        text = json.dumps(body, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        text = repr(body)
    excerpt = redact(text, known)[:200]  # mask first, then cut: a cut key would escape the mask
    return APIError("The server answered without any choice (an error reported as 200?): %s" % excerpt, body=body)


def require_choices(result: object, secrets: Iterable[str | None] = ()) -> None:
    """Raise :func:`no_answer_error` unless ``result`` is a completion with a first choice."""
    choices = result.get("choices") if isinstance(result, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise no_answer_error(result, secrets)


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


def _client_check_key(key: str, what: str) -> None:
    """A key string holding whitespace or a control character (a trailing newline read from a
    file, say) is refused: it could only fail as a header, or be sent mangled."""
    for position, char in enumerate(key):
        if char.isspace() or ord(char) < 32 or ord(char) == 127:
            raise ValueError(
                "%s contains whitespace or a control character (%r at position %d); remove it "
                "(a key read from a file often ends with a newline)" % (what, char, position)
            )


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

    return _client_backoff(attempt, random.random())


def _client_backoff(attempt: int, jitter: float) -> float:
    """0.5 s doubling per attempt, capped at 8 s, minus ``jitter`` (0 to 1) times 25 %."""
    return min(0.5 * (2.0**attempt), 8.0) * (1.0 - 0.25 * jitter)


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


class RetryDecision:
    """What :meth:`OpenAI.post` does after an attempt failed (or before sending, with a pool).

    Made by :func:`decide_retry` and :func:`decide_pool_wait`; ``post`` applies it, and it is
    the only code that changes the pool or sleeps.

    :ivar action: ``"retry"`` (sleep ``delay``, then send again), ``"next_key"`` (send again at
        once, with the pool's next key), ``"raise"`` (give up: raise the error);
        from :func:`decide_pool_wait`: ``"send"`` (a key is free) or ``"wait"`` (sleep ``delay``
        for the first free key, then look again)
    :ivar delay: seconds to sleep before the next attempt (0.0 unless ``retry``/``wait``)
    :ivar key_action: what happens to the key just used, before the action: None,
        ``"set_aside"`` (``AKPool.mark_invalid``; with ``raise`` it was the last usable key) or
        ``"cool_down"`` (``AKPool.mark_rate_limited(key, cool_down)``)
    :ivar cool_down: the seconds for ``"cool_down"``, else None
    :ivar reason: why, in words, for the log line (never a key)
    :ivar hint: for ``raise`` after a 429 with a pool whose keys all cool down: the error's hint
        (when the first key is free again), else None
    """

    __slots__ = ("action", "delay", "key_action", "cool_down", "reason", "hint")
    action: str
    delay: float
    key_action: str | None
    cool_down: float | None
    reason: str
    hint: str | None

    def __init__(
        self,
        action: str,
        reason: str,
        delay: float = 0.0,
        key_action: str | None = None,
        cool_down: float | None = None,
        hint: str | None = None,
    ) -> None:
        for name, value in (
            ("action", action),
            ("delay", delay),
            ("key_action", key_action),
            ("cool_down", cool_down),
            ("reason", reason),
            ("hint", hint),
        ):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("RetryDecision is frozen")

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RetryDecision) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return "RetryDecision(%s)" % ", ".join("%s=%r" % (n, getattr(self, n)) for n in self.__slots__)


def decide_retry(
    *,
    attempt: int,
    max_retries: int,
    status: int | None,
    headers: Mapping[str, str] | None = None,
    code: object = None,
    retryable: bool = True,
    pool: PoolSnapshot | None = None,
    failovers: int = 0,
    read_timeout: float = POOL_WAIT_CAP_SECONDS,
    now: float = 0.0,
    jitter: float = 0.0,
) -> RetryDecision:
    """The retry and key-failover policy: what to do after attempt ``attempt`` failed.

    A pure function (no I/O, no clock, no pool change): everything comes in as arguments.

    - A connection error (``status`` None) is retried with backoff unless it is not
      ``retryable`` (the request may have reached the server) or ``max_retries`` are used up.
    - With a pool (``pool``: its :meth:`AKPool.snapshot` from the failed key's side): a 401,
      403 or a 429 ``insufficient_quota`` sets the key aside and moves on to the next key at
      once (no retry is used up), or raises when no other usable key is left; a 429 cools the
      key down for its ``retry-after-ms``/``Retry-After`` (at most an hour; the pool's
      ``cooldown`` without one) and moves on at once while another key is free (at most
      ``size - 1`` times per request, counted by ``failovers``); when every key cools down, the
      retry waits for the first free one, or raises at once if that is further away than a
      request waits (:data:`POOL_WAIT_CAP_SECONDS`, or ``read_timeout`` if shorter).
    - Otherwise :func:`should_retry` decides (408, 409, 429, >= 500, ``x-should-retry``,
      never ``insufficient_quota``), within ``max_retries``, after :func:`retry_delay`.

    :param attempt: retries made so far (0 after the first attempt)
    :param status: the HTTP status, or None when the connection failed
    :param headers: the response headers (lower-case names)
    :param code: the error body's ``code``
    :param retryable: the failed attempt's error's ``retryable`` attribute: False for a
        connection error the request may have reached the server through, and for a status
        error that a retry cannot fix (``ContextLengthError``, whatever its status: llama.cpp
        server refuses a too-long prompt with a 500), which is raised at once
    :param now: the wall-clock time (``time.time()``), for a ``Retry-After`` HTTP date
    :param jitter: a number from 0 to 1 (``random.random()``): the backoff's jitter
    :returns: the :class:`RetryDecision`
    """
    if status is None:
        if not retryable:
            return RetryDecision("raise", "connection failed; not retried (the request may have been received)")
        if attempt >= max_retries:
            return RetryDecision("raise", "connection failed; %d retries used up" % max_retries)
        delay = _client_backoff(attempt, jitter)
        return RetryDecision(
            "retry", "connection failed, retry %d/%d in %.2fs" % (attempt + 1, max_retries, delay), delay
        )
    if not retryable:
        return RetryDecision("raise", "HTTP %d; not retried (the same request cannot succeed)" % status)
    headers = headers or {}
    pool_wait = 0.0
    key_action: str | None = None
    cool_down: float | None = None
    hint: str | None = None
    if pool is not None:
        if status in (401, 403) or (status == 429 and code == "insufficient_quota"):
            if pool.others_usable > 0:
                return RetryDecision("next_key", "rejected (%d); trying the next key" % status, key_action="set_aside")
            return RetryDecision("raise", "rejected (%d); no usable key left" % status, key_action="set_aside")
        if status == 429:
            wait = _client_parse_retry_after(headers, now)
            key_action = "cool_down"
            cool_down = min(wait, 3600.0) if wait is not None and wait >= 0 else pool.cooldown
            # a later cool-down never shortens a longer one already in force
            pool_wait = max(pool.key_wait, cool_down)
            if pool.others_wait is not None:
                pool_wait = min(pool_wait, pool.others_wait)
            if failovers < pool.size - 1 and pool_wait == 0:
                return RetryDecision(
                    "next_key", "rate limited (429); moving to the next key", key_action=key_action, cool_down=cool_down
                )
            if pool_wait > 0:
                hint = "Every key in the pool is rate limited; the first one is free again in %s s." % (
                    _client_seconds(pool_wait)
                )
    if not should_retry(status, headers, code):
        return RetryDecision("raise", "HTTP %d; not retried" % status, 0.0, key_action, cool_down, hint)
    if attempt >= max_retries:
        return RetryDecision(
            "raise", "HTTP %d; %d retries used up" % (status, max_retries), 0.0, key_action, cool_down, hint
        )
    cap = min(POOL_WAIT_CAP_SECONDS, read_timeout)
    if pool_wait > cap:
        # no key free within what a request may wait: say so now, not after a long sleep
        reason = "HTTP %d; no key free within %s s (the first in %s s)" % (
            status,
            _client_seconds(cap),
            _client_seconds(pool_wait),
        )
        return RetryDecision("raise", reason, 0.0, key_action, cool_down, hint)
    # with a pool, retry when its first key is free (the cool-downs follow each Retry-After)
    delay = pool_wait if pool_wait > 0 else _client_retry_delay(attempt, headers, now, jitter)
    reason = "HTTP %d, retry %d/%d in %.2fs" % (status, attempt + 1, max_retries, delay)
    return RetryDecision("retry", reason, delay, key_action, cool_down)


def decide_pool_wait(wait: float, waited: float, read_timeout: float) -> RetryDecision:
    """Before sending with a pool: send, wait for the first free key, or refuse at once.

    Pure, like :func:`decide_retry`.  A request waits at most :data:`POOL_WAIT_CAP_SECONDS` in
    all, and never longer than ``read_timeout``.

    :param wait: seconds until the pool's first usable key is free
        (:meth:`AKPool.seconds_until_available`)
    :param waited: seconds this request already waited for a key
    :returns: ``send``, ``wait`` (``delay``) or ``raise`` (``RateLimitError``, saying when)
    """
    if wait <= 0:
        return RetryDecision("send", "a key is free")
    cap = min(POOL_WAIT_CAP_SECONDS, read_timeout)
    if waited + wait > cap:
        return RetryDecision(
            "raise",
            "every key of the pool is rate limited; the first is free in %s s, beyond %s s"
            % (_client_seconds(wait), _client_seconds(cap)),
        )
    return RetryDecision("wait", "every key of the pool is rate limited; waiting %.2fs for the first" % wait, wait)


def _client_retry_delay(attempt: int, headers: Mapping[str, str], now: float, jitter: float) -> float:
    """:func:`retry_delay` without randomness or a clock: ``now`` and ``jitter`` come in."""
    wait = _client_parse_retry_after(headers, now) if headers else None
    if wait is not None and wait >= 0:
        return min(wait, 60.0)
    return _client_backoff(attempt, jitter)


def _client_is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    return host in ("localhost", "::1") or host.startswith("127.") or host.endswith(".localhost")


def _client_check_headers(headers: object, what: str) -> dict[str, str]:
    """``headers`` as a dict of str -> str, or a TypeError/ValueError naming ``what``."""
    from collections.abc import Mapping as _ClientMapping

    if headers is None:
        return {}
    if not isinstance(headers, _ClientMapping):
        raise TypeError("%s must be a mapping of header names to strings, not %s" % (what, type(headers).__name__))
    checked: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not name or any(c in name for c in ":\r\n\0 \t"):
            raise ValueError("%s: %r is not a header name" % (what, name))
        if not isinstance(value, str):
            raise TypeError(
                "%s[%r] must be a string, not %s (header values are text: str(value))"
                % (what, name, type(value).__name__)
            )
        if any(c in value for c in "\r\n\0"):
            raise ValueError("%s[%r] contains a line break or NUL, which a header cannot carry" % (what, name))
        checked[name] = value
    return checked


def _client_shown_url(url: str) -> str:
    """``url`` for a repr or a message: a password in user info as ``****``, each query value as
    ``…`` (``?api-key=…``), the fragment left out; the rest (host, path, names) as given."""
    url, _, _ = url.partition("#")
    url, question, query = url.partition("?")
    scheme, sep, rest = url.partition("://")
    if sep:
        netloc, slash, path = rest.partition("/")
        auth, at, host = netloc.rpartition("@")
        if at:
            user, colon, _ = auth.partition(":")
            netloc = user + (":****" if colon else "") + "@" + host
        url = scheme + sep + netloc + slash + path
    if question:
        fields = [field.partition("=") for field in query.split("&")]
        url += "?" + "&".join(name + ("=…" if eq else "") for name, eq, _ in fields)
    return url


def _client_check_base_url(base: object, from_env: bool) -> str:
    where = "OPENAI_BASE_URL" if from_env else "base_url"
    if not isinstance(base, str):
        raise TypeError("base_url must be a string such as %r, not %s" % (DEFAULT_BASE_URL, type(base).__name__))
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(base.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ValueError("%s is not a valid URL: %r" % (where, _client_shown_url(base))) from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(
            "%s must be an http:// or https:// URL with a host, such as %r, not %r"
            % (where, DEFAULT_BASE_URL, _client_shown_url(base))
        )
    return base.strip()


def _client_check_options(
    organization: object,
    project: object,
    proxy: object,
    verify: object,
    ca_file: object,
    max_response_bytes: object,
    transport: object,
    sleep: object,
) -> None:
    """Refuse misused client options at once, naming the option and what it takes."""
    for name, value in (("organization", organization), ("project", project)):
        if value is not None and not isinstance(value, str):
            raise TypeError("%s must be a string (or None), not %s" % (name, type(value).__name__))
    if proxy is not None and not isinstance(proxy, str):
        raise TypeError(
            "proxy must be a URL string such as 'http://127.0.0.1:7890' or 'socks5h://127.0.0.1:1080' "
            "(or None for the environment's), not %s" % type(proxy).__name__
        )
    if not isinstance(verify, bool):
        raise TypeError("verify must be True or False, not %r (a CA bundle goes in ca_file=)" % (verify,))
    if ca_file is not None and not isinstance(ca_file, (str, os.PathLike)):
        raise TypeError("ca_file must be a path to a PEM file, not %s" % type(ca_file).__name__)
    if isinstance(max_response_bytes, bool) or not isinstance(max_response_bytes, int):
        raise TypeError(
            "max_response_bytes must be an integer number of bytes, not %s" % type(max_response_bytes).__name__
        )
    if max_response_bytes <= 0:
        raise ValueError("max_response_bytes must be a positive number of bytes, not %d" % max_response_bytes)
    if transport is not None and not isinstance(transport, HTTPTransport):
        raise TypeError("transport must be an HTTPTransport, not %s" % type(transport).__name__)
    if sleep is not None and not callable(sleep):
        raise TypeError("sleep must be a callable sleep(seconds, cancel_scope), not %s" % type(sleep).__name__)


def _client_nonfinite(value: object, path: str = "") -> tuple[str, object] | None:
    """Where in a request body a NaN or infinity, or a text with a lone surrogate (neither is
    JSON), is (``messages[2].content``) and its value."""
    if isinstance(value, float):
        return (path, value) if value != value or value in (float("inf"), float("-inf")) else None
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return (path, value)
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            here = "%s.%s" % (path, key) if path else str(key)
            found = _client_nonfinite(key, here) or _client_nonfinite(item, here)
            if found is not None:
                return found
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = _client_nonfinite(item, "%s[%d]" % (path, i))
            if found is not None:
                return found
    return None


def _client_seconds(seconds: float) -> str:
    return "%.1f" % seconds if seconds < 10 else "%.0f" % seconds


def _client_pool_wait_cap(limits: Timeout) -> float:
    """How long a request waits for a pool's first free key: 60 s, or its read timeout if shorter."""
    return min(POOL_WAIT_CAP_SECONDS, limits.read)


def _client_encode_body(body: Mapping[str, Any]) -> bytes:
    """The request body as UTF-8 JSON; a NaN or infinity (not JSON) is a ValueError naming its place."""
    import json

    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except ValueError:  # UnicodeEncodeError too: a lone surrogate (from errors="surrogateescape")
        found = _client_nonfinite(body)
        if found is None:
            raise
    if isinstance(found[1], str):
        raise ValueError(
            "%s holds a lone surrogate (text decoded with errors='surrogateescape'?), which JSON cannot "
            "carry; decode it as UTF-8 with errors='replace'. Nothing was sent." % found[0]
        )
    raise ValueError(
        "%s is %r, which JSON cannot carry (NaN and infinities are not JSON); send a finite number. "
        "Nothing was sent." % found
    )


def _client_pool_busy(pool: AKPool, wait: float, cap: float) -> RateLimitError:
    """Every key of ``pool`` cools down for longer than a request may wait."""
    return RateLimitError(
        "Every key in the pool is rate limited (429); the first one is free again in %s s, longer "
        "than a request waits (%s s)." % (_client_seconds(wait), _client_seconds(cap)),
        status_code=429,
        hint="Try again in %s s, add keys to the pool, or raise the timeout (a request waits at most "
        "%g s for a key)." % (_client_seconds(wait), POOL_WAIT_CAP_SECONDS),
    )


class ChatCompletionStream:
    """An iterator of ``chat.completion.chunk`` objects (:class:`AttrDict`), as they arrive.

    Use it in a ``for`` loop or as a context manager; ``close()`` (or leaving the ``with``
    block, or breaking out of the loop and closing) stops reading and frees the connection.
    ``close()`` may be called from another thread: the reading thread's loop then ends at once,
    quietly (the caller asked to stop: no ``IncompleteStreamError``).
    After the loop, :attr:`accumulator` holds the assembled answer (content, reasoning,
    tool calls, finish reason, usage).

    A body is read as an event stream unless it is labelled JSON and does not start like one
    (``data:``, ``event:``, ``id:``, ``retry:`` or ``:``): such a body is taken as one whole
    response, size-capped (some relays answer a stream request that way).  ``[DONE]``
    ends the stream: the rest of the body is read for at most :attr:`done_grace` seconds in
    all (so the connection can be reused), then the connection is discarded.

    :ivar done_grace: seconds allowed for the body's end after ``[DONE]`` (default
        :data:`DONE_GRACE_SECONDS`); set it before iterating
    :ivar clock: the monotonic clock that deadline is measured with (injectable)
    :raises IncompleteStreamError: the connection ended before ``[DONE]`` or a finish reason
    :raises APIError: the server sent an error event inside the stream, or (for ``Chat``'s
        streams, ``answer_required``) a complete stream carried no answer at all
    """

    def __init__(
        self,
        response: HTTPResponse,
        *,
        secrets: tuple[str, ...] = (),
        max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        answer_required: bool = False,
        done_grace: float = DONE_GRACE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.response = response
        self._max_bytes = max_bytes
        self.accumulator = ChatAccumulator(secrets=secrets)  # its errors quote chunks: keys masked
        self._secrets = secrets
        self._answer_required = answer_required
        self.done_grace = done_grace
        self.clock = clock
        self._closed = False
        self._close_lock = threading.Lock()
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

    def iter_pieces(self) -> Iterator[str]:
        """One item per chunk, once the accumulator has merged it: the text that chunk added to
        choice 0's content (``""`` when none), so a caller can look at :attr:`accumulator`
        between chunks (``Chat``'s streams read the new reasoning there)."""
        import operator

        return map(operator.itemgetter(1), self._pairs())

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
        try:
            if self._closed:
                return
            yield from self._read_body()
        except Exception as exc:
            if self._closed:
                return  # close() (maybe from another thread) broke the read: the caller asked to stop
            if isinstance(exc, RequestCancelledError):
                raise
            if isinstance(exc, IncompleteStreamError):
                if not exc.partial:
                    exc.partial = self.accumulator.content
                raise
            if type(exc) is APIConnectionError:
                raise IncompleteStreamError(
                    "The stream broke off: %s" % exc.message, partial=acc.content, cause=exc
                ) from exc
            if isinstance(exc, APIError) and not isinstance(exc, APIConnectionError):
                # an error event inside the stream: the server may have echoed the key
                redact_error(exc, self._secrets)
            raise
        finally:
            self.close()

    def _read_body(self) -> Iterator[list[tuple[dict[str, Any], str]]]:
        response = self.response
        reads = response.iter_bytes()
        head = b""
        ctype = response.headers.get("content-type", "")
        if "json" in ctype and "event-stream" not in ctype:
            # labelled JSON: the official SDK decodes a stream request as SSE whatever the label,
            # so look at the first bytes instead of reading a whole event stream into memory
            head, is_events = _client_peek_events(reads)
            if not is_events:
                yield self._whole_json(head, reads)
                return
        acc = self.accumulator
        decoder = SSEDecoder()
        add = acc.add
        for data in itertools.chain((head,) if head else (), reads):
            if self._closed:
                return  # closed from another thread: not one more chunk
            events = decoder.feed(data)
            if events:
                yield _client_block(events, acc, add)
                if acc.done:
                    _client_finish_body(reads, response, self.done_grace, self.clock)
                    break
        else:
            if self._closed:
                return
            block = _client_block(decoder.close(), acc, add)
            if block:
                yield block
        if not acc.complete:
            raise IncompleteStreamError(
                "The stream ended before the answer was complete (no [DONE] and no finish_reason); "
                "%d characters had arrived." % len(acc.content),
                partial=acc.content,
            )
        if self._answer_required and not _client_has_answer(acc):
            raise no_answer_error(acc.completion(), self._secrets)

    def _whole_json(self, head: bytes, reads: Iterator[bytes]) -> list[tuple[dict[str, Any], str]]:
        """A plain JSON body answering a stream request: the accumulator holds it whole, and the
        stream yields it as one chunk (:meth:`ChatAccumulator.chunk`)."""
        import json

        response = self.response
        limit = self._max_bytes
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise _client_too_large(response, limit)
        parts = [head]
        size = len(head)
        for data in reads:
            size += len(data)
            if size > limit:
                raise _client_too_large(response, limit)
            parts.append(data)
        body = _client_parse_body(b"".join(parts), response, self._secrets)
        if isinstance(body, dict) and "error" in body and "choices" not in body:
            raise make_status_error(
                response.status if response.status >= 400 else 500,
                response.headers,
                json.dumps(body),
                secrets=self._secrets,
            )
        acc = self.accumulator
        acc.add_completion(body)  # the one answer shape: a watched reasoning list gets it too
        if self._answer_required and not _client_has_answer(acc):
            raise no_answer_error(body, self._secrets)
        return [(acc.chunk(), acc.content)]

    def __iter__(self) -> Iterator[AttrDict]:
        for chunk in self.iter_dicts():
            yield AttrDict(chunk)

    def __next__(self) -> AttrDict:
        chunk, _ = next(self._pairs())
        return AttrDict(chunk)

    def close(self) -> None:
        """Stop reading; an unfinished body means the connection is discarded, not reused.

        Safe from any thread: a thread blocked reading this stream returns at once and its loop
        ends without an error.
        """
        with self._close_lock:
            if self._closed:
                return
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


def _client_has_answer(acc: ChatAccumulator) -> bool:
    """Whether a finished stream carried an answer: text, tool calls, a refusal or a finish reason."""
    return bool(acc.content or acc.tool_calls or acc.refusal or acc.finish_reason)


def _client_too_large(response: HTTPResponse, limit: int) -> ResponseTooLargeError:
    return ResponseTooLargeError(
        "The response body (HTTP %d) is larger than the %d-byte limit (max_response_bytes); it was not "
        "read." % (response.status, limit)
    )


def _client_peek_events(reads: Iterator[bytes]) -> tuple[bytes, bool]:
    """Read just enough of a body to tell an event stream from a JSON document.

    :returns: ``(bytes read, is an event stream)``; an event stream's bytes come back without
        the leading BOM and whitespace (they carry no event)
    """
    head = b""
    for data in reads:
        head += data
        verdict = _client_looks_like_events(head)
        if verdict is not None:
            return (_client_strip_head(head) if verdict else head), verdict
    return head, False


def _client_strip_head(head: bytes) -> bytes:
    if head.startswith(_CLIENT_BOM):
        head = head[len(_CLIENT_BOM) :]
    return head.lstrip(b" \t\r\n")


def _client_looks_like_events(head: bytes) -> bool | None:
    """True for a body starting like SSE (``data:``, ``event:``, ``id:``, ``retry:``, ``:``
    after an optional BOM and whitespace), False for anything else, None: too few bytes yet."""
    if len(head) < len(_CLIENT_BOM) and _CLIENT_BOM.startswith(head):
        return None
    text = _client_strip_head(head)
    if not text:
        return None
    if text[:1] == b":":
        return True
    for start in _CLIENT_SSE_STARTS:
        if text.startswith(start):
            return True
        if len(text) < len(start) and start.startswith(text):
            return None
    return False


def _client_finish_body(
    reads: Iterator[bytes], response: HTTPResponse, grace: float, clock: Callable[[], float]
) -> None:
    """After ``[DONE]``: read the end of the body (normally already there: the chunked
    terminator) so the kept-alive connection goes back to the pool instead of being discarded.

    Whatever comes after ``[DONE]`` is ignored.  The whole tail gets ``grace`` seconds, silence
    or not: a server that keeps sending (``: ping`` comments) or never ends the body only costs
    its connection, which is then discarded."""
    deadline = clock() + grace
    response.limit_read_timeout(max(grace, 0.001))
    try:
        for _ in reads:
            remaining = deadline - clock()
            if remaining <= 0:
                break
            response.limit_read_timeout(remaining)
    except OpenAIError:  # noqa: S110 - the transport discarded the connection; the answer is complete
        return
    close = getattr(reads, "close", None)
    if close is not None:
        close()  # an unfinished body: the connection is discarded (a finished one is already back)


def _client_parse_body(raw: bytes, response: HTTPResponse, secrets: tuple[str, ...]) -> Any:
    """Parse a whole JSON answer; a body that is not JSON (or absurdly nested) is an
    ``APIStatusError`` quoting a short excerpt, with any key the server echoed masked."""
    import json

    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        # mask first, then cut (a key cut in two would escape the mask): a window long enough
        # for 200 characters plus any key that starts inside them (4 bytes per character at most)
        longest = max((len(secret) for secret in secrets if secret), default=0)
        window = raw[: 4 * (200 + longest)].decode("utf-8", "replace")
        excerpt = redact(window, secrets)[:200]
        error = APIStatusError(
            "The server answered %d with a body that is not usable JSON: %r" % (response.status, excerpt),
            status_code=response.status,
            headers=response.headers,
            request_id=response.headers.get("x-request-id"),
        )
        raise redact_error(error, secrets) from None  # headers and request id may echo a key


def _client_block(
    events: list[Any], acc: ChatAccumulator, add: Callable[[dict[str, Any]], str]
) -> list[tuple[dict[str, Any], str]]:
    """Parse and accumulate the events of one network read (an error event raises)."""
    return [(chunk, add(chunk)) for chunk in iter_chunk_dicts(events, acc)]


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
        from_arg = api_key is not None
        if api_key is None:
            api_key = os.environ.get("OPENAI_API_KEY") or None
        if api_key is not None and not isinstance(api_key, (str, AKPool)):
            raise TypeError("api_key must be a string or an AKPool, not %s" % type(api_key).__name__)
        if isinstance(api_key, str) and not api_key.strip():
            api_key = None
        if isinstance(api_key, str):
            _client_check_key(api_key, "api_key" if from_arg else "OPENAI_API_KEY")
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise ValueError("max_retries must be an integer >= 0, got %r" % (max_retries,))
        _client_check_options(organization, project, proxy, verify, ca_file, max_response_bytes, transport, sleep)
        self._api_key = api_key
        self.organization = organization if organization is not None else os.environ.get("OPENAI_ORG_ID") or None
        self.project = project if project is not None else os.environ.get("OPENAI_PROJECT_ID") or None
        env_base = os.environ.get("OPENAI_BASE_URL") if base_url is None or base_url == "" else None
        base = _client_check_base_url(
            base_url or env_base or DEFAULT_BASE_URL, from_env=bool(env_base) and not base_url
        )
        self.base_url = base.rstrip("/")
        self._token_lock = threading.Lock()
        self._token_calibrations: dict[str, Calibration] = {}  # model -> true / estimated prompt tokens
        self._token_windows: dict[str, int] = {}  # model -> the window learned from a refusal
        self._token_warned: set[str] = set()  # models whose cut prompt was warned about
        self.timeout = coerce_timeout(timeout)
        self.max_retries = max_retries
        self.default_headers = _client_check_headers(default_headers, "default_headers")
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
        if isinstance(value, str) and value.strip():
            _client_check_key(value, "api_key")
        self._api_key = value if isinstance(value, AKPool) or (value and value.strip()) else None

    def _secrets(self, extra_headers: Mapping[str, str] | None = None) -> tuple[str, ...]:
        """Everything to mask in errors: the key (every key of a pool) and the credentials in
        ``default_headers`` and this call's ``extra_headers`` (``api-key``, ``Authorization``, …)."""
        key = self._api_key
        keys = list(key.keys()) if isinstance(key, AKPool) else [key] if key else []
        keys += header_secrets(self.default_headers)
        keys += header_secrets(extra_headers)
        return tuple(dict.fromkeys(keys))

    def __repr__(self) -> str:
        key = self._api_key
        shown = repr(key) if isinstance(key, AKPool) else mask_key(key) if key else "None"
        return "OpenAI(base_url=%r, api_key=%s)" % (_client_shown_url(self.base_url), shown)

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

        With an :class:`AKPool` whose usable keys are all cooling down after 429, the request
        waits (through ``sleep``: cancellable, Ctrl-C works) until the first key is free, at most
        :data:`POOL_WAIT_CAP_SECONDS` (60 s) and never longer than the read timeout; a key
        further away than that raises ``RateLimitError`` at once, saying when one is free.

        What to do after a failed attempt is decided by :func:`decide_retry` (before sending
        with a pool: :func:`decide_pool_wait`); this method applies the decision, and is the only
        code that marks the pool's keys and sleeps.

        :raises ValueError: the body holds a NaN or an infinity (not JSON), named by its path
            (``messages[2].content``, ``temperature``); nothing is sent
        :raises APIStatusError: (a subclass per status) once retries are exhausted
        :raises RateLimitError: every key of the pool cools down for longer than a request waits
        :raises APIConnectionError: the server could not be reached (or timed out)
        """
        payload = _client_encode_body(body)
        extra = _client_check_headers(extra_headers, "extra_headers")
        secrets = self._secrets(extra)
        url = self.base_url + path
        limits = self.timeout if timeout is None else coerce_timeout(timeout)
        pool = self._api_key if isinstance(self._api_key, AKPool) else None
        attempt = 0
        failovers = 0
        while True:
            if pool is not None:
                self._wait_for_key(pool, limits, cancel)
            key = pool.next_key() if pool is not None else self._api_key
            assert not isinstance(key, AKPool)
            if key:
                self._warn_plain_http()
            headers = self._headers(key, stream)
            headers.update(extra)
            try:
                try:
                    response = self._transport.request(
                        "POST", url, headers=headers, body=payload, timeout=limits, cancel=cancel
                    )
                except APIError as raised:
                    # the transport builds some errors itself (a 303, too many redirects, a
                    # proxy's refusal page): mask them here, in one place, with every key
                    redact_error(raised, secrets)
                    raise
            except RequestCancelledError:
                raise
            except APIConnectionError as exc:
                decision = self._decide(attempt, failovers, limits, retryable=getattr(exc, "retryable", True))
                if decision.action == "raise":
                    raise
            else:
                if response.status < 300:
                    return response
                try:
                    raw = response.read(limit=1024 * 1024)
                except OpenAIError:
                    raw = b""
                finally:
                    response.close()
                error = make_status_error(response.status, response.headers, raw, secrets=secrets, sent_key=bool(key))
                snapshot = pool.snapshot(key) if pool is not None and key else None
                decision = self._decide(
                    attempt,
                    failovers,
                    limits,
                    response.status,
                    response.headers,
                    error.code,
                    snapshot,
                    retryable=getattr(error, "retryable", True),
                )
                if pool is not None and key:
                    if decision.key_action == "set_aside":
                        pool.mark_invalid(key, response.status)
                    elif decision.key_action == "cool_down":
                        pool.mark_rate_limited(key, decision.cool_down)
                if decision.action == "raise":
                    if decision.key_action == "set_aside" and pool is not None:
                        raise _client_pool_exhausted(pool, error)
                    if decision.hint is not None:
                        error.hint = decision.hint
                    raise error
            if decision.action == "next_key":
                # a rejected key costs no retry; a rate-limited one is a failover (size - 1 at most)
                if decision.key_action == "cool_down":
                    failovers += 1
                if decision.key_action == "set_aside":
                    get_logger().warning("openai2: key %s %s", mask_key(key or ""), decision.reason)
                else:
                    get_logger().info("openai2: key %s %s", mask_key(key or ""), decision.reason)
                continue
            attempt += 1
            get_logger().info("openai2: %s", decision.reason)
            self._sleep(decision.delay, cancel)

    def _decide(
        self,
        attempt: int,
        failovers: int,
        limits: Timeout,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        code: object = None,
        snapshot: PoolSnapshot | None = None,
        retryable: bool = True,
    ) -> RetryDecision:
        """:func:`decide_retry` with this client's settings, the clock and a jitter."""
        import random

        return decide_retry(
            attempt=attempt,
            max_retries=self.max_retries,
            status=status,
            headers=headers,
            code=code,
            retryable=retryable,
            pool=snapshot,
            failovers=failovers,
            read_timeout=limits.read,
            now=time.time(),
            jitter=random.random(),
        )

    def _wait_for_key(self, pool: AKPool, limits: Timeout, cancel: CancelScope | None) -> None:
        """Wait until a key of ``pool`` is out of its cool-down (see :meth:`post`)."""
        waited = 0.0
        while True:
            wait = pool.seconds_until_available()
            decision = decide_pool_wait(wait, waited, limits.read)
            if decision.action == "send":
                return
            if decision.action == "raise":
                raise _client_pool_busy(pool, wait, _client_pool_wait_cap(limits))
            get_logger().info("openai2: %s", decision.reason)
            self._sleep(decision.delay, cancel)
            waited += decision.delay

    # -- token accounting (per model of this client's base URL) --------------------------------
    def token_calibration(self, model: str) -> Calibration:
        """The smoothed ratio of this server's true prompt tokens (``usage.prompt_tokens``) to
        openai2's estimate, for ``model``: shared by every Chat on this client."""
        from .tokens import Calibration

        with self._token_lock:
            found = self._token_calibrations.get(model)
            if found is None:
                found = self._token_calibrations[model] = Calibration()
            return found

    def adopt_calibration(self, model: str, calibration: Calibration) -> None:
        """Start ``model``'s calibration from one learned before (read back from a file), unless
        this client has observed an answer of its own already."""
        with self._token_lock:
            known = self._token_calibrations.get(model)
            if known is None or not known.samples:
                self._token_calibrations[model] = calibration

    def learned_window(self, model: str) -> int | None:
        """The prompt budget learned for ``model`` from a context-length refusal (``"auto"``)."""
        with self._token_lock:
            return self._token_windows.get(model)

    def learn_window(self, model: str, tokens: int) -> None:
        """Remember the prompt budget of ``model`` for the life of this client (the smaller wins)."""
        with self._token_lock:
            known = self._token_windows.get(model)
            self._token_windows[model] = tokens if known is None else min(known, tokens)

    def warn_truncated(self, model: str, window: int, estimated: int, actual: int) -> None:
        """Warn, once per model, that the server seems to have cut the prompt to ``window``
        tokens without saying so (Ollama's ``num_ctx``)."""
        with self._token_lock:
            if model in self._token_warned:
                return
            self._token_warned.add(model)
        import warnings

        warnings.warn(
            "openai2: %s at %s counted %d prompt tokens where about %d were sent: the server seems to "
            "cut the prompt to a %d-token window without saying so (Ollama does: raise num_ctx, e.g. "
            "`PARAMETER num_ctx 32768` in a Modelfile or OLLAMA_CONTEXT_LENGTH=32768 for the server), or set "
            "Chat(MsgMaxTokens=%d)" % (model, _client_shown_url(self.base_url), actual, estimated, window, window),
            RuntimeWarning,
            stacklevel=4,
        )

    def complete(
        self,
        body: Mapping[str, Any],
        *,
        cancel: CancelScope | None = None,
        timeout: Any = None,
        extra_headers: Mapping[str, str] | None = None,
        answer_required: bool = True,
    ) -> dict[str, Any]:
        """One non-streaming chat completion: ``body`` is sent as is (retries and key failover
        as in :meth:`post`); the answer comes back as a plain dict.

        This and :meth:`stream` are the door the conversation layer (``Chat``, ``GroupChat``,
        the legacy API) uses; ``chat.completions.create`` is built on them too.

        :param body: the request body (``model``, ``messages``, ...), sent unchanged
        :param cancel: a :class:`CancelScope` whose ``cancel()`` (any thread) stops the request
        :param timeout: this call's timeout (seconds, ``(connect, read)`` or :class:`Timeout`)
        :param extra_headers: headers added to this request
        :param answer_required: raise :func:`no_answer_error` (keys masked) for a 200 answer
            without any choice (``Chat``/``GroupChat``); ``create()`` passes False and returns
            whatever the server sent, as the SDK does
        :returns: the parsed ``chat.completion`` body
        :raises APIError: as :meth:`post`; a 200 body that is an error object or not JSON
        """
        response = self.post("/chat/completions", body, cancel=cancel, timeout=timeout, extra_headers=extra_headers)
        try:
            raw = response.read(limit=self.max_response_bytes)
        finally:
            response.close()
        secrets = self._secrets(extra_headers)
        result = _client_parse_body(raw, response, secrets)
        if isinstance(result, dict) and "error" in result and "choices" not in result:
            raise make_status_error(
                500 if response.status < 400 else response.status, response.headers, raw, secrets=secrets
            )
        if answer_required:
            require_choices(result, secrets)
        return result  # type: ignore[no-any-return]

    def stream(
        self,
        body: Mapping[str, Any],
        *,
        cancel: CancelScope | None = None,
        timeout: Any = None,
        extra_headers: Mapping[str, str] | None = None,
        answer_required: bool = True,
    ) -> ChatCompletionStream:
        """One streaming chat completion (``body`` should say ``"stream": true``; it is sent as is).

        :param cancel: :param timeout: :param extra_headers: as for :meth:`complete`
        :param answer_required: a complete stream that carried no answer (no text, tool call,
            refusal or finish reason) raises :func:`no_answer_error`, keys masked (``Chat``);
            ``create(stream=True)`` passes False
        :returns: the :class:`ChatCompletionStream`, not read yet (the response head has arrived)
        """
        response = self.post(
            "/chat/completions", body, stream=True, cancel=cancel, timeout=timeout, extra_headers=extra_headers
        )
        return ChatCompletionStream(
            response,
            secrets=self._secrets(extra_headers),
            max_bytes=self.max_response_bytes,
            answer_required=answer_required,
        )


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
            return self._client.stream(body, answer_required=False, **options)
        return to_attr(self._client.complete(body, answer_required=False, **options))

    def parse(self, *, response_format: Any, strategy: str = "auto", max_repairs: int = 1, **params: Any) -> Any:
        """``create()`` whose answer is parsed into ``response_format`` (a dataclass, a
        ``TypedDict``, ``list[X]``, a JSON Schema dict, or a pydantic model): the SDK's shape,
        with the fallback ladder of ``Chat.parse`` for servers without structured outputs.

        :returns: the completion, ``choices[0].message.parsed`` set (None when the model refused:
            ``message.refusal`` says why, as in the SDK)
        :raises LengthFinishReasonError: the answer was cut off
        :raises SchemaValidationError: the answer never matched the schema
        """
        return _client_parse(self._client, response_format, strategy, max_repairs, params)

    def run_tools(
        self,
        *,
        tools: Sequence[object],
        max_tool_rounds: int = DEFAULT_MAX_TOOL_ROUNDS,
        confirm: Callable[[ToolCall], object] | None = None,
        tool_errors: str = "return",
        on_tool_call: Callable[[ToolCall], object] | None = None,
        on_tool_result: Callable[[ToolCall], object] | None = None,
        **params: Any,
    ) -> ToolRunCompletion:
        """``create()`` with a tool runner: while the answer asks for tools, run them (Python
        functions; see :func:`openai2.tool_schema`), send their results and ask again.

        ``messages`` is not changed: the messages the loop added (every assistant message with
        its ``tool`` answers, then the final answer) are the result's ``new_messages``, so
        ``messages += completion.new_messages`` carries the conversation on.  A call of a tool
        given as a schema dict stops the loop: that answer is returned, its calls unanswered.

        :param tools: Python functions and/or tool schema dicts
        :param max_tool_rounds: the most model -> tools round trips (then :class:`ToolRoundsError`)
        :param confirm: ``confirm(call) -> bool`` before each call runs (refused: the model is told)
        :param tool_errors: ``"return"`` (a tool's exception goes back to the model) or ``"raise"``
        :param on_tool_call: / :param on_tool_result: called with each :class:`ToolCall` before
            it runs / once its result is known
        :returns: the final completion (an :class:`AttrDict`) with ``new_messages`` and
            ``tool_call_records`` (the :class:`ToolCall` records, in order)
        """
        if params.get("stream"):
            raise TypeError("run_tools() does not stream: use Chat(...).stream_request(text, tools=[...])")
        body = dict(params)
        options = split_request_options(body)
        messages = body.get("messages")
        if not isinstance(messages, (list, tuple)):
            raise TypeError("messages must be a list of {'role': ..., 'content': ...} dicts")
        client = self._client
        secrets = client._secrets(options.get("extra_headers"))
        loop = ToolLoop(
            ToolSet(tools),
            max_rounds=max_tool_rounds,
            confirm=confirm,
            tool_errors=tool_errors,
            on_call=on_tool_call,
            on_result=on_tool_result,
            secrets=secrets,
        )
        body["messages"] = list(messages)
        body["tools"] = loop.toolset.schemas()
        exchange = run_rounds(lambda request: client.complete(request, **options), body, loop, secrets)
        out = ToolRunCompletion(exchange.result or {})
        out.new_messages = exchange.messages()
        out.tool_call_records = exchange.calls
        return out


def _client_parse(
    client: OpenAI,
    response_format: object,
    strategy: str,
    max_repairs: int,
    params: dict[str, Any],
) -> Any:
    """``chat.completions.parse``: the completion with ``choices[0].message.parsed`` set."""
    from .structured import ParsePlan, Target, run_parse

    body = dict(params)
    options = split_request_options(body)
    if body.get("stream"):
        raise TypeError("parse() does not stream")
    messages = body.get("messages")
    if not isinstance(messages, (list, tuple)):
        raise TypeError("messages must be a list of {'role': ..., 'content': ...} dicts")
    body["messages"] = list(messages)
    plan = ParsePlan(
        Target(response_format),
        base_url=client.base_url,
        model=str(body.get("model")),
        strategy=strategy,
        max_repairs=max_repairs,
        secrets=client._secrets(options.get("extra_headers")),
    )
    try:
        done = run_parse(lambda request: client.complete(request, **options), body, plan)
    except RefusalError as exc:  # the SDK's rule: no exception, message.refusal set, parsed None
        completion = to_attr(exc.completion)
        completion.choices[0].message.parsed = None
        return completion
    completion = to_attr(done.result)
    completion.choices[0].message.parsed = done.value
    return completion


class ToolRunCompletion(AttrDict):
    """The final completion of :meth:`run_tools`, with what the loop did.

    :ivar new_messages: the messages the loop added after the ones given (assistant messages
        with their ``tool`` answers, then the final answer), ready to extend ``messages``
    :ivar tool_call_records: the :class:`ToolCall` records of every call, in order
    """

    __slots__ = ("new_messages", "tool_call_records")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("new_messages", "tool_call_records"):
            object.__setattr__(self, name, value)
        else:
            self[name] = value


class _ClientChat:
    """``client.chat``: holds ``completions``."""

    def __init__(self, client: OpenAI) -> None:
        self.completions = _ClientCompletions(client)


def _client_pool_exhausted(pool: AKPool, error: APIStatusError) -> APIStatusError:
    listed = ", ".join("%s (%d)" % pair for pair in pool.set_aside)
    error.hint = "Every key in the pool was rejected: %s. Add a working key." % listed
    return error
