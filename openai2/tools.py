"""Tool calling: the ``tool`` decorator, ``tool_schema``, ``ToolCall`` records and the tool loop.

A *tool* is a Python function offered to the model (its schema is built from its type hints and
docstring by :mod:`schema`) or a ready-made schema dict (the model may call it; the caller
answers).  :class:`ToolLoop` is the call -> run -> reply loop without any I/O of its own: given
each assistant message of an exchange it says which calls to run, runs them (in the calling
thread, in worker threads when several come at once, or awaited on the caller's event loop),
and builds the ``tool`` messages and the next request body.  ``Chat`` (sync, async, streamed) and
``OpenAI.chat.completions.run_tools`` drive it; the network stays theirs.

Rules the loop owns: arguments are parsed and validated against the tool's schema before it
runs (an invalid call is not run: the error goes back to the model as that call's result); a
tool's exception goes back as ``TypeName: message`` (keys masked) unless ``tool_errors="raise"``;
an unknown tool name gets an error naming the available tools; a call the ``confirm`` callback
refuses gets :data:`TOOL_DECLINED`; a forced ``tool_choice`` applies to the first round only;
more than ``max_tool_rounds`` rounds raise :class:`ToolRoundsError`.
"""

from __future__ import annotations

import threading
import time

from .aio import offload
from .common import TYPE_CHECKING, redact
from .completion import accumulator_from_completion
from .errors import OpenAIError, redact_value
from .transport import CancelScope

if TYPE_CHECKING:
    import asyncio
    from typing import Any, Awaitable, Callable, Iterable, Sequence

    from .completion import ChatAccumulator

#: What a call refused by ``confirm`` sends back to the model as its result.
TOOL_DECLINED = "The user declined to run this tool."
#: How many model -> tools round trips one request may take, unless told otherwise.
DEFAULT_MAX_TOOL_ROUNDS = 8
#: At most this many calls of one answer run at the same time (each in its own worker thread).
TOOL_MAX_WORKERS = 8
#: A tool's result longer than this (characters) is cut, with a note, before it goes back.
TOOL_RESULT_LIMIT = 100_000
_TOOLS_ATTR = "__openai2_tool__"
_TOOLS_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


class ToolRoundsError(OpenAIError):
    """The model still asked for tools after ``max_tool_rounds`` round trips.

    Nothing joined the history.  :ivar rounds: the limit that was reached; :ivar calls: the
    :class:`ToolCall` records of the rounds that ran (their tools did run)."""

    def __init__(self, message: str, *, rounds: int, calls: Sequence[ToolCall]) -> None:
        super().__init__(message)
        self.rounds = rounds
        self.calls = list(calls)


def _tools_check_name(name: object, where: str) -> str:
    if not isinstance(name, str) or not name or len(name) > 64 or not set(name) <= _TOOLS_NAME_CHARS:
        raise ValueError(
            "%s: a tool name must be 1 to 64 letters, digits, '_' or '-' (the API's rule), got %r" % (where, name)
        )
    return name


def _tools_normalise(text: str) -> str:
    return " ".join(text.split())


class Tool:
    """One tool: its name, the schema sent to the model, and the function that runs it.

    Built by :func:`as_tool` from a function (decorated with :func:`tool` or not) or from a
    schema dict (then :attr:`function` is None: the caller answers its calls).

    :ivar name: the name the model calls it by
    :ivar schema: ``{"type": "function", "function": {"name", "description", "parameters"}}``
    :ivar function: the Python callable, or None for a schema-only tool
    """

    __slots__ = ("name", "schema", "function", "is_async")

    def __init__(self, name: str, schema: dict[str, Any], function: Callable[..., Any] | None) -> None:
        self.name = name
        self.schema = schema
        self.function = function
        self.is_async = function is not None and _tools_is_async(function)

    @property
    def parameters(self) -> dict[str, Any]:
        """The JSON Schema of the arguments (``{"type": "object", ...}``)."""
        params = self.schema["function"].get("parameters")
        return params if isinstance(params, dict) else {"type": "object", "properties": {}}

    def __repr__(self) -> str:
        kind = "schema only" if self.function is None else ("async" if self.is_async else "function")
        return "<Tool %s (%s)>" % (self.name, kind)

    def convert(self, arguments: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """``(args, kwargs)`` of a call: each JSON value in its parameter's Python shape (a
        dataclass, an Enum member ...); a null for a parameter with a default means the default
        (what strict mode sends for an optional parameter).  See :func:`function_arguments`.

        :raises ValueError: a value does not fit its annotation (the message has its JSON path)
        """
        assert self.function is not None
        from .schema import function_arguments

        return function_arguments(self.function, arguments)


def _tools_is_async(function: Callable[..., Any]) -> bool:
    import inspect

    target = function
    while hasattr(target, "func") and not inspect.isfunction(target):  # functools.partial
        target = target.func
    if inspect.iscoroutinefunction(target):
        return True
    if inspect.isroutine(target) or isinstance(target, type):
        return False
    return inspect.iscoroutinefunction(type(target).__call__)  # a callable object's method


def _tools_options(function: Callable[..., Any]) -> dict[str, Any]:
    """The options ``@tool(...)`` attached to a function (through a bound method too)."""
    options = getattr(function, _TOOLS_ATTR, None)
    if options is None:
        options = getattr(getattr(function, "__func__", None), _TOOLS_ATTR, None)
    return dict(options) if isinstance(options, dict) else {}


def _tools_function_name(function: Callable[..., Any]) -> str:
    name = getattr(function, "__name__", None)
    if name is None:
        inner = getattr(function, "func", None)  # functools.partial
        name = getattr(inner, "__name__", None) or type(function).__name__
    return str(name)


def _tools_from_function(
    function: Callable[..., Any],
    *,
    name: str | None = None,
    description: str | None = None,
    strict: bool | None = None,
) -> Tool:
    options = _tools_options(function)
    name = name if name is not None else options.get("name") or _tools_function_name(function)
    _tools_check_name(name, "tool %r" % (name,))
    if strict is None:
        strict = bool(options.get("strict", False))
    from .schema import function_parameters

    summary, parameters = function_parameters(function, strict=strict, where="%s()" % name)
    if description is None:
        description = options.get("description")
    text = _tools_normalise(description) if description is not None else summary
    spec: dict[str, Any] = {"name": name}
    if text:
        spec["description"] = text
    spec["parameters"] = parameters
    if strict:
        spec["strict"] = True
    return Tool(name, {"type": "function", "function": spec}, function)


def _tools_from_dict(schema: dict[str, Any], where: str) -> Tool:
    import copy

    spec = schema.get("function") if schema.get("type") == "function" else None
    if spec is None and "name" in schema and "type" not in schema:
        spec, schema = schema, {"type": "function", "function": schema}  # a bare function spec
    if not isinstance(spec, dict):
        raise ValueError(
            '%s: a tool given as a dict must be {"type": "function", "function": {"name": ..., '
            '"parameters": {...}}}' % where
        )
    name = _tools_check_name(spec.get("name"), where)
    params = spec.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise ValueError("%s: the tool %s has 'parameters' that are not a JSON Schema object" % (where, name))
    return Tool(name, copy.deepcopy(schema), None)


def as_tool(item: object, where: str = "a tool") -> Tool:
    """A :class:`Tool` from a function (decorated or not), a schema dict, or a Tool.

    :raises TypeError: an unsupported annotation (naming the function and parameter), or an
        item that is neither callable nor a dict
    :raises ValueError: a name the API refuses, or a malformed schema dict
    """
    if isinstance(item, Tool):
        return item
    if isinstance(item, dict):
        return _tools_from_dict(item, where)
    if callable(item):
        return _tools_from_function(item)
    raise TypeError("%s must be a function or a tool schema dict, not %s" % (where, type(item).__name__))


def tool(
    function: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    strict: bool = False,
) -> Any:
    """Mark a function as a tool, bare (``@tool``) or with options (``@tool(name=..., strict=True)``).

    The function is returned unchanged (still callable as before); its schema is built at once,
    so an unsupported annotation raises ``TypeError`` here, at definition time.

    :param name: the name the model sees (default: the function's ``__name__``)
    :param description: the description (default: the docstring's summary)
    :param strict: OpenAI's strict mode for this tool's arguments (see :func:`tool_schema`)
    """

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(fn):
            raise TypeError("@tool decorates a function, not %s" % type(fn).__name__)
        options = {"name": name, "description": description, "strict": strict}
        _tools_from_function(fn, name=name, description=description, strict=strict)  # fail now
        setattr(fn, _TOOLS_ATTR, options)
        return fn

    return mark if function is None else mark(function)


def tool_schema(function: Callable[..., Any], *, strict: bool | None = None) -> dict[str, Any]:
    """``{"type": "function", "function": {"name", "description", "parameters"}}`` for a function.

    The name is the function's ``__name__`` (or ``@tool(name=...)``), the description the
    docstring's summary, the parameters a JSON Schema object from the type hints, each with its
    docstring description (Google, reST and NumPy styles).  ``strict=True`` follows OpenAI's
    strict mode (``additionalProperties: false``, every property required, optional ones
    nullable) and says ``"strict": true``; None takes ``@tool(strict=...)`` (default False).

    :raises TypeError: an unsupported annotation, naming the function and the parameter
    """
    return _tools_from_function(function, strict=strict).schema


class ToolSet:
    """The tools of one request, by name (the order given is the order sent).

    :raises ValueError: two tools with the same name
    """

    __slots__ = ("tools",)

    def __init__(self, items: Iterable[object]) -> None:
        if isinstance(items, (str, bytes, dict)) or callable(items):
            raise TypeError("tools= must be a list of functions or tool schema dicts")
        tools: dict[str, Tool] = {}
        for i, item in enumerate(items):
            made = as_tool(item, "tools[%d]" % i)
            if made.name in tools:
                raise ValueError("two tools are named %r: give one of them @tool(name=...)" % made.name)
            tools[made.name] = made
        self.tools = tools

    def __len__(self) -> int:
        return len(self.tools)

    def __repr__(self) -> str:
        return "<ToolSet %s>" % ", ".join(self.tools)

    def schemas(self) -> list[dict[str, Any]]:
        """The ``tools`` of a request body."""
        return [t.schema for t in self.tools.values()]


class ToolCall:
    """One tool call of an exchange: what the model asked for and what was sent back.

    :ivar id: the call's ``id`` (the ``tool_call_id`` of its answer)
    :ivar name: the tool's name, as the model wrote it
    :ivar arguments: the parsed arguments (a dict; None when they were not valid JSON)
    :ivar raw_arguments: the arguments text as the model sent it
    :ivar result: the text sent back to the model (None while pending or not run yet)
    :ivar failed: True when the call did not give a result: invalid arguments, an unknown tool,
        or the tool raised (see :attr:`error`)
    :ivar declined: True when ``confirm`` refused it
    :ivar pending: True for a call of a schema-only tool: the caller answers it
    :ivar error: the exception the tool raised, if it did
    :ivar duration: seconds the tool ran (0.0 when it did not run)
    """

    __slots__ = (
        "id",
        "name",
        "arguments",
        "raw_arguments",
        "result",
        "failed",
        "declined",
        "pending",
        "error",
        "duration",
        "_tool",
        "_call",
        "_secrets",
    )

    def __init__(self, call_id: str, name: str, raw_arguments: str, secrets: Sequence[str] = ()) -> None:
        self.id = call_id
        self.name = name
        self.raw_arguments = raw_arguments
        self.arguments: dict[str, Any] | None = None
        self.result: str | None = None
        self.failed = False
        self.declined = False
        self.pending = False
        self.error: BaseException | None = None
        self.duration = 0.0
        self._tool: Tool | None = None
        self._call: tuple[list[Any], dict[str, Any]] | None = None  # (args, kwargs) once ready to run
        self._secrets = tuple(secrets)  # masked in repr and call_text: a model may echo a key

    def __repr__(self) -> str:
        state = (
            "pending"
            if self.pending
            else "declined"
            if self.declined
            else "failed"
            if self.failed
            else "done"
            if self.result is not None
            else "ready"
        )
        return "<ToolCall %s %s(%s) %s>" % (
            redact(self.id, self._secrets),
            redact(self.name, self._secrets),
            self.call_text(),
            state,
        )

    def call_text(self, limit: int = 200) -> str:
        """The arguments as Python-style keywords, ``city='北京', days=3`` (shortened to ``limit``)."""
        if self.arguments is None:
            text = _tools_printable(redact(self.raw_arguments, self._secrets)[: max(limit, 1)])
        else:
            shown = redact_value(self.arguments, self._secrets)  # masked before anything is cut
            # a key that is not a name (a **kwargs tool takes any) is shown as its repr: the CLI
            # asks "Run name(...)? [y/N]" with this text, and control characters the model
            # chose must not rewrite that question on the terminal
            text = ", ".join(
                "%s=%s" % (k if k.isidentifier() else repr(k), _tools_short_repr(v, limit)) for k, v in shown.items()
            )
        text = redact(text, self._secrets)
        return text if len(text) <= limit else text[: limit - 1] + "…"

    def message(self) -> dict[str, Any]:
        """The ``tool`` message that answers this call."""
        return {"role": "tool", "tool_call_id": self.id, "content": self.result or ""}

    def _fail(self, text: str) -> None:
        self.failed = True
        self.result = text


def _tools_printable(text: str) -> str:
    """``text`` with each character that is not printable (ESC, CR, BEL ...) as its escape."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _tools_short_repr(value: object, limit: int) -> str:
    """``repr(value)`` for :meth:`ToolCall.call_text`, never more than about ``limit`` characters
    worked out (arguments nested 900 deep or 10 MB long are shown cut, not built whole)."""
    import reprlib

    shortener = reprlib.Repr()
    shortener.maxstring = shortener.maxother = max(limit, 12)
    shortener.maxlevel = 4
    return shortener.repr(value)


def pending_calls(messages: Sequence[dict[str, Any]], secrets: Sequence[str] = ()) -> list[ToolCall]:
    """The calls of the last assistant message with ``tool_calls`` that no ``tool`` message after
    it answers yet (what the caller still has to answer), as :class:`ToolCall` records.

    :param secrets: keys masked in the records' repr and ``call_text`` (a model may echo one)"""
    import json

    for index in range(len(messages) - 1, -1, -1):
        msg = messages[index]
        role = msg.get("role")
        if role == "assistant" and msg.get("tool_calls"):
            answered = {m.get("tool_call_id") for m in messages[index + 1 :] if m.get("role") == "tool"}
            out = []
            for call in msg["tool_calls"]:
                if call.get("id") in answered:
                    continue
                function = call.get("function") or {}
                raw = function.get("arguments") or ""
                if isinstance(raw, dict):  # a hand-made history: the object itself, not its JSON
                    raw = json.dumps(raw, ensure_ascii=False)
                record = ToolCall(
                    str(call.get("id") or ""),
                    str(function.get("name") or ""),
                    raw if isinstance(raw, str) else "",
                    secrets,
                )
                try:
                    parsed = json.loads(record.raw_arguments or "{}")
                except (ValueError, RecursionError):
                    parsed = None
                record.arguments = parsed if isinstance(parsed, dict) else None
                record.pending = True
                out.append(record)
            return out
        if role not in ("tool", "function"):
            return []
    return []


def tool_result_text(value: object) -> str:
    """A tool's return value as the text sent back: a ``str`` as it is, anything else as JSON
    (dataclasses as objects, Enum members as their values, sets, generators and other iterables
    as lists, bytes as UTF-8 text, other objects as ``str()``); cut to
    :data:`TOOL_RESULT_LIMIT` characters with a note; a lone surrogate becomes U+FFFD."""
    import json

    if isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, ensure_ascii=False, default=_tools_jsonable)
    if len(text) > TOOL_RESULT_LIMIT:
        text = text[:TOOL_RESULT_LIMIT] + "\n[openai2: the result was cut at %d characters]" % TOOL_RESULT_LIMIT
    return _tools_valid_text(text)


def _tools_valid_text(text: str) -> str:
    """``text`` with each lone surrogate as U+FFFD (pairs joined): a result read with
    ``errors="surrogateescape"`` cannot be encoded as UTF-8, and the next request would fail."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def _tools_jsonable(value: object) -> object:
    import dataclasses
    import enum
    import itertools
    from collections import UserString
    from collections.abc import Iterable, Mapping

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, UserString):
        return str(value)
    if isinstance(value, Iterable):
        # a generator, map, range, dict view, set ...: its items (an endless one is cut: the
        # text would be cut at TOOL_RESULT_LIMIT characters anyway)
        return list(itertools.islice(value, TOOL_RESULT_LIMIT))
    return str(value)


class ToolLoop:
    """The state of one exchange's tool loop (no I/O: its drivers send and stream).

    For each assistant message: :meth:`take` gives the calls to run (None: it is the final
    answer); :meth:`run` or :meth:`run_async` runs the ready ones; :meth:`end_round` adds the
    assistant message and the ``tool`` answers to :attr:`messages`; :meth:`next_body` is the
    next request.  :attr:`paused` says the loop stopped at calls of schema-only tools.

    :param toolset: the tools offered
    :param max_rounds: the most model -> tools round trips
    :param confirm: ``confirm(call) -> bool`` before a call runs (None: run every call)
    :param tool_errors: ``"return"`` (a tool's exception goes back to the model) or ``"raise"``
    :param on_call: called with each :class:`ToolCall` just before it runs (or gets its error)
    :param on_result: called with each :class:`ToolCall` once its result is known
    :param secrets: keys to mask in results
    :ivar messages: the assistant and tool messages of the rounds completed so far (a new list
        each round: a snapshot another thread may read)
    :ivar calls: every :class:`ToolCall` of the completed rounds, in order
    :ivar usages: each answer's ``usage``
    """

    def __init__(
        self,
        toolset: ToolSet,
        *,
        max_rounds: int = DEFAULT_MAX_TOOL_ROUNDS,
        confirm: Callable[[ToolCall], object] | None = None,
        tool_errors: str = "return",
        on_call: Callable[[ToolCall], object] | None = None,
        on_result: Callable[[ToolCall], object] | None = None,
        secrets: Sequence[str] = (),
    ) -> None:
        self.toolset = toolset
        self.max_rounds = check_max_rounds(max_rounds)
        if tool_errors not in ("return", "raise"):
            raise ValueError("tool_errors must be 'return' (tell the model) or 'raise', got %r" % (tool_errors,))
        self.confirm = confirm
        self.tool_errors = tool_errors
        self.on_call = on_call
        self.on_result = on_result
        self.secrets = tuple(secrets)
        self.rounds = 0
        self.messages: list[dict[str, Any]] = []
        self.calls: list[ToolCall] = []
        self.paused = False

    # -- one round ----------------------------------------------------------------------------
    def take(self, assistant: dict[str, Any]) -> list[ToolCall] | None:
        """The calls an assistant message asks for, prepared (parsed, validated; the ones that
        cannot run already carry their error result); None when it asks for none (the final
        answer).

        :raises ToolRoundsError: it asks for tools after ``max_rounds`` rounds
        """
        wanted = assistant.get("tool_calls")
        if not wanted:
            return None
        if self.rounds >= self.max_rounds:
            raise ToolRoundsError(
                "the model still asked for tools after %d rounds (max_tool_rounds=%d); nothing was "
                "kept: raise max_tool_rounds, or change the prompt or the tools" % (self.rounds, self.max_rounds),
                rounds=self.max_rounds,
                calls=self.calls,
            )
        self.rounds += 1
        _tools_fill_ids(wanted, self.rounds)
        return [self._prepare(call) for call in wanted]

    def _prepare(self, wanted: dict[str, Any]) -> ToolCall:
        import json

        function = wanted.get("function") or {}
        raw = function.get("arguments")
        call = ToolCall(
            str(wanted.get("id") or ""),
            str(function.get("name") or ""),
            raw if isinstance(raw, str) else "",
            self.secrets,
        )
        found = self.toolset.tools.get(call.name)
        if found is None:
            names = ", ".join(self.toolset.tools) or "none"
            call._fail("Error: there is no tool named %r. The available tools are: %s." % (call.name, names))
            return call
        call._tool = found
        try:
            parsed = json.loads(call.raw_arguments) if call.raw_arguments.strip() else {}
        except ValueError as exc:
            call._fail("Error: the arguments are not valid JSON (%s). Send them again as a JSON object." % exc)
            return call
        except RecursionError:
            call._fail("Error: the arguments are nested too deeply. Send them again as a flat JSON object.")
            return call
        if not isinstance(parsed, dict):
            call._fail("Error: the arguments must be a JSON object, not %s." % type(parsed).__name__)
            return call
        call.arguments = parsed
        if found.function is None:
            call.pending = True
            return call
        # a null for an optional parameter means "not given" (small models send them), also
        # where the schema has no null: the function's default applies
        required = found.parameters.get("required") or ()
        checked = {k: v for k, v in parsed.items() if v is not None or k in required}
        from .schema import validate

        problems = validate(checked, found.parameters)
        if problems:
            call._fail(
                "Error: invalid arguments for %s: %s. Call it again with corrected arguments."
                % (call.name, "; ".join(problems))
            )
            return call
        try:
            call._call = found.convert(parsed)
        except ValueError as exc:
            call._fail(
                "Error: invalid arguments for %s: %s. Call it again with corrected arguments." % (call.name, exc)
            )
        return call

    def _confirmed(self, call: ToolCall, answer: object) -> bool:
        if answer:
            return True
        call.declined = True
        call.result = TOOL_DECLINED
        call._call = None
        return False

    def _ready(self, calls: Sequence[ToolCall]) -> list[ToolCall]:
        """Ask ``confirm`` about each runnable call (in order, in this thread); the ones to run."""
        ready = []
        for call in calls:
            if call._call is None:
                continue
            if self.confirm is None or self._confirmed(call, _tools_sync_answer(self.confirm(call))):
                ready.append(call)
        return ready

    def _announce(self, calls: Sequence[ToolCall]) -> None:
        if self.on_call is not None:
            for call in calls:
                self.on_call(call)

    def _report(self, calls: Sequence[ToolCall]) -> None:
        if self.on_result is not None:
            for call in calls:
                if not call.pending:
                    self.on_result(call)
        if self.tool_errors == "raise":
            for call in calls:
                if call.error is not None:
                    raise call.error

    def run(self, calls: Sequence[ToolCall]) -> None:
        """Run the ready calls: one in this thread, several in worker threads (at most
        :data:`TOOL_MAX_WORKERS` at a time); results in call order.  An ``async def`` tool runs
        on an event loop of its own in a worker thread (``request`` is synchronous).

        :raises BaseException: with ``tool_errors="raise"``, the first tool's exception
        """
        ready = self._ready(calls)
        self._announce(calls)
        if len(ready) == 1 and not ready[0]._tool.is_async:  # type: ignore[union-attr]
            self._invoke(ready[0])
        elif ready:
            _tools_run_threads(ready, self._invoke)
        self._report(calls)

    async def run_async(self, calls: Sequence[ToolCall]) -> None:
        """:meth:`run` for the async drivers: ``async def`` tools are awaited on this event
        loop, sync tools run in worker threads (at most :data:`TOOL_MAX_WORKERS` at a time),
        all of one answer concurrently.  A ``confirm``
        that returns an awaitable is awaited.  Cancelling the task leaves running sync tools to
        finish in the background; their results are dropped."""
        import asyncio
        import inspect

        ready = []
        for call in calls:
            if call._call is None:
                continue
            answer = True if self.confirm is None else self.confirm(call)
            if inspect.isawaitable(answer):
                answer = await answer
            if self._confirmed(call, answer):
                ready.append(call)
        self._announce(calls)
        if ready:
            # one worker thread per sync call, at most TOOL_MAX_WORKERS at a time as in run():
            # an answer with thousands of calls must not start thousands of threads
            threads = asyncio.Semaphore(TOOL_MAX_WORKERS)
            await asyncio.gather(*(self._invoke_async(call, threads) for call in ready))
        self._report(calls)

    def end_round(self, assistant: dict[str, Any], calls: Sequence[ToolCall]) -> None:
        """Add the assistant message and its calls' ``tool`` answers (in call order) to
        :attr:`messages`; pending calls (schema-only tools) have no answer and pause the loop."""
        answers = [call.message() for call in calls if not call.pending]
        self.paused = any(call.pending for call in calls)
        self.calls = self.calls + list(calls)
        self.messages = self.messages + [assistant] + answers

    def next_body(self, first: dict[str, Any]) -> dict[str, Any]:
        """The next request: ``first`` (the exchange's first body) with the messages of the
        completed rounds after its own; a forced ``tool_choice`` (``"required"`` or a named
        function) applied to the first round only, so the model can answer."""
        import copy

        # copies: this body becomes last_request, and these messages are the ones that join the
        # history (a caller editing last_request must not edit the history)
        body = dict(first, messages=list(first["messages"]) + copy.deepcopy(self.messages))
        choice = body.get("tool_choice")
        if choice is not None and choice not in ("auto", "none"):
            del body["tool_choice"]
        return body

    # -- running one call -----------------------------------------------------------------------
    def _error_text(self, exc: BaseException) -> str:
        message = _tools_valid_text(redact(str(exc), self.secrets))
        if len(message) > TOOL_RESULT_LIMIT:
            message = message[:TOOL_RESULT_LIMIT] + "…"
        return "%s: %s" % (type(exc).__name__, message) if message else type(exc).__name__

    def _result_text(self, value: object) -> str:
        """A tool's value as the text sent back (:func:`tool_result_text`), keys masked: a
        result joins the history (archives, logs) and goes to the server."""
        return redact(tool_result_text(value), self.secrets)

    def _invoke(self, call: ToolCall) -> None:
        tool_ = call._tool
        assert tool_ is not None and tool_.function is not None and call._call is not None
        args, kwargs = call._call
        start = time.perf_counter()
        try:
            if tool_.is_async:
                import asyncio

                value = asyncio.run(tool_.function(*args, **kwargs))
            else:
                value = tool_.function(*args, **kwargs)
                value = _tools_refuse_awaitable(value, call.name)
            call.result = self._result_text(value)
        except Exception as exc:
            call.error = exc
            call._fail(self._error_text(exc))
        finally:
            call.duration = time.perf_counter() - start

    async def _invoke_async(self, call: ToolCall, threads: asyncio.Semaphore) -> None:
        import inspect

        tool_ = call._tool
        assert tool_ is not None and tool_.function is not None and call._call is not None
        function, (args, kwargs) = tool_.function, call._call
        start = time.perf_counter()
        try:
            if tool_.is_async:
                value = await function(*args, **kwargs)
            else:
                async with threads:
                    start = time.perf_counter()  # the run, not the wait for a free thread
                    value = await offload(lambda: function(*args, **kwargs), CancelScope())
                if inspect.isawaitable(value):
                    value = await value
            call.result = self._result_text(value)
        except Exception as exc:
            call.error = exc
            call._fail(self._error_text(exc))
        finally:
            call.duration = time.perf_counter() - start


def _tools_fill_ids(wanted: list[dict[str, Any]], round_no: int) -> None:
    """Give every call of an answer an id of its own, in place (the message joins the history
    so): some servers send an empty id (Gemini) or the same id for several calls, and each
    ``tool`` answer must name the call it answers."""
    seen: set[str] = set()
    for position, call in enumerate(wanted):
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id or call_id in seen:
            call_id = "call_%d_%d" % (round_no, position + 1)
            while call_id in seen:
                call_id += "_"
            call["id"] = call_id
        seen.add(call_id)


def check_max_rounds(value: object) -> int:
    """``max_tool_rounds`` checked: a whole number, 0 or more (0: tools are offered, never run)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError("max_tool_rounds must be a whole number, 0 or more, got %r" % (value,))
    return value


def _tools_sync_answer(answer: object) -> object:
    """What an ``async def confirm`` means in a synchronous request: its coroutine, run to the
    end on an event loop of its own in a worker thread (this thread may have a loop running).
    A coroutine object is truthy: taken as it is, it would approve every call unasked."""
    import inspect

    if not inspect.isawaitable(answer):
        return answer
    if not inspect.iscoroutine(answer):
        raise TypeError(
            "confirm returned an awaitable that is not a coroutine: in request() give a plain "
            "function or an 'async def' one (or use async_request)"
        )
    return _tools_run_coroutine(answer)


def _tools_run_coroutine(coroutine: Any) -> object:
    import asyncio

    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = asyncio.run(coroutine)
        except BaseException as exc:  # noqa: BLE001 - raised in the calling thread
            box["error"] = exc

    worker = threading.Thread(target=run, name="openai2-confirm", daemon=True)
    worker.start()
    worker.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _tools_refuse_awaitable(value: object, name: str) -> object:
    import inspect

    if inspect.isawaitable(value):
        close = getattr(value, "close", None)
        if close is not None:
            close()  # no "coroutine was never awaited" warning
        raise TypeError("the tool %s returned an awaitable: make it 'async def' so openai2 awaits it" % name)
    return value


def _tools_run_threads(calls: Sequence[ToolCall], invoke: Callable[[ToolCall], None]) -> None:
    """Run ``invoke(call)`` for every call in worker threads, at most :data:`TOOL_MAX_WORKERS`
    at a time, and wait for all of them (Ctrl-C stops the waiting; the threads finish alone).

    A ``BaseException`` that is not an ``Exception`` (``KeyboardInterrupt``, ``SystemExit``) a
    tool raised in a worker is raised here, in the calling thread, once the workers stopped (no
    call not yet started is started): as a single call run in the calling thread would raise it,
    never a blank result sent to the model."""
    pending = list(reversed(calls))
    lock = threading.Lock()
    escaped: list[BaseException] = []

    def work() -> None:
        while True:
            with lock:
                if not pending or escaped:
                    return
                call = pending.pop()
            try:
                invoke(call)
            except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt, SystemExit: re-raised below
                with lock:
                    escaped.append(exc)
                return

    workers = [
        threading.Thread(target=work, name="openai2-tool", daemon=True)
        for _ in range(min(TOOL_MAX_WORKERS, len(calls)))
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if escaped:
        # what a single call in the calling thread would have raised: the exchange stops there
        raise escaped[0]


def add_usage(total: dict[str, int], usage: object) -> None:
    """Add a response's ``usage`` token counts to a running ``total`` (ignores what is not a count)."""
    if isinstance(usage, dict):
        for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
            value = usage.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                total[name] = total.get(name, 0) + value


class Exchange:
    """What one exchange produced, over all of its tool rounds: the last request sent and its
    answer, the messages that join the history, the summed usage, the tool calls.

    Drivers feed it each answer (:meth:`answer`), run the calls it returns and end the round
    (:meth:`end_round`); :meth:`messages` is what joins the history after the user message.
    """

    __slots__ = ("loop", "first", "request", "result", "acc", "assistant", "usages")

    def __init__(self, loop: ToolLoop | None) -> None:
        self.loop = loop
        self.first: dict[str, Any] | None = None  # the first request of the exchange
        self.request: dict[str, Any] | None = None
        self.result: dict[str, Any] | None = None  # a whole answer's JSON (None after a stream)
        self.acc: ChatAccumulator | None = None
        self.assistant: dict[str, Any] | None = None
        self.usages: list[object] = []

    def answer(
        self, request: dict[str, Any], acc: ChatAccumulator, result: dict[str, Any] | None = None
    ) -> list[ToolCall] | None:
        """Take one answer; the tool calls to run, or None when it is the final one.

        :raises APIError: the answer cannot join a conversation (see ``history_message``)
        :raises ToolRoundsError: more rounds than ``max_tool_rounds``
        """
        if self.first is None:
            self.first = request
        self.request, self.acc, self.result = request, acc, result
        self.usages.append(acc.usage)
        self.assistant = acc.history_message()
        return self.loop.take(self.assistant) if self.loop is not None else None

    def end_round(self, calls: list[ToolCall]) -> bool:
        """Close a tool round (after its calls ran); True when the loop paused at calls the
        caller answers (schema-only tools)."""
        assert self.loop is not None and self.assistant is not None
        self.loop.end_round(self.assistant, calls)
        return self.loop.paused

    @property
    def paused(self) -> bool:
        return self.loop is not None and self.loop.paused

    def messages(self) -> list[dict[str, Any]]:
        """The messages after the user's: every completed tool round, then the final answer
        (nothing more when paused at calls the caller answers)."""
        done = list(self.loop.messages) if self.loop is not None else []
        if self.paused or self.assistant is None:
            return done
        return done + [self.assistant]

    def stopped_messages(self, partial: dict[str, Any] | None) -> list[dict[str, Any]]:
        """What a stream stopped early keeps after the user message: the tool rounds that
        completed, then ``partial`` (the text of the unfinished answer) if there is any."""
        done = list(self.loop.messages) if self.loop is not None else []
        return done + [partial] if partial is not None else done

    @property
    def text(self) -> str:
        """The text ``request`` returns: the final answer's (when paused: the text the model
        wrote beside its calls)."""
        content = self.assistant.get("content") if self.assistant is not None else None
        return content if isinstance(content, str) else ""

    @property
    def usage(self) -> dict[str, Any] | None:
        """The answer's ``usage``; over several rounds, their sums."""
        found = [u for u in self.usages if isinstance(u, dict)]
        if len(self.usages) == 1:
            return found[0] if found else None
        if not found:
            return None
        total: dict[str, Any] = {}
        for usage in found:
            add_usage(total, usage)
        return total

    @property
    def calls(self) -> list[ToolCall]:
        return list(self.loop.calls) if self.loop is not None else []


def run_rounds(
    send: Callable[[dict[str, Any]], dict[str, Any]],
    body: dict[str, Any],
    loop: ToolLoop | None,
    secrets: Sequence[str],
) -> Exchange:
    """Drive one exchange: ``send(body)`` (a whole answer's JSON, choices checked), then, while
    the answer asks for tools, run them and send the next round.

    :raises ToolRoundsError: more rounds than the loop's ``max_rounds``
    """
    exchange = Exchange(loop)
    request = body
    while True:
        result = send(request)
        calls = exchange.answer(request, accumulator_from_completion(result, secrets=secrets), result)
        if calls is None:
            return exchange
        assert loop is not None
        loop.run(calls)
        if exchange.end_round(calls):
            return exchange
        request = loop.next_body(body)


async def run_rounds_async(
    send: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
    body: dict[str, Any],
    loop: ToolLoop | None,
    secrets: Sequence[str],
) -> Exchange:
    """:func:`run_rounds` with an awaitable ``send``; tools run by :meth:`ToolLoop.run_async`."""
    exchange = Exchange(loop)
    request = body
    while True:
        result = await send(request)
        calls = exchange.answer(request, accumulator_from_completion(result, secrets=secrets), result)
        if calls is None:
            return exchange
        assert loop is not None
        await loop.run_async(calls)
        if exchange.end_round(calls):
            return exchange
        request = loop.next_body(body)
