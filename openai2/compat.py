"""COMPATIBILITY ONLY: the pre-1.0 ``openai`` module-level interface, so old tutorials run as-is.

    import openai2 as openai
    openai.api_key = "sk-..."
    openai.proxy = "socks5://127.0.0.1:1080"      # or {"https": "http://..."}
    openai.api_base = "https://api.example.com/v1"
    r = openai.ChatCompletion.create(model="gpt-3.5-turbo", messages=[...])
    r.choices[0].message.content == r["choices"][0]["message"]["content"]

Settings are read from the ``openai2`` module's attributes at each call; one client per distinct
setting combination is kept, so connections are reused between calls.  New code should use
``OpenAI`` or ``Chat``.
"""

from __future__ import annotations

import sys
import threading

from .client import OpenAI
from .common import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

_compat_clients: dict[tuple[Any, ...], OpenAI] = {}
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
        if client is None:
            api_key, base, org, proxy = settings
            client = OpenAI(api_key=api_key, base_url=base, organization=org, proxy=proxy)
            if not _compat_clients:
                import atexit

                atexit.register(_compat_close_all)
            _compat_clients[settings] = client
        return client


def _compat_close_all() -> None:
    """Close the cached clients' connections (at exit, so no socket is left to the collector)."""
    with _compat_lock:
        clients = list(_compat_clients.values())
        _compat_clients.clear()
    for client in clients:
        client.close()


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
