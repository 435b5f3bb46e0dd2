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
from .transport import CancelScope

if TYPE_CHECKING:
    from typing import Any, Mapping

    from .client import ChatCompletionStream

#: Per-call options that go to the client, not into the body; a per-call None leaves the default.
_CONV_REQUEST_OPTIONS = ("timeout", "extra_headers", "extra_body", "extra_query")


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


def add_usage(total: dict[str, int], usage: object) -> None:
    """Add a response's ``usage`` token counts to a running ``total`` (ignores what is not a count)."""
    if isinstance(usage, dict):
        for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
            value = usage.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                total[name] = total.get(name, 0) + value


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

    def _note_answer(self, request: dict[str, Any], response: Any, usage: object) -> None:
        """Record an exchange's ``last_*`` and add its usage (the caller holds ``_lock``)."""
        self.last_request = request
        self.last_response = response
        self.last_usage = usage if isinstance(usage, dict) else None
        add_usage(self.total_usage, usage)

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
