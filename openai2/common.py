"""Small things every other module shares: the version, key masking, the lazy logger.

Nothing here imports more than ``os``/``sys``: ``import openai2`` must stay fast, so heavy
standard modules (json, ssl, urllib.request, logging, asyncio) are imported lazily where
they are first needed.
"""

from __future__ import annotations

import sys

__version__ = "0.1.0"

#: mypy treats any name ``TYPE_CHECKING`` as true; at run time it is False, and the
#: ``typing`` module (5 ms to import) is never loaded by openai2 itself.
TYPE_CHECKING = False

if TYPE_CHECKING:
    import logging
    from typing import Iterable

USER_AGENT = "openai2/%s Python/%s" % (__version__, ".".join(str(part) for part in sys.version_info[:3]))

_logger_cache: list[logging.Logger] = []


def get_logger() -> logging.Logger:
    """Return the ``openai2`` logger (with a NullHandler), importing logging on first use."""
    if not _logger_cache:
        import logging

        log = logging.getLogger("openai2")
        log.addHandler(logging.NullHandler())
        _logger_cache.append(log)
    return _logger_cache[0]


def mask_key(key: object) -> str:
    """Show an API key safely: ``sk-…abcd`` (prefix up to the first dash, last four).

    Short keys (under 12 characters) show nothing but their length class, since four
    characters would give away too much of them.
    """
    if not isinstance(key, str) or not key:
        return "<no key>"
    if len(key) < 12:
        return "…" if len(key) < 6 else "…" + key[-2:]
    dash = key.find("-")
    prefix = key[: dash + 1] if 0 < dash < 8 else ""
    return prefix + "…" + key[-4:]


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every occurrence of each secret in ``text`` by its masked form."""
    for secret in secrets:
        if secret and len(secret) >= 4 and secret in text:
            text = text.replace(secret, mask_key(secret))
    return text
