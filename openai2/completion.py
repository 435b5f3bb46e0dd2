"""The chat.completion wire shapes: events -> chunk dicts (:func:`iter_chunk_dicts`), and chunk
dicts -- or one whole ``chat.completion`` body (:meth:`ChatAccumulator.add_completion`) -- -> one
assembled answer (:class:`ChatAccumulator`), whose views are :meth:`~ChatAccumulator.completion`,
:meth:`~ChatAccumulator.chunk` and the message that joins a history
(:meth:`~ChatAccumulator.history_message`, the one place that rule lives).

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

from .common import TYPE_CHECKING, redact
from .errors import APIError, redact_value, safe_json_text
from .sse import ServerSentEvent

if TYPE_CHECKING:
    from typing import Any, Callable, Iterable, Iterator


def _stream_excerpt(text: str, secrets: Iterable[str] = (), limit: int = 120) -> str:
    """A one-line excerpt: keys are masked first, then the text is cut (so a cut never falls
    inside a raw key, at worst inside a masked form)."""
    text = redact(" ".join(redact(text, secrets).split()), secrets)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _stream_error(payload: object, raw: str, secrets: Iterable[str] = ()) -> APIError:
    """Build the APIError for an error reported inside a stream (keys masked)."""
    secrets = tuple(secrets)
    payload = redact_value(payload, secrets)
    err: object = payload
    if isinstance(payload, dict) and "error" in payload:
        err = payload["error"]
    if isinstance(err, str):
        err = {"message": err}
    if not isinstance(err, dict):
        return APIError("The stream reported an error: %s" % _stream_excerpt(raw or "(no data)", secrets), body=payload)
    message = err.get("message")
    if not isinstance(message, str) or not message.strip():
        message = "The stream reported an error: %s" % _stream_excerpt(safe_json_text(err), secrets)
    type_ = err.get("type")
    param = err.get("param")
    code = err.get("code")
    return APIError(
        redact(message, secrets),
        body=payload,
        code=redact(code, secrets) if isinstance(code, str) else code,
        type=redact(type_, secrets) if isinstance(type_, str) else None,
        param=redact(param, secrets) if isinstance(param, str) else None,
    )


def _stream_not_json(data: str, secrets: Iterable[str], deep: bool = False) -> APIError:
    what = "JSON nested too deeply to parse" if deep else "data that is not JSON"
    return APIError("The stream sent %s: %r" % (what, _stream_excerpt(data, secrets)), body=redact(data, secrets))


_stream_loads_cache: list[Any] = []


def _stream_json() -> tuple[Callable[[str], Any], Callable[[str, int], tuple[Any, int]] | None]:
    """``json.loads`` and, on CPython, the C scanner of a default ``JSONDecoder`` (or None),
    imported on first use (``import openai2`` must not import json).

    ``scan_once(data, 0)`` is what ``json.loads`` ends up calling, minus two regex matches and
    three Python calls around it (~1.2 us of ~4.9 us per bench chunk); the C scanner clears its
    memo after every call (also after an error), so a long stream does not grow it.  PyPy has
    no C scanner: its ``json.loads`` is used as is.
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
    events: Iterable[ServerSentEvent],
    accumulator: ChatAccumulator | None = None,
    secrets: Iterable[str | None] = (),
) -> Iterator[dict[str, Any]]:
    """Parse each event's data as a JSON chunk, until ``[DONE]``.

    :param events: decoded events (from :meth:`SSEDecoder.feed`), in order
    :param accumulator: if given, its ``done`` is set when ``[DONE]`` arrives, so a caller feeding
        batches of events knows to stop reading
    :param secrets: API keys to mask in the errors raised here (their messages quote the data);
        when empty, the accumulator's ``secrets`` are used
    :returns: an iterator of chunk dicts (the accumulator is not fed: call its ``add``)
    :raises APIError: an ``event: error``, a payload with a non-null top-level ``error``, data that
        is not JSON (or JSON nested too deeply to parse), or JSON that is not an object
    """
    known: tuple[str, ...] = tuple(s for s in secrets if s)
    if not known and accumulator is not None:
        known = accumulator.secrets
    loads, scan = _stream_json()
    for event in events:
        data = event.data
        if data[:1] == "{" and event.event != "error":
            chunk = None
            if scan is not None:
                # The common case, parsed by the C scanner directly; anything unusual (trailing
                # whitespace, extra data, invalid JSON, deep nesting) goes to json.loads, which
                # decides.
                try:
                    chunk, end = scan(data, 0)
                except (StopIteration, ValueError, RecursionError):
                    chunk = None
                else:
                    if end != len(data):
                        chunk = None
            if chunk is None:
                try:
                    chunk = loads(data)
                except ValueError:
                    raise _stream_not_json(data, known) from None
                except RecursionError:
                    raise _stream_not_json(data, known, deep=True) from None
            if "error" in chunk and chunk["error"]:
                raise _stream_error(chunk, data, known)
            yield chunk
            continue
        # The rare cases: [DONE], an error event, data that is not a JSON object.
        if event.event == "error":
            try:
                payload: object = loads(data)
            except (ValueError, RecursionError):
                # not JSON: quoted as an excerpt (it may be a whole HTML page, or very long)
                raise APIError(
                    "The stream reported an error: %s" % _stream_excerpt(data or "(no data)", known, 300),
                    body=redact(data, known),
                ) from None
            raise _stream_error(payload, data, known)
        if data.strip() == "[DONE]":
            if accumulator is not None:
                accumulator.done = True
            return
        try:
            value = loads(data)
        except ValueError:
            raise _stream_not_json(data, known) from None
        except RecursionError:
            raise _stream_not_json(data, known, deep=True) from None
        if not isinstance(value, dict):
            raise APIError(
                "The stream sent JSON that is not an object: %r" % _stream_excerpt(data, known),
                body=redact_value(value, known),
            )
        if value.get("error"):
            raise _stream_error(value, data, known)
        yield value


# -- text that is valid Unicode ----------------------------------------------------------
#
# JSON lets a server write a character outside the BMP as two escapes, "\ud83d\ude00"; a
# relay that cuts text by UTF-16 units sends them in two chunks.  json gives each chunk a lone
# surrogate, and Python does not pair two lone surrogates when it concatenates them: the text
# cannot be encoded (UTF-8, JSON for the next request, a terminal).  So a piece never keeps a
# trailing high surrogate (it is held back and put before the next piece of the same text),
# and any surrogate still alone is replaced by U+FFFD.


def _stream_repair(text: str) -> str:
    """Pair the surrogates that form pairs; every surrogate left alone becomes U+FFFD."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _stream_valid(text: str) -> str:
    """``text`` if it can be encoded as UTF-8, else repaired (:func:`_stream_repair`)."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _stream_repair(text)
    return text


class _StreamShape(Exception):
    """A chunk (or completion) whose shape is wrong where it matters: carries what is wrong."""


def _stream_type(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _stream_choice_index(raw: object) -> int:
    """A choice's ``index``: missing/null (or any empty value) is 0; an int; digits as text."""
    if not raw:
        return 0
    if raw.__class__ is int:
        return raw  # type: ignore[return-value]
    if isinstance(raw, str) and raw.isdigit() and raw.isascii():
        return int(raw)
    raise _StreamShape("a choice index is %s %s, not an integer" % (_stream_type(raw), safe_json_text(raw)[:20]))


#: finish_reason values of OpenAI's schema, and what other servers' own words mean in it.
_STREAM_FINISH = frozenset(("stop", "length", "tool_calls", "content_filter", "function_call"))
_STREAM_FINISH_ALIASES = {
    "eos": "stop",
    "eos_token": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "max_length": "length",
    "model_length": "length",
    "tool_use": "tool_calls",
    "tool_call": "tool_calls",
    "content_filtered": "content_filter",
    "safety": "content_filter",
}


def _stream_schema_finish(reason: str | None, calls: bool, ended: bool) -> str:
    """The ``finish_reason`` of an assembled completion: always one of the schema's five.

    A known value (any case) or alias is used; a missing or unknown one becomes ``"tool_calls"``
    or ``"stop"`` when the answer ended ([DONE] or a whole response), ``"length"`` (the answer
    stopped before its end) when the stream was cut short.
    """
    if reason is not None:
        if reason in _STREAM_FINISH:
            return reason
        lower = reason.lower()
        if lower in _STREAM_FINISH:
            return lower
        mapped = _STREAM_FINISH_ALIASES.get(lower)
        if mapped is not None:
            return mapped
        ended = True
    if not ended:
        return "length"
    return "tool_calls" if calls else "stop"


class _StreamChoice:
    """What one choice has assembled so far (text kept as lists of pieces)."""

    __slots__ = (
        "content",
        "reasoning",
        "refusal",
        "calls",
        "last_call",
        "finish_reason",
        "role",
        "held",
        "logprobs",
        "extra",
        "fresh",
    )

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
        # A high surrogate held back per text ("content", "reasoning", "refusal"); None when none
        # is (the fast path tests only that).
        self.held: dict[str, str] | None = None
        self.logprobs: dict[str, Any] | None = None
        # The rarer message fields, None until one comes (the fast path never sees them):
        # "name", "function_call" ({"name", "_args"}), "audio" (text values as lists of pieces),
        # "parts" (content parts that are not text, in order).
        self.extra: dict[str, Any] | None = None
        # When watched (ChatAccumulator.watch_reasoning): every reasoning piece added, in order.
        self.fresh: list[str] | None = None

    def add_extra(self, key: str, value: object) -> None:
        """Merge a ``name``, ``function_call`` or ``audio`` delta (or a whole message's)."""
        extra = self.extra
        if extra is None:
            extra = self.extra = {}
        if key == "name":
            if not isinstance(value, str):
                raise _StreamShape("name is %s, not text" % _stream_type(value))
            extra["name"] = _stream_join_name(extra.get("name", ""), value)
        elif key == "function_call":
            if not isinstance(value, dict):
                raise _StreamShape("function_call is %s, not an object" % _stream_type(value))
            call = extra.get("function_call")
            if call is None:
                call = extra["function_call"] = {"name": "", "_args": []}
            name = value.get("name")
            if name:
                if not isinstance(name, str):
                    raise _StreamShape("function_call's name is %s, not text" % _stream_type(name))
                call["name"] = _stream_join_name(call["name"], name)
            args = value.get("arguments")
            if args:
                call["_args"].append(args if isinstance(args, str) else safe_json_text(args))
        elif key == "audio":
            if not isinstance(value, dict):
                return  # audio that is not an object carries nothing usable: ignored
            audio = extra.get("audio")
            if audio is None:
                audio = extra["audio"] = {}
            for name, piece in value.items():
                if name in ("data", "transcript") and isinstance(piece, str):
                    audio.setdefault(name, []).append(piece)
                elif name == "id" and audio.get("id"):
                    continue  # the id once
                elif piece is not None:
                    audio[name] = piece

    def add_part(self, part: object) -> None:
        """A content part that is not text (``image_url``, ``audio`` ...): kept as it came."""
        extra = self.extra
        if extra is None:
            extra = self.extra = {}
        extra.setdefault("parts", []).append(part)

    def extras(self, standard: bool) -> dict[str, Any]:
        """The rarer fields as message fields; ``standard``: audio reduced to its ``id``."""
        extra = self.extra
        out: dict[str, Any] = {}
        if not extra:
            return out
        name = extra.get("name")
        if name:
            out["name"] = _stream_valid(name)
        call = extra.get("function_call")
        if call is not None:
            fragments: list[str] = call["_args"]
            if len(fragments) > 1:
                fragments[:] = ["".join(fragments)]
            out["function_call"] = {
                "name": _stream_valid(call["name"]),
                "arguments": _stream_valid(fragments[0]) if fragments else "",
            }
        audio = extra.get("audio")
        if audio is not None:
            if standard:
                if isinstance(audio.get("id"), str) and audio["id"]:
                    out["audio"] = {"id": _stream_valid(audio["id"])}
            else:
                out["audio"] = {
                    k: (_stream_valid("".join(v)) if k in ("data", "transcript") else v) for k, v in audio.items()
                }
        return out

    def put(self, which: str, piece: str) -> str:
        """Append a piece of text (the slow path: a held surrogate, or non-ASCII text).

        :returns: what was appended: valid text that never ends in a high surrogate (it is held
            back until the next piece, which may bring its low half)
        """
        held = self.held
        if held is not None:
            prefix = held.pop(which, "")
            if not held:
                self.held = None
            piece = prefix + piece
        elif piece.isascii():
            getattr(self, which).append(piece)
            if self.fresh is not None and which == "reasoning":
                self.fresh.append(piece)
            return piece
        try:
            # Any surrogate makes this fail: the usual non-ASCII piece (CJK, emoji sent raw or
            # as a whole escape pair) passes at C speed and goes straight in.
            piece.encode()
        except UnicodeEncodeError:
            last = piece[-1]
            if "\ud800" <= last <= "\udbff":
                # A high surrogate at the end: the next piece may begin with its low half.
                piece = piece[:-1]
                if self.held is None:
                    self.held = {}
                self.held[which] = last
            if piece:
                piece = _stream_repair(piece)
        if piece:
            getattr(self, which).append(piece)
            if self.fresh is not None and which == "reasoning":
                self.fresh.append(piece)
        return piece

    def flush(self) -> str:
        """The text ended: each surrogate still held becomes U+FFFD.

        :returns: what this added to the content (``"\\ufffd"`` or ``""``)
        """
        held = self.held
        self.held = None
        if not held:
            return ""
        for which in held:
            getattr(self, which).append("\ufffd")
            if self.fresh is not None and which == "reasoning":
                self.fresh.append("\ufffd")
        return "\ufffd" if "content" in held else ""

    def text(self, which: str) -> str:
        pieces: list[str] = getattr(self, which)
        if len(pieces) > 1:
            pieces[:] = ["".join(pieces)]
        text = pieces[0] if pieces else ""
        if self.held is not None and which in self.held:
            text += "\ufffd"  # what it becomes if the stream ends here
        return text

    def add_logprobs(self, logprobs: dict[str, Any]) -> None:
        """Merge a chunk's ``logprobs`` (its ``content``/``refusal`` token lists)."""
        mine = self.logprobs
        if mine is None:
            mine = self.logprobs = {"content": None, "refusal": None}
        for key in ("content", "refusal"):
            tokens = logprobs.get(key)
            if isinstance(tokens, list):
                if mine[key] is None:
                    mine[key] = []
                mine[key].extend(tokens)

    def tool_calls(self, standard: bool = False) -> list[dict[str, Any]]:
        """The calls as dicts; ``standard``: with ``type`` ``"function"`` when the server sent none."""
        out = []
        for call in self.calls:
            item = {k: v for k, v in call.items() if k[:1] != "_"}
            fragments: list[str] = call["_args"]
            if len(fragments) > 1:
                fragments[:] = ["".join(fragments)]
            function = call["function"]
            item["id"] = _stream_valid(item["id"])
            item["function"] = dict(
                function,
                name=_stream_valid(function["name"]),
                arguments=_stream_valid(fragments[0]) if fragments else "",
            )
            if standard and not item.get("type"):
                item["type"] = "function"
            out.append(item)
        return out

    def merge_call(self, delta: dict[str, Any]) -> None:
        index = delta.get("index")
        new_id = delta.get("id")
        if not isinstance(new_id, str):
            new_id = "" if new_id is None else str(new_id)
        fn = delta.get("function")
        if fn and not isinstance(fn, dict):
            raise _StreamShape("a tool call's function is %s, not an object" % _stream_type(fn))
        name = fn.get("name") if fn else None
        if name and not isinstance(name, str):
            raise _StreamShape("a tool call's name is %s, not text" % _stream_type(name))
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
        if kind and isinstance(kind, str):
            call["type"] = kind
        if fn:
            target = call["function"]
            if name:
                old = target["name"]
                if not old:
                    target["name"] = name
                elif name != old:
                    target["name"] = old + name
            args = fn.get("arguments")
            if args:
                if not isinstance(args, str):
                    args = safe_json_text(args)
                call["_args"].append(args)
            for key, value in fn.items():
                if key not in ("name", "arguments") and value is not None:
                    target[key] = value
        for key, value in delta.items():
            if key not in ("index", "id", "type", "function") and value is not None and key[:1] != "_":
                call[key] = value

    def add_calls(self, calls: object) -> None:
        if not isinstance(calls, list):
            raise _StreamShape("tool_calls is %s, not a list" % _stream_type(calls))
        for call in calls:
            if not isinstance(call, dict):
                raise _StreamShape("a tool call is %s, not an object" % _stream_type(call))
            self.merge_call(call)

    def add_content(self, value: object) -> str:
        """Content in any accepted shape (text, or a content array); returns the text added."""
        if value.__class__ is str:
            return self.put("content", value)  # type: ignore[arg-type]
        if isinstance(value, list):
            return self.add_parts(value)
        raise _StreamShape("content is %s, not text" % _stream_type(value))

    def add_parts(self, parts: list[Any]) -> str:
        """Mistral content arrays: ``thinking`` parts are reasoning, ``text`` parts content."""
        text = ""
        for part in parts:
            if isinstance(part, str):
                if part:
                    text += self.put("content", part)
                continue
            if not isinstance(part, dict):
                self.add_part(part)
                continue
            kind = part.get("type")
            if kind == "text":
                value = part.get("text")
                if isinstance(value, str) and value:
                    text += self.put("content", value)
                elif value is not None and not isinstance(value, str):
                    self.add_part(part)
            elif kind == "thinking":
                thinking = part.get("thinking")
                if isinstance(thinking, str):
                    thinking = [thinking]
                if isinstance(thinking, list):
                    for sub in thinking:
                        value = sub.get("text") if isinstance(sub, dict) else sub
                        if isinstance(value, str) and value:
                            self.put("reasoning", value)
            else:
                self.add_part(part)
        return text

    def merge(self, choice: dict[str, Any], key: str) -> str:
        """Merge one choice: its ``key`` (``"delta"`` of a chunk, ``"message"`` of a whole
        body), ``finish_reason`` and ``logprobs``; returns the content text it added."""
        part = choice.get(key)
        text = ""
        if part:
            if not isinstance(part, dict):
                raise _StreamShape("a %s is %s, not an object" % (key, _stream_type(part)))
            if key == "message":
                part = _stream_positioned(part)
            text = self.add_delta(part)
        reason = choice.get("finish_reason")
        if reason and isinstance(reason, str):
            text += self.finish(reason)
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict):
            self.add_logprobs(logprobs)
        return text

    def add_delta(self, delta: dict[str, Any]) -> str:
        """Merge one delta (the general loop); returns the content text it added."""
        out = ""
        # Iterate the (usually one or two) keys instead of probing every known one.
        for key, value in delta.items():
            if not value:
                continue
            if key == "content":
                out += self.add_content(value)
            elif key == "reasoning_content":
                if isinstance(value, str):
                    self.put("reasoning", value)
            elif key == "reasoning":
                # Only when no reasoning_content came alongside (never both).
                if isinstance(value, str) and delta.get("reasoning_content") is None:
                    self.put("reasoning", value)
            elif key == "refusal":
                if not isinstance(value, str):
                    raise _StreamShape("refusal is %s, not text" % _stream_type(value))
                self.put("refusal", value)
            elif key == "role":
                if isinstance(value, str):
                    self.role = value
            elif key == "tool_calls":
                self.add_calls(value)
            elif key == "function_call" or key == "name" or key == "audio":
                self.add_extra(key, value)
        return out

    def finish(self, reason: object) -> str:
        """A ``finish_reason`` (text only; anything else is ignored): the held text ends."""
        if reason.__class__ is not str:
            return ""
        self.finish_reason = reason  # type: ignore[assignment]
        return self.flush() if self.held is not None else ""

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

    A chunk whose shape would make the answer wrong (``choices`` or ``delta`` that is not an
    object/list, a choice index that is not an integer, content, refusal, tool calls or a tool
    call's function/name of the wrong type) raises :class:`APIError`; metadata of the wrong
    type (``usage`` that is not an object, a ``finish_reason`` or ``role`` that is not text, an
    ``id``/``model``/``created`` of the wrong type, reasoning that is not text) is ignored.

    :param secrets: API keys to mask in the excerpts of those errors (and, through
        :func:`iter_chunk_dicts`, in the stream's own errors)
    :ivar usage: the last ``usage`` object seen (or ``x_groq.usage``), or None
    :ivar id: the first non-empty chunk id; :ivar model: the first non-empty model name
    :ivar done: True once ``[DONE]`` was seen (set by :func:`iter_chunk_dicts`)
    :ivar chunks: how many chunks were added
    """

    def __init__(self, *, secrets: Iterable[str | None] = ()) -> None:
        self._choice = _StreamChoice()
        self._others: dict[int, _StreamChoice] = {}
        self._finished = False
        self.secrets: tuple[str, ...] = tuple(s for s in secrets if s)
        self.usage: dict[str, Any] | None = None
        self.id: str | None = None
        self.model: str | None = None
        self.created: int | None = None
        self.system_fingerprint: str | None = None
        self.done = False
        self.chunks = 0
        self._meta_missing = True
        self._whole: dict[str, Any] | None = None  # the body add_completion() was given

    def __repr__(self) -> str:
        return "<ChatAccumulator chunks=%d content=%d chars finish_reason=%r done=%s>" % (
            self.chunks,
            sum(len(p) for p in self._choice.content),
            self.finish_reason,
            self.done,
        )

    def _meta(self, chunk: dict[str, Any]) -> None:
        # The first non-empty id (with its created), model and system_fingerprint; not looked
        # for any more once all three are known (a server may never send a fingerprint: then
        # the checks stay, as cheap as before).  Values of the wrong type are ignored.
        if not self.id:
            value = chunk.get("id")
            if value:
                if value.__class__ is int:
                    value = str(value)
                if isinstance(value, str):
                    self.id = value
                    created = chunk.get("created")
                    if created.__class__ is int:
                        self.created = created
        if not self.model:
            value = chunk.get("model")
            if value and isinstance(value, str):
                self.model = value
        if not self.system_fingerprint:
            value = chunk.get("system_fingerprint")
            if value and isinstance(value, str):
                self.system_fingerprint = value
        self._meta_missing = not (self.id and self.model and self.system_fingerprint)

    def _malformed(self, what: str, chunk: object) -> APIError:
        secrets = self.secrets
        return APIError(
            "The stream sent a chunk that is not a chat.completion.chunk: %s: %s"
            % (what, _stream_excerpt(safe_json_text(chunk), secrets)),
            body=redact_value(chunk, secrets),
        )

    def add(self, chunk: dict[str, Any]) -> str:
        """Merge one chunk.

        :param chunk: a parsed ``chat.completion.chunk``
        :returns: the content text this chunk added to choice 0 (``""`` if none); it never ends
            in half of a surrogate pair (that half is held until the next piece completes it)
        :raises APIError: the chunk's shape would make the answer wrong (see the class doc)
        """
        self.chunks += 1
        if self._meta_missing:
            self._meta(chunk)
        usage = chunk.get("usage")
        if usage is None:
            extra = chunk.get("x_groq")
            if extra is not None and extra.__class__ is dict:
                usage = extra.get("usage")
        if usage is not None and usage.__class__ is dict:
            self.usage = usage
        choices = chunk.get("choices")
        if not choices:
            return ""
        # The fast path, the common chunk: one choice 0 whose delta holds content and maybe
        # role.  Anything else takes the general loop (_add_choices).
        if choices.__class__ is not list or len(choices) != 1:
            return self._add_choices(choices, chunk)
        choice = choices[0]
        if choice.__class__ is not dict or choice.get("index"):
            return self._add_choices(choices, chunk)
        delta = choice.get("delta")
        if delta.__class__ is not dict:
            return self._add_choices(choices, chunk)
        size = len(delta)
        content = delta.get("content")
        if not (
            (content is None or content.__class__ is str)
            and (size == (content is not None) + ("role" in delta) or size == 0)
        ):
            return self._add_choices(choices, chunk)
        main = self._choice
        role = delta.get("role")
        if role and role.__class__ is str:
            main.role = role
        piece: str = ""
        if content:
            # Text with no surrogate goes straight in: ASCII (an O(1) test in CPython) or text
            # that encodes (a C-speed scan that any surrogate, lone or trailing, fails); the
            # rest, and any text after a held surrogate, takes put().
            clean = main.held is None
            if clean and not content.isascii():
                try:
                    content.encode()
                except UnicodeEncodeError:
                    clean = False
            if clean:
                main.content.append(content)
                piece = content
            else:
                piece = main.put("content", content)
        reason = choice.get("finish_reason")
        if reason and reason.__class__ is str:
            piece += main.finish(reason)
            self._finished = True
        logprobs = choice.get("logprobs")
        if logprobs is not None and logprobs.__class__ is dict:
            main.add_logprobs(logprobs)
        return piece

    def _add_choices(self, choices: object, chunk: dict[str, Any]) -> str:
        """The general loop over a chunk's choices (any number, any index, any delta keys)."""
        try:
            if not isinstance(choices, list):
                raise _StreamShape("choices is %s, not a list" % _stream_type(choices))
            out = ""
            for choice in choices:
                out += self._merge_choice(choice, "delta")
            return out
        except _StreamShape as exc:
            raise self._malformed(str(exc), chunk) from None

    def _merge_choice(self, choice: object, key: str) -> str:
        """One choice of a chunk (``key`` ``"delta"``) or of a whole body (``"message"``).

        :returns: the content text it added to choice 0 (``""`` for another choice)
        """
        if not isinstance(choice, dict):
            raise _StreamShape("a choice is %s, not an object" % _stream_type(choice))
        index = _stream_choice_index(choice.get("index"))
        if not index:
            state = self._choice
        else:
            state = self._others.get(index)  # type: ignore[assignment]
            if state is None:
                state = self._others[index] = _StreamChoice()
        text = state.merge(choice, key)
        if state.finish_reason is not None:
            self._finished = True
        return text if state is self._choice else ""

    def flush(self) -> str:
        """End the texts: a surrogate still held back becomes U+FFFD (done at a finish_reason
        on its own; call this when a stream ended without one).

        :returns: the content text this added to choice 0 (``"\\ufffd"`` or, nearly always, ``""``)
        """
        piece = self._choice.flush()
        for state in self._others.values():
            state.flush()
        return piece

    def watch_reasoning(self, pieces: list[str] | None = None) -> list[str]:
        """From now on, append every new piece of choice 0's reasoning to a list (valid text,
        as merged: a half surrogate pair is held back, a lone one becomes U+FFFD); the reader
        takes the pieces out (``del pieces[:]``).  A stream reader calls it once, then looks at
        the list after each chunk instead of reading the chunk again.

        :param pieces: the list to fill (default: a new one)
        :returns: that list
        """
        if pieces is None:
            pieces = []
        self._choice.fresh = pieces
        return pieces

    @property
    def reasoning_watch(self) -> list[str] | None:
        """The list :meth:`watch_reasoning` fills, or None."""
        return self._choice.fresh

    # -- choice 0 -------------------------------------------------------------------------

    @property
    def content(self) -> str:
        """The assembled content of choice 0 (always valid text: a lone surrogate is U+FFFD)."""
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
        """Choice 0's tool calls, in order: ``{"id", "type", "function": {"name", "arguments"}}``
        (``type`` as the server sent it, None if it sent none)."""
        return self._choice.tool_calls()

    @property
    def finish_reason(self) -> str | None:
        """Choice 0's last ``finish_reason``, as the server sent it (None if none came)."""
        return self._choice.finish_reason

    @property
    def role(self) -> str:
        """The role announced by the stream (``"assistant"`` when none was); :meth:`message`
        and :meth:`completion` always say ``"assistant"``."""
        return self._choice.role or "assistant"

    @property
    def other_choices(self) -> dict[int, dict[str, Any]]:
        """Choices other than 0 (``n > 1``): index -> content, reasoning, refusal, tool_calls,
        finish_reason, role."""
        return {index: state.summary() for index, state in sorted(self._others.items())}

    @property
    def complete(self) -> bool:
        """True when the answer is known to be whole: ``[DONE]`` or any ``finish_reason`` seen."""
        return self.done or self._finished

    def message(self) -> dict[str, Any]:
        """The assistant message with the standard fields it carried (no reasoning, no shape
        refused: ``Chat`` uses :meth:`history_message`, which is the history's rule).

        :returns: ``{"role": "assistant", "content"}`` (whatever role the stream announced),
            plus ``"tool_calls"`` when there are any (content is None then if no text came, as
            in the API's own responses; a call's ``type`` is ``"function"`` when the server sent
            none), ``"refusal"`` when there is one, ``"function_call"`` (``{name, arguments}``,
            the legacy functions API), ``"name"`` and ``"audio"`` (only its ``id``) when they
            came: only standard assistant-message fields.  ``content`` is a list of parts (the
            text as one text part first) only when the server sent parts that are not text.
        """
        return _stream_message(self._choice)

    def completion(self) -> dict[str, Any]:
        """The answer shaped like a non-streaming ``chat.completion`` response.

        It follows OpenAI's ``CreateChatCompletionResponse`` schema: ``id``, ``object``,
        ``created``, ``model`` and ``choices`` are always there (``""``/``0`` when the server sent
        none); each choice has ``index``, ``message`` (role ``"assistant"``, ``content``,
        ``refusal`` -- None when there was none -- and ``tool_calls``, ``function_call``, ``name``
        and ``audio`` -- all it carried -- when any; reasoning as ``reasoning_content`` when there
        was any; content as a list of parts only if parts that are not text came), ``logprobs`` (merged, or None) and a
        ``finish_reason`` that is one of ``stop``/``length``/``tool_calls``/``content_filter``/
        ``function_call``: a server's own word is mapped (``eos`` -> ``stop``, ``max_tokens`` ->
        ``length`` ...) and kept as ``native_finish_reason``; with none, an answer that ended
        ([DONE]) says ``stop`` (``tool_calls`` when it made calls) and an answer cut short says
        ``length``.  ``usage`` is there only when the server sent one with integer counts.
        """
        ended = self.done
        choices = [_stream_completion_choice(0, self._choice, ended)]
        for index, state in sorted(self._others.items()):
            choices.append(_stream_completion_choice(index, state, ended))
        out: dict[str, Any] = {
            "id": self.id or "",
            "object": "chat.completion",
            "created": self.created or 0,
            "model": self.model or "",
            "choices": choices,
        }
        usage = _stream_schema_usage(self.usage)
        if usage is not None:
            out["usage"] = usage
        if self.system_fingerprint:
            out["system_fingerprint"] = self.system_fingerprint
        return out

    def add_completion(self, body: dict[str, Any]) -> None:
        """Fill this (new) accumulator from a whole ``chat.completion`` JSON body.

        Used for every non-stream answer and when a stream request was answered with one JSON
        response: the answer then has the one shape a stream gives (the same attributes,
        :meth:`history_message`, :meth:`completion`; a watched reasoning list gets the whole
        reasoning).  A whole response counts as ``done``.  Shapes are judged as in a stream.

        :raises APIError: the body is an error object (``{"error": ...}``), not an object at all,
            or shaped so that the answer would be wrong (``choices``/``message`` of the wrong type ...)
        """
        secrets = self.secrets
        if not isinstance(body, dict):
            raise APIError(
                "Expected a chat.completion object, got %s." % type(body).__name__,
                body=redact_value(body, secrets),
            )
        if body.get("error") is not None:
            raise _stream_error(body, "", secrets)
        self._whole = body
        self._meta(body)
        created = body.get("created")
        if self.created is None and created.__class__ is int:
            self.created = created
        usage = body.get("usage")
        if usage is None:
            extra = body.get("x_groq")
            if isinstance(extra, dict):
                usage = extra.get("usage")
        self.usage = usage if isinstance(usage, dict) else None
        self.done = True
        try:
            _stream_fill_choices(self, body.get("choices"))
        except _StreamShape as exc:
            raise APIError(
                "The server sent a response that is not a chat.completion: %s: %s"
                % (exc, _stream_excerpt(safe_json_text(body), secrets)),
                body=redact_value(body, secrets),
            ) from None
        self.flush()

    def history_message(self, text: str | None = None) -> dict[str, Any]:
        """The message that joins a conversation's history for this answer (choice 0): the one
        rule of every path, so an answer gives the same history message streamed or not.

        Kept: ``role`` (always ``"assistant"``, whatever the server announced), ``content`` as
        text (text parts joined; None only beside ``tool_calls``/``function_call`` when there is
        no text, ``""`` otherwise), ``name``, ``tool_calls`` (each only ``id``, ``type`` --
        ``"function"`` when none came --, ``function`` ``{name, arguments}``), ``function_call``
        (``{name, arguments}``), ``refusal``, ``audio`` (only its ``id``, which is how an
        answer's audio is referred to; none without one).  Everything else (reasoning,
        ``annotations``, ``provider_specific_fields`` ...) stays in the response only: strict
        servers refuse unknown fields in the messages they are sent.

        :param text: for an answer stopped early, the text shown so far: the message is that
            text alone
        :raises APIError: the answer cannot carry a conversation on (a content part that is not
            text, a tool call or ``function_call`` without a name); keys masked
        """
        if text is not None:
            return {"role": "assistant", "content": _stream_valid(text)}
        try:
            return _answer_history(self._choice)
        except _StreamShape as exc:
            answer = self._whole if self._whole is not None else self.completion()
            secrets = self.secrets
            error = APIError(
                "The server's answer cannot join the conversation (%s); nothing was kept: %s"
                % (exc, _stream_excerpt(safe_json_text(answer), secrets, 200)),
                body=redact_value(answer, secrets),
            )
            raise error from None

    def chunk(self) -> dict[str, Any]:
        """The whole answer as one ``chat.completion.chunk`` (each message as its choice's
        ``delta``, tool calls with their ``index``): what a stream request answered with one JSON
        body yields."""
        out = self.completion()
        out["object"] = "chat.completion.chunk"
        for choice in out["choices"]:
            delta = choice.pop("message")
            for position, call in enumerate(delta.get("tool_calls") or ()):
                call["index"] = position
            choice["delta"] = delta
        return out


def _stream_schema_usage(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """``usage`` as the schema has it (three integer counts), or None to leave it out."""
    if usage is None:
        return None
    prompt: Any = usage.get("prompt_tokens")
    completion: Any = usage.get("completion_tokens")
    if prompt.__class__ is not int or completion.__class__ is not int:
        return None
    total = usage.get("total_tokens")
    if total.__class__ is not int:
        usage = dict(usage, total_tokens=prompt + completion)
    return dict(usage)


def _stream_join_name(old: str, name: str) -> str:
    """A name sent in pieces: the first kept, a repeat of the whole name ignored, others appended."""
    if not old:
        return name
    return old if name == old else old + name


def _stream_message(state: _StreamChoice, standard: bool = True) -> dict[str, Any]:
    calls = state.tool_calls(standard=True)
    content: Any = state.text("content")
    extras = state.extras(standard)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": content if (content or not (calls or "function_call" in extras)) else None,
    }
    parts = state.extra.get("parts") if state.extra else None
    if parts:
        # parts that are not text: the content stays an array (text first), as the server sent it
        message["content"] = ([{"type": "text", "text": content}] if content else []) + list(parts)
    if calls:
        message["tool_calls"] = calls
    refusal = state.text("refusal")
    if refusal:
        message["refusal"] = refusal
    message.update(extras)
    return message


def _stream_completion_choice(index: int, state: _StreamChoice, ended: bool) -> dict[str, Any]:
    message = _stream_message(state, standard=False)
    message.setdefault("refusal", None)
    reasoning = state.text("reasoning")
    if reasoning:
        message["reasoning_content"] = reasoning
    raw = state.finish_reason
    reason = _stream_schema_finish(raw, bool(state.calls), ended)
    choice: dict[str, Any] = {"index": index, "message": message, "logprobs": None, "finish_reason": reason}
    if state.logprobs is not None:
        choice["logprobs"] = {k: (list(v) if v is not None else None) for k, v in state.logprobs.items()}
    if raw is not None and raw != reason:
        choice["native_finish_reason"] = raw
    return choice


def accumulator_from_completion(body: dict[str, Any], *, secrets: Iterable[str | None] = ()) -> ChatAccumulator:
    """A :class:`ChatAccumulator` holding a plain ``chat.completion`` JSON body
    (:meth:`ChatAccumulator.add_completion` on a new one).

    Used for every non-stream answer: the caller then reads the same attributes, the same
    :meth:`~ChatAccumulator.history_message` and :meth:`~ChatAccumulator.completion` as after a
    stream.

    :param body: the parsed response body
    :param secrets: API keys to mask in the excerpt of an error
    :raises APIError: as :meth:`ChatAccumulator.add_completion`
    """
    acc = ChatAccumulator(secrets=secrets)
    acc.add_completion(body)
    return acc


def _stream_fill_choices(acc: ChatAccumulator, choices: object) -> None:
    if not choices:
        return
    if not isinstance(choices, list):
        raise _StreamShape("choices is %s, not a list" % _stream_type(choices))
    for choice in choices:
        acc._merge_choice(choice, "message")


def _stream_positioned(message: dict[str, Any]) -> dict[str, Any]:
    """A whole message as the one delta that would bring it: its tool calls indexed by position
    (some servers, Together, put an ``index`` of their own in whole messages; position decides)."""
    calls = message.get("tool_calls")
    if not calls or not isinstance(calls, list):
        return message
    positioned = [dict(call, index=i) if isinstance(call, dict) else call for i, call in enumerate(calls)]
    return dict(message, tool_calls=positioned)


# -- the history message: the one rule -------------------------------------------------------


def _answer_history(state: _StreamChoice) -> dict[str, Any]:
    """The message that joins a conversation's history for one assembled answer.

    Kept: ``role`` (always ``"assistant"``), ``content`` as text (None only beside
    ``tool_calls``/``function_call`` when there is no text), ``name``, ``tool_calls`` (each only
    ``id``, ``type``, ``function`` ``{name, arguments}``), ``function_call``, ``refusal``,
    ``audio`` (only its ``id``).  Refused (:class:`_StreamShape`): a content part that is not text,
    a tool call or ``function_call`` whose name is empty.
    """
    content: Any = state.text("content")
    parts = state.extra.get("parts") if state.extra else None
    for position, part in enumerate(parts or (), 1 if content else 0):
        if isinstance(part, dict) and part.get("type") == "text":
            raise _StreamShape("content[%d].text is %s, not text" % (position, _stream_type(part.get("text"))))
        kind = part.get("type") if isinstance(part, dict) else type(part).__name__
        raise _StreamShape("content[%d] is a %r part, not text" % (position, kind))
    out: dict[str, Any] = {"role": "assistant", "content": content}
    extras = state.extras(True)
    if "name" in extras:
        out["name"] = extras["name"]
    calls = []
    for position, call in enumerate(state.tool_calls(standard=True)):
        function = call["function"]
        if not function["name"]:
            raise _StreamShape("tool_calls[%d].function has no name" % position)
        calls.append(
            {
                "id": call["id"],
                "type": call["type"],
                "function": {"name": function["name"], "arguments": function["arguments"]},
            }
        )
    if calls:
        out["tool_calls"] = calls
    fcall = extras.get("function_call")
    if fcall is not None:
        if not fcall["name"]:
            raise _StreamShape("function_call has no name")
        out["function_call"] = fcall
    refusal = state.text("refusal")
    if refusal:
        out["refusal"] = refusal
    if "audio" in extras:
        out["audio"] = extras["audio"]
    if not content and (calls or fcall is not None):
        out["content"] = None
    return out
