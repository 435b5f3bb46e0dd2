"""The exception hierarchy: every error openai2 raises about the API derives from ``OpenAIError``.

Names follow the official SDK where it has them, so ``except openai2.RateLimitError`` reads the
same in both.  Transport failures (urllib, socket, ssl) are translated into ``APIConnectionError``
or ``APITimeoutError`` in the transport and never reach the caller unwrapped.  Messages are
built from the server's own words plus, where known, what to do about it; any API key that
appears in a server's message is masked before it is stored.
"""

from __future__ import annotations

from .common import TYPE_CHECKING, redact

if TYPE_CHECKING:
    from typing import Any, Iterable, Mapping, Sequence


class OpenAIError(Exception):
    """Root of every error raised by openai2 about the API, the network or a stream."""


class APIError(OpenAIError):
    """An error reported by the API (status error or an error event inside a stream).

    :ivar message: the server's own message text (or ours, when the server gave none)
    :ivar body: the parsed JSON error body (``{"error": {...}}`` or the inner object), or text
    :ivar code: ``error.code`` from the body, as sent (a string or a number), or None
    :ivar type: ``error.type`` from the body, or None
    :ivar param: ``error.param`` from the body, or None
    """

    def __init__(
        self,
        message: str,
        *,
        body: object = None,
        code: object = None,
        type: str | None = None,  # noqa: A002 - the SDK's attribute name
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.body = body
        self.code = code
        self.type = type
        self.param = param

    def __str__(self) -> str:
        return self.message

    # openai 0.28 names, read-only, so handlers written for ``openai.error`` keep working
    @property
    def http_status(self) -> int | None:
        """openai 0.28's name: the HTTP status (``status_code``), or None (no status: a stream
        error event, a connection failure)."""
        status = getattr(self, "status_code", None)
        return status if isinstance(status, int) and status else None

    @property
    def user_message(self) -> str:
        """openai 0.28's name for :attr:`message`."""
        return self.message

    @property
    def json_body(self) -> dict[str, Any] | None:
        """openai 0.28's name: :attr:`body` when it is a JSON object, else None."""
        return self.body if isinstance(self.body, dict) else None


class APIStatusError(APIError):
    """The server answered with a 4xx or 5xx status.

    :ivar status_code: the HTTP status
    :ivar request_id: the ``x-request-id`` header, or None
    :ivar headers: the response headers as a dict with lower-case names
    """

    status_code: int = 0

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        headers: Mapping[str, str] | None = None,
        request_id: str | None = None,
        hint: str | None = None,
        body: object = None,
        code: object = None,
        type: str | None = None,  # noqa: A002
        param: str | None = None,
    ) -> None:
        super().__init__(message, body=body, code=code, type=type, param=param)
        self.status_code = status_code
        self.headers = dict(headers or {})
        self.request_id = request_id
        self.hint = hint

    def __str__(self) -> str:
        text = "Error code: %d - %s" % (self.status_code, self.message)
        if self.request_id:
            text += " (request id: %s)" % self.request_id
        if self.hint:
            text += "\n" + self.hint
        return text


class BadRequestError(APIStatusError):
    """400: the request was malformed or a parameter is not supported."""

    status_code = 400


class ContextLengthError(BadRequestError):
    """The server refused the request as longer than the model's context window.

    Recognised by :func:`make_status_error` from OpenAI's ``context_length_exceeded`` code and
    the wordings of vLLM, llama.cpp server, DeepSeek, Qwen/DashScope, Mistral, Groq, Cerebras,
    Gemini, OpenRouter, Anthropic, xAI and LiteLLM (tests/data/context_errors.json holds the
    real bodies).  It is a :class:`BadRequestError` whatever the status: ``status_code`` keeps
    the status the server sent (400 mostly; 413 from Anthropic; 500 from llama.cpp server's old
    "Context size has been exceeded.").  Sending the same request again cannot succeed, so it
    is never retried (``retryable`` is False).

    :ivar limit: the context window in tokens, when the server states it, else None
    :ivar requested: the tokens the request needs as the server counted them (the prompt, plus
        the answer's ``max_tokens`` when the server counts it in), when stated, else None
    """

    status_code = 400
    #: Sending the same request again cannot succeed: the client raises at once.
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        status_code: int = 400,
        limit: int | None = None,
        requested: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, status_code=status_code, **kwargs)
        self.limit = limit
        self.requested = requested


class AuthenticationError(APIStatusError):
    """401: the API key is missing, wrong or revoked."""

    status_code = 401


class PermissionDeniedError(APIStatusError):
    """403: the key may not use this model or endpoint."""

    status_code = 403


class NotFoundError(APIStatusError):
    """404: wrong model name, deployment or base URL."""

    status_code = 404


class ConflictError(APIStatusError):
    """409: conflicting concurrent request (retried automatically)."""

    status_code = 409


class UnprocessableEntityError(APIStatusError):
    """422: the request was well formed but could not be processed."""

    status_code = 422


class RateLimitError(APIStatusError):
    """429: too many requests, or out of quota (``code == "insufficient_quota"``)."""

    status_code = 429


class InternalServerError(APIStatusError):
    """5xx: the server (or a proxy in front of it) failed."""

    status_code = 500


class APIConnectionError(APIError):
    """The request could not reach the server, or the connection failed before an answer.

    :ivar retryable: False when sending the same request again cannot succeed (a header with
        characters HTTP cannot send, an unsupported URL, a proxy refusing or rejecting its
        credentials): the client then gives up at once instead of backing off and retrying
    """

    #: Set to False on an instance for failures that a retry cannot fix.
    retryable: bool = True

    def __init__(self, message: str = "Connection error.", *, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class APITimeoutError(APIConnectionError):
    """Connecting took longer than the connect timeout, or the server fell silent for longer
    than the read timeout (also in the middle of a stream)."""

    def __init__(self, message: str = "Request timed out.", *, cause: BaseException | None = None) -> None:
        super().__init__(message, cause=cause)


class IncompleteStreamError(APIConnectionError):
    """A stream broke off: the connection closed (or reset) before the answer was complete.

    :ivar partial: whatever text had arrived before the break (may be empty)
    """

    def __init__(
        self,
        message: str = "The stream ended before the answer was complete.",
        *,
        partial: str = "",
        cause: BaseException | None = None,
    ) -> None:
        super().__init__(message, cause=cause)
        self.partial = partial


class RequestCancelledError(APIConnectionError):
    """The request was cancelled by the caller (an async task was cancelled, say)."""

    def __init__(self, message: str = "The request was cancelled.", *, cause: BaseException | None = None) -> None:
        super().__init__(message, cause=cause)


class ResponseTooLargeError(APIError):
    """A non-streaming response body exceeded the client's ``max_response_bytes`` cap."""


_STATUS_CLASSES = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}

NO_KEY_HINT = (
    "No API key was sent. Provide one in any of three ways: pass api_key=... "
    "(or --api-key on the command line), set the OPENAI_API_KEY environment variable, "
    "or store one with `openai2 add_apikey`."
)


def redact_value(value: object, secrets: Iterable[str | None]) -> Any:
    """``value`` (text or parsed JSON) with every secret masked; the same object if none occurs.

    Every string in the structure is masked where it stands (dict keys too), so a key holding
    ``"``, ``\\`` or a tab is found as it is, not as JSON would escape it.  The walk uses its own
    stack, never Python recursion: a body nested 100,000 deep is handled like a flat one.
    Containers are copied only when something in them was masked (lists and tuples come back
    as lists then); a structure reached twice (or a cycle) is copied once.
    """
    known = [s for s in secrets if s]
    if not known or value is None:
        return value
    if isinstance(value, str):
        return redact(value, known)
    if not isinstance(value, (dict, list, tuple)):
        return value
    changed = False
    root: Any = {} if isinstance(value, dict) else []
    copies: dict[int, Any] = {id(value): root}
    stack: list[tuple[Any, Any]] = [(value, root)]
    while stack:
        source, target = stack.pop()
        pairs = source.items() if isinstance(source, dict) else enumerate(source)
        for key, item in pairs:
            if isinstance(key, str):
                masked_key = redact(key, known)
                if masked_key != key:
                    changed = True
                    key = masked_key
            if isinstance(item, str):
                masked = redact(item, known)
                if masked != item:
                    changed = True
                    item = masked
            elif isinstance(item, (dict, list, tuple)):
                copy = copies.get(id(item))
                if copy is None:
                    copy = copies[id(item)] = {} if isinstance(item, dict) else []
                    stack.append((item, copy))
                item = copy
            if target.__class__ is dict:
                target[key] = item
            else:
                target.append(item)
    return root if changed else value


def redact_error(error: APIError, secrets: Iterable[str | None]) -> APIError:
    """Mask secrets in an error, in place: message, body, hint, code/type/param when they are
    text, and (for an :class:`APIStatusError`) header values and the request id (a server may echo the key anywhere)."""
    known = [s for s in secrets if s]
    if known:
        error.message = redact(error.message, known)
        error.args = (error.message,)
        hint = getattr(error, "hint", None)
        if isinstance(hint, str):
            error.hint = redact(hint, known)  # type: ignore[attr-defined]
        error.body = redact_value(error.body, known)
        for name in ("code", "type", "param"):
            field = getattr(error, name, None)
            if isinstance(field, str):
                setattr(error, name, redact(field, known))
        if isinstance(error, APIStatusError):
            error.headers = _errors_mask_headers(error.headers, known)
            if isinstance(error.request_id, str):
                error.request_id = redact(error.request_id, known)
    return error


def _errors_mask_headers(headers: Mapping[str, str], secrets: list[str]) -> dict[str, str]:
    return {name: redact(value, secrets) if isinstance(value, str) else value for name, value in headers.items()}


def status_error_class(status: int) -> type[APIStatusError]:
    """The ``APIStatusError`` subclass for an HTTP status."""
    if status >= 500:
        return InternalServerError
    return _STATUS_CLASSES.get(status, APIStatusError)


def _excerpt(text: str, limit: int = 200, secrets: Iterable[str | None] = ()) -> str:
    """A one-line excerpt of a non-JSON body (an HTML error page from a proxy, say).

    Keys are masked before anything is cut (and again after the tags are taken out), so a cut
    never falls inside a key: at worst it falls inside a masked form.
    """
    import re

    known = [s for s in secrets if s]
    text = redact(text, known)
    text = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", text)
    text = re.sub(r"(?s)<[^>]*>", " ", text)
    text = redact(" ".join(text.split()), known)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def safe_json_text(value: object) -> str:
    """``value`` as compact JSON text for a message; never raises (too deep, not JSON-able)."""
    import json

    try:
        return json.dumps(value, ensure_ascii=False)
    except RecursionError:
        return "(JSON nested too deeply to show)"
    except (TypeError, ValueError):
        return repr(value)


def parse_error_body(raw: bytes | str) -> tuple[object, dict[str, Any] | None]:
    """Parse an error body: returns ``(body, error_object)``.

    ``body`` is the parsed JSON (or the text when it is not JSON, or is JSON nested too deeply
    to parse); ``error_object`` is the dict holding ``message``/``code``/``type``/``param``
    (``body["error"]`` when it is a dict, else ``body`` itself when it has a ``message``), or None.
    """
    import json

    text = raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else raw
    try:
        body: object = json.loads(text)
    except (ValueError, RecursionError):
        return text, None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return body, err
        if isinstance(err, str):
            return body, {"message": err}
        if "message" in body or "detail" in body:
            return body, body
    elif isinstance(body, list) and body and isinstance(body[0], dict):
        # Gemini (its OpenAI endpoint too) answers with a list holding one {"error": {...}}
        err = body[0].get("error")
        if isinstance(err, dict):
            return body, err
    return body, None


# Refusals that name a token count but are not about the context window: a rate limit in
# tokens per minute ("Request too large for gpt-4o ... on tokens per min (TPM)"; Groq sends it
# as a 413), a quota, a missing key.  These statuses and markers are never a ContextLengthError.
_ERRORS_NOT_CONTEXT_STATUSES = frozenset((401, 402, 403, 404, 405, 408, 409, 429))
_ERRORS_NOT_CONTEXT_MARKERS = ("tokens per min", "(tpm)", "rate limit", "rate_limit", "quota")

# What servers say when a request is longer than the window (sources: tests/data/
# context_errors.json).  Each pattern recognises the refusal; its named groups, when present,
# give the window (``limit``), what the server counted (``requested``), or the two parts it
# added up (``prompt`` + ``completion``).  Matched case-insensitively against the message.
_ERRORS_CONTEXT_PATTERNS = (
    # vLLM >= 0.10 when prompt + max_tokens do not fit (before the generic OpenAI wording)
    (
        r"is too large: (?P<completion>\d+)\. this model's maximum context length is (?P<limit>\d+) tokens"
        r" and your request has (?P<prompt>\d+) input tokens"
    ),
    r"your request has (?P<prompt>\d+) input tokens plus (?P<completion>\d+) 'max_tokens'",
    # OpenAI, DeepSeek, vLLM, OpenRouter: "maximum context length is N tokens. However, ..."
    (
        r"maximum context length is (?P<limit>\d+) tokens[.,] however,? (?:your messages resulted in"
        r"|you requested(?: about)?|your request has) (?P<requested>\d+)"
    ),
    r"maximum context length is (?P<limit>\d+) tokens",
    # xAI; vLLM's --max-prompt-len
    (
        r"maximum prompt length is (?P<limit>\d+)(?: tokens)?\.? (?:but the request contains|however, your request has)"
        r" (?P<requested>\d+)"
    ),
    # OpenAI GPT-5 family (input window smaller than the whole window)
    (
        r"input tokens exceed the configured limit of (?P<limit>\d+) tokens\. your messages resulted in"
        r" (?P<requested>\d+) tokens"
    ),
    # llama.cpp server: newest, new and old (500) wordings
    r"request \((?P<requested>\d+) tokens\) exceeds the available context size \((?P<limit>\d+) tokens\)",
    r"exceeds the available context size",
    r"context size has been exceeded",
    # Qwen / DashScope (native and compatible mode)
    r"range of input length should be \[\d+, ?(?P<limit>\d+)\]",
    # Mistral
    (
        r"prompt contains (?P<requested>\d+) tokens(?: and \d+ draft tokens)?, too large for model with"
        r" (?P<limit>\d+) maximum context length"
    ),
    # Gemini
    r"input token count \((?P<requested>\d+)\) exceeds the maximum number of tokens allowed \((?P<limit>\d+)\)",
    # Anthropic (and its OpenAI-compatible endpoint)
    r"prompt is too long: (?P<requested>\d+) tokens > (?P<limit>\d+) maximum",
    r"input length and `?max_tokens`? exceed context limit: (?P<prompt>\d+) \+ (?P<completion>\d+) > (?P<limit>\d+)",
    r"request size exceeds model context window",
    r"exceeds the context window",
    # Cerebras, then the Groq / OpenAI closing sentence
    r"current length is (?P<requested>\d+) while limit is (?P<limit>\d+)",
    r"please reduce the length of the messages",
    # GLM behind an OpenAI-compatible provider; Volcano Engine Ark
    r"number of input tokens \((?P<requested>\d+)\) has exceeded max_prompt_tokens \((?P<limit>\d+)\)",
    r"input length (?P<requested>\d+) exceeds the maximum length (?P<limit>\d+)",
    # LiteLLM's proxy names its own class for all of the above
    r"contextwindowexceedederror",
)


_errors_context_cache: dict[str, tuple[Any, ...]] = {}


def _errors_context_regexes() -> tuple[Any, ...]:
    """The patterns compiled once, on the first error answer (``re`` stays out of the import)."""
    compiled = _errors_context_cache.get("patterns")
    if compiled is None:
        import re

        compiled = _errors_context_cache.setdefault("patterns", tuple(re.compile(p) for p in _ERRORS_CONTEXT_PATTERNS))
    return compiled


def _errors_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _errors_context_overflow(
    status: int, message: str, err: Mapping[str, Any] | None = None
) -> tuple[int | None, int | None, int] | None:
    """Whether an error answer is a refusal for length: ``(limit, requested, completion)``, or None.

    ``limit`` and ``requested`` are the window and the server's count when the message or the
    body's fields (llama.cpp's ``n_ctx``, ``n_prompt_tokens``) state them, else None;
    ``completion`` is how many of the requested tokens the server counted for the answer
    (``max_tokens``), 0 when it did not say.  Look-alikes are not matched: a ``max_tokens``
    above the model's output cap, a rate limit in tokens per minute, a body too large for a
    proxy, a prompt too short.

    :param status: the HTTP status
    :param message: the server's message (already masked)
    :param err: the error object of the body (see :func:`parse_error_body`), or None
    """
    import re

    if status < 400 or status in _ERRORS_NOT_CONTEXT_STATUSES:
        return None
    err = err if isinstance(err, dict) else {}
    code, type_ = err.get("code"), err.get("type")
    # a refusal says what it is in its first sentences: a megabyte of echoed prompt is not read
    lowered = message[:20000].lower()
    if code == "rate_limit_exceeded" or type_ == "tokens" or any(m in lowered for m in _ERRORS_NOT_CONTEXT_MARKERS):
        return None
    found = code == "context_length_exceeded" or type_ == "exceed_context_size_error"
    limit = _errors_int(err.get("n_ctx"))
    requested = _errors_int(err.get("n_prompt_tokens"))
    completion = 0
    for pattern in _errors_context_regexes():
        match = pattern.search(lowered)
        if match is None:
            continue
        found = True
        groups = {k: int(v) for k, v in match.groupdict().items() if v is not None}
        if limit is None:
            limit = groups.get("limit")
        if requested is None and "requested" in groups:
            requested = groups["requested"]
        if "completion" in groups and requested is None:
            completion = groups["completion"]
            requested = groups.get("prompt", 0) + completion
    if not found:
        return None
    if not completion:
        counted = re.search(r"(\d+) (?:in|for) the (?:completion|output)", lowered)
        completion = int(counted.group(1)) if counted else 0
    return limit, requested, completion


def _errors_context_hint(limit: int | None, requested: int | None, completion: int, llama: bool) -> str:
    window = "the model's context window"
    if limit is not None and requested is not None:
        window += " (%d tokens; this request needs %d)" % (limit, requested)
    elif limit is not None:
        window += " (%d tokens)" % limit
    fix = "set Chat(MsgMaxTokens=...) or MsgMaxTokens='auto', or remove messages"
    if completion:
        fix += ", or lower max_tokens (%d of them are reserved for the answer)" % completion
    if llama:
        fix += ", or start llama-server with a larger --ctx-size"
    return "The conversation is longer than %s: %s." % (window, fix)


def make_status_error(
    status: int,
    headers: Mapping[str, str] | None,
    raw_body: bytes | str,
    *,
    secrets: Iterable[str | None] = (),
    sent_key: bool = True,
) -> APIStatusError:
    """Build the right ``APIStatusError`` subclass from a status, headers and raw body.

    :param headers: response headers with lower-case names
    :param secrets: API keys to mask if the server echoed them back
    :param sent_key: False when the request carried no API key: a 401/403 then says how to
        provide one
    """
    known = [s for s in secrets if isinstance(s, str) and s]
    headers = _errors_mask_headers(headers or {}, known)
    body, err = parse_error_body(raw_body)
    body = redact_value(body, known)
    if err is not None:
        err = redact_value(err, known)
    message = None
    code = type_ = param = None
    if isinstance(err, dict):
        msg = err.get("message", err.get("detail"))
        if isinstance(msg, str) and msg.strip():
            message = msg
        elif msg is not None:
            message = safe_json_text(msg)
        code = err.get("code")
        type_ = err.get("type") if isinstance(err.get("type"), str) else None
        param = err.get("param") if isinstance(err.get("param"), str) else None
    if message is None:
        reason = _reason_phrase(status)
        if isinstance(body, str):
            excerpt = _excerpt(body, secrets=known)
            message = "HTTP %d %s" % (status, reason) + (": " + excerpt if excerpt else " (empty body)")
        else:
            message = "HTTP %d %s: %s" % (status, reason, _excerpt(safe_json_text(body), secrets=known))
    message = redact(message, known)
    hint = None
    if status in (401, 403) and not sent_key:
        hint = NO_KEY_HINT
    elif status == 404 and code in (None, "404", 404):
        hint = "Check the base URL (it usually ends in /v1) and the model or deployment name."
    cls = status_error_class(status)
    extra: dict[str, Any] = {}
    overflow = _errors_context_overflow(status, message, err)
    if overflow is not None:
        limit, requested, completion = overflow
        llama = type_ == "exceed_context_size_error" or "context size" in message.lower()
        cls, extra = ContextLengthError, {"limit": limit, "requested": requested}
        hint = _errors_context_hint(limit, requested, completion, llama)
    return cls(
        message,
        status_code=status,
        headers=headers,
        request_id=headers.get("x-request-id") or headers.get("request-id"),
        hint=hint,
        body=body,
        code=code,
        type=type_,
        param=param,
        **extra,
    )


def _reason_phrase(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


class ContextBudgetError(OpenAIError):
    """The messages that must be sent do not fit ``MsgMaxTokens`` even with every message that
    may be left out left out (the system prompt, pinned messages and the new message stay).
    Raised before anything is sent; the history is unchanged.

    :ivar budget: the budget in tokens (``MsgMaxTokens``, or the window learned with ``"auto"``)
    :ivar required: the estimated tokens of what must be sent
    """

    def __init__(self, budget: int, required: int) -> None:
        super().__init__(
            "the messages that must be sent need about %d tokens, more than the budget of %d "
            "(MsgMaxTokens): the system prompt, the pinned messages and the new message stay; "
            "raise MsgMaxTokens, unpin messages, or send a shorter message" % (required, budget)
        )
        self.budget = budget
        self.required = required


class StructuredOutputError(OpenAIError):
    """The answer could not be made into the requested type.

    :ivar raw: the answer's text (as the model wrote it)
    :ivar completion: the last answer, parsed JSON (keys masked), or None
    """

    def __init__(self, message: str, *, raw: str = "", completion: object = None) -> None:
        super().__init__(message)
        self.raw = raw
        self.completion = completion


class RefusalError(StructuredOutputError):
    """The model refused to answer (``message.refusal``). :ivar refusal: its text."""

    def __init__(self, refusal: str, *, completion: object = None) -> None:
        super().__init__("the model refused: %s" % refusal, raw="", completion=completion)
        self.refusal = refusal


class LengthFinishReasonError(StructuredOutputError):
    """The answer was cut off (``finish_reason == "length"``): raise ``max_tokens``, or ask for less."""


class SchemaValidationError(StructuredOutputError):
    """The answer did not match the schema (after the repairs allowed).

    :ivar errors: each problem as ``"$.path: message"``
    """

    def __init__(self, message: str, *, raw: str, errors: Sequence[str], completion: object = None) -> None:
        super().__init__(message, raw=raw, completion=completion)
        self.errors = list(errors)
