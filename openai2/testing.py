"""A loopback, OpenAI-compatible fake server for tests: ``FakeServer``, ``Reply``, ``DemoBrain``.

Public and standard-library only, so users test their own code with it exactly as openai2's own
suite does.  The server is a plain socket server (one daemon thread per connection) with its own
small HTTP/1.1 parser, which gives full control over what goes on the wire: keep-alive, chunked
streams, LF / CRLF / CR line endings, writes of N bytes, stalls, disconnects, resets (RST),
keep-alive comments, status codes with headers, raw bodies and redirects.  Every request is
recorded (headers and body) for assertions.

``DemoBrain`` is a tiny deterministic rule-based "model" that gives the documented answers of the
user's seed examples (``自然数50的后面是几?`` -> ``51``), so the README examples and
``openai2 demo`` run offline.

Nothing heavy is imported at module level (json, socket, ssl, re are imported where used), and
``openai2/__init__`` does not import this module.
"""

from __future__ import annotations

import collections
import itertools
import os
import threading
import time

from .common import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl
    from typing import Any, Callable, Dict, Mapping, Sequence, Union

    _FakeHandler = Callable[["RecordedRequest"], Union["Reply", str, Dict[str, Any]]]
    _FakeReplyLike = Union["Reply", str, Dict[str, Any]]


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


def _fake_text_of(content: object) -> str:
    """The text of a message's ``content``: a string, or the text parts of a content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return " ".join(parts)
    return ""


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
        if isinstance(usage, str) and usage != "auto":
            raise ValueError("usage must be a dict, 'auto' or None")
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
    raise TypeError("a reply must be a Reply, a str or a dict, not %s" % type(value).__name__)


# ---------------------------------------------------------------------------------------------
# DemoBrain
# ---------------------------------------------------------------------------------------------

_FAKE_APOLOGY_ZH = "非常抱歉，我刚才的回答有些不适当。1+1=2, 10+10=20。非常抱歉给你带来困扰！"
_FAKE_APOLOGY_EN = "I am very sorry, my previous answer was inappropriate. 1+1=2 and 10+10=20. Sorry for the trouble!"

#: Questions of the seed documents -> their documented answers (keys normalised on first use).
_FAKE_FACTS_ZH = {
    "英国的首都是什么？": "伦敦",
    "日本首都是什么？": "东京",
    "意大利的首都是什么？": "罗马",
    "美国的首都是什么？": "华盛顿",
    "世界上国土面积最大的国家是哪个？": "俄罗斯",
    "法国的首都叫什么？": "巴黎",
    "青蛙的幼体叫什么？": "蝌蚪",
    "世界上最大的海洋是什么？": "太平洋",
    "世界上最大的海洋是哪个?": "世界上最大的海洋是太平洋。",
    "哦吼, 你还敢骂我呀?": _FAKE_APOLOGY_ZH,
}

_FAKE_CAPITALS_EN = {
    "uk": "London",
    "united kingdom": "London",
    "britain": "London",
    "great britain": "London",
    "england": "London",
    "japan": "Tokyo",
    "italy": "Rome",
    "france": "Paris",
    "united states": "Washington, D.C.",
    "us": "Washington, D.C.",
    "usa": "Washington, D.C.",
    "america": "Washington, D.C.",
    "china": "Beijing",
    "germany": "Berlin",
    "russia": "Moscow",
}

_fake_demo_cache: dict[str, Any] = {}


def _fake_normalise(text: str) -> str:
    """Fold a question for lookup: no spaces, ASCII punctuation, no trailing ?!. marks, lower case."""
    table = {"？": "?", "，": ",", "！": "!", "。": ".", "：": ":", "；": ";"}
    folded = "".join(table.get(ch, ch) for ch in text if not ch.isspace())
    return folded.rstrip("?!.").lower()


def _fake_demo_patterns() -> dict[str, Any]:
    """Compile the demo's patterns once, on first use (``re`` is not imported at module level)."""
    if not _fake_demo_cache:
        import re

        _fake_demo_cache.update(
            successor_zh=re.compile(r"自然数\s*(-?\d+)\s*的?后面是几"),
            successor_en=re.compile(r"what\s+comes\s+after\s+(?:the\s+)?(?:natural\s+)?(?:number\s+)?(-?\d+)", re.I),
            next_zh=re.compile(r"^(?:那)?再?往后(?:是几|呢|是多少)?[?？!！。.]*$|^下一个(?:是几|呢)?[?？]*$"),
            next_en=re.compile(r"^(?:and\s+)?(?:the\s+|what\s+comes\s+|what'?s\s+)?(?:next|after\s+that)\b", re.I),
            number=re.compile(r"-?\d+"),
            capital_en=re.compile(
                r"^what(?:\s+is|'s)\s+the\s+capital\s+(?:city\s+)?of\s+(?:the\s+)?([a-z .]+?)[?.!\s]*$", re.I
            ),
            largest_country_en=re.compile(r"\blargest\s+country\b", re.I),
            frog_en=re.compile(r"\b(?:baby|young)\s+(?:of\s+a\s+)?frogs?\b|\bfrogs?\b.*\b(?:young|larva|baby)\b", re.I),
            ocean_en=re.compile(r"\b(?:largest|biggest)\s+ocean\b", re.I),
            insult_en=re.compile(r"\bhow\s+dare\s+you\b|\binsult", re.I),
            facts={_fake_normalise(k): v for k, v in _FAKE_FACTS_ZH.items()},
        )
    return _fake_demo_cache


# ---- GroupChat prompts (groupchat.py): answer with a JSON array of remarks -----------------
_FAKE_GROUPCHAT_HEADINGS = ("需要写出的发言（按此顺序）：", "Remarks to write (in this order):")
_FAKE_GROUPCHAT_REMARKS: dict[tuple[str, tuple[str, ...]], str] = {
    ("苏轼", ("李清照",)): "最近我在写一首新的诗，题目是《听雨》",
    ("苏轼", ("杜甫",)): "那首《茅屋为秋风所破歌》已经写好啦，我在信里寄给你了，请查收",
}


def _fake_groupchat_answer(text: str) -> str | None:
    """Answer a GroupChat prompt: one remark per requested turn, as a JSON array (else None).

    The requested turns are the JSON lines after the last heading; the seed 001 turns get the
    seed's documented remarks, any other turn a ``(demo) …`` line naming speaker and audiences.
    """
    import json

    for heading in _FAKE_GROUPCHAT_HEADINGS:
        at = text.rfind(heading)
        if at >= 0:
            break
    else:
        return None
    zh = heading == _FAKE_GROUPCHAT_HEADINGS[0]
    remarks: list[dict[str, Any]] = []
    for line in text[at + len(heading) :].splitlines():
        try:
            turn = json.loads(line)
        except ValueError:
            continue
        if (
            not isinstance(turn, dict)
            or not isinstance(turn.get("speaker"), str)
            or not isinstance(turn.get("audiences"), list)
        ):
            continue
        speaker, audiences = turn["speaker"], [str(a) for a in turn["audiences"]]
        remark = _FAKE_GROUPCHAT_REMARKS.get((speaker, tuple(audiences)))
        if remark is None:
            remark = (
                "(demo) %s对%s说的话" % (speaker, "、".join(audiences))
                if zh
                else "(demo) %s's remark to %s" % (speaker, ", ".join(audiences))
            )
        remarks.append({"speaker": speaker, "audiences": audiences, "remark": remark})
    return json.dumps(remarks, ensure_ascii=False, indent=4) if remarks else None


# ---- end of GroupChat prompts ----------------------------------------------------------------


class DemoBrain:
    """A tiny deterministic rule-based "model" that answers the seed examples as documented.

    Use it as a ``FakeServer`` handler (it is the default one) or call ``answer(messages)``.

    - ``自然数N的后面是几?`` / ``What comes after the natural number N?`` -> ``N+1``
    - ``再往后是几?`` / ``再往后呢?`` / ``And the next?`` -> the last number in the previous
      assistant message, plus one
    - the capitals and facts of the MsgMaxCount example (``英国的首都是什么？`` -> ``伦敦``, ...)
      and their English equivalents
    - ``世界上最大的海洋是哪个?`` -> ``世界上最大的海洋是太平洋。``; ``Which is the largest
      ocean?`` -> ``The Pacific Ocean.``
    - the apology of the forged-conversation example (``哦吼, 你还敢骂我呀?``)
    - a ``GroupChat`` prompt -> a JSON array with one remark per requested turn (the seed's
      documented remarks for its example)
    - anything else: ``(demo) You said: …``

    :param rules: ``[(matcher, answer), ...]`` consulted first, in order.  ``matcher`` is a
        compiled regex or a pattern string (searched in the last user message) or a callable
        ``(text) -> truthy``; ``answer`` is a string, a ``Reply``, or a callable
        ``(match_or_value, messages) -> str | Reply``.
    """

    def __init__(self, rules: Sequence[tuple[Any, Any]] | None = None) -> None:
        self.rules: list[tuple[Any, Any]] = list(rules or ())

    def __call__(self, request: RecordedRequest) -> Reply | str:
        """Answer a recorded chat request.

        :param request: the request (its ``messages`` are used)
        :returns: the answer text, or a ``Reply`` from a custom rule
        """
        return self.answer(request.messages)

    def answer(self, messages: Sequence[dict[str, Any]]) -> Reply | str:
        """Answer a conversation: the last user message, with the history for follow-ups.

        :param messages: chat messages (``{"role", "content"}`` dicts)
        :returns: the answer text, or a ``Reply`` from a custom rule
        """
        last_user = -1
        for i in range(len(messages) - 1, -1, -1):
            if isinstance(messages[i], dict) and messages[i].get("role") == "user":
                last_user = i
                break
        if last_user < 0:
            return "(demo) Hello! I am the offline demo model of openai2."
        text = _fake_text_of(messages[last_user].get("content")).strip()
        for matcher, reply in self.rules:
            found = self._match(matcher, text)
            if found:
                return reply(found, list(messages)) if callable(reply) else reply  # type: ignore[no-any-return]
        return self._builtin(text, messages, last_user)

    @staticmethod
    def _match(matcher: Any, text: str) -> Any:
        if isinstance(matcher, str):
            import re

            return re.search(matcher, text)
        if hasattr(matcher, "search"):
            return matcher.search(text)
        return matcher(text)

    @staticmethod
    def _builtin(text: str, messages: Sequence[dict[str, Any]], last_user: int) -> str:
        group_answer = _fake_groupchat_answer(text)  # GroupChat prompt (see _FAKE_GROUPCHAT_HEADINGS)
        if group_answer is not None:
            return group_answer
        pat = _fake_demo_patterns()
        for name in ("successor_zh", "successor_en"):
            m = pat[name].search(text)
            if m:
                return str(int(m.group(1)) + 1)
        if pat["next_zh"].match(text.replace(" ", "")) or pat["next_en"].match(text):
            previous = ""
            for i in range(last_user - 1, -1, -1):
                if isinstance(messages[i], dict) and messages[i].get("role") == "assistant":
                    previous = _fake_text_of(messages[i].get("content"))
                    break
            numbers = pat["number"].findall(previous)
            if numbers:
                return str(int(numbers[-1]) + 1)
            return "(demo) Which number do you mean? Ask me what comes after a number first."
        fact = pat["facts"].get(_fake_normalise(text))
        if fact is not None:
            return fact  # type: ignore[no-any-return]
        m = pat["capital_en"].match(text)
        if m and m.group(1).strip(" .").lower() in _FAKE_CAPITALS_EN:
            return _FAKE_CAPITALS_EN[m.group(1).strip(" .").lower()]
        if pat["largest_country_en"].search(text):
            return "Russia"
        if pat["frog_en"].search(text):
            return "A tadpole"
        if pat["ocean_en"].search(text):
            return "The Pacific Ocean."
        if pat["insult_en"].search(text):
            return _FAKE_APOLOGY_EN
        return "(demo) You said: " + text


# ---------------------------------------------------------------------------------------------
# Building the response bytes
# ---------------------------------------------------------------------------------------------


def _fake_json_bytes(value: object) -> bytes:
    import json

    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _fake_sse_event(data: str, le: str) -> bytes:
    lines = data.split("\n")
    return ("".join("data: %s%s" % (line, le) for line in lines) + le).encode("utf-8")


def _fake_usage(reply: Reply, request: RecordedRequest, completion_text: str) -> dict[str, Any] | None:
    if reply.usage is None:
        return None
    if isinstance(reply.usage, dict):
        return reply.usage
    prompt = " ".join(_fake_text_of(m.get("content")) for m in request.messages if isinstance(m, dict))
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


def _fake_completion_body(reply: Reply, request: RecordedRequest) -> dict[str, Any]:
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
        usage=_fake_usage(reply, request, _fake_completion_text(reply)),
    )


def _fake_stream_events(reply: Reply, request: RecordedRequest) -> list[dict[str, Any] | str | bytes]:
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
        usage = _fake_usage(reply, request, _fake_completion_text(reply))
        if usage is not None:
            events.append(chunk(choices=[], usage=usage))
    return events


def _fake_stream_plan(reply: Reply, request: RecordedRequest) -> list[tuple[str, bytes]]:
    """The stream as a plan: ``("event", bytes)`` (counted), ``("comment", bytes)`` (not)."""
    le = reply.line_ending
    if reply.raw_stream is not None:
        return [("event", bytes(reply.raw_stream))]
    events = list(reply.events) if reply.events is not None else _fake_stream_events(reply, request)
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
            self._send_simple(conn, 400, openai_error_body("Malformed request line"), close=True)
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
        headers: dict[str, str] = {}
        for name, value in raw_headers:
            key = name.lower()
            headers[key] = headers[key] + ", " + value if key in headers else value
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
        parsed: Any = None
        if body:
            import json

            try:
                parsed = json.loads(body.decode("utf-8"))
            except ValueError:
                parsed = None
        with self._cond:
            request = RecordedRequest(
                method,
                target,
                headers,
                body,
                parsed,
                conn.cid,
                conn.addr,
                raw_headers=raw_headers,
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
            conn_hdr = request.headers.get("connection", "").lower()
            client_close = "close" in conn_hdr or (request.http_version == "HTTP/1.0" and "keep-alive" not in conn_hdr)
            target = request.path
            if target.startswith(("http://", "https://")):
                target = "/" + target.split("/", 3)[-1] if target.count("/") >= 3 else "/"
            route = target.split("?", 1)[0].rstrip("/")
            if not route.endswith("/chat/completions"):
                body = openai_error_body(
                    "Unknown request URL: %s %s. Please check the URL." % (request.method, target), code="unknown_url"
                )
                return self._send_simple(conn, 404, body, close=client_close)
            if request.method != "POST":
                body = openai_error_body("Method %s is not allowed here; use POST." % request.method)
                return self._send_simple(conn, 405, body, close=client_close, extra=[("Allow", "POST")])
            try:
                reply = self._choose_reply(request)
            except Exception as exc:  # a handler bug: tell the test, answer 500
                with self._lock:
                    self.errors.append(exc)
                body = openai_error_body(
                    "FakeServer handler raised %s: %s" % (type(exc).__name__, exc), type="server_error"
                )
                return self._send_simple(conn, 500, body, close=client_close)
            return self._send_reply(conn, request, reply, client_close)
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

    def _choose_reply(self, request: RecordedRequest) -> Reply:
        try:
            scripted = self.replies.popleft()  # deque.popleft is atomic: no lock needed
        except IndexError:
            return _fake_as_reply(self.handler(request))
        return _fake_as_reply(scripted)

    def _wait_gate(self, gate: Any, timeout: float) -> None:
        with self._lock:
            self._gates.add(gate)
        try:
            if isinstance(gate, threading.Event):
                deadline = time.monotonic() + timeout
                while not gate.is_set() and not self._stop_event.is_set():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    gate.wait(min(0.05, left))
            else:
                try:
                    gate.wait(timeout)
                except threading.BrokenBarrierError:
                    pass
        finally:
            with self._lock:
                self._gates.discard(gate)

    def _head(self, status: int, headers: list[tuple[str, str]], extra: Mapping[str, str]) -> bytes:
        from http import HTTPStatus

        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        override = {k.lower() for k in extra}
        lines = ["HTTP/1.1 %d %s" % (status, phrase)]
        lines.extend("%s: %s" % (k, v) for k, v in headers if k.lower() not in override)
        lines.extend("%s: %s" % (k, v) for k, v in extra.items())
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _common_headers(self) -> list[tuple[str, str]]:
        return [("Server", "openai2-fake"), ("x-request-id", _fake_new_id("req"))]

    def _send_simple(
        self,
        conn: _FakeConn,
        status: int,
        body: dict[str, Any],
        *,
        close: bool,
        extra: list[tuple[str, str]] | None = None,
    ) -> bool:
        data = _fake_json_bytes(body)
        headers = self._common_headers() + [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            ("Connection", "close" if close else "keep-alive"),
        ]
        self._finish_request(conn, not close)
        conn.sock.sendall(self._head(status, headers + list(extra or ()), {}) + data)
        return not close

    def _send_reply(self, conn: _FakeConn, request: RecordedRequest, reply: Reply, client_close: bool) -> bool:
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
        close = client_close or reply.close_connection
        status = reply.status
        headers = self._common_headers()
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
            body = _fake_json_bytes(_fake_completion_body(reply, request))
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

        if stream:
            plan = _fake_stream_plan(reply, request)
        elif reply.stall_after is not None or reply.disconnect_after is not None:
            plan = self._regroup_bytes(body, reply)
        else:
            plan = [("bytes:%d" % len(body), body)]
        conn.held = [self._head(status, headers, reply.headers)]
        return self._run_plan(conn, plan, reply, chunked, keep=not close)

    @staticmethod
    def _regroup_bytes(body: bytes, reply: Reply) -> list[tuple[str, bytes]]:
        cuts = sorted({c for c in (reply.stall_after, reply.disconnect_after) if c is not None and 0 < c < len(body)})
        plan: list[tuple[str, bytes]] = []
        start = 0
        for c in cuts + [len(body)]:
            plan.append(("bytes:%d" % (c - start), body[start:c]))
            start = c
        return plan

    def _run_plan(
        self, conn: _FakeConn, plan: list[tuple[str, bytes]], reply: Reply, chunked: bool, *, keep: bool
    ) -> bool:
        """Send the plan's units; returns whether the connection stays open.

        Units are ``("event", data)`` (counts one), ``("bytes:N", data)`` (counts N) and
        ``("comment", data)`` (not counted); stalls and disconnects happen between units.
        """
        sent = 0
        stalled = False
        for kind, data in plan + [("end", b"")]:
            if kind != "comment":
                if reply.disconnect_after is not None and sent >= reply.disconnect_after:
                    self._flush(conn)
                    if reply.reset:
                        _fake_reset(conn.sock)
                    else:
                        _fake_shutdown(conn.sock)
                    return False
                if not stalled and reply.stall_after is not None and sent >= reply.stall_after:
                    stalled = True
                    self._flush(conn)
                    if self._stop_event.wait(reply.stall_seconds):
                        return False
            self._write(conn, data, chunked, reply)
            if kind == "event":
                sent += 1
            elif kind.startswith("bytes:"):
                sent += int(kind[6:])
        if chunked:
            self._write(conn, b"", True, reply, terminator=True)
        self._finish_request(conn, keep)
        self._flush(conn)
        return keep

    def _flush(self, conn: _FakeConn) -> None:
        while conn.held:
            conn.sock.sendall(conn.held.pop(0))

    def _write(self, conn: _FakeConn, data: bytes, chunked: bool, reply: Reply, terminator: bool = False) -> None:
        """Queue ``data`` in writes of ``write_size``; each write is sent when the next one comes
        (the last one by ``_run_plan`` after the request's bookkeeping)."""
        if terminator:
            self._flush(conn)
            conn.held.append(b"0\r\n\r\n")
            return
        if not data:
            return
        size = reply.write_size or len(data)
        for start in range(0, len(data), size):
            piece = data[start : start + size]
            if chunked:
                piece = b"%x\r\n" % len(piece) + piece + b"\r\n"
            if conn.held and reply.write_size and reply.write_pause > 0:
                self._flush(conn)
                time.sleep(reply.write_pause)
            self._flush(conn)
            conn.held.append(piece)


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
