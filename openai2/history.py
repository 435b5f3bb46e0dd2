"""The conversation buffer: messages, pins, MsgMaxCount trimming, rounds, rollback, archive data.

Pure data: no I/O, no network, no locking (``Chat`` holds the lock and decides when an
exchange is committed).  Every operation is linear in the history size at worst, so a
10,000-message history with pins costs no more per request than its JSON encoding.

Trimming rule (seed "限制历史消息数量" / "锁定消息"): with ``max_count=k``, after each exchange
the oldest *unpinned* messages are removed until ``k`` remain.  Pinned messages count toward
``k`` but are never removed by trimming, and the exchange just committed is never removed, so
when pins alone fill ``k`` the limit is exceeded rather than losing the latest turn.
"""

from __future__ import annotations

from .common import TYPE_CHECKING
from .errors import ContextBudgetError

if TYPE_CHECKING:
    from typing import Any, Callable, Iterable, Mapping, Sequence

#: Roles accepted in a message.  ``function`` is the legacy spelling of ``tool``.
MESSAGE_ROLES = ("system", "developer", "user", "assistant", "tool", "function")

#: Keys never stored for sending: servers return the model's reasoning next to the answer,
#: but it is not part of the conversation and must not be sent back.
_HIST_NOT_SENT = frozenset(("reasoning_content", "reasoning", "reasoning_details"))

ARCHIVE_FORMAT = "openai2.chat"
ARCHIVE_VERSION = 1


def copy_json(value: Any) -> Any:
    """Copy JSON-like data: dicts and lists recursively, anything else as it is (the history's
    messages handed out, and the ones a request sends, share nothing with the stored ones)."""
    if isinstance(value, dict):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [copy_json(v) for v in value]
    return value


_hist_copy = copy_json


def _hist_type_name(value: object) -> str:
    return "None" if value is None else type(value).__name__


def _hist_field(path: Sequence[object]) -> str:
    """``('content', 0, 'text')`` -> ``content[0].text`` (how an error names a field)."""
    out = ""
    for step in path:
        if isinstance(step, int):
            out += "[%d]" % step
        else:
            out += ("." if out else "") + str(step)
    return out or "the value"


def valid_unicode(text: str) -> str:
    """``text`` with each lone surrogate (a broken ``\\ud83d`` escape a server sent) as U+FFFD.

    Surrogate pairs are joined into their character; text that is already valid is returned
    as it is (cheaply: ASCII is not even encoded).
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # UTF-16 pairs what can be paired and replaces what cannot
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def _hist_bad_text(where: str, field: str, text: str, exc: UnicodeEncodeError) -> ValueError:
    return ValueError(
        "%s: %s holds %r at position %d, a lone surrogate that cannot be encoded as UTF-8 (was the "
        "text decoded with errors='surrogateescape'?); fix or remove it" % (where, field, text[exc.start], exc.start)
    )


def check_json_text(value: object, where: str, path: Sequence[object] = ()) -> None:
    """Refuse what JSON cannot carry faithfully: lone surrogates and NaN/Infinity, anywhere.

    Strings (dict keys too) must encode as UTF-8 (a lone surrogate, e.g. from
    ``errors="surrogateescape"``, can be neither sent nor archived) and floats must be finite
    (JSON has no NaN or Infinity).  Dicts, lists and tuples are walked without recursion, so
    any depth is fine; other values pass.

    :param where: how to name the whole value in an error (``"argument 2"``, ``"Chat(...)"``)
    :param path: the field the value is (its keys and indexes), for the error
    :raises ValueError: naming ``where``, the field and, for text, the character position
    """
    from math import isfinite

    stack: list[tuple[object, tuple[object, ...]]] = [(value, tuple(path))]
    while stack:
        item, at = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise _hist_bad_text(where, _hist_field(at), item, exc) from None
        elif isinstance(item, float):
            if not isfinite(item):
                raise ValueError(
                    "%s: %s is %r, which JSON cannot carry (no NaN or Infinity); give a finite "
                    "number or None" % (where, _hist_field(at), item)
                )
        elif isinstance(item, dict):
            for key, sub in reversed(list(item.items())):
                if isinstance(key, str) and not key.isascii():
                    try:
                        key.encode("utf-8")
                    except UnicodeEncodeError as exc:
                        field = "the key %r" % key + (" in %s" % _hist_field(at) if at else "")
                        raise _hist_bad_text(where, field, key, exc) from None
                stack.append((sub, at + (key,)))
        elif isinstance(item, (list, tuple)):
            for index in range(len(item) - 1, -1, -1):
                stack.append((item[index], at + (index,)))


def validate_message(msg: object, where: str) -> dict[str, Any]:
    """Check one chat message and return a normalized copy of it.

    Accepted: a dict (or any Mapping with string keys) with ``role`` one of
    :data:`MESSAGE_ROLES` and ``content`` a string or a list of content parts (dicts with a
    ``"type"``).  ``content`` may be None (or missing) only on an assistant message that
    carries ``tool_calls``, ``function_call`` or ``refusal``.  ``tool`` messages need a
    ``tool_call_id``; legacy ``function`` messages need a ``name``.  Other keys (``name``,
    ``tool_calls``, a provider's own field such as DeepSeek's ``prefix``) are kept as given:
    what a user adds is sent as added.  ``reasoning_content`` / ``reasoning`` are dropped,
    since reasoning is never sent back.  (A server's answer is reduced to the standard fields
    before it gets here: see ``Chat``.)  Nested dicts and lists are copied, so the caller's object
    is never kept.

    :param msg: the message to check
    :param where: how to name it in an error, e.g. ``"argument 3"`` or ``"message 12"``
    :returns: a new dict
    :raises ValueError: naming ``where``, what is wrong and how to fix it; also text that
        cannot be encoded as UTF-8 (a lone surrogate: the field and position are named),
        NaN/Infinity (the field is named) and data nested too deeply to be sent
    """
    try:
        return _hist_validate(msg, where)
    except RecursionError:
        raise ValueError("%s: the message is nested too deeply to be sent as JSON" % where) from None


def _hist_validate(msg: object, where: str) -> dict[str, Any]:
    from collections.abc import Mapping as _Mapping

    if not isinstance(msg, _Mapping):
        raise ValueError(
            "%s: a message must be a dict such as {'role': 'user', 'content': 'Hi'} "
            "(or user_msg('Hi')), not %s" % (where, _hist_type_name(msg))
        )
    out: dict[str, Any] = {}
    for key, value in msg.items():
        if not isinstance(key, str):
            raise ValueError("%s: message keys must be strings, got %r" % (where, key))
        if key not in _HIST_NOT_SENT:
            out[key] = _hist_copy(value)
    role = out.get("role")
    if "role" not in out:
        raise ValueError("%s: the message has no 'role'; add one of %s" % (where, ", ".join(map(repr, MESSAGE_ROLES))))
    if not isinstance(role, str) or role not in MESSAGE_ROLES:
        raise ValueError("%s: unknown role %r; use one of %s" % (where, role, ", ".join(map(repr, MESSAGE_ROLES))))
    content = out.get("content")
    if content is None:
        if role == "assistant" and (out.get("tool_calls") or out.get("function_call") or out.get("refusal")):
            out["content"] = None
        elif "content" not in out:
            raise ValueError("%s: the %s message has no 'content'; add 'content': 'your text'" % (where, role))
        else:
            raise ValueError(
                "%s: the %s message has content None; only an assistant message with "
                "'tool_calls' may have no content - give a string" % (where, role)
            )
    elif isinstance(content, list):
        for i, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                what = "a dict without a 'type'" if isinstance(part, dict) else _hist_type_name(part)
                raise ValueError(
                    "%s: content part %d must be a dict with a 'type', such as "
                    "{'type': 'text', 'text': 'Hi'}, not %s" % (where, i, what)
                )
            if part["type"] == "text" and not isinstance(part.get("text"), str):
                raise ValueError("%s: text part %d needs 'text' as a string" % (where, i))
            if part["type"] == "image_url":
                image = part.get("image_url")
                url = image.get("url") if isinstance(image, dict) else image
                if not isinstance(url, str) or not url:
                    raise ValueError("%s: image part %d needs 'image_url': {'url': '...'}" % (where, i))
    elif not isinstance(content, str):
        raise ValueError(
            "%s: 'content' must be a string or a list of content parts, not %s; "
            "convert it with str() first" % (where, _hist_type_name(content))
        )
    if role == "tool":
        tcid = out.get("tool_call_id")
        if not isinstance(tcid, str) or not tcid:
            raise ValueError(
                "%s: a tool message needs 'tool_call_id' (the id of the assistant's tool call it answers)" % where
            )
    if role == "function" and not isinstance(out.get("name"), str):
        raise ValueError("%s: a function message needs 'name' (the function's name)" % where)
    if "name" in out and not isinstance(out["name"], str):
        raise ValueError("%s: 'name' must be a string, not %s" % (where, _hist_type_name(out["name"])))
    if "tool_calls" in out and out["tool_calls"] is not None:
        calls = out["tool_calls"]
        if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
            raise ValueError("%s: 'tool_calls' must be a list of dicts" % where)
    check_json_text(out, where)
    import json

    try:  # it will be sent and archived as JSON: refuse what cannot be (bytes, sets, objects)
        json.dumps(out, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError("%s: the message cannot be sent as JSON (%s)" % (where, exc)) from None
    return out


def _hist_content_text(msg: Mapping[str, Any]) -> str:
    content = msg.get("content")
    pieces: list[str] = []
    if isinstance(content, str):
        pieces.append(content)
    elif isinstance(content, list):
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                pieces.append(str(part.get("text", "")))
            elif kind == "image_url":
                pieces.append("[image]")
            elif kind == "input_audio":
                pieces.append("[audio]")
            else:
                pieces.append("[%s]" % (kind or "?"))
    elif msg.get("refusal"):
        pieces.append(str(msg.get("refusal")))
    calls = msg.get("tool_calls")
    if isinstance(calls, list) and calls:
        names = []
        for call in calls:
            fn = call.get("function") if isinstance(call, dict) else None
            names.append(str(fn.get("name", "?")) if isinstance(fn, dict) else "?")
        pieces.append("[tool call: %s]" % ", ".join(names))
    fcall = msg.get("function_call")
    if isinstance(fcall, dict):
        pieces.append("[function call: %s]" % fcall.get("name", "?"))
    return " ".join(pieces)


def format_round(msgs: Iterable[Mapping[str, Any]]) -> str:
    """Show messages on one line the way the seeds do: ``[user]:再往后呢? [assistant]:7``.

    Each message is ``[role]:content``; messages are separated by one space.  Images and
    other non-text parts show as ``[image]`` / ``[type]``, tool calls as ``[tool call: name]``.

    :param msgs: the messages (e.g. what :meth:`MessageBuffer.rollback` returns)
    :returns: one line of text ("" for no messages)
    """
    return " ".join("[%s]:%s" % (m.get("role"), _hist_content_text(m)) for m in msgs)


_HIST_TOOL_ROLES = ("tool", "function")


class Fitted:
    """What :meth:`MessageBuffer.fit` chose: the messages to send, the stored ones left out,
    and the tokens of what is sent: ``tokens`` calibrated (the server's own counts of messages
    measured before, the estimate times the ratio for the others), ``raw`` the plain estimate
    (what the calibration learns from), ``measured`` how many history messages sent have a
    count of the server's, and ``commits`` the buffer's :attr:`MessageBuffer.commits` then."""

    __slots__ = ("messages", "left_out", "tokens", "raw", "measured", "commits", "new", "retried", "unsent")

    def __init__(
        self,
        messages: list[dict[str, Any]],
        left_out: list[dict[str, Any]],
        tokens: int,
        new: Sequence[dict[str, Any]] = (),
        raw: int | None = None,
        measured: int = 0,
        commits: int = 0,
    ) -> None:
        self.messages = messages
        self.left_out = left_out
        self.tokens = tokens
        self.raw = tokens if raw is None else raw
        self.measured = measured
        self.commits = commits  # MessageBuffer.commits when it was made
        self.new = list(new)  # the messages of this turn (the user's), not from the history
        self.retried = False  # sent again after a context-length refusal ("auto")
        #: stored messages not sent: ``left_out``, those a summary beside the history stands for,
        #: those ``max_count`` leaves out
        self.unsent = len(left_out)


def _hist_ceil(tokens: float) -> int:
    """Whole tokens, rounded up (a sum of float shares a hair over a whole number is that number)."""
    import math

    return max(0, math.ceil(tokens - 1e-6))


def _hist_units(msgs: Sequence[Mapping[str, Any]]) -> list[tuple[int, int]]:
    """``(start, stop)`` index ranges of the units trimming keeps or removes whole: an assistant
    message with the ``tool``/``function`` answers right after it, or any other single message.
    O(n)."""
    units = []
    i, n = 0, len(msgs)
    while i < n:
        j = i + 1
        if msgs[i].get("role") == "assistant":
            while j < n and msgs[j].get("role") in _HIST_TOOL_ROLES:
                j += 1
        units.append((i, j))
        i = j
    return units


def _hist_rounds(msgs: Sequence[Mapping[str, Any]]) -> list[tuple[int, int]]:
    """``(start, stop)`` ranges a token budget leaves out whole: after the leading system and
    developer messages (which always stay), each user message with everything up to the next
    one; messages before the first user message (a forged opening, an answer whose question was
    left out) each go alone.  O(n)."""
    out = []
    i, n = hist_head(msgs), len(msgs)
    while i < n:
        j = i + 1
        if msgs[i].get("role") == "user":
            while j < n and msgs[j].get("role") != "user":
                j += 1
        else:
            while j < n and msgs[j].get("role") in _HIST_TOOL_ROLES:
                j += 1
        out.append((i, j))
        i = j
    return out


def hist_head(msgs: Sequence[Mapping[str, Any]]) -> int:
    """How many system/developer messages the history starts with (the system prompt, which
    a token budget never leaves out)."""
    i = 0
    while i < len(msgs) and msgs[i].get("role") in ("system", "developer"):
        i += 1
    return i


def hist_digest(msgs: Sequence[Mapping[str, Any]]) -> str:
    """SHA-256 (hex) of messages as canonical JSON (sorted keys, UTF-8): equal for equal
    messages, in memory or read back from a file."""
    import hashlib
    import json

    text = json.dumps(list(msgs), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def check_side_summary(data: object, length: int | None = None) -> dict[str, Any] | None:
    """A summary kept beside a history (``{"content": str, "covers": int, "digest": hex}``)
    checked, as a new dict; None when ``data`` is None or not such a summary (a summary is a
    cache of what the messages say: a bad one is dropped, never an error).

    :param length: the number of messages of the history it belongs to (``covers`` beyond it: None)
    """
    if not isinstance(data, dict):
        return None
    content, covers, digest = data.get("content"), data.get("covers"), data.get("digest")
    if not isinstance(content, str) or not content.strip():
        return None
    try:
        content.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: it could never be sent
        return None
    if not isinstance(covers, int) or isinstance(covers, bool) or covers <= 0:
        return None
    if length is not None and covers > length:
        return None
    if not isinstance(digest, str) or len(digest) != 64 or digest.strip("0123456789abcdef"):
        return None
    return {"content": content, "covers": covers, "digest": digest}


def _hist_check_index(index: object, length: int) -> int:
    # bool is an int subclass, but pin(True) is surely a mistake.
    if not isinstance(index, int) or isinstance(index, bool):
        raise TypeError("message indexes must be integers, not %s" % _hist_type_name(index))
    if not -length <= index < length:
        raise IndexError(
            "message index %d is out of range: the history has %d message%s (valid: %s)"
            % (
                index,
                length,
                "" if length == 1 else "s",
                "none" if not length else "%d..%d or -%d..-1" % (0, length - 1, length),
            )
        )
    return index + length if index < 0 else index


def _hist_check_max_count(value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError("MsgMaxCount must be a whole number or None, not %s" % _hist_type_name(value))
    if value < 0:
        raise ValueError("MsgMaxCount must be 0 or more (0 or None: no limit), got %d" % value)
    return value or None


class ServerCounts:
    """The server's own token counts of messages it was sent, learned from each answer's
    ``usage`` (see :meth:`MessageBuffer.measure`): per message (the dict itself, so an edited or
    replaced message is estimated again), and the tokens the server adds to every prompt
    (``base``: a chat template's, a hidden system prompt, the instructions that come with tools).
    Owned by a :class:`MessageBuffer`; not thread-safe."""

    __slots__ = ("counts", "base", "base_from", "base_tests")

    def __init__(self) -> None:
        self.counts: dict[int, tuple[dict[str, Any], float]] = {}  # id(message) -> (message, tokens)
        self.base = 0.0
        self.base_from: list[dict[str, Any]] = []  # the messages of the request base was learned from
        self.base_tests = 0  # requests without some of them since: each one corrects base

    def get(self, message: dict[str, Any]) -> float | None:
        found = self.counts.get(id(message))
        return found[1] if found is not None and found[0] is message else None

    def put(self, message: dict[str, Any], tokens: float, keep: Sequence[dict[str, Any]]) -> None:
        """Count ``message`` at ``tokens``; counts of messages not in ``keep`` (the history) are
        dropped when they outnumber it (messages removed since)."""
        if len(self.counts) > 2 * len(keep) + 64:
            ids = {id(m) for m in keep}
            self.counts = {k: v for k, v in self.counts.items() if k in ids}
        self.counts[id(message)] = (message, tokens)

    def correct_base(
        self, residual: float, omitted: Sequence[dict[str, Any]], raw: Callable[[dict[str, Any]], int]
    ) -> None:
        """A request without some of the messages ``base`` was learned from (``omitted``):
        ``residual`` is what its count leaves for ``base`` when its new messages count as their
        calibrated estimate.  ``base`` moves toward it (the first time all the way, then as a
        running average); what it loses was the omitted messages' own (a script the estimate
        counts low), and is added to their counts in proportion to their estimates."""
        weight = max(1.0 / (self.base_tests + 1), 0.25)
        before = self.base
        self.base = max(0.0, before + weight * (residual - before))
        self.base_tests += 1
        counted = []
        for message in omitted:
            value, estimate = self.get(message), raw(message)
            if value is not None and estimate > 0:
                counted.append((message, value, estimate))
        whole = sum(estimate for _, _, estimate in counted)
        if before > self.base and whole:
            for message, value, estimate in counted:
                self.counts[id(message)] = (message, value + (before - self.base) * estimate / whole)


class MessageBuffer:
    """The history of one conversation: messages, their pins, trimming and rounds.

    Messages are stored as given to :meth:`extend` / :meth:`commit` (already validated by
    :func:`validate_message`); each carries its own pinned flag, so a pin moves with its
    message when older messages are trimmed away.  Not thread-safe: the owner (``Chat``)
    serialises access.

    :param max_count: the most messages kept after an exchange (``MsgMaxCount``); None or 0
        means no limit
    :raises ValueError: max_count negative or not an int
    """

    __slots__ = ("_msgs", "_pins", "_max_count", "_cost_fn", "_costs", "_server", "_commits", "_epoch", "_prefix")

    def __init__(self, max_count: int | None = None) -> None:
        self._msgs: list[dict[str, Any]] = []
        self._pins: list[bool] = []
        self._max_count = _hist_check_max_count(max_count)
        self._cost_fn: Callable[[dict[str, Any]], int] | None = None
        self._costs: dict[int, tuple[dict[str, Any], int]] = {}  # id(message) -> (message, tokens)
        self._server = ServerCounts()  # the server's own counts: see measure()
        self._commits = 0  # exchanges committed: a fit made before another one's commit is stale
        self._epoch = 0  # changes whenever a message is removed or replaced (appends keep it)
        # (cost, epoch, n, and of the first n messages: raw tokens, the server's tokens of those
        # measured, raw tokens of the others, how many measured, any tool message among them)
        self._prefix: tuple[Any, int, int, int, float, int, int, bool] | None = None

    # -- basic access ---------------------------------------------------------------------

    @property
    def max_count(self) -> int | None:
        """The limit (None: no limit).  Setting it takes effect at the next commit or trim()."""
        return self._max_count

    @max_count.setter
    def max_count(self, value: int | None) -> None:
        self._max_count = _hist_check_max_count(value)

    def __len__(self) -> int:
        return len(self._msgs)

    def __repr__(self) -> str:
        return "MessageBuffer(%d messages, %d pinned, max_count=%r)" % (
            len(self._msgs),
            sum(self._pins),
            self._max_count,
        )

    def messages(self) -> list[dict[str, Any]]:
        """A copy of the history; changing it (nested content included) leaves the buffer as is."""
        return [_hist_copy(m) for m in self._msgs]

    def view(self) -> Sequence[dict[str, Any]]:
        """The stored messages themselves, for reading only (no copy): do not modify them."""
        return self._msgs

    def pinned_indexes(self) -> list[int]:
        """Indexes (0-based, ascending) of the pinned messages."""
        return [i for i, p in enumerate(self._pins) if p]

    def clear(self) -> None:
        """Remove every message and pin."""
        self._epoch += 1
        self._msgs = []
        self._pins = []

    # -- adding -----------------------------------------------------------------------------

    def extend(self, msgs: Iterable[dict[str, Any]], pinned: Iterable[int] = ()) -> None:
        """Append already-validated messages without trimming (``add_dialogs`` / ``load``).

        The buffer keeps the dicts given (they are the caller's fresh copies from
        :func:`validate_message`).  All or nothing.

        :param msgs: messages to append
        :param pinned: indexes *into msgs* (0-based, or negative from its end) to pin
        :raises IndexError: a pinned index outside ``msgs`` (nothing appended)
        :raises TypeError: a pinned index that is not an int (nothing appended)
        """
        new = list(msgs)
        flags = [False] * len(new)
        for index in pinned:
            flags[_hist_check_index(index, len(new))] = True
        self._msgs.extend(new)
        self._pins.extend(flags)

    # -- token budgets --------------------------------------------------------------------------

    def cost(self, message: dict[str, Any], cost: Callable[[dict[str, Any]], int]) -> int:
        """``cost(message)``, remembered per stored message (a message's text never changes
        once stored); the memory is dropped when another ``cost`` function comes."""
        self._use(cost)
        found = self._costs.get(id(message))
        if found is not None and found[0] is message:
            return found[1]
        tokens = cost(message)
        if len(self._costs) > 2 * len(self._msgs) + 64:  # messages removed since: forget them
            self._costs = {id(m): self._costs[id(m)] for m in self._msgs if id(m) in self._costs}
        self._costs[id(message)] = (message, tokens)
        return tokens

    def _use(self, cost: Callable[[dict[str, Any]], int]) -> None:
        """Remember costs made with ``cost``; another function (another model) forgets them,
        and the server's counts too (they were another tokenizer's)."""
        if cost is not self._cost_fn:
            self._cost_fn, self._costs, self._server = cost, {}, ServerCounts()
            self._prefix = None

    def _known(self, message: dict[str, Any]) -> float | None:
        return self._server.get(message)

    @property
    def commits(self) -> int:
        """How many exchanges were committed (a :class:`Fitted` made before another exchange's
        commit has a stale view of what the server counted)."""
        return self._commits

    def forget_counts(self) -> None:
        """Forget the server's counts (they stopped adding up: the server counts otherwise now)."""
        self._server = ServerCounts()
        self._prefix = None

    def carry_counts(self, old: Sequence[dict[str, Any]]) -> None:
        """Give the stored messages equal to one of ``old`` (the messages before a replacement)
        the server's count of it: the count belongs to the text, not to the dict."""
        import json

        counted: dict[str, float] = {}
        for message in old:
            value = self._server.get(message)
            if value is not None:
                counted.setdefault(json.dumps(message, sort_keys=True, ensure_ascii=False), value)
        if not counted:
            return
        for message in self._msgs:
            value = counted.get(json.dumps(message, sort_keys=True, ensure_ascii=False))
            if value is not None and self._server.get(message) is None:
                self._server.put(message, value, self._msgs)
        self._prefix = None

    def measure(
        self,
        sent: Sequence[dict[str, Any]],
        actual: int,
        cost: Callable[[dict[str, Any]], int],
        *,
        extra: int = 0,
        ratio: float = 1.0,
    ) -> tuple[int, float] | None:
        """Learn the server's own count of messages sent: ``actual`` (the ``prompt_tokens`` of a
        request that sent ``sent``), less the counts known already of some of them, what the
        server adds to every prompt and the estimate of ``extra`` (raw tokens outside the
        messages), is shared among the others in proportion to their estimates.  Later fits count
        those messages at that figure: exact for any set of messages measured together, whatever
        the server's tokenizer and template.

        When none of ``sent`` was counted before (a first request), each message is counted at no
        more than its calibrated estimate, and the rest is kept as tokens the server adds to
        every prompt (a chat template's, a hidden system prompt, the instructions that come with
        tools): counted in every fit, so leaving out a message that was sent first never takes
        them away.  What was the first messages' own excess (a script the estimate counts low)
        shows once a request goes without some of them: each such request corrects ``base``
        (:meth:`ServerCounts.correct_base`).  The count is not believed (None: nothing learned)
        when what it leaves for the new messages is neither within half to twice their
        calibrated estimate nor within a tenth of the whole count (a cut, cached or otherwise
        odd count; the caller then forgets the counts, :meth:`forget_counts`).

        :returns: the raw estimate of the messages measured and their share of ``actual`` (0 and
            0.0 when every message was counted before); None when the count is not believed
        """
        self._use(cost)
        server = self._server
        known = 0.0
        unknown: list[dict[str, Any]] = []
        for message in sent:
            value = server.get(message)
            if value is None:
                unknown.append(message)
            else:
                known += value
        first = len(unknown) == len(sent)
        raws = [self.cost(message, cost) for message in unknown]
        whole = sum(raws)
        if not first and server.base_from:
            ids = {id(m) for m in sent}
            omitted = [m for m in server.base_from if id(m) not in ids]
            if omitted:  # a test of base: correct it
                server.correct_base(actual - known - (extra + whole) * ratio, omitted, lambda m: self.cost(m, cost))
                self._prefix = None
        rest = actual - known - (0.0 if first else server.base)  # for the new messages and extra
        expected = (whole + extra) * ratio
        # believed within half to twice the estimate of what is new, or within a tenth of the
        # whole count (a short new message, and a ratio that a history of another script set)
        if rest <= 0 or not (0.5 * expected <= rest <= 2 * expected or abs(rest - expected) <= 0.1 * actual):
            return None
        share = rest - extra * ratio
        if not unknown:  # only the tokens outside the messages were left
            return 0, 0.0
        if share <= 0:
            return None
        counted = 0.0
        for message, raw in zip(unknown, raws):
            value = share * raw / whole
            if first:
                value = min(value, raw * ratio)
            counted += value
            self._remember(message, value)
        if first:
            server.base, server.base_from, server.base_tests = share - counted, list(sent), 0
            self._prefix = None
        return whole, share

    def seed(self, message: dict[str, Any], tokens: float, cost: Callable[[dict[str, Any]], int]) -> None:
        """Count a stored message not sent yet at ``tokens`` (an answer, from the server's
        ``completion_tokens``), unless the server counted it already."""
        self._use(cost)
        if self._known(message) is None:
            self._remember(message, tokens)

    def _remember(self, message: dict[str, Any], tokens: float) -> None:
        self._server.put(message, tokens, self._msgs)
        prefix = self._prefix
        if prefix is not None and not any(m is message for m in self._msgs[prefix[2] :]):
            self._prefix = None  # counted in the running total as an estimate: total it again

    def fit(
        self,
        new_messages: Sequence[dict[str, Any]],
        budget: int | None,
        cost: Callable[[dict[str, Any]], int],
        *,
        extra: int = 0,
        ratio: float = 1.0,
        summary: dict[str, Any] | None = None,
        covered: int = 0,
        without: dict[str, Any] | None = None,
    ) -> Fitted:
        """:meth:`payload`, then within ``budget`` tokens: the oldest rounds left out (a user
        message with what follows it up to the next one, so a question goes with its answer and
        an assistant message with ``tool_calls`` with its ``tool`` answers) until the calibrated
        tokens are at most ``budget``; never a round with a pinned message, nor the system
        prompt (the system/developer messages at the start), nor ``new_messages``.  A message
        counts as the server counted it (:meth:`measure`, :meth:`seed`), else as its estimate
        times ``ratio``.  O(n) with the costs remembered.

        :param budget: the most tokens to send (None: no budget, only the estimate is made)
        :param cost: a message's raw token estimate (per-message overhead included)
        :param extra: raw tokens outside the messages (the reply priming, the tools' schemas)
        :param ratio: the calibration: true tokens per estimated token
        :param summary: a summary message kept beside the history (``Chat(trim_history=False)``):
            sent after the system prompt in place of the ``covered`` messages that follow it
            (the rounds of them with a pinned message are still sent); never left out
        :param covered: how many messages after the system prompt ``summary`` stands for
        :param without: a stored message to leave out first, pinned or not (a summary in the
            history that no longer fits the budget); it is among ``left_out``
        :raises ContextBudgetError: what may not be left out alone is over the budget
        """
        self._use(cost)
        if summary is None and without is None:
            fast = self._fit_fast(new_messages, budget, cost, extra, ratio)
            if fast is not None:
                return fast
        chosen = self.payload(new_messages)
        history = chosen[: len(chosen) - len(new_messages)]
        pinned = {id(m) for m, p in zip(self._msgs, self._pins) if p}
        if summary is not None:
            history = self._beside_summary(history, summary, covered)
            pinned.add(id(summary))
            chosen = history + list(new_messages)
        if without is not None:
            history = [m for m in history if m is not without]
            chosen = history + list(new_messages)
        raws = [self.cost(m, cost) for m in history]
        counts = [self._known(m) for m in history]
        fixed_new = sum(cost(m) for m in new_messages) + extra
        raw = sum(raws) + fixed_new
        known = sum(c for c in counts if c is not None) + self._server.base
        unknown = raw - sum(r for r, c in zip(raws, counts) if c is not None)
        measured = sum(1 for c in counts if c is not None)
        if budget is None or _hist_ceil(known + unknown * ratio) <= budget:
            tokens = _hist_ceil(known + unknown * ratio)
            gone = [without] if without is not None else []
            fitted = Fitted(chosen, gone, tokens, new_messages, raw, measured, self._commits)
            fitted.unsent = len(self._msgs) - len(history) + (summary is not None)
            return fitted
        units = _hist_rounds(history)
        movable = [u for u in units if not any(id(history[i]) in pinned for i in range(*u))]
        dropped: set[int] = set()
        for start, stop in movable:
            if _hist_ceil(known + unknown * ratio) <= budget:
                break
            dropped.update(range(start, stop))
            for i in range(start, stop):
                raw -= raws[i]
                count = counts[i]
                if count is None:
                    unknown -= raws[i]
                else:
                    known -= count
                    measured -= 1
        tokens = _hist_ceil(known + unknown * ratio)
        if tokens > budget:
            raise ContextBudgetError(budget, tokens)
        kept = [m for i, m in enumerate(history) if i not in dropped]
        left_out = [history[i] for i in sorted(dropped)]
        if without is not None:
            left_out.insert(0, without)
        fitted = Fitted(kept + list(new_messages), left_out, tokens, new_messages, raw, measured, self._commits)
        fitted.unsent = len(self._msgs) - len(kept) + (summary is not None)
        return fitted

    def _beside_summary(
        self, history: list[dict[str, Any]], summary: dict[str, Any], covered: int
    ) -> list[dict[str, Any]]:
        """``history`` (what :meth:`payload` chose) with the ``covered`` messages after the
        system prompt replaced by ``summary``: every round among them without a pinned message."""
        head = hist_head(self._msgs)
        stop = min(head + covered, len(self._msgs))
        region = self._msgs[:stop]
        gone: set[int] = set()
        for start, end in _hist_rounds(region):
            if True not in self._pins[start:end]:
                gone.update(id(m) for m in region[start:end])
        kept = [m for m in history if id(m) not in gone]
        at = hist_head(kept)
        return kept[:at] + [summary] + kept[at:]

    def covered_after(self, left_out: Sequence[dict[str, Any]]) -> int:
        """How many messages after the system prompt reach up to the last of ``left_out``
        (stored messages), for a summary of them kept beside the history; 0 when none is stored."""
        ids = {id(m) for m in left_out}
        last = max((i for i, m in enumerate(self._msgs) if id(m) in ids), default=-1)
        return max(0, last + 1 - hist_head(self._msgs))

    def covered_digest(self, covered: int) -> str:
        """The SHA-256 (hex) of the ``covered`` messages after the system prompt, as JSON: a
        summary beside the history still stands for them while this is unchanged."""
        head = hist_head(self._msgs)
        return hist_digest(self._msgs[head : head + covered])

    def place_summary(self, message: dict[str, Any], is_summary: Callable[[dict[str, Any]], bool]) -> None:
        """Put a summary ``message`` (a system message) in place of the one ``is_summary`` finds
        before the first user message, else right after the leading system messages; pinned, so
        trimming never removes it."""
        self._epoch += 1
        head = next((i for i, m in enumerate(self._msgs) if m.get("role") == "user"), len(self._msgs))
        for i in range(head):
            if is_summary(self._msgs[i]):
                self._msgs[i] = message
                self._pins[i] = True
                return
        at = hist_head(self._msgs)  # after the leading system messages (never past the first user one)
        self._msgs.insert(at, message)
        self._pins.insert(at, True)

    def _fit_fast(
        self,
        new_messages: Sequence[dict[str, Any]],
        budget: int | None,
        cost: Callable[[dict[str, Any]], int],
        extra: int,
        ratio: float,
    ) -> Fitted | None:
        """The common case in O(new messages): no ``max_count``, no tool message (so nothing is
        left out as an orphan) and everything within the budget.  The tokens of the history are
        kept as running totals over appends; a removal or replacement starts them again.  None:
        the full :meth:`fit` decides."""
        if self._max_count:
            return None
        msgs = self._msgs
        known = self._prefix
        if known is not None and known[0] is cost and known[1] == self._epoch and known[2] <= len(msgs):
            _, _, start, raw, counted, unknown, measured, tools = known
        else:
            start, raw, counted, unknown, measured, tools = 0, 0, self._server.base, 0, 0, False
        for message in msgs[start:]:
            tokens = self.cost(message, cost)
            raw += tokens
            value = self._known(message)
            if value is None:
                unknown += tokens
            else:
                counted += value
                measured += 1
            tools = tools or message.get("role") in _HIST_TOOL_ROLES
        self._prefix = (cost, self._epoch, len(msgs), raw, counted, unknown, measured, tools)
        if tools:
            return None
        fixed_new = sum(cost(m) for m in new_messages) + extra
        total = _hist_ceil(counted + (unknown + fixed_new) * ratio)
        if budget is not None and total > budget:
            return None
        chosen = list(msgs) + list(new_messages)
        return Fitted(chosen, [], total, new_messages, raw + fixed_new, measured, self._commits)

    def commit(self, new_messages: Iterable[dict[str, Any]], drop: Sequence[dict[str, Any]] = ()) -> None:
        """Append a completed exchange (e.g. user + assistant), then trim to ``max_count``.

        Trimming removes the oldest unpinned messages until at most ``max_count`` remain,
        but never a pinned message and never one of ``new_messages``.  So when pinned
        messages alone fill ``max_count``, the latest exchange is kept anyway and the
        history is longer than ``max_count`` until pins are removed.  O(len(history)).

        :param new_messages: validated messages to append (unpinned)
        :param drop: stored messages to remove first (those :meth:`fit` left out: what a token
            budget trims leaves the history, as ``max_count`` trimming does); gone ones are fine
        """
        if drop:
            self._epoch += 1
            gone = {id(m) for m in drop}
            keep = [(m, p) for m, p in zip(self._msgs, self._pins) if id(m) not in gone]
            self._msgs = [m for m, _ in keep]
            self._pins = [p for _, p in keep]
        new = list(new_messages)
        self._msgs.extend(new)
        self._pins.extend([False] * len(new))
        self._commits += 1
        self._trim(protect=len(new))

    def trim(self) -> int:
        """Remove the oldest unpinned messages until at most ``max_count`` remain.

        :returns: how many messages were removed
        """
        return self._trim(protect=0)

    def _trim(self, protect: int) -> int:
        limit = self._max_count
        total = len(self._msgs)
        if not limit or total <= limit:
            return 0
        excess = total - limit
        end = total - protect  # messages at end..total are protected
        msgs, pins = self._msgs, self._pins
        drop = [False] * total
        removed = 0
        # whole units only: an assistant message and the tool answers after it go together
        # (never a call without its answers, never answers without their call); a unit with a
        # pinned message stays whole.  Removing a unit may remove a little more than the excess.
        for start, stop in _hist_units(msgs):
            if removed >= excess or stop > end:
                break
            if True in pins[start:stop]:
                continue
            for i in range(start, stop):
                drop[i] = True
            removed += stop - start
        if removed:
            self._epoch += 1
            self._msgs = [m for m, d in zip(msgs, drop) if not d]
            self._pins = [p for p, d in zip(pins, drop) if not d]
        return removed

    def payload(self, new_messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The messages to send: the history plus ``new_messages``, trimmed like commit() would.

        The oldest unpinned history messages are left out until the total is at most
        ``max_count``; ``new_messages`` are always included (the user's new turn is sent even
        when pins alone fill ``max_count``).  Does not change the buffer.  Returns the stored
        dicts themselves, for serialising only: do not modify them.  One pass, O(n).

        :param new_messages: the messages of this turn (usually one user message)
        :returns: a new list
        """
        limit = self._max_count
        msgs = self._msgs
        pins = self._pins
        if not limit and not any(m.get("role") in _HIST_TOOL_ROLES for m in msgs):
            return msgs + list(new_messages)  # nothing to leave out: the common case, O(n) in C mostly
        excess = len(msgs) + len(new_messages) - limit if limit else 0
        out: list[dict[str, Any]] = []
        # The same units as _trim: an assistant message goes with the tool answers after it.  A
        # tool answer with no assistant message before it (a hand-made or imported history)
        # would be refused by the API ("messages with role 'tool' must be a response to a
        # preceding message with 'tool_calls'") every time: it is never sent.
        for start, stop in _hist_units(msgs):
            pinned = True in pins[start:stop]
            if excess > 0 and not pinned:
                excess -= stop - start
                continue
            if msgs[start].get("role") in _HIST_TOOL_ROLES:
                continue
            out.extend(msgs[start:stop])
        out.extend(new_messages)
        return out

    # -- pins -------------------------------------------------------------------------------

    def _set_pins(self, indexes: Sequence[object], flag: bool) -> None:
        length = len(self._msgs)
        resolved = [_hist_check_index(i, length) for i in indexes]  # all checked first
        for i in resolved:
            self._pins[i] = flag

    def pin(self, *indexes: int) -> None:
        """Pin messages so trimming never removes them.

        Python-style indexes into the current history (negative counts from the end), in
        any order; duplicates and already pinned messages are fine.

        :raises IndexError: an index out of range (names it; nothing is pinned)
        :raises TypeError: an index that is not an int (nothing is pinned)
        """
        self._set_pins(indexes, True)

    def unpin(self, *indexes: int) -> None:
        """Unpin messages; the same index rules as :meth:`pin` (unpinned ones are fine)."""
        self._set_pins(indexes, False)

    # -- rounds -----------------------------------------------------------------------------

    def _round_starts(self) -> list[int]:
        return [i for i, m in enumerate(self._msgs) if m.get("role") == "user"]

    def rounds(self) -> list[list[dict[str, Any]]]:
        """The history split into rounds (copies).

        A round starts at a user message and runs up to the next one, so forged or imported
        histories without strict user/assistant pairs split correctly.  Messages before the
        first user message (a system prompt, a forged assistant opening) belong to no round.
        """
        starts = self._round_starts()
        ends = starts[1:] + [len(self._msgs)]
        return [[_hist_copy(m) for m in self._msgs[s:e]] for s, e in zip(starts, ends)]

    def last_round(self) -> list[dict[str, Any]]:
        """The messages of the last round (copies), or [] when there is no round."""
        starts = self._round_starts()
        return [_hist_copy(m) for m in self._msgs[starts[-1] :]] if starts else []

    def rollback(self, n: int = 1) -> list[dict[str, Any]]:
        """Remove the last ``n`` rounds and return the round that is now last.

        ``n`` larger than the number of rounds removes every round (messages before the
        first user message stay); ``n == 0`` removes nothing.  Pinned messages in removed
        rounds are removed too: rollback is explicit.

        :param n: how many rounds to remove
        :returns: copies of the messages of the round now last ([] when none is left);
            show it with :func:`format_round`
        :raises ValueError: n < 0
        :raises TypeError: n not an int
        """
        if not isinstance(n, int) or isinstance(n, bool):
            raise TypeError("rollback(n): n must be a whole number of rounds, not %s" % _hist_type_name(n))
        if n < 0:
            raise ValueError("rollback(n): n must be 0 or more, got %d" % n)
        starts = self._round_starts()
        if n and starts:
            cut = starts[-n] if n <= len(starts) else starts[0]
            self._epoch += 1
            del self._msgs[cut:]
            del self._pins[cut:]
            del starts[len(starts) - min(n, len(starts)) :]
        return [_hist_copy(m) for m in self._msgs[starts[-1] :]] if starts else []

    # -- archives ---------------------------------------------------------------------------

    def to_archive(self) -> dict[str, Any]:
        """The history as JSON-ready data: ``{"format", "version", "messages", "pinned"}``."""
        return {
            "format": ARCHIVE_FORMAT,
            "version": ARCHIVE_VERSION,
            "messages": self.messages(),
            "pinned": self.pinned_indexes(),
        }


def from_archive(data: object) -> tuple[list[dict[str, Any]], list[int]]:
    """Read archive data (already parsed from JSON) into validated messages and pins.

    Accepts what :meth:`MessageBuffer.to_archive` produces, or a plain list of messages (as
    saved from ``fetch_messages()``; it has no pins).  Nothing is changed anywhere: pass
    the result to :meth:`MessageBuffer.extend` (``pinned=`` indexes are into the returned
    messages).

    :param data: a dict or a list
    :returns: ``(messages, pinned_indexes)``
    :raises ValueError: a wrong shape, an unknown format or version, a bad message (its
        index is named), a pinned index out of range
    """
    if isinstance(data, list):
        raw: object = data
        raw_pins: object = []
    elif isinstance(data, dict):
        fmt = data.get("format")
        if fmt != ARCHIVE_FORMAT:
            if "role" in data:
                raise ValueError(
                    "archive: expected a list of messages or an openai2 chat archive, got a single "
                    "message; wrap it in a list"
                )
            raise ValueError(
                'archive: not an openai2 chat archive (its "format" is %r, expected %r); an '
                "archive is what Chat.dump() writes, or a JSON list of messages" % (fmt, ARCHIVE_FORMAT)
            )
        version = data.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ValueError('archive: "version" must be a whole number, got %r' % (version,))
        if version != ARCHIVE_VERSION:
            raise ValueError(
                "archive: version %d is not supported (this openai2 reads version %d)%s"
                % (version, ARCHIVE_VERSION, "; upgrade openai2" if version > ARCHIVE_VERSION else "")
            )
        raw = data.get("messages")
        raw_pins = data.get("pinned", [])
        if raw_pins is None:
            raw_pins = []
    else:
        raise ValueError(
            "archive: expected a JSON list of messages or an openai2 chat archive object, got %s"
            % _hist_type_name(data)
        )
    if not isinstance(raw, list):
        raise ValueError('archive: "messages" must be a list, got %s' % _hist_type_name(raw))
    messages = [validate_message(m, "archive message %d" % i) for i, m in enumerate(raw)]
    if not isinstance(raw_pins, list):
        raise ValueError('archive: "pinned" must be a list of message indexes, got %s' % _hist_type_name(raw_pins))
    pinned: set[int] = set()
    for p in raw_pins:
        if not isinstance(p, int) or isinstance(p, bool) or not 0 <= p < len(messages):
            raise ValueError("archive: pinned index %r is not a message index (0..%d)" % (p, len(messages) - 1))
        pinned.add(p)
    return messages, sorted(pinned)
