"""The fake wire, sans-IO: what an OpenAI-compatible server answers, as bytes, without sockets.

A :class:`Reply` (what to answer) and a :class:`RecordedRequest` (what was asked) become a
:class:`WirePlan`: the status, the headers and the body as a byte plan, with the reply's wire
behaviour (line endings, keep-alive comments, write sizes, stalls, disconnects) spelled out by
:meth:`WirePlan.steps`.  Also the wire builders ``chat_completion``, ``chat_chunk`` and
``openai_error_body``.  Two senders act the plans out: ``openai2.testing.FakeServer`` over
loopback sockets and ``openai2.testing.MemoryTransport`` in memory.

Usage figures: by default (``Reply(usage="auto")``) about four characters a token.  Given a
``token_counter`` (``text -> int``, e.g. a real tokenizer), ``usage.prompt_tokens`` is what a
server counting the prompt its own way reports: the request rendered as the ChatML chat
template (Qwen, DeepSeek-style servers, vLLM's default for many models), each of the
``<|im_start|>``/``<|im_end|>`` markers one token and the rest of the text counted with the
counter (see ``_fake_chatml_prompt_tokens``).  That is a server whose count differs from
openai2's own estimate, which is what tests and benchmarks of ``openai2.tokens.Calibration`` need.

Nothing heavy is imported at module level (json and http are imported where used).
"""

from __future__ import annotations

import collections
import itertools
import time

from .common import TYPE_CHECKING
from .demo import DemoAnswer, DemoError, DemoToolCalls, content_text

if TYPE_CHECKING:
    from typing import Any, Callable, Iterator, Mapping, Sequence


# ---------------------------------------------------------------------------------------------
# Small builders
# ---------------------------------------------------------------------------------------------

_fake_id_counter = itertools.count(1)

#: Status codes whose errors OpenAI labels with these ``error.type`` values.
_FAKE_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "conflict_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def _fake_new_id(prefix: str) -> str:
    return "%s-fake%06d" % (prefix, next(_fake_id_counter))


def _fake_estimate_tokens(text: str) -> int:
    """A rough token count (about four characters a token), enough for plausible usage figures."""
    return (len(text) + 3) // 4


#: What one image part of a message costs in ``_fake_chatml_prompt_tokens`` (not counted with the
#: counter): 85 tokens, OpenAI's price of a low-detail image.
_FAKE_IMAGE_TOKENS = 85


class _FakeCounterError(Exception):
    """A ``token_counter`` raised, or returned something that is not a non-negative int.

    The servers answer the request as they answer a handler that raised (a 500) and record this
    error in their ``errors``; the counter's own exception, if any, is its ``__cause__``."""


def _fake_check_counter(token_counter: object) -> Callable[[str], int] | None:
    """``token_counter`` itself when it is None or callable.

    :raises TypeError: for anything else, saying what is expected
    """
    if token_counter is not None and not callable(token_counter):
        raise TypeError(
            "token_counter must be a callable text -> int (e.g. lambda t: len(enc.encode(t))) or None, not %s"
            % type(token_counter).__name__
        )
    return token_counter


def _fake_short(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _fake_count(token_counter: Callable[[str], int], text: str) -> int:
    """``token_counter(text)``, checked; an empty text is 0 without asking the counter.

    :raises _FakeCounterError: the counter raised or returned no non-negative int (bool excluded)
    """
    if not text:
        return 0
    try:
        n = token_counter(text)
    except Exception as exc:
        raise _FakeCounterError(
            "token_counter raised %s: %s (counting %s)" % (type(exc).__name__, exc, _fake_short(text))
        ) from exc
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise _FakeCounterError(
            "token_counter must return a non-negative int, not %s %r (counting %s)"
            % (type(n).__name__, n, _fake_short(text))
        )
    return n


def _fake_chatml_json(value: object) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


def _fake_chatml_content(content: object) -> tuple[str, int]:
    """A message's content as ChatML text and its number of image parts.

    Text parts (and bare strings) are joined with ``"\\n"`` (as vLLM flattens them for a template
    that takes a string); ``image_url``/``image`` parts are counted apart; other parts count nothing.
    """
    if isinstance(content, str):
        return content, 0
    if not isinstance(content, list):
        return "", 0
    texts = []
    images = 0
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict):
            if part.get("type") in ("image_url", "image"):
                images += 1
            elif isinstance(part.get("text"), str):
                texts.append(part["text"])
    return "\n".join(texts), images


def _fake_chatml_tool_call(call: object) -> str:
    """``<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>`` (arguments that are JSON
    embedded as the value they hold, as templates get them; other arguments as a string)."""
    import json

    fn = call.get("function") if isinstance(call, dict) else None
    fn = fn if isinstance(fn, dict) else {}
    args: Any = fn.get("arguments", "")
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            pass
    return "<tool_call>\n%s\n</tool_call>" % _fake_chatml_json({"name": fn.get("name", ""), "arguments": args})


def _fake_chatml_block(token_counter: Callable[[str], int], role_line: str, text: str) -> int:
    """``<|im_start|>{role_line}\\n{text}<|im_end|>\\n``: 2 marker tokens plus the counted pieces."""
    return (
        2
        + _fake_count(token_counter, role_line + "\n")
        + _fake_count(token_counter, text)
        + _fake_count(token_counter, "\n")
    )


def _fake_chatml_prompt_tokens(request_json: object, token_counter: Callable[[str], int]) -> int:
    """The prompt tokens of a chat request rendered as the ChatML chat template.

    Each message is ``<|im_start|>{role}\\n{content}<|im_end|>\\n``: the two markers cost one token
    each; ``"{role}\\n"``, the content and the closing ``"\\n"`` are counted with
    ``token_counter``, each on its own (an empty piece is 0).  A ``name`` joins the role line as
    ``"{role} name={name}\\n"`` (ChatML's own spelling).  Content given as parts: the text parts
    joined with ``"\\n"``, plus ``_FAKE_IMAGE_TOKENS`` (85) per image part.  An assistant
    message's ``tool_calls`` follow its content, one ``<tool_call>\\n{json}\\n</tool_call>`` per
    call (``{"name": ..., "arguments": ...}``), the pieces joined with ``"\\n"`` and counted with
    the content.  ``tools``, when the request has any, come first in a system block of their own
    (not merged into the request's system message): ``<|im_start|>system\\n# Tools\\n`` then each
    tool's JSON on its own line.  The reply's priming ``<|im_start|>assistant\\n`` ends it
    (1 + the count of ``"assistant\\n"``).  JSON as ``json.dumps`` writes it (``", "``, ``": "``,
    non-ASCII as is).

    :param request_json: the request body (a dict with ``messages`` and maybe ``tools``)
    :param token_counter: ``text -> int``
    :returns: the number of tokens
    :raises _FakeCounterError: the counter raised or returned no non-negative int
    """
    body = request_json if isinstance(request_json, dict) else {}
    total = 0
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        lines = "\n".join(_fake_chatml_json(tool) for tool in tools)
        total += _fake_chatml_block(token_counter, "system", "# Tools\n" + lines)
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        role_line = role if isinstance(role, str) else ""
        name = message.get("name")
        if isinstance(name, str) and name:
            role_line += " name=" + name
        text, images = _fake_chatml_content(message.get("content"))
        calls = message.get("tool_calls")
        if isinstance(calls, list) and calls:
            text = "\n".join(([text] if text else []) + [_fake_chatml_tool_call(c) for c in calls])
        total += _fake_chatml_block(token_counter, role_line, text) + images * _FAKE_IMAGE_TOKENS
    return total + 1 + _fake_count(token_counter, "assistant\n")


def _fake_pieces(value: str | Sequence[str] | None) -> list[str]:
    """Text given as a string (split into single characters) or as explicit pieces."""
    if value is None:
        return []
    if isinstance(value, str):
        return list(value)
    return [str(p) for p in value]


def openai_error_body(
    message: str,
    *,
    type: str | None = "invalid_request_error",  # noqa: A002 - the API's field name
    code: object = None,
    param: str | None = None,
) -> dict[str, Any]:
    """Build an OpenAI-style error body: ``{"error": {"message", "type", "param", "code"}}``.

    :param message: the human-readable message
    :param type: ``error.type`` (``invalid_request_error``, ``rate_limit_error``, ...)
    :param code: ``error.code`` (``insufficient_quota``, ``invalid_api_key``, ...)
    :param param: ``error.param``
    :returns: the body as a dict, ready for ``Reply(body=...)``
    """
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def chat_completion(
    content: str | None = "",
    *,
    model: str = "fake-model",
    reasoning: str | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    finish_reason: str | None = "stop",
    usage: dict[str, Any] | None = None,
    id: str | None = None,  # noqa: A002 - the API's field name
    created: int | None = None,
) -> dict[str, Any]:
    """Build a non-streaming ``chat.completion`` response body.

    :param content: the assistant's text (``None`` is sent as JSON null)
    :param model: the ``model`` field
    :param reasoning: sent as ``message.reasoning_content`` when given
    :param tool_calls: sent as ``message.tool_calls`` when given
    :param finish_reason: ``choices[0].finish_reason``
    :param usage: the ``usage`` object, omitted when None
    :param id: the completion id (default: a fresh ``chatcmpl-fake…`` id)
    :param created: unix time (default: now)
    :returns: the response body as a dict
    """
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    if tool_calls:
        message["tool_calls"] = tool_calls
    body: dict[str, Any] = {
        "id": id or _fake_new_id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def chat_chunk(
    content: str | None = None,
    *,
    role: str | None = None,
    reasoning: str | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    finish_reason: str | None = None,
    usage: dict[str, Any] | None = None,
    choices: list[dict[str, Any]] | None = None,
    model: str = "fake-model",
    id: str = "chatcmpl-fake",  # noqa: A002 - the API's field name
    created: int | None = None,
    index: int = 0,
) -> dict[str, Any]:
    """Build one ``chat.completion.chunk`` (the JSON of one SSE ``data:`` line).

    ``delta`` holds whichever of ``role``, ``content``, ``reasoning`` (as ``reasoning_content``)
    and ``tool_calls`` are given.  Pass ``choices=[]`` with ``usage=...`` for the final usage
    chunk that ``stream_options={"include_usage": True}`` asks for.

    :returns: the chunk as a dict
    """
    chunk: dict[str, Any] = {
        "id": id,
        "object": "chat.completion.chunk",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "system_fingerprint": "fp_fake",
    }
    if choices is None:
        delta: dict[str, Any] = {}
        if role is not None:
            delta["role"] = role
        if content is not None:
            delta["content"] = content
        if reasoning is not None:
            delta["reasoning_content"] = reasoning
        if tool_calls is not None:
            delta["tool_calls"] = tool_calls
        choices = [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
    chunk["choices"] = choices
    if usage is not None:
        chunk["usage"] = usage
    return chunk


# ---------------------------------------------------------------------------------------------
# Records and replies
# ---------------------------------------------------------------------------------------------


class RecordedRequest:
    """One request as the fake server received it.

    :ivar method: ``"POST"``, ``"GET"``, ...
    :ivar path: the request target as sent (path and query)
    :ivar headers: header names in lower case -> values (repeated headers joined with ``", "``)
    :ivar raw_headers: the headers as received, ``[(name, value), ...]`` in order and case
    :ivar body: the raw request body (de-chunked)
    :ivar json: the body parsed as JSON, or None when it is not JSON
    :ivar connection_id: which accepted connection carried it (1, 2, ... in accept order)
    :ivar client_address: the peer address tuple
    :ivar http_version: ``"HTTP/1.1"`` or ``"HTTP/1.0"``
    :ivar index: position in the server's record (0, 1, ...; reset() restarts it)
    """

    __slots__ = (
        "method",
        "path",
        "headers",
        "raw_headers",
        "body",
        "json",
        "connection_id",
        "client_address",
        "http_version",
        "index",
    )

    def __init__(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        json: Any,
        connection_id: int,
        client_address: Any,
        *,
        raw_headers: list[tuple[str, str]] | None = None,
        http_version: str = "HTTP/1.1",
        index: int = 0,
    ) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.raw_headers = raw_headers if raw_headers is not None else list(headers.items())
        self.body = body
        self.json = json
        self.connection_id = connection_id
        self.client_address = client_address
        self.http_version = http_version
        self.index = index

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The ``messages`` of a chat request (``[]`` when absent)."""
        if isinstance(self.json, dict) and isinstance(self.json.get("messages"), list):
            return self.json["messages"]  # type: ignore[no-any-return]
        return []

    @property
    def stream(self) -> bool:
        """True when the request body asked for a stream (``"stream": true``)."""
        return isinstance(self.json, dict) and self.json.get("stream") is True

    def __repr__(self) -> str:
        # No header values: they carry the API key.
        return "<RecordedRequest #%d %s %s conn=%d body=%d bytes>" % (
            self.index,
            self.method,
            self.path,
            self.connection_id,
            len(self.body),
        )


class Reply:
    """What the fake server sends for one request.  Every argument is optional.

    Answer content:

    :param content: the assistant's text.  The server builds a ``chat.completion`` JSON body, or,
        for a request with ``"stream": true``, ``chat.completion.chunk`` events: a role chunk,
        content pieces, a finish chunk, a usage chunk (see ``usage``), then ``[DONE]``.  With a status >= 400 it is the
        error message instead.
    :param chunks: explicit content pieces for streaming (default: one character per piece).
    :param reasoning: text (split per character) or pieces, streamed as
        ``delta.reasoning_content`` before the content; ``message.reasoning_content`` in JSON.
    :param tool_calls: ``[{"id", "type", "function": {"name", "arguments"}}]``; streamed as
        deltas by index (name first, then the arguments in pieces).
    :param finish_reason: ``"auto"`` (default: ``"tool_calls"`` when tool calls are given, else
        ``"stop"``), any string, or None to omit the finish chunk (JSON: null).
    :param usage: ``"auto"`` (default: estimated token counts; streamed only when the request set
        ``stream_options.include_usage``, as OpenAI does), a dict sent as is (streamed in a final
        ``choices: []`` chunk even when not asked for, as some compatible servers do), or None
        to omit it.
    :param model: the ``model`` field (default: the request's model, else ``"fake-model"``).

    Raw responses:

    :param status: the HTTP status (default 200).  For >= 400 without ``body`` an OpenAI-style
        error body is sent (message from ``content``, plus ``error_type`` / ``error_code``).
    :param headers: extra response headers (they replace defaults of the same name).
    :param body: bytes / str / dict / list sent as the whole body, overriding everything else.
    :param content_type: the Content-Type of ``body`` (default ``application/json``), or of a stream.
    :param events: a hand-made stream: dicts (sent as JSON), strings (sent as ``data:`` lines,
        one per text line) or bytes (sent exactly as given, framing included).  ``[DONE]``
        follows when ``done`` is true.
    :param raw_stream: exact bytes to send as the stream body.
    :param redirect_to: answer with a redirect to this URL (status 307 unless ``status`` is
        301/302/303/307/308).

    Wire behaviour:

    :param line_ending: ``"\\n"`` (default), ``"\\r\\n"`` or ``"\\r"`` for the SSE lines.
    :param write_size: send the body in writes of this many bytes (each its own HTTP chunk),
        pausing ``write_pause`` seconds between them, to split UTF-8 characters and lines.
    :param keepalive_comments: how many ``: keep-alive`` comment lines to interleave, spread
        evenly, the first before the first event.
    :param chunked: Transfer-Encoding: chunked (default: streams yes, JSON bodies no).  A stream
        with ``chunked=False`` has no length and ends when the server closes the connection.
    :param delay: seconds to wait before the status line.
    :param stall_after: after this many events (bytes, for a non-stream body) stop sending and
        hold the connection open for ``stall_seconds`` (or until ``stop()``), then carry on.
    :param disconnect_after: after this many events (bytes, for a non-stream body) close the
        connection abruptly: no terminating chunk, no ``[DONE]``.
    :param reset: close with SO_LINGER 0 so the peer gets a TCP RST: at ``disconnect_after``
        when given, else before the status line.
    :param close_connection: send ``Connection: close`` and close after the response.
    :param done: send ``data: [DONE]`` at the end of a stream (default True).
    :param gate: a ``threading.Barrier`` or ``Event`` (anything with ``wait(timeout)``) that the
        handler waits on before answering, to prove requests run concurrently.
    """

    def __init__(
        self,
        content: str | None = None,
        *,
        chunks: Sequence[str] | None = None,
        reasoning: str | Sequence[str] | None = None,
        tool_calls: list[dict[str, Any]] | None = None,
        finish_reason: str | None = "auto",
        usage: dict[str, Any] | str | None = "auto",
        model: str | None = None,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        body: bytes | str | dict[str, Any] | list[Any] | None = None,
        content_type: str | None = None,
        error_type: str | None = None,
        error_code: object = None,
        events: Sequence[dict[str, Any] | str | bytes] | None = None,
        raw_stream: bytes | None = None,
        redirect_to: str | None = None,
        line_ending: str = "\n",
        write_size: int | None = None,
        write_pause: float = 0.0005,
        keepalive_comments: int = 0,
        chunked: bool | None = None,
        delay: float = 0.0,
        stall_after: int | None = None,
        stall_seconds: float = 30.0,
        disconnect_after: int | None = None,
        reset: bool = False,
        close_connection: bool = False,
        done: bool = True,
        gate: Any = None,
        gate_timeout: float = 10.0,
    ) -> None:
        if line_ending not in ("\n", "\r\n", "\r"):
            raise ValueError("line_ending must be '\\n', '\\r\\n' or '\\r', not %r" % (line_ending,))
        if write_size is not None and write_size < 1:
            raise ValueError("write_size must be a positive number of bytes")
        if not (usage is None or usage == "auto" or isinstance(usage, dict)):
            raise ValueError("usage must be a dict, 'auto' or None, not %r" % (usage,))
        if chunks is not None and content is None:
            content = "".join(chunks)
        self.content = content
        self.chunks = list(chunks) if chunks is not None else None
        self.reasoning = reasoning
        self.tool_calls = tool_calls
        self.finish_reason = finish_reason
        self.usage = usage
        self.model = model
        self.status = status
        self.headers = dict(headers or {})
        self.body = body
        self.content_type = content_type
        self.error_type = error_type
        self.error_code = error_code
        self.events = list(events) if events is not None else None
        self.raw_stream = raw_stream
        self.redirect_to = redirect_to
        self.line_ending = line_ending
        self.write_size = write_size
        self.write_pause = write_pause
        self.keepalive_comments = keepalive_comments
        self.chunked = chunked
        self.delay = delay
        self.stall_after = stall_after
        self.stall_seconds = stall_seconds
        self.disconnect_after = disconnect_after
        self.reset = reset
        self.close_connection = close_connection
        self.done = done
        self.gate = gate
        self.gate_timeout = gate_timeout

    def __repr__(self) -> str:
        shown = []
        for name in (
            "content",
            "status",
            "events",
            "raw_stream",
            "body",
            "redirect_to",
            "stall_after",
            "disconnect_after",
            "reset",
            "delay",
        ):
            value = getattr(self, name)
            if value not in (None, False, 0, 200, 0.0) or (name == "content" and value == ""):
                text = repr(value)
                shown.append("%s=%s" % (name, text if len(text) <= 40 else text[:37] + "..."))
        return "Reply(%s)" % ", ".join(shown)


def _fake_as_reply(value: object) -> Reply:
    if isinstance(value, Reply):
        return value
    if isinstance(value, str):
        return Reply(content=value)
    if isinstance(value, dict):
        return Reply(body=value)
    if isinstance(value, DemoToolCalls):
        return Reply(content=value.content or None, tool_calls=value.tool_calls)
    if isinstance(value, DemoError):
        return Reply(status=value.status, body=value.body)
    if isinstance(value, DemoAnswer):
        return Reply(content=value.content, usage=value.usage)
    raise TypeError("a reply must be a Reply, a str or a dict, not %s" % type(value).__name__)


# ---------------------------------------------------------------------------------------------
# Building the response bytes
# ---------------------------------------------------------------------------------------------


def _fake_json_bytes(value: object) -> bytes:
    import json

    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _fake_sse_event(data: str, le: str) -> bytes:
    lines = data.split("\n")
    return ("".join("data: %s%s" % (line, le) for line in lines) + le).encode("utf-8")


def _fake_usage(
    reply: Reply, request: RecordedRequest, completion_text: str, token_counter: Callable[[str], int] | None = None
) -> dict[str, Any] | None:
    """The ``usage`` of an answer: the reply's own dict, None, or counted (``"auto"``).

    With a ``token_counter``: the prompt as ``_fake_chatml_prompt_tokens`` counts it; the completion
    the counts of the content, the reasoning, and each tool call's name and arguments, plus one for
    the end token.  Without: about four characters a token of the texts.

    :raises _FakeCounterError: the counter raised or returned no non-negative int
    """
    if reply.usage is None:
        return None
    if isinstance(reply.usage, dict):
        return reply.usage
    if token_counter is not None:
        p = _fake_chatml_prompt_tokens(request.json, token_counter)
        c = 1 + _fake_count(token_counter, reply.content or "")
        c += _fake_count(token_counter, "".join(_fake_pieces(reply.reasoning)))
        for call in _fake_tool_calls(reply):
            c += _fake_count(token_counter, str(call["function"]["name"]))
            c += _fake_count(token_counter, str(call["function"]["arguments"]))
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
    prompt = " ".join(content_text(m.get("content")) for m in request.messages if isinstance(m, dict))
    p = _fake_estimate_tokens(prompt) if prompt else 0
    c = _fake_estimate_tokens(completion_text) if completion_text else 0
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _fake_tool_calls(reply: Reply) -> list[dict[str, Any]]:
    calls = []
    for i, call in enumerate(reply.tool_calls or ()):
        call = dict(call)
        call.setdefault("id", "call_fake%d" % i)
        call.setdefault("type", "function")
        fn = dict(call.get("function") or {})
        fn.setdefault("name", "")
        fn.setdefault("arguments", "")
        call["function"] = fn
        calls.append(call)
    return calls


def _fake_finish(reply: Reply) -> str | None:
    if reply.finish_reason == "auto":
        return "tool_calls" if reply.tool_calls else "stop"
    return reply.finish_reason


def _fake_model(reply: Reply, request: RecordedRequest) -> str:
    if reply.model:
        return reply.model
    if isinstance(request.json, dict) and isinstance(request.json.get("model"), str):
        return request.json["model"]  # type: ignore[no-any-return]
    return "fake-model"


def _fake_completion_text(reply: Reply) -> str:
    calls = _fake_tool_calls(reply)
    return (
        (reply.content or "")
        + "".join(_fake_pieces(reply.reasoning))
        + "".join(c["function"]["arguments"] for c in calls)
    )


def _fake_completion_body(
    reply: Reply, request: RecordedRequest, token_counter: Callable[[str], int] | None = None
) -> dict[str, Any]:
    reasoning = None if reply.reasoning is None else "".join(_fake_pieces(reply.reasoning))
    calls = _fake_tool_calls(reply)
    content = reply.content
    if content is None:
        content = None if calls else ""
    return chat_completion(
        content,
        model=_fake_model(reply, request),
        reasoning=reasoning,
        tool_calls=calls or None,
        finish_reason=_fake_finish(reply),
        usage=_fake_usage(reply, request, _fake_completion_text(reply), token_counter),
    )


def _fake_stream_events(
    reply: Reply, request: RecordedRequest, token_counter: Callable[[str], int] | None = None
) -> list[dict[str, Any] | str | bytes]:
    """The events of a generated stream, ``[DONE]`` excluded."""
    opts = request.json.get("stream_options") if isinstance(request.json, dict) else None
    include_usage = isinstance(opts, dict) and opts.get("include_usage") is True
    extra: dict[str, Any] = {
        "model": _fake_model(reply, request),
        "id": _fake_new_id("chatcmpl"),
        "created": int(time.time()),
    }

    def chunk(**kw: Any) -> dict[str, Any]:
        c = chat_chunk(**dict(extra, **kw))
        if include_usage and "usage" not in c:
            c["usage"] = None  # as OpenAI does once usage was asked for
        return c

    events: list[dict[str, Any] | str | bytes] = [chunk(role="assistant", content="")]
    for piece in _fake_pieces(reply.reasoning):
        events.append(chunk(reasoning=piece))
    pieces = reply.chunks if reply.chunks is not None else _fake_pieces(reply.content)
    for piece in pieces:
        events.append(chunk(content=piece))
    for i, call in enumerate(_fake_tool_calls(reply)):
        fn = call["function"]
        head = {"index": i, "id": call["id"], "type": call["type"], "function": {"name": fn["name"], "arguments": ""}}
        events.append(chunk(tool_calls=[head]))
        args = fn["arguments"]
        for start in range(0, len(args), 8):
            events.append(chunk(tool_calls=[{"index": i, "function": {"arguments": args[start : start + 8]}}]))
    finish = _fake_finish(reply)
    if finish is not None:
        events.append(chunk(finish_reason=finish))
    if include_usage or isinstance(reply.usage, dict):
        usage = _fake_usage(reply, request, _fake_completion_text(reply), token_counter)
        if usage is not None:
            events.append(chunk(choices=[], usage=usage))
    return events


def _fake_stream_plan(
    reply: Reply, request: RecordedRequest, token_counter: Callable[[str], int] | None = None
) -> list[tuple[str, bytes]]:
    """The stream as a plan: ``("event", bytes)`` (counted), ``("comment", bytes)`` (not)."""
    le = reply.line_ending
    if reply.raw_stream is not None:
        return [("event", bytes(reply.raw_stream))]
    events = list(reply.events) if reply.events is not None else _fake_stream_events(reply, request, token_counter)
    units = []
    for ev in events:
        if isinstance(ev, (bytes, bytearray)):
            units.append(bytes(ev))
        elif isinstance(ev, str):
            units.append(_fake_sse_event(ev, le))
        else:
            units.append(_fake_sse_event(_fake_json_bytes(ev).decode("utf-8"), le))
    if reply.done:
        units.append(_fake_sse_event("[DONE]", le))
    n = max(0, int(reply.keepalive_comments))
    before = collections.Counter((k * len(units)) // n for k in range(n)) if n else collections.Counter()
    comment = (": keep-alive" + le + le).encode("ascii")
    plan: list[tuple[str, bytes]] = []
    for i, unit in enumerate(units):
        plan.extend([("comment", comment)] * before.get(i, 0))
        plan.append(("event", unit))
    if not units:
        plan.extend([("comment", comment)] * n)
    return plan


# ---------------------------------------------------------------------------------------------
# The answer to one request: a head and a byte plan (sans-IO)
# ---------------------------------------------------------------------------------------------


def fold_headers(raw_headers: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Header names in lower case -> values, a repeated header's values joined with ``", "``."""
    headers: dict[str, str] = {}
    for name, value in raw_headers:
        key = name.lower()
        headers[key] = headers[key] + ", " + value if key in headers else value
    return headers


def parse_request(
    method: str,
    target: str,
    raw_headers: list[tuple[str, str]],
    body: bytes,
    *,
    connection_id: int = 0,
    client_address: Any = None,
    http_version: str = "HTTP/1.1",
    index: int = 0,
) -> RecordedRequest:
    """Record a request: header names folded to lower case (repeats joined with ``", "``), the
    body parsed as JSON when it is JSON.

    :param raw_headers: ``[(name, value), ...]`` as received
    :returns: the :class:`RecordedRequest`
    """
    headers = fold_headers(raw_headers)
    parsed: Any = None
    if body:
        import json

        try:
            parsed = json.loads(body.decode("utf-8"))
        except ValueError:
            parsed = None
    return RecordedRequest(
        method,
        target,
        headers,
        body,
        parsed,
        connection_id,
        client_address,
        raw_headers=raw_headers,
        http_version=http_version,
        index=index,
    )


def choose_reply(
    replies: collections.deque[Any], handler: Callable[[RecordedRequest], Any], request: RecordedRequest
) -> Reply:
    """The next scripted reply (consumed), else the handler's answer, as a :class:`Reply`.

    :raises Exception: whatever the handler raised (a fake server answers it with a 500)
    """
    try:
        scripted = replies.popleft()  # deque.popleft is atomic: no lock needed
    except IndexError:
        return _fake_as_reply(handler(request))
    return _fake_as_reply(scripted)


class WirePlan:
    """How one answer goes on the wire: the status and headers, then the body as a byte plan.

    :ivar status: the HTTP status
    :ivar headers: ``[(name, value), ...]`` in order (the reply's own headers replace defaults)
    :ivar units: the body, ``[(kind, bytes), ...]``: ``"event"`` (counts one toward
        ``stall_after``/``disconnect_after``), ``"bytes:N"`` (counts N), ``"comment"`` (not counted)
    :ivar chunked: the body is sent with ``Transfer-Encoding: chunked``
    :ivar stream: the body is an event stream
    :ivar close: the connection closes after this answer
    :ivar reply: the :class:`Reply` whose wire behaviour (stalls, disconnects, write sizes)
        applies, or None for the server's own short answers
    """

    __slots__ = ("status", "headers", "units", "chunked", "stream", "close", "reply")

    def __init__(
        self,
        status: int,
        headers: list[tuple[str, str]],
        units: list[tuple[str, bytes]],
        *,
        chunked: bool = False,
        stream: bool = False,
        close: bool = False,
        reply: Reply | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.units = units
        self.chunked = chunked
        self.stream = stream
        self.close = close
        self.reply = reply

    def head_bytes(self) -> bytes:
        """The status line and the headers, as sent."""
        from http import HTTPStatus

        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:
            phrase = "Unknown"
        lines = ["HTTP/1.1 %d %s" % (self.status, phrase)]
        lines.extend("%s: %s" % (k, v) for k, v in self.headers)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def body(self) -> bytes:
        """The whole body as planned (no framing, no stalls, no disconnect)."""
        return b"".join(data for _, data in self.units)

    def steps(self) -> Iterator[tuple[str, Any]]:
        """Walk the plan as a sender does: ``("data", bytes)`` for each write (split into
        ``write_size`` pieces), ``("stall", seconds)`` once at ``stall_after``,
        ``("disconnect", reset)`` at ``disconnect_after`` (the last step then), ``("end", None)``."""
        reply = self.reply
        stall_after = reply.stall_after if reply is not None else None
        disconnect_after = reply.disconnect_after if reply is not None else None
        size = reply.write_size if reply is not None else None
        sent = 0
        stalled = False
        for kind, data in self.units + [("end", b"")]:
            if kind != "comment":
                if disconnect_after is not None and sent >= disconnect_after:
                    yield ("disconnect", bool(reply is not None and reply.reset))
                    return
                if not stalled and stall_after is not None and sent >= stall_after:
                    stalled = True
                    yield ("stall", reply.stall_seconds if reply is not None else 0.0)
            if data:
                step = size or len(data)
                for start in range(0, len(data), step):
                    yield ("data", data[start : start + step])
            if kind == "event":
                sent += 1
            elif kind.startswith("bytes:"):
                sent += int(kind[6:])
        yield ("end", None)


def _fake_common_headers() -> list[tuple[str, str]]:
    return [("Server", "openai2-fake"), ("x-request-id", _fake_new_id("req"))]


def _fake_client_close(request: RecordedRequest) -> bool:
    """Whether the client asked for the connection to close after this request."""
    conn_hdr = request.headers.get("connection", "").lower()
    return "close" in conn_hdr or (request.http_version == "HTTP/1.0" and "keep-alive" not in conn_hdr)


def plan_json(
    status: int, body: dict[str, Any], *, close: bool = False, extra: list[tuple[str, str]] | None = None
) -> WirePlan:
    """A short JSON answer of the server's own (an unknown URL, a handler that raised)."""
    data = _fake_json_bytes(body)
    headers = _fake_common_headers() + [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(data))),
        ("Connection", "close" if close else "keep-alive"),
    ]
    return WirePlan(status, headers + list(extra or ()), [("bytes:%d" % len(data), data)], close=close)


def plan_refusal(request: RecordedRequest) -> WirePlan | None:
    """The answer to a request that is not ``POST …/chat/completions`` (404 / 405), else None."""
    close = _fake_client_close(request)
    target = request.path
    if target.startswith(("http://", "https://")):
        target = "/" + target.split("/", 3)[-1] if target.count("/") >= 3 else "/"
    route = target.split("?", 1)[0].rstrip("/")
    if not route.endswith("/chat/completions"):
        body = openai_error_body(
            "Unknown request URL: %s %s. Please check the URL." % (request.method, target), code="unknown_url"
        )
        return plan_json(404, body, close=close)
    if request.method != "POST":
        body = openai_error_body("Method %s is not allowed here; use POST." % request.method)
        return plan_json(405, body, close=close, extra=[("Allow", "POST")])
    return None


def plan_handler_error(request: RecordedRequest, exc: BaseException) -> WirePlan:
    """The 500 answer when a handler (or the ``token_counter``) raised (the test is told through
    the server's ``errors``)."""
    if isinstance(exc, _FakeCounterError):
        message = "FakeServer's %s" % exc
    else:
        message = "FakeServer handler raised %s: %s" % (type(exc).__name__, exc)
    body = openai_error_body(message, type="server_error")
    return plan_json(500, body, close=_fake_client_close(request))


def plan_reply(
    reply: Reply, request: RecordedRequest, *, token_counter: Callable[[str], int] | None = None
) -> WirePlan:
    """How ``reply`` answers ``request``: status, headers and the byte plan of the body.

    The connection-level behaviours (``delay``, ``gate``, ``reset`` before the status line)
    are the sender's to act on; stalls and disconnects inside the body are in :meth:`WirePlan.steps`.

    :param token_counter: ``text -> int`` for the ``usage`` of ``Reply(usage="auto")`` (see
        ``_fake_chatml_prompt_tokens``), or None for the four-characters-a-token estimate.  Called
        on the sender's thread; everything it counts is counted before the plan is returned.
    :raises _FakeCounterError: the counter raised or returned no non-negative int (the sender
        answers with :func:`plan_handler_error` and records the error)
    """
    close = _fake_client_close(request) or reply.close_connection
    status = reply.status
    headers = _fake_common_headers()
    stream = False
    if reply.redirect_to is not None:
        if status not in (301, 302, 303, 307, 308):
            status = 307
        body = b""
        headers.append(("Location", reply.redirect_to))
        ctype = reply.content_type or "application/json"
    elif reply.body is not None:
        raw = reply.body
        if isinstance(raw, (dict, list)):
            body = _fake_json_bytes(raw)
        elif isinstance(raw, str):
            body = raw.encode("utf-8")
        else:
            body = bytes(raw)
        ctype = reply.content_type or "application/json"
    elif status >= 400:
        message = reply.content or "FakeServer error %d" % status
        etype = reply.error_type or _FAKE_ERROR_TYPES.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        )
        body = _fake_json_bytes(openai_error_body(message, type=etype, code=reply.error_code))
        ctype = reply.content_type or "application/json"
    elif reply.raw_stream is not None or reply.events is not None or request.stream:
        stream = True
        body = b""
        ctype = reply.content_type or "text/event-stream; charset=utf-8"
    else:
        body = _fake_json_bytes(_fake_completion_body(reply, request, token_counter))
        ctype = reply.content_type or "application/json"

    chunked = reply.chunked if reply.chunked is not None else stream
    if request.http_version == "HTTP/1.0":
        chunked = False
    if stream and not chunked:
        close = True  # the end of the body is the end of the connection
    headers.append(("Content-Type", ctype))
    if stream:
        headers.append(("Cache-Control", "no-cache"))
    if chunked:
        headers.append(("Transfer-Encoding", "chunked"))
    elif not stream:
        headers.append(("Content-Length", str(len(body))))
    headers.append(("Connection", "close" if close else "keep-alive"))
    override = {k.lower() for k in reply.headers}
    headers = [(k, v) for k, v in headers if k.lower() not in override] + list(reply.headers.items())

    if stream:
        units = _fake_stream_plan(reply, request, token_counter)
    elif reply.stall_after is not None or reply.disconnect_after is not None:
        units = _fake_regroup_bytes(body, reply)
    else:
        units = [("bytes:%d" % len(body), body)]
    return WirePlan(status, headers, units, chunked=chunked, stream=stream, close=close, reply=reply)


def _fake_regroup_bytes(body: bytes, reply: Reply) -> list[tuple[str, bytes]]:
    cuts = sorted({c for c in (reply.stall_after, reply.disconnect_after) if c is not None and 0 < c < len(body)})
    plan: list[tuple[str, bytes]] = []
    start = 0
    for c in cuts + [len(body)]:
        plan.append(("bytes:%d" % (c - start), body[start:c]))
        start = c
    return plan
