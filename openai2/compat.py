"""COMPATIBILITY ONLY: the pre-1.0 ``openai`` module-level interface, so old tutorials run as-is.

    import openai2 as openai
    openai.api_key = "sk-..."
    openai.proxy = "socks5://127.0.0.1:1080"      # or {"https": "http://..."}
    openai.api_base = "https://api.example.com/v1"
    r = openai.ChatCompletion.create(model="gpt-3.5-turbo", messages=[...])
    r.choices[0].message.content == r["choices"][0]["message"]["content"]
    r = await openai.ChatCompletion.acreate(model=..., messages=[...])   # old async code
    except openai.error.RateLimitError: ...                             # old except clauses

Settings are read from the ``openai2`` module's attributes at each call.  One
``HTTPTransport`` (one connection pool) is shared by every call with the same proxy setting, so
rotating ``openai.api_key`` reuses connections instead of opening one per key; the clients built
over it are kept in a small LRU cache (``_COMPAT_MAX_CLIENTS``).  New code should use
``OpenAI`` or ``Chat``.

``openai.error`` (also ``import openai2.error`` and ``from openai2.error import ...``) is a small
module object built here and registered in ``sys.modules`` as ``<package>.error``: its names
(``RateLimitError``, ``InvalidRequestError``, ``PermissionError`` ...) cannot be top-level names
of the package, where ``PermissionError`` would shadow the builtin (in the single-file build all
modules share one namespace).  Each old name is the openai2 class, or tuple of classes, that is
raised where pre-1.0 ``openai`` raised it (``api_requestor.handle_error_response`` of 0.28), so
an old ``except`` clause catches what it used to.  Pre-1.0 classes were siblings under
``OpenAIError``; openai2's nest (``APIStatusError`` under ``APIError``), so an old name never
maps onto a class that would also catch its siblings' errors.  The caught errors also answer
0.28's attribute names (read-only): ``http_status`` (the status code, or None), ``user_message``
(the message) and ``json_body`` (the body when it is a JSON object, else None).
"""

from __future__ import annotations

import collections
import sys
import threading

from .aio import PieceChannel, offload, start_producer
from .client import ChatCompletionStream, OpenAI, split_request_options
from .common import TYPE_CHECKING
from .errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    OpenAIError,
    PermissionDeniedError,
    RateLimitError,
    RequestCancelledError,
    ResponseTooLargeError,
    UnprocessableEntityError,
)
from .objects import AttrDict, to_attr
from .transport import CancelScope, HTTPTransport

if TYPE_CHECKING:
    from typing import Any

#: Clients kept (least recently used evicted first); they share the transports below, so an
#: evicted client needs no closing.
_COMPAT_MAX_CLIENTS = 16
_compat_clients: collections.OrderedDict[tuple[Any, ...], OpenAI] = collections.OrderedDict()
#: One transport (connection pool) per proxy setting, closed at exit.
_compat_transports: dict[Any, HTTPTransport] = {}
_compat_lock = threading.Lock()


def _compat_settings_module() -> Any:
    # In the package this module is "<pkg>.compat"; in the single-file build it is the package.
    name = __name__.rpartition(".")[0] if __name__.endswith(".compat") else __name__
    return sys.modules[name]


class _CompatUnraisedError(OpenAIError):
    """Pre-1.0 names openai2 never raises (``InvalidAPIType``, ``SignatureVerificationError``):
    an old ``except`` clause naming them must not fail with ``AttributeError``."""


#: pre-1.0 ``openai.error`` name -> what openai2 raises in that case.  0.28 raised:
#: RateLimitError for 429; InvalidRequestError for 400, 404 and 415; AuthenticationError 401;
#: PermissionError 403; TryAgain 409; ServiceUnavailableError 503; APIError for any other
#: status (other 5xx, 422, ...) and unusable bodies; Timeout and APIConnectionError for
#: requests' timeouts and other network failures.  Limits of a mapping onto openai2's classes:
#: every 5xx is one class here (``InternalServerError``), so both ServiceUnavailableError and
#: APIError catch a 503 or a 500, and the first clause listed wins; a status without a class
#: of its own (402, 413, 415 ...) is a plain ``APIStatusError``, caught by OpenAIError only;
#: APIConnectionError also catches timeouts (``APITimeoutError`` is a subclass).
_COMPAT_ERROR_NAMES: dict[str, Any] = {
    "OpenAIError": OpenAIError,
    "APIError": (InternalServerError, UnprocessableEntityError, ResponseTooLargeError),
    "TryAgain": ConflictError,
    "Timeout": APITimeoutError,
    "APIConnectionError": APIConnectionError,
    "InvalidRequestError": (BadRequestError, NotFoundError),
    "AuthenticationError": AuthenticationError,
    "PermissionError": PermissionDeniedError,
    "RateLimitError": RateLimitError,
    "ServiceUnavailableError": InternalServerError,
    "InvalidAPIType": _CompatUnraisedError,
    "SignatureVerificationError": _CompatUnraisedError,
}


def _compat_error_module() -> Any:
    """Build ``<package>.error`` and register it in ``sys.modules`` (see the module docstring)."""
    import types

    package = __name__.rpartition(".")[0] if __name__.endswith(".compat") else __name__
    if package == "__main__":  # the single file run as a script registers itself as openai2
        package = "openai2"
    module = types.ModuleType(
        package + ".error",
        "COMPATIBILITY ONLY: the pre-1.0 ``openai.error`` names, mapped onto openai2's exceptions.",
    )
    for name, value in _COMPAT_ERROR_NAMES.items():
        setattr(module, name, value)
    module.__all__ = sorted(_COMPAT_ERROR_NAMES)  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    return module


#: ``openai.error``: ``import openai2 as openai`` then ``except openai.error.RateLimitError``.
error = _compat_error_module()


def _compat_client() -> OpenAI:
    module = _compat_settings_module()
    proxy = getattr(module, "proxy", None)
    if isinstance(proxy, dict):
        proxy = proxy.get("https") or proxy.get("http") or None
    settings = (
        getattr(module, "api_key", None),
        getattr(module, "api_base", None) or getattr(module, "base_url", None),
        getattr(module, "organization", None),
        proxy,
    )
    with _compat_lock:
        client = _compat_clients.get(settings)
        if client is not None:
            _compat_clients.move_to_end(settings)
            return client
        api_key, base, org, proxy = settings
        transport = _compat_transports.get(proxy)
        if transport is None:
            transport = HTTPTransport(proxy=proxy)
            if not _compat_transports:
                import atexit

                atexit.register(_compat_close_all)
            _compat_transports[proxy] = transport
        client = OpenAI(api_key=api_key, base_url=base, organization=org, transport=transport)
        _compat_clients[settings] = client
        while len(_compat_clients) > _COMPAT_MAX_CLIENTS:
            _compat_clients.popitem(last=False)
        return client


def _compat_close_all() -> None:
    """Close the shared transports' connections (at exit, so no socket is left to the collector)."""
    with _compat_lock:
        transports = list(_compat_transports.values())
        _compat_transports.clear()
        _compat_clients.clear()
    for transport in transports:
        transport.close()


class ChatCompletion:
    """COMPATIBILITY: ``openai.ChatCompletion.create(model=..., messages=..., **params)``."""

    @staticmethod
    def create(**params: Any) -> Any:
        """Same as ``OpenAI().chat.completions.create(**params)`` with module-level settings.

        The old ``request_timeout`` parameter is accepted as ``timeout``.
        """
        if "request_timeout" in params:
            params["timeout"] = params.pop("request_timeout")
        return _compat_client().chat.completions.create(**params)

    @staticmethod
    async def acreate(**params: Any) -> Any:
        """COMPATIBILITY: ``await openai.ChatCompletion.acreate(...)``, the old async call.

        The request runs in a worker thread (as ``Chat.async_request`` does); cancelling the
        awaiting task shuts its connection down at once.  With ``stream=True`` the result is an
        async iterator of chunks (``async for chunk in await ...acreate(..., stream=True)``).
        """
        if "request_timeout" in params:
            params["timeout"] = params.pop("request_timeout")
        client = _compat_client()
        body = dict(params)
        options = split_request_options(body)
        if "messages" in body and not isinstance(body["messages"], (list, tuple)):
            raise TypeError("messages must be a list of {'role': ..., 'content': ...} dicts")
        scope = CancelScope()
        if body.get("stream"):
            stream = await offload(lambda: client.stream(body, cancel=scope, answer_required=False, **options), scope)
            return _CompatAsyncStream(stream, scope)
        return to_attr(
            await offload(lambda: client.complete(body, cancel=scope, answer_required=False, **options), scope)
        )


class _CompatAsyncStream:
    """What ``acreate(stream=True)`` returns: the chunks of a ``ChatCompletionStream``, read in a
    worker thread and handed to the event loop in batches (``aio.PieceChannel``).

    Leaving the ``async for`` early, ``aclose()`` or cancelling the task cancels the request.
    """

    def __init__(self, stream: ChatCompletionStream, scope: CancelScope) -> None:
        import asyncio

        self._compat_stream = stream
        self._compat_scope = scope
        self._compat_channel = PieceChannel(asyncio.get_running_loop())
        self._compat_pending: collections.deque[AttrDict] = collections.deque()
        start_producer(self._compat_produce)

    def _compat_produce(self) -> None:
        error: BaseException | None = None
        try:
            for chunk in self._compat_stream:
                self._compat_channel.put_many([chunk])
        except RequestCancelledError as exc:
            if not self._compat_scope.cancelled:
                error = exc
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            error = exc
        finally:
            self._compat_stream.close()
        self._compat_channel.finish(error)

    @property
    def accumulator(self) -> Any:
        """The assembled answer so far (see ``ChatCompletionStream.accumulator``)."""
        return self._compat_stream.accumulator

    def __aiter__(self) -> _CompatAsyncStream:
        return self

    async def __anext__(self) -> AttrDict:
        import asyncio

        if not self._compat_pending:
            try:
                batch = await self._compat_channel.get_batch()
            except asyncio.CancelledError:
                self._compat_scope.cancel()
                raise
            if not batch:
                raise StopAsyncIteration
            self._compat_pending.extend(batch)
        return self._compat_pending.popleft()

    async def aclose(self) -> None:
        """Stop reading: the request is cancelled and its connection discarded."""
        self._compat_scope.cancel()

    async def __aenter__(self) -> _CompatAsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        self._compat_scope.cancel()
