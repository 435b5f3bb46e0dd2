"""COMPATIBILITY ONLY: the pre-1.0 ``openai`` module-level interface, so old tutorials run as-is.

    import openai2 as openai
    openai.api_key = "sk-..."
    openai.proxy = "socks5://127.0.0.1:1080"      # or {"https": "http://..."}
    openai.api_base = "https://api.example.com/v1"
    r = openai.ChatCompletion.create(model="gpt-3.5-turbo", messages=[...])
    r.choices[0].message.content == r["choices"][0]["message"]["content"]

Settings are read from the ``openai2`` module's attributes at each call.  One
``HTTPTransport`` (one connection pool) is shared by every call with the same proxy setting, so
rotating ``openai.api_key`` reuses connections instead of opening one per key; the clients built
over it are kept in a small LRU cache (``_COMPAT_MAX_CLIENTS``).  New code should use
``OpenAI`` or ``Chat``.
"""

from __future__ import annotations

import collections
import sys
import threading

from .client import OpenAI
from .common import TYPE_CHECKING
from .transport import HTTPTransport

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
