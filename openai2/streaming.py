"""The chat layer over SSE: events -> chunk dicts (:func:`iter_chunk_dicts`), and chunk dicts ->
one assembled answer (:class:`ChatAccumulator`).

Providers stream ``chat.completion.chunk`` objects with many small differences; the
accumulator tolerates those seen on the wire:

* ``[DONE]`` ends the stream; ``{"error": ...}`` in the data, or an ``event: error``, raises
  :class:`APIError` (also after text has arrived: OpenRouter and Groq report failures this way);
* chunks with empty ``choices`` carry no text but their ``usage`` is kept (the last non-null
  usage wins; Groq's ``x_groq.usage`` is used when there is no top-level one);
* tool-call deltas are merged by ``index``; a delta without ``index`` (Mistral) continues the last
  call unless it brings a new id; a later empty ``id`` (Qwen/DashScope) never wipes the real one;
  an id or name repeated whole in every chunk (Kimi via OpenRouter) is not concatenated; a delta
  whose index is taken by a call with another id starts a new call;
* reasoning (``reasoning_content``, or ``reasoning`` as a string) is kept apart from content;
  Mistral's content arrays split into ``thinking`` parts (reasoning) and ``text`` parts (content);
* ``refusal`` deltas accumulate separately; choices other than 0 (``n > 1``) are tracked too.

Text is kept as lists of pieces and joined on demand, so assembling is linear in the text size.
"""

from __future__ import annotations

from .common import TYPE_CHECKING
from .errors import APIError
from .sse import ServerSentEvent

if TYPE_CHECKING:
    from typing import Any, Callable, Iterable, Iterator


def _stream_excerpt(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _stream_error(payload: object, raw: str) -> APIError:
    """Build the APIError for an error reported inside a stream."""
    err: object = payload
    if isinstance(payload, dict) and "error" in payload:
        err = payload["error"]
    if isinstance(err, str):
        err = {"message": err}
    if not isinstance(err, dict):
        return APIError("The stream reported an error: %s" % _stream_excerpt(raw or "(no data)"), body=payload)
    message = err.get("message")
    if not isinstance(message, str) or not message.strip():
        import json

        message = "The stream reported an error: %s" % _stream_excerpt(json.dumps(err, ensure_ascii=False))
    type_ = err.get("type")
    param = err.get("param")
    return APIError(
        message,
        body=payload,
        code=err.get("code"),
        type=type_ if isinstance(type_, str) else None,
        param=param if isinstance(param, str) else None,
    )


_stream_loads_cache: list[Any] = []


def _stream_json() -> tuple[Callable[[str], Any], Callable[[str, int], tuple[Any, int]] | None]:
    """``json.loads`` and, on CPython, the C scanner of a default ``JSONDecoder`` (or None),
    imported on first use (``import openai2`` must not import json).

    ``scan_once(data, 0)`` is what ``json.loads`` ends up calling, minus two regex matches and
    three Python calls around it (~1.2 us of ~4.9 us per bench chunk); the C scanner clears its
    memo after every call, so a long stream does not grow it.  PyPy has no C scanner: its
    ``json.loads`` is used as is.
    """
    if not _stream_loads_cache:
        import json
        import json.scanner

        scan = None
        if json.scanner.c_make_scanner is not None:  # type: ignore[attr-defined]
            scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
        _stream_loads_cache.append((json.loads, scan))
    return _stream_loads_cache[0]  # type: ignore[no-any-return]


def iter_chunk_dicts(
    events: Iterable[ServerSentEvent], accumulator: ChatAccumulator | None = None
) -> Iterator[dict[str, Any]]:
    """Parse each event's data as a JSON chunk, until ``[DONE]``.

    :param events: decoded events (from :meth:`SSEDecoder.feed`), in order
    :param accumulator: if given, its ``done`` is set when ``[DONE]`` arrives, so a caller feeding
        batches of events knows to stop reading
    :returns: an iterator of chunk dicts (the accumulator is not fed: call its ``add``)
    :raises APIError: an ``event: error``, a payload with a non-null top-level ``error``, data that
        is not JSON, or JSON that is not an object
    """
    loads, scan = _stream_json()
    for event in events:
        data = event.data
        if data[:1] == "{" and event.event != "error":
            chunk = None
            if scan is not None:
                # The common case, parsed by the C scanner directly; anything unusual (trailing
                # whitespace, extra data, invalid JSON) goes to json.loads, which decides.
                try:
                    chunk, end = scan(data, 0)
                except (StopIteration, ValueError):
                    chunk = None
                else:
                    if end != len(data):
                        chunk = None
            if chunk is None:
                try:
                    chunk = loads(data)
                except ValueError:
                    raise APIError(
                        "The stream sent data that is not JSON: %r" % _stream_excerpt(data), body=data
                    ) from None
            if "error" in chunk and chunk["error"]:
                raise _stream_error(chunk, data)
            yield chunk
            continue
        # The rare cases: [DONE], an error event, data that is not a JSON object.
        if event.event == "error":
            try:
                payload: object = loads(data)
            except ValueError:
                payload = data
            raise _stream_error(payload, data)
        if data.strip() == "[DONE]":
            if accumulator is not None:
                accumulator.done = True
            return
        try:
            value = loads(data)
        except ValueError:
            raise APIError("The stream sent data that is not JSON: %r" % _stream_excerpt(data), body=data) from None
        if not isinstance(value, dict):
            raise APIError("The stream sent JSON that is not an object: %r" % _stream_excerpt(data), body=value)
        if value.get("error"):
            raise _stream_error(value, data)
        yield value


class _StreamChoice:
    """What one choice has assembled so far (text kept as lists of pieces)."""

    __slots__ = ("content", "reasoning", "refusal", "calls", "last_call", "finish_reason", "role")

    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.refusal: list[str] = []
        # Tool calls in arrival order.  Each dict also keeps its wire index under "_index" and
        # its argument fragments under "_args" (joined on demand: arguments can be long).
        self.calls: list[dict[str, Any]] = []
        self.last_call: dict[str, Any] | None = None
        self.finish_reason: str | None = None
        self.role: str | None = None

    def text(self, which: str) -> str:
        pieces: list[str] = getattr(self, which)
        if len(pieces) > 1:
            pieces[:] = ["".join(pieces)]
        return pieces[0] if pieces else ""

    def tool_calls(self) -> list[dict[str, Any]]:
        out = []
        for call in self.calls:
            item = {k: v for k, v in call.items() if k[:1] != "_"}
            fragments: list[str] = call["_args"]
            if len(fragments) > 1:
                fragments[:] = ["".join(fragments)]
            item["function"] = dict(call["function"], arguments=fragments[0] if fragments else "")
            out.append(item)
        return out

    def merge_call(self, delta: dict[str, Any]) -> None:
        index = delta.get("index")
        new_id = delta.get("id")
        if not isinstance(new_id, str):
            new_id = "" if new_id is None else str(new_id)
        call: dict[str, Any] | None = None
        if index is None:
            # Mistral sends whole calls without an index: a new id means a new call.
            last = self.last_call
            if last is not None and (not new_id or new_id == last["id"]):
                call = last
        else:
            for existing in reversed(self.calls):
                if existing["_index"] == index:
                    if new_id and existing["id"] and new_id != existing["id"]:
                        break  # a server reusing an index for a different call
                    call = existing
                    break
        if call is None:
            if index is None:
                index = max([c["_index"] for c in self.calls if isinstance(c["_index"], int)] + [-1]) + 1
            call = {"_index": index, "_args": [], "id": "", "type": None, "function": {"name": "", "arguments": ""}}
            self.calls.append(call)
        self.last_call = call
        if new_id and not call["id"]:
            call["id"] = new_id
        kind = delta.get("type")
        if kind:
            call["type"] = kind
        fn = delta.get("function")
        if isinstance(fn, dict):
            target = call["function"]
            name = fn.get("name")
            if name:
                old = target["name"]
                if not old:
                    target["name"] = name
                elif name != old:
                    target["name"] = old + name
            args = fn.get("arguments")
            if args:
                if not isinstance(args, str):
                    import json

                    args = json.dumps(args, ensure_ascii=False)
                call["_args"].append(args)
            for key, value in fn.items():
                if key not in ("name", "arguments") and value is not None:
                    target[key] = value
        for key, value in delta.items():
            if key not in ("index", "id", "type", "function") and value is not None and key[:1] != "_":
                call[key] = value

    def add_parts(self, parts: list[Any]) -> str:
        """Mistral content arrays: ``thinking`` parts are reasoning, ``text`` parts content."""
        text = ""
        for part in parts:
            if isinstance(part, str):
                self.content.append(part)
                text += part
                continue
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if kind == "text":
                value = part.get("text")
                if isinstance(value, str) and value:
                    self.content.append(value)
                    text += value
            elif kind == "thinking":
                thinking = part.get("thinking")
                if isinstance(thinking, str):
                    thinking = [thinking]
                if isinstance(thinking, list):
                    for sub in thinking:
                        value = sub.get("text") if isinstance(sub, dict) else sub
                        if isinstance(value, str) and value:
                            self.reasoning.append(value)
        return text

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "content": self.text("content"),
            "reasoning": self.text("reasoning"),
            "refusal": self.text("refusal"),
            "tool_calls": self.tool_calls(),
            "finish_reason": self.finish_reason,
            "role": self.role,
        }
        return out


class ChatAccumulator:
    """Merges streamed ``chat.completion.chunk`` dicts into one answer.

    Feed every chunk to :meth:`add`; read the result from the attributes at any time.

    :ivar usage: the last non-null ``usage`` seen (or ``x_groq.usage``), or None
    :ivar id: the first non-empty chunk id; :ivar model: the first non-empty model name
    :ivar done: True once ``[DONE]`` was seen (set by :func:`iter_chunk_dicts`)
    :ivar chunks: how many chunks were added
    """

    def __init__(self) -> None:
        self._choice = _StreamChoice()
        self._others: dict[int, _StreamChoice] = {}
        self._finished = False
        self.usage: dict[str, Any] | None = None
        self.id: str | None = None
        self.model: str | None = None
        self.created: int | None = None
        self.system_fingerprint: str | None = None
        self.done = False
        self.chunks = 0
        self._meta_missing = True

    def __repr__(self) -> str:
        return "<ChatAccumulator chunks=%d content=%d chars finish_reason=%r done=%s>" % (
            self.chunks,
            sum(len(p) for p in self._choice.content),
            self.finish_reason,
            self.done,
        )

    def add(self, chunk: dict[str, Any]) -> str:
        """Merge one chunk.

        :param chunk: a parsed ``chat.completion.chunk``
        :returns: the content text this chunk added to choice 0 (``""`` if none)
        """
        self.chunks += 1
        if self._meta_missing:
            # The first non-empty id (with its created), model and system_fingerprint; not
            # looked for any more once all three are known (a server may never send a
            # fingerprint: then the three checks stay, as cheap as before).
            if not self.id:
                value = chunk.get("id")
                if value:
                    self.id = value
                    self.created = chunk.get("created", self.created)
            if not self.model:
                value = chunk.get("model")
                if value:
                    self.model = value
            if not self.system_fingerprint:
                value = chunk.get("system_fingerprint")
                if value:
                    self.system_fingerprint = value
            self._meta_missing = not (self.id and self.model and self.system_fingerprint)
        usage = chunk.get("usage")
        if usage is None:
            extra = chunk.get("x_groq")
            if extra is not None and extra.__class__ is dict:
                usage = extra.get("usage")
        if usage is not None:
            self.usage = usage
        choices = chunk.get("choices")
        if not choices:
            return ""
        main = self._choice
        if len(choices) == 1:
            # The common chunk: one choice 0 whose delta holds content and maybe role.
            choice = choices[0]
            if choice.__class__ is dict and not choice.get("index"):
                delta = choice.get("delta")
                if delta.__class__ is dict:
                    size = len(delta)
                    content = delta.get("content")
                    if (content is None or content.__class__ is str) and (
                        size == (content is not None) + ("role" in delta) or size == 0
                    ):
                        role = delta.get("role")
                        if role:
                            main.role = role
                        reason = choice.get("finish_reason")
                        if reason:
                            main.finish_reason = reason
                            self._finished = True
                        if content:
                            piece: str = content
                            main.content.append(piece)
                            return piece
                        return ""
        out = ""
        for choice in choices:
            index = choice.get("index", 0)
            if not index:
                state = main
            else:
                state = self._others.get(index)  # type: ignore[assignment]
                if state is None:
                    state = self._others[index] = _StreamChoice()
            delta = choice.get("delta")
            if delta:
                # Iterate the (usually one or two) keys instead of probing every known one.
                for key, value in delta.items():
                    if not value:
                        continue
                    if key == "content":
                        if value.__class__ is str:
                            state.content.append(value)
                            if state is main:
                                out += value
                        elif isinstance(value, list):
                            text = state.add_parts(value)
                            if state is main:
                                out += text
                    elif key == "reasoning_content":
                        if isinstance(value, str):
                            state.reasoning.append(value)
                    elif key == "reasoning":
                        # Only when no reasoning_content came alongside (never both).
                        if isinstance(value, str) and delta.get("reasoning_content") is None:
                            state.reasoning.append(value)
                    elif key == "refusal":
                        if isinstance(value, str):
                            state.refusal.append(value)
                    elif key == "role":
                        state.role = value
                    elif key == "tool_calls":
                        if isinstance(value, list):
                            for call in value:
                                if isinstance(call, dict):
                                    state.merge_call(call)
            reason = choice.get("finish_reason")
            if reason:
                state.finish_reason = reason
                self._finished = True
        return out

    # -- choice 0 -------------------------------------------------------------------------

    @property
    def content(self) -> str:
        """The assembled content of choice 0."""
        return self._choice.text("content")

    @property
    def reasoning(self) -> str:
        """The assembled reasoning of choice 0 (``reasoning_content``/``reasoning``/thinking)."""
        return self._choice.text("reasoning")

    @property
    def refusal(self) -> str:
        """The assembled refusal of choice 0."""
        return self._choice.text("refusal")

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        """Choice 0's tool calls, in order: ``{"id", "type", "function": {"name", "arguments"}}``."""
        return self._choice.tool_calls()

    @property
    def finish_reason(self) -> str | None:
        """Choice 0's last non-null ``finish_reason``."""
        return self._choice.finish_reason

    @property
    def role(self) -> str:
        """The role announced by the stream (``"assistant"`` when none was)."""
        return self._choice.role or "assistant"

    @property
    def other_choices(self) -> dict[int, dict[str, Any]]:
        """Choices other than 0 (``n > 1``): index -> content, reasoning, refusal, tool_calls,
        finish_reason, role."""
        return {index: state.summary() for index, state in sorted(self._others.items(), key=_stream_index_key)}

    @property
    def complete(self) -> bool:
        """True when the answer is known to be whole: ``[DONE]`` or any ``finish_reason`` seen."""
        return self.done or self._finished

    def message(self) -> dict[str, Any]:
        """The assistant message to append to the conversation history (no reasoning).

        :returns: ``{"role", "content"}`` plus ``"tool_calls"`` when there are any (content is
            None then if no text came, as in the API's own responses)
        """
        return _stream_message(self._choice)

    def completion(self) -> dict[str, Any]:
        """The answer shaped like a non-streaming ``chat.completion`` response.

        Reasoning appears as ``message.reasoning_content`` and a refusal as ``message.refusal``
        when there was any.
        """
        choices = [_stream_completion_choice(0, self._choice)]
        for index, state in sorted(self._others.items(), key=_stream_index_key):
            choices.append(_stream_completion_choice(index, state))
        out: dict[str, Any] = {
            "id": self.id or "",
            "object": "chat.completion",
            "created": self.created or 0,
            "model": self.model or "",
            "choices": choices,
            "usage": self.usage,
        }
        if self.system_fingerprint:
            out["system_fingerprint"] = self.system_fingerprint
        return out


def _stream_index_key(item: tuple[Any, _StreamChoice]) -> tuple[int, str]:
    index = item[0]
    return (index, "") if isinstance(index, int) else (1 << 62, str(index))


def _stream_message(state: _StreamChoice) -> dict[str, Any]:
    calls = state.tool_calls()
    content = state.text("content")
    message: dict[str, Any] = {
        "role": state.role or "assistant",
        "content": content if (content or not calls) else None,
    }
    if calls:
        message["tool_calls"] = calls
    return message


def _stream_completion_choice(index: int, state: _StreamChoice) -> dict[str, Any]:
    message = _stream_message(state)
    reasoning = state.text("reasoning")
    if reasoning:
        message["reasoning_content"] = reasoning
    refusal = state.text("refusal")
    if refusal:
        message["refusal"] = refusal
    return {"index": index, "message": message, "finish_reason": state.finish_reason}


def accumulator_from_completion(body: dict[str, Any]) -> ChatAccumulator:
    """Fill a :class:`ChatAccumulator` from a plain ``chat.completion`` JSON body.

    Used when a stream request was answered with one JSON response: the caller then reads the
    same attributes as after a stream.  A whole response counts as ``done``.

    :param body: the parsed response body
    :returns: an accumulator holding content, reasoning (``message.reasoning_content`` or
        ``message.reasoning``), refusal, tool calls, finish reason and usage of every choice
    :raises APIError: the body is an error object (``{"error": ...}``) or not an object at all
    """
    if not isinstance(body, dict):
        raise APIError("Expected a chat.completion object, got %s." % type(body).__name__, body=body)
    if body.get("error") is not None:
        raise _stream_error(body, "")
    acc = ChatAccumulator()
    acc.id = body.get("id") or None
    acc.model = body.get("model") or None
    acc.created = body.get("created")
    acc.system_fingerprint = body.get("system_fingerprint") or None
    usage = body.get("usage")
    if usage is None:
        extra = body.get("x_groq")
        if isinstance(extra, dict):
            usage = extra.get("usage")
    acc.usage = usage
    acc.done = True
    for choice in body.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        index = choice.get("index", 0)
        if not index:
            state = acc._choice
        else:
            state = acc._others.setdefault(index, _StreamChoice())
        message = choice.get("message")
        if not isinstance(message, dict):
            message = {}
        content = message.get("content")
        if isinstance(content, str):
            if content:
                state.content.append(content)
        elif isinstance(content, list):
            state.add_parts(content)
        reasoning = message.get("reasoning_content")
        if reasoning is None:
            reasoning = message.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            state.reasoning.append(reasoning)
        refusal = message.get("refusal")
        if isinstance(refusal, str) and refusal:
            state.refusal.append(refusal)
        role = message.get("role")
        if isinstance(role, str) and role:
            state.role = role
        for position, call in enumerate(message.get("tool_calls") or ()):
            if isinstance(call, dict):
                # Some servers (Together) put an "index" in whole messages; position decides.
                entry = dict(call)
                entry["index"] = position
                state.merge_call(entry)
        reason = choice.get("finish_reason")
        if reason:
            state.finish_reason = reason
            acc._finished = True
    return acc


#: The name the architecture contract uses for :func:`accumulator_from_completion`.
completion_from_json = accumulator_from_completion
