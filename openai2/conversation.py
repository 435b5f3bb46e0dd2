"""What ``Chat`` and ``GroupChat`` share: :class:`BaseConversation`.

A conversation ties its own state (a history, a dialog) to an :class:`OpenAI` client.  This
module owns the part that does not depend on that state: the client built from the options (or
shared), the default request parameters and how a call's parameters go over them (``None``
means "unset": the default is not sent for that call, and ``None`` is never sent as JSON
``null``), ``last_request``/``last_response``/``last_usage``/``total_usage``, and the one door to
the client (:meth:`OpenAI.complete` / :meth:`OpenAI.stream`), synchronously or offloaded to a
worker thread for the async twins.
"""

from __future__ import annotations

import threading

from .aio import offload
from .client import _CLIENT_OPTION_NAMES, OpenAI, _client_check_key, split_request_options
from .common import TYPE_CHECKING
from .history import check_json_text
from .keypool import AKPool
from .tools import (
    DEFAULT_MAX_TOOL_ROUNDS,
    Exchange,
    ToolLoop,
    ToolSet,
    add_usage,
    check_max_rounds,
    run_rounds,
    run_rounds_async,
)
from .transport import CancelScope

if TYPE_CHECKING:
    from typing import Any, Mapping

    from .client import ChatCompletionStream

#: Per-call options that go to the client, not into the body; a per-call None leaves the default.
_CONV_REQUEST_OPTIONS = ("timeout", "extra_headers", "extra_body", "extra_query")


#: Options of the tool loop: constructor defaults and per call, never sent as body fields.
TOOL_OPTION_NAMES = ("tools", "max_tool_rounds", "confirm", "tool_errors", "on_tool_call", "on_tool_result")


def split_tool_options(kwargs: dict[str, Any], owner: str) -> dict[str, Any]:
    """Pop the tool-loop options out of ``kwargs`` and check them (``tools`` becomes a
    :class:`ToolSet`, so a bad annotation fails here, not during a conversation); a ``None``
    value is left out (per call: "unset the default").

    :raises TypeError: a tool's unsupported annotation, a callback that is not callable
    :raises ValueError: a bad tool name, two tools with one name, a bad ``max_tool_rounds`` or
        ``tool_errors``
    """
    options = {name: kwargs.pop(name) for name in TOOL_OPTION_NAMES if name in kwargs}
    out = {name: value for name, value in options.items() if value is not None}
    tools = out.get("tools")
    if tools is not None and not isinstance(tools, ToolSet):
        out["tools"] = ToolSet(tools)
    if "max_tool_rounds" in out:
        check_max_rounds(out["max_tool_rounds"])
    if out.get("tool_errors", "return") not in ("return", "raise"):
        raise ValueError(
            "%s: tool_errors must be 'return' (tell the model) or 'raise', got %r" % (owner, out["tool_errors"])
        )
    for name in ("confirm", "on_tool_call", "on_tool_result"):
        if name in out and not callable(out[name]):
            raise TypeError("%s: %s must be a function, not %s" % (owner, name, type(out[name]).__name__))
    return out


def merge_request_params(
    defaults: Mapping[str, Any], params: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(body, options)`` for a ``Chat``/``GroupChat`` call: the default parameters with this
    call's over them, then the request options split out (:func:`split_request_options`), so
    ``extra_headers`` / ``extra_body`` / ``timeout`` given as defaults act as they do per call.

    ``None`` means "unset" (requests' rule): a body parameter given as ``None`` for a call is
    left out of that call's body, default or not (``Chat(temperature=0.2).request("hi",
    temperature=None)`` sends no ``temperature``), and a default that is ``None`` is never sent.
    A request option (``timeout``, ``extra_headers`` ...) given as ``None`` keeps its default.
    JSON ``null`` itself can still be sent through ``extra_body``.
    """
    body = {name: value for name, value in defaults.items() if value is not None}
    for name, value in params.items():
        if value is not None:
            body[name] = value
        elif name not in _CONV_REQUEST_OPTIONS:
            body.pop(name, None)
    return body, split_request_options(body)


def check_default_params(params: Mapping[str, Any], owner: str) -> None:
    """Refuse at construction default parameters that would fail every request: a ``model``
    that is not text (TypeError), a value that is not JSON (a set, an object: ValueError
    naming the parameter)."""
    import json

    model = params.get("model")
    if model is not None and not isinstance(model, str):
        raise TypeError("%s: model must be a string such as 'gpt-4o-mini', not %s" % (owner, type(model).__name__))
    for name, value in params.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise ValueError("%s: the parameter %s is not JSON (%s)" % (owner, name, exc)) from None
        except RecursionError:
            raise ValueError("%s: the parameter %s is nested too deeply to be sent as JSON" % (owner, name)) from None


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
    if isinstance(api_key, str):
        _client_check_key(api_key, "reset_api_key: the key")
    client.api_key = api_key


class BaseConversation:
    """The base of :class:`Chat` and :class:`GroupChat` (not used on its own).

    :param api_key: a key or an :class:`AKPool` (None: ``OPENAI_API_KEY``, or no key)
    :param client: an existing :class:`OpenAI` to share (then no client options in ``kwargs``)
    :param kwargs: client options (popped) and default request parameters (kept as :attr:`params`)
    :param owner: the class name the errors speak of (``"Chat"``)
    :ivar params: the default request parameters; a call's keywords go over them
    :ivar last_request: the last body sent (with the history); :ivar last_response: its answer
    :ivar last_usage: the last answer's ``usage`` (None if it had none); :ivar total_usage: the sums
    """

    def __init__(self, api_key: str | AKPool | None, client: OpenAI | None, kwargs: dict[str, Any], owner: str) -> None:
        self._client = client_from_options(api_key, client, kwargs, owner)
        check_json_text(kwargs, "%s(...)" % owner)  # NaN or a lone surrogate would fail every request
        check_default_params(kwargs, "%s(...)" % owner)
        self._owner = owner
        self._tool_defaults: dict[str, Any] = {}
        self.params: dict[str, Any] = kwargs
        self._lock = threading.Lock()
        self.last_request: dict[str, Any] | None = None
        self.last_response: Any = None
        self.last_usage: dict[str, Any] | None = None
        self.total_usage: dict[str, int] = {}

    @property
    def client(self) -> OpenAI:
        """The low-level client this conversation sends through."""
        return self._client

    def reset_api_key(self, api_key: str | AKPool) -> None:
        """Use another key or :class:`AKPool` from the next request on."""
        reset_client_key(self._client, api_key)

    def _request_body(self, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(body without messages, client options)`` of one call (see :func:`merge_request_params`).

        :raises ValueError: no model, neither as a default nor for this call
        """
        body, options = merge_request_params(self.params, params)
        if not body.get("model"):
            raise ValueError(
                "no model given: use %s(model='gpt-4o-mini', ...) or request(..., model=...)" % self._owner
            )
        return body, options

    def _note_answer(self, request: dict[str, Any], response: Any, usage: object, rounds: object = ()) -> None:
        """Record an exchange's ``last_*`` and add its usage (the caller holds ``_lock``);
        ``rounds``: every round's usage, when there were tool rounds."""
        self.last_request = request
        self.last_response = response
        self.last_usage = usage if isinstance(usage, dict) else None
        for each in rounds or (usage,):  # type: ignore[attr-defined]
            add_usage(self.total_usage, each)

    # -- tools -----------------------------------------------------------------------------------
    def _tool_loop(self, params: dict[str, Any], body: dict[str, Any]) -> ToolLoop | None:
        """The tool loop of one call (this call's tool options over the defaults; ``None``
        unsets one), with the tools' schemas put into ``body``; None when no tools are offered."""
        given = {name: params[name] for name in TOOL_OPTION_NAMES if name in params}
        options = dict(self._tool_defaults)
        options.update(split_tool_options(params, self._owner))
        for name, value in given.items():
            if value is None:
                options.pop(name, None)
        toolset = options.get("tools")
        if not toolset:
            return None
        body["tools"] = toolset.schemas()
        return ToolLoop(
            toolset,
            max_rounds=options.get("max_tool_rounds", DEFAULT_MAX_TOOL_ROUNDS),
            confirm=options.get("confirm"),
            tool_errors=options.get("tool_errors", "return"),
            on_call=options.get("on_tool_call"),
            on_result=options.get("on_tool_result"),
            secrets=self._client._secrets(),
        )

    def _send_rounds(self, body: dict[str, Any], options: dict[str, Any], loop: ToolLoop | None) -> Exchange:
        """One exchange, every tool round of it, through :meth:`OpenAI.complete`."""
        return run_rounds(lambda request: self._send(request, options), body, loop, self._client._secrets())

    async def _send_rounds_async(
        self, body: dict[str, Any], options: dict[str, Any], loop: ToolLoop | None
    ) -> Exchange:
        """:meth:`_send_rounds` for the async twins: requests in worker threads, ``async def``
        tools awaited on this event loop; cancelling the task cancels the whole exchange."""
        send = self._send_async
        return await run_rounds_async(lambda request: send(request, options), body, loop, self._client._secrets())

    def _send(self, body: dict[str, Any], options: dict[str, Any], cancel: CancelScope | None = None) -> dict[str, Any]:
        """One whole answer through :meth:`OpenAI.complete` (a 200 without a choice raises)."""
        return self._client.complete(body, cancel=cancel, **options)

    async def _send_async(self, body: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
        """:meth:`_send` in a worker thread; cancelling the awaiting task cuts the connection."""
        scope = CancelScope()
        send = self._send
        result: dict[str, Any] = await offload(lambda: send(body, options, scope), scope)
        return result

    def _open_stream(
        self, body: dict[str, Any], options: dict[str, Any], cancel: CancelScope | None = None
    ) -> ChatCompletionStream:
        """A streamed answer through :meth:`OpenAI.stream` (``body`` says ``"stream": true``)."""
        return self._client.stream(body, cancel=cancel, **options)
