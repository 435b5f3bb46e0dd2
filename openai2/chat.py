"""``Chat``: a continuous conversation tied to a client — request, stream, async, rollback, archives.

A :class:`Chat` owns a :class:`MessageBuffer` (history, pins, ``MsgMaxCount``) and an
:class:`OpenAI` client (or shares one).  An exchange joins the history only when it completes;
a failed request leaves the history exactly as it was; a stream that the caller stops early
keeps the user message and the partial answer ("stop generating").  Each exchange is committed
atomically under a lock, so one Chat may be used from several threads.  What a server's answer
adds to the history is decided in one place, :meth:`ChatAccumulator.history_message`, for every path.
"""

from __future__ import annotations

import os
import threading

from .aio import PieceChannel, start_producer
from .client import ChatCompletionStream, OpenAI, no_answer_error
from .common import TYPE_CHECKING, redact
from .completion import ChatAccumulator
from .conversation import BaseConversation, split_tool_options
from .errors import ContextBudgetError, ContextLengthError, OpenAIError
from .files import atomic_write, read_json_file
from .history import (
    Fitted,
    MessageBuffer,
    check_side_summary,
    copy_json,
    format_round,
    from_archive,
    hist_head,
    validate_message,
)
from .keypool import AKPool
from .objects import to_attr
from .tools import Exchange, ToolCall, add_usage, pending_calls, tool_result_text
from .transport import CancelScope

if TYPE_CHECKING:
    from typing import Any, Awaitable, Callable, Iterable, Iterator, Sequence

    from .logbook import Logbook
    from .store import Store
    from .structured import ParsePlan, ParseResult
    from .tools import ToolLoop


def system_msg(content: str) -> dict[str, Any]:
    """``{"role": "system", "content": content}`` — a system prompt for ``add_dialogs``."""
    return {"role": "system", "content": content}


def user_msg(content: Any) -> dict[str, Any]:
    """``{"role": "user", "content": content}`` — a user turn for ``add_dialogs``/``forge``."""
    return {"role": "user", "content": content}


def assistant_msg(content: Any) -> dict[str, Any]:
    """``{"role": "assistant", "content": content}`` — an answer for ``add_dialogs``/``forge``."""
    return {"role": "assistant", "content": content}


class Round(str):
    """The text of a conversation round, ``[user]:… [assistant]:…``, shown without quotes.

    ``rollback`` returns one, so an interactive session displays the round that is now last,
    as the original did, while a script that ignores the value prints nothing.
    """

    messages: list[dict[str, Any]]

    def __repr__(self) -> str:
        return str(self)


_CHAT_IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}


def image_part(image: str, *, detail: str | None = None) -> dict[str, Any]:
    """A chat-completions ``image_url`` content part from an http(s)/data URL or a local file.

    A local file is read and sent inline as a ``data:`` URL (PNG, JPEG, GIF or WebP).

    :raises ValueError: the argument is neither a URL nor a readable image file
    """
    if not isinstance(image, str) or not image:
        raise ValueError("an image must be an http(s) URL, a data: URL or a path to a file, got %r" % (image,))
    if image.startswith(("http://", "https://", "data:")):
        url = image
    else:
        ext = os.path.splitext(image)[1].lower()
        mime = _CHAT_IMAGE_TYPES.get(ext)
        if mime is None:
            raise ValueError("unsupported image type %r: use .png, .jpg, .jpeg, .gif or .webp, or a URL" % image)
        try:
            with open(image, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise ValueError("cannot read image file %r: %s" % (image, exc.strerror or exc)) from None
        import base64

        url = "data:%s;base64,%s" % (mime, base64.b64encode(data).decode("ascii"))
    part: dict[str, Any] = {"type": "image_url", "image_url": {"url": url}}
    if detail:
        part["image_url"]["detail"] = detail
    return part


def _chat_images(images: object) -> list[str]:
    """``images=`` as a list of paths/URLs: one string (or path), or a list/tuple of them."""
    if images is None:
        return []
    if isinstance(images, (str, os.PathLike)):
        items: list[object] = [images]
    elif isinstance(images, (list, tuple)):
        items = list(images)
    else:
        raise TypeError("images= must be a path or URL string, or a list of them, not %s" % type(images).__name__)
    out = []
    for i, item in enumerate(items):
        if isinstance(item, os.PathLike):
            item = os.fspath(item)
        if not isinstance(item, str):
            raise TypeError("images= item %d must be a path or URL string, not %s" % (i, type(item).__name__))
        out.append(item)
    return out


def _chat_user_message(text: Any, images: Sequence[str] | str | None) -> dict[str, Any]:
    if isinstance(text, (list, tuple)):
        content: Any = list(text)
    elif isinstance(text, str):
        content = text
    else:
        raise TypeError("the message must be a string (or a list of content parts), not %s" % type(text).__name__)
    wanted = _chat_images(images)
    if wanted:
        parts = content if isinstance(content, list) else ([{"type": "text", "text": content}] if content else [])
        content = parts + [image_part(img) for img in wanted]
    return validate_message({"role": "user", "content": content}, "the message")


def write_archive_file(path: str | os.PathLike[str], data: object, *, private: bool = False) -> None:
    """Write ``data`` as indented UTF-8 JSON to ``path`` atomically (``Chat.dump``/``GroupChat.dump``).

    A missing folder, or a path that is a folder, is refused naming the user's path (not the
    temporary file beside it); any other failure to write names the path too.

    :raises FileNotFoundError: the folder of ``path`` does not exist
    :raises IsADirectoryError: ``path`` is a folder
    :raises OSError: the file cannot be written (permissions, disk full, ...)
    """
    import json

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError("cannot write %s: the folder %s does not exist" % (path, folder))
    if os.path.isdir(path):
        raise IsADirectoryError("cannot write %s: it is a folder; give a file name" % path)
    text = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
    try:
        atomic_write(path, text.encode("utf-8"), private=private)
    except OSError as exc:
        if path in str(exc):
            raise
        reason = exc.strerror or str(exc)
        if exc.errno:
            raise OSError(exc.errno, "cannot write %s: %s" % (path, reason)) from None
        raise OSError("cannot write %s: %s" % (path, reason)) from None


def _chat_require_answer(acc: ChatAccumulator) -> None:
    """Raise unless a stream carried an answer: text, tool calls, a refusal or a finish reason."""
    if not (acc.content or acc.tool_calls or acc.refusal or acc.finish_reason):
        raise no_answer_error(acc.completion(), acc.secrets)


class Chat(BaseConversation):
    """A continuous conversation: each request sends the history plus the new user message.

    ``Chat(api_key, model=..., MsgMaxCount=..., **params)``: client options (``base_url``,
    ``timeout``, ``max_retries``, ``proxy``, ``organization``, ``project``, ``default_headers``,
    ``verify``, ``ca_file``, ``max_response_bytes``) configure the client; every other keyword
    (``model``, ``temperature``, ``max_tokens``, …) becomes a default request parameter, which
    per-call keywords of ``request``/``stream_request``/``async_*`` override for that call.

    :param api_key: a key or an :class:`AKPool` (None: ``OPENAI_API_KEY``, or no key)
    :param MsgMaxCount: keep at most this many messages (pinned ones are never removed);
        ``msg_max_count`` is accepted too; None or 0 means no limit
    :param system: a system prompt, pinned at the start of the history
    :param client: an existing :class:`OpenAI` client to share (then no client options)
    :param log: log every exchange into the exchange log ``openai2 logs`` reads: True for the
        command line's ``logs.db`` (off while ``OPENAI2_LOG=0`` or after ``openai2 logs off``),
        a path for another file, or a :class:`Logbook`; None (default): nothing is written
    :param log_session: the session name the log files this Chat's exchanges under (default: a
        name of its own, ``chat-<hex>``), so ``openai2 chat --continue ID`` can pick it up
    """

    def __init__(
        self,
        api_key: str | AKPool | None = None,
        *,
        MsgMaxCount: int | None = None,  # noqa: N803 - the documented name
        msg_max_count: int | None = None,
        system: str | None = None,
        client: OpenAI | None = None,
        log: bool | str | os.PathLike[str] | Logbook | None = None,
        log_session: str | None = None,
        MsgMaxTokens: int | str | None = None,  # noqa: N803 - the documented name
        msg_max_tokens: int | str | None = None,
        tokenizer: Callable[[str], int] | None = None,
        summarize: bool = False,
        summary_prompt: str | None = None,
        trim_history: bool = True,
        **kwargs: Any,
    ) -> None:
        if MsgMaxCount is not None and msg_max_count is not None and MsgMaxCount != msg_max_count:
            raise ValueError("give MsgMaxCount or msg_max_count, not both")
        tool_defaults = split_tool_options(kwargs, "Chat")
        super().__init__(api_key, client, kwargs, "Chat")
        self._tool_defaults = tool_defaults
        self._buffer = MessageBuffer(MsgMaxCount if MsgMaxCount is not None else msg_max_count)
        self.last_reasoning: str = ""
        #: the tool calls the last request ran (:class:`ToolCall` records, in order)
        self.last_tool_calls: list[ToolCall] = []
        self._log = _ChatLog.make(log, log_session)
        if MsgMaxTokens is not None and msg_max_tokens is not None and MsgMaxTokens != msg_max_tokens:
            raise ValueError("give MsgMaxTokens or msg_max_tokens, not both")
        self._max_tokens = _chat_check_budget(MsgMaxTokens if MsgMaxTokens is not None else msg_max_tokens)
        if tokenizer is not None and not callable(tokenizer):
            raise TypeError("tokenizer= must be a function text -> int, not %s" % type(tokenizer).__name__)
        self._tokenizer = tokenizer
        self._costs: dict[str, Callable[[dict[str, Any]], int]] = {}  # model -> a message's estimate
        self._counting = False  # count_tokens() was used: calibrate even without a budget
        #: with MsgMaxTokens: summarise what the budget left out instead of dropping it silently
        self.summarize = bool(summarize)
        if summary_prompt is not None and (not isinstance(summary_prompt, str) or not summary_prompt.strip()):
            raise ValueError("summary_prompt must be a non-empty text")
        self.summary_prompt = summary_prompt
        #: why the last summary could not be made (the messages were then dropped), or None
        self.last_summary_error: BaseException | None = None
        self._fits = _ChatFits()
        #: False: the token budget trims only what is sent; the history keeps every message
        #: (and a summary is kept beside it, :attr:`summary`)
        self.trim_history = bool(trim_history)
        self._side: dict[str, Any] | None = None  # the summary beside the history
        self._side_seen: tuple[int, int] | None = None  # (buffer epoch, id(_side)) last found valid
        self._side_msg: dict[str, Any] = {}  # _side as the system message sent
        #: how many history messages the token budget left out of the last request sent
        #: (summarised or not; 0 without a budget)
        self.last_left_out = 0
        #: of those, how many the summary sent in their place stood for
        self.last_summarised = 0
        self._system = validate_message(system_msg(system), "system") if system is not None else None
        if self._system is not None:
            self._buffer.extend([self._system])
            self._buffer.pin(0)

    # -- configuration ------------------------------------------------------------------------
    @property
    def MsgMaxCount(self) -> int | None:  # noqa: N802 - the documented name
        """The history limit (None: unlimited)."""
        return self._buffer.max_count

    @MsgMaxCount.setter
    def MsgMaxCount(self, value: int | None) -> None:  # noqa: N802
        with self._lock:
            self._buffer.max_count = value
            self._buffer.trim()

    msg_max_count = MsgMaxCount

    @property
    def MsgMaxTokens(self) -> int | str | None:  # noqa: N802 - the documented name
        """The token budget of what is sent: a number, ``"auto"`` (learn the window from the
        server's refusal), or None (no budget)."""
        return self._max_tokens

    @MsgMaxTokens.setter
    def MsgMaxTokens(self, value: int | str | None) -> None:  # noqa: N802
        self._max_tokens = _chat_check_budget(value)

    msg_max_tokens = MsgMaxTokens

    @property
    def summary(self) -> dict[str, Any] | None:
        """With ``trim_history=False``: the summary kept beside the history (made with
        ``summarize=True``, or set from a file; it is sent whenever there is a budget),
        ``{"content": text, "covers": N, "digest": sha256}`` (it stands for the ``N``
        messages after the system prompt while they are unchanged), or None.  Set it to what
        was read back from a file; one whose messages changed since (a rollback into them, an
        edit) is dropped at the next request."""
        with self._lock:
            side = self._side_message_locked()
            return dict(self._side) if side is not None and self._side is not None else None

    @summary.setter
    def summary(self, value: dict[str, Any] | None) -> None:
        checked = check_side_summary(value)
        if value is not None and checked is None:
            raise ValueError('summary must be {"content": text, "covers": N > 0, "digest": 64 hex} or None')
        with self._lock:
            self._side, self._side_seen = checked, None

    def _side_message_locked(self) -> dict[str, Any] | None:
        """The summary beside the history as a system message, while the messages it covers
        are unchanged; else None (and a stale one is dropped).  Checked again only when the
        history had a message removed or replaced since (appends keep what it covers)."""
        side = self._side
        if side is None:
            return None
        buffer = self._buffer
        seen = (buffer._epoch, id(side))
        if self._side_seen != seen:
            view = buffer.view()
            head = hist_head(view)
            end = head + side["covers"]
            # it ends where a round ends (before a user message, or at the end): never half a round
            whole = end == len(view) or (end < len(view) and view[end].get("role") == "user")
            if end > len(view) or not whole or buffer.covered_digest(side["covers"]) != side["digest"]:
                self._side = self._side_seen = None
                return None
            self._side_seen = seen
            self._side_msg = {"role": "system", "content": side["content"]}
        return self._side_msg

    # -- tokens ---------------------------------------------------------------------------------
    def _cost(self, model: str) -> Callable[[dict[str, Any]], int]:
        """A message's raw token estimate for ``model`` (one function per model: the history
        remembers what it computed with it)."""
        found = self._costs.get(model)
        if found is None:
            from .tokens import count_tokens

            tokenizer = self._tokenizer

            def found(message: dict[str, Any]) -> int:
                return count_tokens(message, model=model, tokenizer=tokenizer)

            self._costs[model] = found
        return found

    def _budget(self, model: str) -> int | None:
        value = self._max_tokens
        if value == "auto":
            return self._client.learned_window(model)
        return value  # type: ignore[return-value]

    def _fit(self, new: list[dict[str, Any]], body: dict[str, Any], budget: int | None) -> Fitted:
        """The messages to send within ``budget`` (the caller holds the lock)."""
        from .tokens import count_tokens

        model = str(body.get("model") or "")
        extra = count_tokens([], model=model, tools=body.get("tools"), tokenizer=self._tokenizer)
        ratio = 1.0 if self._tokenizer is not None else self._client.token_calibration(model).ratio
        cost = self._cost(model)
        side = self._side_message_locked() if budget is not None and not self.trim_history else None
        if side is not None and self._side is not None:
            try:
                return self._buffer.fit(
                    new, budget, cost, extra=extra, ratio=ratio, summary=side, covered=self._side["covers"]
                )
            except ContextBudgetError:
                pass  # the summary itself is too long for the budget: the messages it covers compete again
        try:
            return self._buffer.fit(new, budget, cost, extra=extra, ratio=ratio)
        except ContextBudgetError:
            view = self._buffer.view()
            found = next((m for m in view[: hist_head(view)] if _chat_is_summary(m)), None)
            if not self.trim_history or found is None:
                raise
            # the summary in the history is over the budget itself: it goes like a left-out round
            return self._buffer.fit(new, budget, cost, extra=extra, ratio=ratio, without=found)

    def count_tokens(self, text: Any = None) -> int:
        """The calibrated token estimate of what the next request would send: the history
        (trimmed as ``MsgMaxCount``/``MsgMaxTokens`` would), the reply priming, the default
        tools, and ``text`` as the next user message when given.

        :raises ContextBudgetError: what must be sent does not fit ``MsgMaxTokens``
        """
        return self.budget_report(text)["tokens"]  # type: ignore[no-any-return]

    def budget_report(self, text: Any = None) -> dict[str, Any]:
        """What the next request would send, measured as :meth:`count_tokens` does: ``tokens``
        (the calibrated estimate), ``budget`` (the token budget in force: ``MsgMaxTokens``, the
        window learned for ``"auto"``, or None), ``learned`` (True when ``budget`` was learned
        from a refusal), ``stored`` (messages in the history), ``sent`` (of them, how many would
        be sent), ``summarised`` (how many of those not sent a summary stands for), ``measured``
        (how many of those sent are counted as the server counted them before: only the others
        are estimated), ``ratio`` and ``samples`` (the calibration of the estimate: true tokens
        per estimated token, from how many answers; 1.0 and 0 with ``tokenizer=``).

        :raises ContextBudgetError: what must be sent does not fit the budget
        """
        self._counting = True
        new = [_chat_user_message(text, None)] if text is not None else []
        model = str(self.params.get("model") or "")
        body: dict[str, Any] = {"model": model}
        toolset = self._tool_defaults.get("tools")
        if toolset:
            body["tools"] = toolset.schemas()
        calibration = self._client.token_calibration(model)
        exact = self._tokenizer is not None
        with self._lock:
            budget = self._budget(model)
            fitted = self._fit(new, body, budget)
            stored = len(self._buffer)
            summarised = self._summarised(fitted)
        return {
            "tokens": fitted.tokens,
            "budget": budget,
            "learned": self._max_tokens == "auto" and budget is not None,
            "stored": stored,
            "sent": stored - fitted.unsent,
            "summarised": summarised,
            "measured": fitted.measured,
            "ratio": 1.0 if exact else calibration.ratio,
            "samples": 0 if exact else calibration.samples,
        }

    @property
    def recently_request_data(self) -> dict[str, Any] | None:
        """The last request body sent (the original's name for :attr:`last_request`)."""
        return self.last_request

    def __repr__(self) -> str:
        return "<Chat model=%r messages=%d client=%r>" % (self.params.get("model"), len(self._buffer), self._client)

    # -- history ------------------------------------------------------------------------------
    def fetch_messages(self) -> list[dict[str, Any]]:
        """A copy of the history as ``{"role", "content", ...}`` dicts (safe to mutate)."""
        with self._lock:
            return self._buffer.messages()

    def add_dialogs(self, *messages: dict[str, Any]) -> None:
        """Append messages (dicts or ``user_msg``/``assistant_msg``/``system_msg``) to the history.

        ``MsgMaxCount`` applies at the next exchange (to its request and after it), so a forged
        pair is never cut in half here.

        :raises ValueError: a message is invalid (the error names which argument); nothing is added
        """
        checked = [validate_message(m, "argument %d" % (i + 1)) for i, m in enumerate(messages)]
        with self._lock:
            _chat_check_answers(self._buffer.view(), checked, self._client._secrets())
            self._buffer.extend(checked)

    forge = add_dialogs

    def pin_messages(self, *indexes: int) -> None:
        """Pin messages (Python-style indexes) so ``MsgMaxCount`` trimming never removes them.

        :raises IndexError: an index is out of range; nothing is pinned
        """
        with self._lock:
            self._buffer.pin(*indexes)

    def unpin_messages(self, *indexes: int) -> None:
        """Unpin messages (already unpinned ones are fine).

        :raises IndexError: an index is out of range; nothing changes
        """
        with self._lock:
            self._buffer.unpin(*indexes)

    pin = pin_messages
    unpin = unpin_messages

    def pinned_indexes(self) -> list[int]:
        """Indexes of the pinned messages, ascending."""
        with self._lock:
            return self._buffer.pinned_indexes()

    def rollback(self, n: int = 1) -> Round:
        """Remove the last ``n`` rounds (a round starts at a user message).

        Messages before the first user message (a system prompt, a forged opening) belong to
        no round and stay, also when ``n`` is the number of rounds or more.

        :returns: the round that is now last, as ``[user]:… [assistant]:…`` (an interactive
            session shows it; nothing is printed)
        :raises ValueError: ``n`` is negative
        """
        with self._lock:
            # messages before the first user message (a system prompt, however it arrived:
            # system=, add_dialogs, load, replace_messages) belong to no round and always stay
            last = self._buffer.rollback(n)
        shown = Round(format_round(last))
        shown.messages = last
        return shown

    def clear(self) -> None:
        """Forget the whole history, except a ``system=`` prompt given to the constructor."""
        with self._lock:
            self._clear_locked()

    def _clear_locked(self) -> None:
        self._buffer.clear()
        if self._system is not None:
            self._buffer.extend([self._system], pinned=[0])

    def to_archive(self) -> dict[str, Any]:
        """The history as archive data: ``{"format", "version", "messages", "pinned"}`` (a copy)."""
        with self._lock:
            return self._buffer.to_archive()

    def dump(self, path: str | os.PathLike[str], *, private: bool = False) -> None:
        """Save the history (and pins) to ``path`` as UTF-8 JSON, atomically.

        The file is written to a temporary file in the same folder, fsynced and renamed, so a
        crash never leaves a half-written archive.

        :param private: create the file readable by its owner only (0600)
        :raises FileNotFoundError: the folder does not exist (the error names ``path``)
        :raises OSError: the file cannot be written (named too); the old file is untouched
        """
        write_archive_file(path, self.to_archive(), private=private)

    def replace_messages(self, messages: Iterable[dict[str, Any]], pinned: Iterable[int] = ()) -> None:
        """Replace the whole history (``pinned``: indexes into ``messages``).

        :raises ValueError: a message is invalid; :raises IndexError: a pin is out of range.
            Either way the history is unchanged.
        """
        checked = [validate_message(m, "message %d" % i) for i, m in enumerate(messages)]
        pins = list(pinned)
        MessageBuffer().extend(checked, pinned=pins)  # validates the pins before anything changes
        with self._lock:
            old = list(self._buffer.view())
            self._buffer.clear()
            self._buffer.extend(checked, pinned=pins)
            self._buffer.carry_counts(old)

    def set_system(self, text: str | None) -> None:
        """Make ``text`` the pinned system prompt at the start (replacing one there); None removes it."""
        system = validate_message(system_msg(text), "system") if text is not None else None
        with self._lock:  # one read-modify-write: an exchange completing meanwhile is not lost
            messages = list(self._buffer.view())  # the stored dicts: the server's counts stay theirs
            pins = self._buffer.pinned_indexes()
            if messages and messages[0].get("role") == "system":
                messages.pop(0)
                pins = [p - 1 for p in pins if p != 0]
            if system is not None:
                messages.insert(0, system)
                pins = [0] + [p + 1 for p in pins]
            self._buffer.clear()
            self._buffer.extend(messages, pinned=pins)
            self._system = system

    def load(self, path: str | os.PathLike[str]) -> None:
        """Append the messages archived in ``path`` (written by ``dump``, or a JSON list of messages).

        :raises FileNotFoundError: no such file
        :raises ValueError: the file is not valid JSON or not an archive; the history is unchanged
        """
        path = os.fspath(path)
        data = read_json_file(path, "conversation archive")
        try:
            messages, pins = from_archive(data)
        except ValueError as exc:
            raise ValueError("%s: %s" % (path, exc)) from None
        with self._lock:
            self._buffer.extend(messages, pinned=pins)

    def __len__(self) -> int:
        return len(self._buffer)

    # -- tools ------------------------------------------------------------------------------
    @property
    def pending_tool_calls(self) -> list[ToolCall]:
        """The calls of the last answer that nothing answered yet: calls of tools given as
        schema dicts (no Python function), which the caller runs.  Answer each with
        :meth:`add_tool_result`, then call ``request()`` without text to go on."""
        with self._lock:
            return pending_calls(self._buffer.view(), self._client._secrets())

    def add_tool_result(self, call: ToolCall | str, result: object) -> None:
        """Answer a pending tool call (a :class:`ToolCall` or its id): a ``tool`` message joins
        the history (``result``: a ``str`` as it is, anything else as JSON).

        :raises ValueError: no pending call has that id
        """
        call_id = call.id if isinstance(call, ToolCall) else call
        secrets = self._client._secrets()
        text = redact(tool_result_text(result), secrets)
        with self._lock:
            pending = pending_calls(self._buffer.view(), secrets)
            if call_id not in [c.id for c in pending]:
                names = ", ".join("%s (%s)" % (c.id, c.name) for c in pending) or "none"
                raise ValueError("no pending tool call has the id %r; pending: %s" % (call_id, names))
            self._buffer.extend([{"role": "tool", "tool_call_id": call_id, "content": text}])

    # -- exchanges ----------------------------------------------------------------------------
    def _prepare(
        self, text: Any, images: Any, params: dict[str, Any]
    ) -> tuple[dict[str, Any] | None, dict[str, Any], dict[str, Any], ToolLoop | None]:
        """(user message, request body, client options of this call, tool loop or None).

        ``text`` None continues after answered tool calls (no new user message).  With a token
        budget the messages sent are fitted to it (:meth:`MessageBuffer.fit`); what that left
        out is kept in :attr:`_fits` under the body, to leave the history at the commit.

        :raises ContextBudgetError: what must be sent does not fit the budget (nothing sent)"""
        user = _chat_user_message(text, images) if text is not None else None
        if "messages" in params:
            raise TypeError("messages= is managed by Chat; use add_dialogs() to change the history")
        params.pop("stream", None)
        probe: dict[str, Any] = {}
        loop = self._tool_loop(params, probe)
        body, options = self._request_body(params)
        body.update(probe)
        new = [user] if user is not None else []
        with self._lock:
            _chat_check_continuation(self._buffer.view(), user, self._client._secrets())
            budget = self._budget(str(body["model"])) if self._max_tokens is not None else None
            if budget is not None or self._counting or self._max_tokens is not None:
                fitted: Fitted | None = self._fit(new, body, budget)
                chosen = fitted.messages  # type: ignore[union-attr]
            else:
                fitted, chosen = None, self._buffer.payload(new)
            # copies, nested parts too: last_request must not alias the stored history
            body["messages"] = [copy_json(m) for m in chosen]
        if fitted is not None:
            self._fits.remember(body, fitted)
        if self._log is not None:
            self._log.start()
        return user, body, options, loop

    def _commit(
        self,
        user: dict[str, Any] | None,
        exchange: Exchange,
        calibrate: bool = True,
        summary: dict[str, Any] | None = None,
    ) -> None:
        """Join one exchange to the history (every tool round with it), atomically; log it."""
        self._commit_only(user, exchange, calibrate, summary)
        if self._log is not None:
            self._log.record(self, exchange.request, status="ok")

    def _commit_only(
        self,
        user: dict[str, Any] | None,
        exchange: Exchange,
        calibrate: bool = True,
        summary: dict[str, Any] | None = None,
    ) -> None:
        acc = exchange.acc
        if exchange.result is not None:
            response: Any = to_attr(exchange.result)
        else:
            response = to_attr(acc.completion()) if acc is not None else None
        fitted = self._fits.take(exchange.first)
        with self._lock:
            self._commit_fitted(([user] if user is not None else []) + exchange.messages(), fitted, summary)
            rounds = exchange.usages if len(exchange.usages) > 1 else ()
            self._note_answer(exchange.request or {}, response, exchange.usage, rounds)
            self.last_reasoning = acc.reasoning if acc is not None else ""
            self.last_tool_calls = exchange.calls
            if calibrate and fitted is not None and exchange.usages:
                self._measure(exchange, fitted)
        if calibrate and fitted is not None and exchange.usages:
            self._calibrate(exchange.first, fitted, exchange.usages[0])

    def _summarised(self, fitted: Fitted) -> int:
        """How many of the history messages ``fitted`` does not send the summary beside stood for."""
        if self.trim_history or not any(m is self._side_msg for m in fitted.messages):
            return 0
        return fitted.unsent - len(fitted.left_out)

    def _commit_fitted(
        self, messages: list[dict[str, Any]], fitted: Fitted | None, summary: dict[str, Any] | None
    ) -> None:
        """Append an exchange's messages (the caller holds the lock).  What the budget left out
        leaves the history (``trim_history``), else stays and only the summary is kept beside."""
        drop = fitted.left_out if fitted is not None and self.trim_history else ()
        self.last_left_out = fitted.unsent if fitted is not None else 0
        self.last_summarised = self._summarised(fitted) if fitted is not None else 0
        covered = self._buffer.covered_after(fitted.left_out) if summary is not None and fitted is not None else 0
        self._buffer.commit(messages, drop)
        if summary is None:
            return
        if self.trim_history:
            self._buffer.place_summary(summary, _chat_is_summary)
        elif covered:
            digest = self._buffer.covered_digest(covered)
            self._side, self._side_seen = {"content": summary["content"], "covers": covered, "digest": digest}, None

    # -- summaries ------------------------------------------------------------------------------
    def _summary_request(self, exchange: Exchange) -> dict[str, Any] | None:
        """The request that summarises what the budget left out of ``exchange`` (with the
        previous summary folded in), or None when there is nothing to summarise."""
        fitted = self._fits.get(exchange.first)
        if not self.summarize or fitted is None or not fitted.left_out:
            return None
        with self._lock:
            if self.trim_history:
                previous = next((m for m in self._buffer.view() if _chat_is_summary(m)), None)
                if previous is not None and any(m is previous for m in fitted.left_out):
                    previous = None  # left out itself: it is in the transcript
            else:  # the summary beside, when it was sent (else what it covers is among left_out)
                side = self._side_message_locked()
                previous = side if side is not None and any(m is side for m in fitted.messages) else None
        body = exchange.first or {}
        model = str(body.get("model") or "")
        budget = self._budget(model) if self._max_tokens is not None else None
        room = None
        if budget is not None:  # the summary request must fit the budget too: 3/4 of it for the transcript
            ratio = 1.0 if self._tokenizer is not None else self._client.token_calibration(model).ratio
            room = max(1, int(budget * 0.75 / ratio))
        return _chat_summary_body(body, fitted.left_out, previous, self.summary_prompt, room, self._cost_text(model))

    def _cost_text(self, model: str) -> Callable[[str], int]:
        """A text's raw token estimate for ``model`` (the tokenizer's count when one is given)."""
        from .tokens import count_tokens

        tokenizer = self._tokenizer
        return lambda text: count_tokens(text, model=model, tokenizer=tokenizer)

    def _summary_done(
        self, result: dict[str, Any] | None, exc: BaseException | None, chinese: bool
    ) -> dict[str, Any] | None:
        """The summary message from the answer, or None (the failure warned and kept on the Chat)."""
        if exc is None and result is not None:
            try:
                text = (result["choices"][0]["message"].get("content") or "").strip()
            except (KeyError, IndexError, TypeError, AttributeError):
                text = ""
            if text:
                with self._lock:
                    add_usage(self.total_usage, result.get("usage"))
                self.last_summary_error = None
                marker = _CHAT_SUMMARY_MARKERS[1 if chinese else 0]
                return {"role": "system", "content": marker + "\n" + text}
            exc = OpenAIError("the summary request answered no text")
        self.last_summary_error = exc
        import warnings

        warnings.warn(
            "openai2: the earlier messages could not be summarised (%s); they were left out as without summarize" % exc,
            RuntimeWarning,
            stacklevel=4,
        )
        return None

    def _summarize(self, exchange: Exchange, options: dict[str, Any]) -> dict[str, Any] | None:
        """Summarise what the budget left out (one extra request), or None; never raises."""
        body = self._summary_request(exchange)
        if body is None:
            return None
        try:
            result, exc = self._send(body, options), None
        except Exception as failure:
            result, exc = None, failure
        return self._summary_done(result, exc, _chat_chinese(body))

    async def _summarize_async(self, exchange: Exchange, options: dict[str, Any]) -> dict[str, Any] | None:
        body = self._summary_request(exchange)
        if body is None:
            return None
        try:
            result, exc = await self._send_async(body, options), None
        except Exception as failure:
            result, exc = None, failure
        return self._summary_done(result, exc, _chat_chinese(body))

    def _refit(self, body: dict[str, Any], exc: BaseException, loop: ToolLoop | None) -> bool:
        """After the server refused ``body`` as too long, with ``MsgMaxTokens="auto"``: learn the
        window from the refusal (its stated limit minus the answer's ``max_tokens``, else half the
        history that may be left out), remember it on the client, fit ``body``'s messages to it
        again (in place) and say to send it once more.  False: not to retry (no "auto", a retry
        already made, tool rounds already run, or nothing learned).

        :raises ContextBudgetError: what must be sent does not fit the learned window
        """
        if self._max_tokens != "auto" or not isinstance(exc, ContextLengthError) or (loop is not None and loop.rounds):
            return False
        fitted = self._fits.get(body)
        if fitted is None or fitted.retried:
            return False
        model = str(body.get("model") or "")
        completion = body.get("max_completion_tokens") or body.get("max_tokens") or 0
        limit = exc.limit
        if isinstance(limit, int) and limit > 0:
            window = int((limit - (completion if isinstance(completion, int) else 0)) * 0.97)
        else:
            sent = fitted.tokens
            try:
                with self._lock:
                    self._fit(fitted.new, body, 1)  # what must stay, measured by the budget's refusal
                fixed = 0
            except ContextBudgetError as short:
                fixed = short.required
            window = fixed + (sent - fixed) // 2
        if window <= 0 or window >= fitted.tokens:
            return False  # nothing left out would change what is sent
        self._client.learn_window(model, window)
        with self._lock:
            again = self._fit(fitted.new, body, window)
            body["messages"] = [copy_json(m) for m in again.messages]
        again.retried = True
        self._fits.remember(body, again)
        return True

    def _refitting(self, send: Callable[[], Any], body: dict[str, Any], loop: ToolLoop | None) -> Any:
        """``send()``, called once more after a context-length refusal that :meth:`_refit` fitted
        ``body`` again for ("auto"); what it returns."""
        try:
            return send()
        except ContextLengthError as exc:
            if not self._refit(body, exc, loop):
                raise
        return send()

    async def _refitting_async(
        self, send: Callable[[], Awaitable[Any]], body: dict[str, Any], loop: ToolLoop | None
    ) -> Any:
        try:
            return await send()
        except ContextLengthError as exc:
            if not self._refit(body, exc, loop):
                raise
        return await send()

    def _send_fitted(self, body: dict[str, Any], options: dict[str, Any], loop: ToolLoop | None) -> Exchange:
        """:meth:`_send_rounds`, sent once more after a context-length refusal ("auto")."""
        return self._refitting(lambda: self._send_rounds(body, options, loop), body, loop)  # type: ignore[no-any-return]

    async def _send_fitted_async(
        self, body: dict[str, Any], options: dict[str, Any], loop: ToolLoop | None
    ) -> Exchange:
        return await self._refitting_async(lambda: self._send_rounds_async(body, options, loop), body, loop)  # type: ignore[no-any-return]

    def _measure(self, exchange: Exchange, fitted: Fitted) -> None:
        """Keep the server's own count of what it was sent (``usage.prompt_tokens`` less what
        earlier answers measured of it) and of the answer (its ``completion_tokens``): later
        estimates count those messages as the server does, so only new text is estimated.  A
        count that does not add up forgets them (the server counts otherwise now).  The caller
        holds the lock, after committing the exchange; nothing with ``tokenizer=`` (its counts
        are exact already)."""
        from .tokens import count_tokens, looks_truncated

        body, usage = exchange.first, exchange.usages[0]
        actual = _chat_prompt_count(usage)
        if self._tokenizer is not None or body is None or actual is None or not isinstance(usage, dict):
            return
        if looks_truncated(fitted.tokens, actual, 1.0) is not None:
            return  # cut by the server: not what was sent (the calibration warns)
        model = str(body.get("model") or "")
        cost = self._cost(model)
        ratio = self._client.token_calibration(model).ratio
        buffer = self._buffer
        if buffer.commits == fitted.commits + 1:  # else another exchange committed meanwhile
            extra = count_tokens([], model=model, tools=body.get("tools"))
            if buffer.measure(fitted.messages, actual, cost, extra=extra, ratio=ratio) is None:
                buffer.forget_counts()
                return
        answer = exchange.assistant
        content = answer.get("content") if answer is not None else None
        if len(exchange.usages) > 1 or answer is None or answer.get("tool_calls") or not isinstance(content, str):
            return
        completion = _chat_count(usage.get("completion_tokens"))
        details = usage.get("completion_tokens_details")
        thought = _chat_count(details.get("reasoning_tokens")) if isinstance(details, dict) else None
        if thought is None and exchange.acc is not None and exchange.acc.reasoning:
            return  # reasoning counted in completion_tokens, but not how much of it
        if completion is None or (body.get("n") or 1) != 1:
            return
        text = completion - (thought or 0)
        estimate = count_tokens(content, model=model) * ratio
        if not (0.5 * estimate <= text <= 2 * estimate or abs(text - estimate) <= 4):
            return  # not this answer's count (a provider that counts otherwise)
        # the answer in the next prompt: its completion (the end token included) and its header,
        # which the estimate's per-message overhead stands for (special tokens: not rescaled)
        buffer.seed(answer, text + cost(answer) - count_tokens(content, model=model), cost)

    def _calibrate(self, body: dict[str, Any] | None, fitted: Fitted, usage: object) -> None:
        """Learn the ratio from the server's own count of what was sent (``usage.prompt_tokens``)
        against the estimate of the whole prompt (what a history estimated anew needs: after a
        load, a model switch, a one-shot CLI run); warn once per model when the count says the
        server cut the prompt (Ollama's ``num_ctx``)."""
        actual = _chat_prompt_count(usage)
        if self._tokenizer is not None or actual is None or body is None:
            return
        from .tokens import looks_truncated

        model = str(body.get("model") or "")
        calibration = self._client.token_calibration(model)
        window = looks_truncated(fitted.tokens, actual, 1.0)
        if window is not None:
            self._client.warn_truncated(model, window, fitted.tokens, actual)
            return
        calibration.observe(fitted.raw, actual)

    def _finish_stream(
        self, exchange: Exchange, user: dict[str, Any] | None, options: dict[str, Any], summary: Any = False
    ) -> None:
        """Commit a whole streamed exchange (the same rule as a non-streamed one); ``summary``
        False: make it here (the async stream made it already, awaited)."""
        if summary is False:
            summary = self._summarize(exchange, options)
        self._commit(user, exchange, summary=summary)

    def _finish_partial(
        self,
        user: dict[str, Any] | None,
        exchange: Exchange,
        text: str,
        body: dict[str, Any],
        acc: ChatAccumulator | None,
        reasoning: str,
    ) -> None:
        """Commit a stream stopped early ("stop generating"): the user message, the tool rounds
        that completed, and the text of the unfinished answer; nothing when there is neither."""
        partial = ChatAccumulator().history_message(text) if text else None
        messages = exchange.stopped_messages(partial)
        if not messages:
            return
        response = to_attr(acc.completion()) if acc is not None else None
        usage = acc.usage if acc is not None else None
        rounds = exchange.usages + [usage] if exchange.usages else ()
        fitted = self._fits.take(exchange.first or body)
        with self._lock:
            self._commit_fitted(([user] if user is not None else []) + messages, fitted, None)
            self._note_answer(body, response, usage, rounds)
            self.last_reasoning = reasoning
            self.last_tool_calls = exchange.calls
        if self._log is not None:
            self._log.record(self, body, status="interrupted")

    def request(self, text: Any = None, *, images: Sequence[str] | str | None = None, **params: Any) -> str:
        """Send ``text`` with the history; return the answer. Both join the history.

        With tools (``Chat(tools=[...])`` or ``tools=[...]`` here), the model's tool calls are
        run and answered until it answers without one: the whole exchange joins the history
        together, and the final text is returned.  ``text`` None goes on after the caller
        answered :attr:`pending_tool_calls`.

        :param images: URLs or local image files sent with the text
        :param params: request parameters for this call (override the Chat's defaults)
        :raises APIError: the request failed (after retries); the history is unchanged
        :raises ToolRoundsError: more than ``max_tool_rounds`` tool rounds; the history is unchanged
        """
        user, body, options, loop = self._prepare(text, images, params)
        try:
            exchange = self._send_fitted(body, options, loop)
        except BaseException as exc:
            self._log_failure(body, exc)
            raise
        self._commit(user, exchange, summary=self._summarize(exchange, options))
        return exchange.text

    def stream_request(
        self,
        text: Any = None,
        *,
        images: Sequence[str] | str | None = None,
        on_reasoning: Callable[[str], object] | None = None,
        **params: Any,
    ) -> ChatTextStream:
        """Send ``text`` and iterate over the answer's text pieces as they arrive.

        Pieces are never empty; reasoning text is not mixed in (see :attr:`last_reasoning`).
        Stopping early (``break`` then dropping it, or ``close()``, also from another thread)
        keeps the user message and the text yielded so far; a stream that breaks with an error
        keeps nothing and raises.  :attr:`last_request` is the body sent (with ``"stream": true``).
        With tools, the pieces of every round come in order (text the model writes before or
        between its tool calls, then the answer) and the tools run between rounds; stopping
        early also keeps the tool rounds that completed.

        :param on_reasoning: called with each piece of reasoning text as it arrives (thinking
            models), in the iterating thread
        """
        user, body, options, loop = self._prepare(text, images, params)
        return ChatTextStream(self, user, body, on_reasoning, options, loop)

    async def async_request(self, text: Any = None, *, images: Sequence[str] | str | None = None, **params: Any) -> str:
        """``request`` as a coroutine: the network part runs in a worker thread, ``async def``
        tools are awaited on this event loop and sync tools run in worker threads.

        Cancelling the awaiting task closes the connection at once and leaves the history unchanged.
        """
        user, body, options, loop = self._prepare(text, images, params)
        try:
            exchange = await self._send_fitted_async(body, options, loop)
        except BaseException as exc:
            self._log_failure(body, exc)
            raise
        self._commit(user, exchange, summary=await self._summarize_async(exchange, options))
        return exchange.text

    def parse(
        self,
        text: Any,
        schema: Any,
        *,
        images: Sequence[str] | str | None = None,
        strategy: str = "auto",
        max_repairs: int = 1,
        **params: Any,
    ) -> Any:
        """Ask, and return the answer as an instance of ``schema`` (a dataclass, a ``TypedDict``,
        ``list[X]``, a JSON Schema dict, or a pydantic model).

        The fallback ladder (``json_schema`` -> ``json_object`` -> the schema in the prompt) works
        on servers without structured outputs; the answer is validated locally and repaired up
        to ``max_repairs`` times.  The exchange (the question, the final JSON answer) joins the
        history; a failure leaves the history unchanged; repair turns never stay.

        :param strategy: ``"auto"``, or ``"json_schema"``/``"json_object"``/``"prompt"`` alone
        :raises RefusalError: the model refused; :raises LengthFinishReasonError: the answer was
            cut off; :raises SchemaValidationError: it never matched the schema
        :raises TypeError: a schema that cannot be described (naming the annotation)
        """
        from .structured import run_parse

        user, body, options, plan = _chat_parse_setup(self, text, schema, images, strategy, max_repairs, params)
        try:
            done = self._refitting(
                lambda: run_parse(lambda request: self._send(request, options), body, plan), body, None
            )
        except BaseException as exc:
            self._log_failure(body, exc)
            raise
        exchange = self._parsed_exchange(done, body)
        # the instruction and repairs were sent too: no calibration from this answer
        self._commit(user, exchange, calibrate=False, summary=self._summarize(exchange, options))
        return done.value

    async def async_parse(
        self,
        text: Any,
        schema: Any,
        *,
        images: Sequence[str] | str | None = None,
        strategy: str = "auto",
        max_repairs: int = 1,
        **params: Any,
    ) -> Any:
        """:meth:`parse` as a coroutine (requests in worker threads; cancelling leaves the history)."""
        from .structured import run_parse_async

        user, body, options, plan = _chat_parse_setup(self, text, schema, images, strategy, max_repairs, params)
        send = self._send_async
        try:
            done = await self._refitting_async(
                lambda: run_parse_async(lambda request: send(request, options), body, plan), body, None
            )
        except BaseException as exc:
            self._log_failure(body, exc)
            raise
        exchange = self._parsed_exchange(done, body)
        summary = await self._summarize_async(exchange, options)
        self._commit(user, exchange, calibrate=False, summary=summary)
        return done.value

    def _log_failure(self, body: dict[str, Any], exc: BaseException) -> None:
        """Log a failed exchange (an API, connection or tool error; a Ctrl-C as interrupted)."""
        if self._log is not None and isinstance(exc, (Exception, KeyboardInterrupt)):
            interrupted = isinstance(exc, KeyboardInterrupt)
            self._log.record(self, body, status="interrupted" if interrupted else "error", error=exc)

    def _parsed_exchange(self, done: ParseResult, body: dict[str, Any]) -> Exchange:
        exchange = Exchange(None)
        exchange.first = body  # what the budget fitted (the rungs add their instruction to it)
        exchange.answer(done.request, done.acc, done.result)
        return exchange

    def async_stream_request(
        self, text: Any = None, *, images: Sequence[str] | str | None = None, **params: Any
    ) -> AsyncChatTextStream:
        """``stream_request`` as an async iterator (``async for piece in chat.async_stream_request(...)``)."""
        user, body, options, loop = self._prepare(text, images, params)
        return AsyncChatTextStream(self, user, body, options, loop)


def _chat_parse_setup(
    chat: Chat, text: Any, schema: object, images: Any, strategy: str, max_repairs: int, params: dict[str, Any]
) -> tuple[dict[str, Any] | None, dict[str, Any], dict[str, Any], ParsePlan]:
    """The user message, body, options and ladder of a ``parse`` call (no tools are sent)."""
    from .structured import ParsePlan, Target

    if text is None:
        raise ValueError("parse() needs the text to send")
    if "response_format" in params:
        raise TypeError("parse() sets response_format itself: give the schema as its second argument")
    target = Target(schema)
    params["tools"] = None
    user, body, options, _ = chat._prepare(text, images, params)
    client = chat._client
    plan = ParsePlan(
        target,
        base_url=client.base_url,
        model=str(body.get("model")),
        strategy=strategy,
        max_repairs=max_repairs,
        secrets=client._secrets(options.get("extra_headers")),
    )
    return user, body, options, plan


def _chat_check_answers(
    history: Sequence[dict[str, Any]], added: Sequence[dict[str, Any]], secrets: Sequence[str]
) -> None:
    """Refuse messages that would leave tool calls unanswered before another message (the API
    refuses every later request then): ``tool`` messages may answer the pending calls; any other
    message while one still waits is a ValueError, and nothing is added."""
    waiting = {c.id: c for c in pending_calls(history, secrets)}
    for i, message in enumerate(added):
        if message.get("role") in ("tool", "function"):
            waiting.pop(str(message.get("tool_call_id")), None)
        elif waiting:
            names = ", ".join("%s(%s)" % (c.name, c.call_text(60)) for c in waiting.values())
            raise ValueError(
                "argument %d: the last answer's tool calls are not answered yet: %s; answer them first "
                "(chat.add_tool_result(call, result), or tool messages) or chat.rollback(1)" % (i + 1, names)
            )
        elif message.get("role") == "assistant" and message.get("tool_calls"):
            waiting = {c.id: c for c in pending_calls([message], secrets)}


def _chat_check_continuation(
    history: Sequence[dict[str, Any]], user: dict[str, Any] | None, secrets: Sequence[str] = ()
) -> None:
    """Refuse an exchange the API would refuse: new text while tool calls wait for answers, or
    no text with nothing to go on from."""
    pending = pending_calls(history, secrets)
    if pending:
        names = ", ".join("%s(%s)" % (c.name, c.call_text(60)) for c in pending)
        raise ValueError(
            "the last answer's tool calls are not answered yet: %s; answer them with "
            "chat.add_tool_result(call, result) (see chat.pending_tool_calls) or chat.rollback(1)" % names
        )
    if user is None and not (history and history[-1].get("role") in ("tool", "function")):
        raise ValueError("request() needs the text to send (without text it only goes on after answered tool calls)")


#: How a summary message starts (English, Chinese): how it is found again, also after dump/load.
_CHAT_SUMMARY_MARKERS = ("[Summary of the earlier conversation]", "[此前对话的摘要]")
_CHAT_SUMMARY_PROMPT_EN = (
    "Summarise the conversation below for the assistant who continues it, in a few short paragraphs: keep "
    "the facts, names, numbers, decisions and open questions; leave out greetings and small talk. If a "
    "previous summary is given, fold it in. Write in the language of the conversation. Answer with the "
    "summary only."
)
_CHAT_SUMMARY_PROMPT_ZH = (
    "请为继续这段对话的助手总结下面的对话，用几段简短的话：保留事实、名称、数字、结论和尚未解决的问题，"
    "省略寒暄和闲聊。如果给出了之前的摘要，请把它合并进来。用中文书写，只输出摘要。"
)


def _chat_is_summary(message: dict[str, Any]) -> bool:
    content = message.get("content")
    return message.get("role") == "system" and isinstance(content, str) and content.startswith(_CHAT_SUMMARY_MARKERS)


def _chat_chinese(body: dict[str, Any]) -> bool:
    return bool(body.get("messages")) and body["messages"][0].get("content") == _CHAT_SUMMARY_PROMPT_ZH


def _chat_summary_body(
    first: dict[str, Any],
    left_out: Sequence[dict[str, Any]],
    previous: dict[str, Any] | None,
    prompt: str | None,
    room: int | None = None,
    cost: Callable[[str], int] | None = None,
) -> dict[str, Any]:
    """The summary request: the conversation's language decides the prompt (Chinese when most
    of its letters are CJK ideographs), unless the Chat has its own ``summary_prompt``.  With
    ``room`` (raw tokens, as ``cost`` counts a text) the transcript is cut to fit: the oldest
    left-out messages go first (the previous summary stays), then the text's beginning."""
    lines = []
    for message in left_out:
        text = format_round([message]).split(":", 1)[-1].strip()
        lines.append("%s: %s" % (message.get("role", "?"), text))
    said = "\n".join(lines)  # the language is the conversation's, not the previous summary's
    cjk = sum(1 for ch in said if "\u4e00" <= ch <= "\u9fff")
    latin = sum(1 for ch in said if ch.isascii() and ch.isalpha())
    if previous is not None:
        lines.insert(0, "Previous summary: " + str(previous.get("content", "")).split("\n", 1)[-1])
    if room is not None and cost is not None:
        lines = _chat_fit_lines(lines, room, cost, keep_first=previous is not None)
    transcript = "\n".join(lines)
    system = prompt or (_CHAT_SUMMARY_PROMPT_ZH if cjk > latin / 2 else _CHAT_SUMMARY_PROMPT_EN)
    body = {
        "model": first.get("model"),
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": transcript}],
    }
    return body


def _chat_fit_lines(lines: list[str], room: int, cost: Callable[[str], int], keep_first: bool) -> list[str]:
    """``lines`` within ``room`` tokens: the oldest go first (not the first with ``keep_first``),
    then what is left is cut from its beginning, by the share of characters over."""
    costs = [cost(line) + 1 for line in lines]
    total = sum(costs)
    start = 1 if keep_first else 0
    while total > room and len(lines) > start + 1:
        total -= costs.pop(start)
        lines = lines[:start] + lines[start + 1 :]
    text = "\n".join(lines)
    for _ in range(8):  # each cut keeps the share of characters that fits; a few suffice
        total = cost(text)
        if total <= room or not text:
            break
        text = text[len(text) - int(len(text) * room / total * 0.95) :]
    return [text]


def _chat_check_budget(value: object) -> int | str | None:
    """``MsgMaxTokens`` checked: a whole number of tokens above 0, ``"auto"``, or None."""
    if value is None or value == "auto":
        return value  # type: ignore[return-value]
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError("MsgMaxTokens must be a number of tokens above 0, 'auto' or None, got %r" % (value,))
    return value


def _chat_count(value: object) -> int | None:
    """A token count of a usage object (a non-negative int, not a bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _chat_prompt_count(usage: object) -> int | None:
    """The prompt tokens of an answer's ``usage``, cached ones included: a proxy that reports
    OpenAI's ``prompt_tokens_details.cached_tokens`` (or DeepSeek's ``prompt_cache_hit_tokens``)
    beside a ``prompt_tokens`` too small to hold them left them out, and they are added back."""
    if not isinstance(usage, dict):
        return None
    prompt = _chat_count(usage.get("prompt_tokens"))
    if prompt is None:
        return None
    details = usage.get("prompt_tokens_details")
    cached = _chat_count(details.get("cached_tokens")) if isinstance(details, dict) else None
    if cached is not None and cached > prompt:
        return prompt + cached
    hit, miss = _chat_count(usage.get("prompt_cache_hit_tokens")), _chat_count(usage.get("prompt_cache_miss_tokens"))
    if hit is not None and miss is not None and hit + miss > prompt:
        return hit + miss
    return prompt


class _ChatFits:
    """What the token budget left out of each prepared request, by its body, until the
    exchange commits (then those messages leave the history) or is forgotten."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fits: dict[int, tuple[dict[str, Any], Fitted]] = {}

    def remember(self, body: dict[str, Any], fitted: Fitted) -> None:
        with self._lock:
            if len(self._fits) >= 64:  # prepared but never committed (failed, dropped): the oldest go
                for key in list(self._fits)[:32]:
                    del self._fits[key]
            self._fits[id(body)] = (body, fitted)

    def rekey(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        with self._lock:
            found = self._fits.pop(id(old), None)
            if found is not None and found[0] is old:
                self._fits[id(new)] = (new, found[1])

    def get(self, body: dict[str, Any] | None) -> Fitted | None:
        with self._lock:
            found = self._fits.get(id(body)) if body is not None else None
        return found[1] if found is not None and found[0] is body else None

    def take(self, body: dict[str, Any] | None) -> Fitted | None:
        with self._lock:
            found = self._fits.pop(id(body), None) if body is not None else None
        return found[1] if found is not None and found[0] is body else None


class _ChatLog:
    """Where a Chat logs its exchanges (``Chat(log=...)``): a :class:`Logbook` and a session
    name.  A log that fails warns once and is off for the rest of this Chat's life: logging never
    costs an answer."""

    def __init__(self, book: Logbook, session: str, honour_off: Store | None) -> None:
        self.book = book
        self.session = session
        self.honour_off = honour_off  # the CLI's database: its `logs off` switch applies
        self.failed = False
        self._when = threading.local()  # when this thread's exchange was prepared (its latency)

    def start(self) -> None:
        import time

        self._when.started = time.monotonic()

    @classmethod
    def make(cls, log: object, session: str | None) -> _ChatLog | None:
        if log is None or log is False:
            return None
        from .logbook import Logbook
        from .store import Store

        if session is not None and (not isinstance(session, str) or not session.strip()):
            raise ValueError("log_session must be a non-empty name")
        name = session or "chat-%s" % os.urandom(4).hex()
        if log is True:
            store = Store()
            return cls(Logbook(store.logs_path), name, store)
        if isinstance(log, Logbook):
            return cls(log, name, None)
        if isinstance(log, (str, os.PathLike)):
            return cls(Logbook(os.fspath(log)), name, None)
        raise TypeError("log= must be True, a path or a Logbook, not %s" % type(log).__name__)

    def _off(self) -> bool:
        if self.failed:
            return True
        if self.honour_off is not None:
            if os.environ.get("OPENAI2_LOG", "").strip() in ("0", "off", "false", "no"):
                return True
            return os.path.lexists(self.honour_off.logs_off_path)
        return False

    def record(
        self, chat: Chat, body: dict[str, Any] | None, *, status: str, error: BaseException | None = None
    ) -> None:
        """Log the exchange that just ended (``last_*`` describe it when it succeeded)."""
        if self._off() or body is None:
            return
        import time
        from urllib.parse import urlsplit

        client = chat._client
        fields: dict[str, Any] = {}
        if status != "error":
            now = chat._buffer.messages()
            reply = now[-1] if now and now[-1].get("role") == "assistant" else {}
            content = reply.get("content")
            fields.update(
                answer=content if isinstance(content, str) else None,
                tool_calls=reply.get("tool_calls"),
                reasoning=chat.last_reasoning or None,
                usage=chat.last_usage,
                finish_reason=_chat_finish_reason(chat.last_response),
            )
        else:
            fields["error"] = "%s: %s" % (type(error).__name__, error)
        started = getattr(self._when, "started", None)
        self._when.started = None
        key = client.api_key
        try:
            self.book.append(
                messages=list(body.get("messages") or []),
                session=self.session,
                model=str(body.get("model") or ""),
                host=urlsplit(client.base_url).hostname,
                latency=round(time.monotonic() - started, 3) if started else None,
                status=status,
                key="a pool of %d keys" % len(key) if isinstance(key, AKPool) else key,
                secrets=client._secrets(),
                **fields,
            )
        except Exception as exc:  # LogbookError, OSError ... : logging never costs an answer
            self.failed = True
            import warnings

            warnings.warn("openai2: the exchange log is off for this Chat: %s" % exc, RuntimeWarning, stacklevel=3)


def _chat_finish_reason(response: Any) -> str | None:
    try:
        reason = response["choices"][0].get("finish_reason")
    except (TypeError, KeyError, IndexError, AttributeError):
        return None
    return reason if isinstance(reason, str) else None


def _chat_finalize(chat: Chat, stop: Callable[[], object]) -> None:
    """Run a dropped stream's ``stop`` (which commits under the Chat's lock) from a finalizer.

    A finalizer runs wherever the collector happens to run: on PyPy that can be a thread that
    holds this Chat's lock at that moment, and committing there would wait for itself forever.
    When the lock is not free right now, the commit is handed to a short-lived thread instead.
    """
    lock = chat._lock
    if lock.acquire(blocking=False):
        lock.release()
        stop()
    else:
        threading.Thread(target=stop, name="openai2-stream-finalizer", daemon=True).start()


class ChatTextStream:
    """The iterator returned by :meth:`Chat.stream_request` (text pieces, in order).

    ``close()``, a ``with`` block, or Ctrl-C (``KeyboardInterrupt``) while it waits for the
    server stop it early: the user message and the text already yielded join the history.
    ``close()`` may come from another thread (a "stop" button): the connection is cut at once,
    the partial answer is committed once, before ``close()`` returns, and the iterating thread's
    loop simply ends (``StopIteration``), even if it was waiting for the server.
    """

    def __init__(
        self,
        chat: Chat,
        user: dict[str, Any] | None,
        body: dict[str, Any],
        on_reasoning: Callable[[str], object] | None = None,
        options: dict[str, Any] | None = None,
        loop: ToolLoop | None = None,
    ) -> None:
        self._chat = chat
        self._user = user
        self._first = dict(body, stream=True)  # the first round's body
        chat._fits.rekey(body, self._first)
        self._body = self._first  # this round's, exactly what is sent: last_request
        self._options = options or {}
        self._on_reasoning = on_reasoning
        self._exchange = Exchange(loop)
        self._stream: ChatCompletionStream | None = None
        self._pieces: Iterator[str] | None = None
        self._fresh: list[str] = []  # the accumulator's new reasoning pieces, not handed on yet
        self._scope = CancelScope()
        self._lock = threading.Lock()
        # new -> open -> done (the stream ended, failed, or was closed)
        self._state = "new"
        self._reader: int | None = None  # the thread inside __next__, if any
        self._seen: list[str] = []  # pieces yielded so far
        self._thoughts: list[str] = []  # reasoning pieces handed on so far (valid text)

    def __iter__(self) -> ChatTextStream:
        return self

    @property
    def reasoning(self) -> str:
        """The reasoning text received so far in this round (never part of the pieces)."""
        return self._stream.accumulator.reasoning if self._stream is not None else ""

    @property
    def tool_calls(self) -> list[ToolCall]:
        """The tool calls run so far, in order (:class:`ToolCall` records)."""
        return self._exchange.calls

    def __next__(self) -> str:
        with self._lock:
            if self._state == "done":
                raise StopIteration
            self._state = "open"
            self._reader = threading.get_ident()
        try:
            piece = self._read_piece()
        except Exception as exc:
            with self._lock:
                self._reader = None
                stopped = self._state == "done"  # close() from another thread got here first
                self._state = "done"
            self._close_stream()
            if stopped:
                raise StopIteration from None
            self._chat._log_failure(self._body, exc)
            raise
        except BaseException:
            # KeyboardInterrupt (or SystemExit) while waiting for the server: like close()
            with self._lock:
                self._reader = None
            self.close()
            raise
        with self._lock:
            self._reader = None
            if self._state == "done":  # closed by another thread meanwhile: it committed
                piece = None
            elif piece is not None:
                self._seen.append(piece)
                return piece
            else:
                self._state = "done"
                if self._exchange.acc is not None:
                    # under the lock: a close() from another thread waits for this commit
                    self._chat._finish_stream(self._exchange, self._user, self._options)
                raise StopIteration
        self._close_stream()
        raise StopIteration

    def _read_piece(self) -> str | None:
        """The next non-empty piece, or None at the end of the exchange (runs unlocked).

        The reasoning is the accumulator's own (it merged each chunk already): the pieces it
        adds to the watched list are handed to ``on_reasoning`` as they come.  At the end of an
        answer with tool calls, the tools run here and the next round's stream opens."""
        fresh = self._fresh
        while True:
            if self._pieces is None:
                try:
                    self._stream = self._chat._open_stream(self._body, self._options, self._scope)
                except ContextLengthError as exc:
                    first = self._body is self._first and self._exchange.first is None
                    if not first or not self._chat._refit(self._first, exc, self._exchange.loop):
                        raise
                    self._stream = self._chat._open_stream(self._body, self._options, self._scope)
                self._stream.accumulator.watch_reasoning(fresh)
                self._pieces = self._stream.iter_pieces()
            for piece in self._pieces:
                if fresh:
                    self._hand_reasoning()
                if piece:
                    return piece
            assert self._stream is not None
            acc = self._stream.accumulator
            acc.flush()  # a half pair still held back: U+FFFD, as in last_reasoning
            if fresh:
                self._hand_reasoning()
            _chat_require_answer(acc)
            calls = self._exchange.answer(self._body, acc)
            if calls is None:
                return None
            loop = self._exchange.loop
            assert loop is not None
            self._close_stream()
            loop.run(calls)
            with self._lock:
                if self._exchange.end_round(calls) or self._state == "done":
                    return None  # paused at calls the caller answers, or closed meanwhile
                self._seen = []  # the pieces of this round: what a stop keeps besides the rounds
                self._body = loop.next_body(self._first)
                self._stream = None
                self._pieces = None

    def _hand_reasoning(self) -> None:
        fresh = self._fresh
        pieces = fresh[:]
        del fresh[:]
        self._thoughts.extend(pieces)
        on_reasoning = self._on_reasoning
        if on_reasoning is not None:
            for thought in pieces:
                on_reasoning(thought)

    def _reasoning_so_far(self) -> str:
        """The reasoning handed on so far (valid text)."""
        return "".join(self._thoughts)

    def _close_stream(self) -> None:
        stream = self._stream
        if stream is not None:
            try:
                stream.close()
            except OpenAIError:  # noqa: S110 - closing a connection already broken
                pass

    def close(self) -> None:
        """Stop early: the user message and the text yielded so far join the history (once).

        Safe from another thread: the connection is cut at once and the iterating thread's loop
        ends quietly.  Nothing is kept if no text had arrived.
        """
        with self._lock:
            if self._state != "open":
                self._state = "done"
                return
            self._state = "done"
            reader = self._reader
            stream = self._stream
            other_thread = reader is not None and reader != threading.get_ident()
            if other_thread:
                # the reading thread owns the connection: cancelling wakes it at once, and it
                # closes the stream itself; its accumulator may be changing, so it is not read
                self._scope.cancel()
            acc = stream.accumulator if stream is not None and not other_thread else None
            self._chat._finish_partial(
                self._user,
                self._exchange,
                "".join(self._seen),
                self._body,
                acc,
                acc.reasoning if acc is not None else self._reasoning_so_far(),
            )
        if not other_thread:
            self._close_stream()

    def __enter__(self) -> ChatTextStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if self._state == "open":
                _chat_finalize(self._chat, self.close)
        except Exception:  # noqa: S110 - pragma: no cover - interpreter shutdown
            pass


class AsyncChatTextStream:
    """The async iterator returned by :meth:`Chat.async_stream_request`.

    One worker thread reads the whole stream and hands pieces over in batches, one per network
    read.  ``aclose()``, leaving an ``async with`` block, ``break`` followed by dropping the
    iterator, or cancelling the consuming task stop the worker at once; the user message and the
    pieces already yielded are kept (nothing, if no text had arrived).
    """

    def __init__(
        self,
        chat: Chat,
        user: dict[str, Any] | None,
        body: dict[str, Any],
        options: dict[str, Any] | None = None,
        loop: ToolLoop | None = None,
    ) -> None:
        self._chat = chat
        self._user = user
        self._first = dict(body, stream=True)  # the first round's body
        chat._fits.rekey(body, self._first)
        self._body = self._first  # this round's, exactly what is sent: last_request
        self._options = options or {}
        self._exchange = Exchange(loop)
        self._channel: PieceChannel | None = None
        self._scope = CancelScope()
        self._batch: list[Any] = []
        self._seen: list[str] = []
        # The worker writes the ChatCompletionStream here. It must not hold a reference to this
        # iterator: dropping the iterator has to run __del__ (stop) while the worker still runs.
        self._box: list[ChatCompletionStream] = []
        self._state = "new"

    def __aiter__(self) -> AsyncChatTextStream:
        return self

    def _start(self) -> None:
        import asyncio

        channel = PieceChannel(asyncio.get_running_loop())
        self._channel = channel
        open_stream = self._chat._open_stream
        body = self._body
        options = self._options
        scope = self._scope
        box = self._box

        def produce() -> None:
            error: BaseException | None = None
            try:
                stream = open_stream(body, options, scope)
                box.append(stream)
                for pieces in stream.iter_text_batches():
                    if scope.cancelled:
                        break
                    channel.put_many(pieces)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                error = exc
            finally:
                if box:
                    box[0].close()
            channel.finish(error)

        self._state = "open"
        start_producer(produce)

    async def __anext__(self) -> str:
        import asyncio

        if self._state == "done":
            raise StopAsyncIteration
        if self._state == "new":
            self._start()
        if not self._batch:
            assert self._channel is not None
            try:
                batch = await self._channel.get_batch()
            except asyncio.CancelledError:
                self._stop_early()
                raise
            except ContextLengthError as exc:
                first = self._body is self._first and self._exchange.first is None and not self._seen
                if not first or not self._chat._refit(self._first, exc, self._exchange.loop):
                    self._state = "done"
                    self._chat._log_failure(self._body, exc)
                    raise
                self._box, self._batch, self._scope = [], [], CancelScope()
                self._start()  # the same body, fitted to the learned window, once more
                return await self.__anext__()
            except BaseException as exc:
                self._state = "done"
                self._chat._log_failure(self._body, exc)
                raise
            if not batch:
                if await self._next_round():
                    return await self.__anext__()
                self._state = "done"
                if self._exchange.acc is not None:
                    summary = await self._chat._summarize_async(self._exchange, self._options)
                    self._chat._finish_stream(self._exchange, self._user, self._options, summary)
                raise StopAsyncIteration
            batch.reverse()
            self._batch = batch
        piece: str = self._batch.pop()
        self._seen.append(piece)
        return piece

    async def _next_round(self) -> bool:
        """At the end of a round's stream: run its tool calls (awaited here, on the caller's
        loop) and start the next round; False when the exchange is over (or paused)."""
        import asyncio

        if not self._box:
            return False
        acc = self._box[0].accumulator
        try:
            _chat_require_answer(acc)
            calls = self._exchange.answer(self._body, acc)
            if calls is None:
                return False
            loop = self._exchange.loop
            assert loop is not None
            await loop.run_async(calls)
        except asyncio.CancelledError:
            self._state = "done"  # cancelled while the tools ran: the history stays as it was
            raise
        except BaseException:
            self._state = "done"
            raise
        if self._exchange.end_round(calls) or self._state == "done":
            return False
        self._body = loop.next_body(self._first)
        self._seen = []
        self._box = []
        self._batch = []
        self._scope = CancelScope()
        self._start()
        return True

    def _stop_early(self) -> None:
        if self._state != "open":
            self._state = "done"
            return
        self._state = "done"
        self._scope.cancel()
        reasoning = self._box[0].accumulator.reasoning if self._box else ""
        self._chat._finish_partial(self._user, self._exchange, "".join(self._seen), self._body, None, reasoning)

    async def aclose(self) -> None:
        """Stop early: the user message and the partial answer (what was yielded) are kept."""
        self._stop_early()

    async def __aenter__(self) -> AsyncChatTextStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop_early()

    def __del__(self) -> None:
        try:
            if self._state == "open":
                _chat_finalize(self._chat, self._stop_early)
            else:
                self._state = "done"
        except Exception:  # noqa: S110 - pragma: no cover
            pass
