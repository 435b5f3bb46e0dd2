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
    from typing import Iterable, Mapping

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

    Keys under 12 characters show at most their last two characters (8 to 11 characters) and
    nothing at all under 8 characters (``…``): four characters would give too much of them away.
    """
    if not isinstance(key, str) or not key:
        return "<no key>"
    if len(key) < 12:
        return "…" if len(key) < _COMMON_SHORT_KEY else "…" + key[-2:]
    dash = key.find("-")
    prefix = key[: dash + 1] if 0 < dash < 8 else ""
    return prefix + "…" + key[-4:]


#: Keys shorter than this are masked only where they stand as a whole token (see :func:`redact`).
_COMMON_SHORT_KEY = 8
#: The characters that make a word for the whole-token rule: ASCII letters, digits, underscore.
_COMMON_WORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def _common_forms(secret: str) -> tuple[tuple[str, str], ...]:
    """``((form, masked form), ...)``: the key as sent and, when different, as JSON escapes it."""
    masked = mask_key(secret)
    if '"' not in secret and "\\" not in secret and secret.isprintable() and secret.isascii():
        return ((secret, masked),)
    import json

    forms = [secret]
    for form in (json.dumps(secret, ensure_ascii=False)[1:-1], json.dumps(secret)[1:-1]):
        if form not in forms:
            forms.append(form)
    return tuple((form, masked) for form in forms)


def _common_mask_tokens(text: str, form: str, masked: str) -> str:
    """``text`` with each whole-token occurrence of ``form`` replaced by ``masked``."""
    out = []
    start = 0
    size = len(form)
    pos = text.find(form)
    while pos != -1:
        end = pos + size
        if (pos == 0 or text[pos - 1] not in _COMMON_WORD) and (end == len(text) or text[end] not in _COMMON_WORD):
            out.append(text[start:pos])
            out.append(masked)
            start = end
            pos = text.find(form, end)
        else:
            pos = text.find(form, pos + 1)
    if not out:
        return text
    out.append(text[start:])
    return "".join(out)


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every occurrence of each secret in ``text`` by its masked form (:func:`mask_key`).

    The rules, for keys of every length:

    * a key of 8 characters or more is masked wherever it occurs, also inside a longer word;
    * a shorter key (local servers such as vLLM accept any ``--api-key``, ``abc`` say) is masked
      only where it stands as a whole token: the character before it and the character after
      it (if any) are not ASCII letters, digits or ``_``.  So the key ``abc`` is masked in
      ``Bearer abc``, ``"abc"``, ``key=abc;`` and ``abc你好``, but ``abcdef`` and ``x_abc`` are
      left alone;
    * a key is also masked in its JSON-escaped form (a key holding ``"``, ``\\`` or a control
      character such as a tab, as a server quoting it in a JSON text writes it);
    * longer keys are masked first, so a key that contains another key is masked whole.

    :param text: any text (an error message, a log line, an excerpt of a body)
    :param secrets: the keys to mask; empty and None entries are skipped
    :returns: ``text`` with the keys masked (the same string when none occurs)
    """
    if not text:
        return text
    pairs = []
    for secret in secrets:
        if secret and isinstance(secret, str):
            for form, masked in _common_forms(secret):
                if form in text:
                    pairs.append((form, masked, len(secret)))
    if not pairs:
        return text
    pairs.sort(key=lambda pair: -len(pair[0]))
    for form, masked, size in pairs:
        if size >= _COMMON_SHORT_KEY:
            text = text.replace(form, masked)
        else:
            text = _common_mask_tokens(text, form, masked)
    return text


_COMMON_SECRET_HEADER_WORDS = ("auth", "key", "token", "secret", "password", "cookie", "session", "signature")


def header_secrets(headers: Mapping[str, str] | None) -> list[str]:
    """The credentials among request headers (``default_headers``, ``extra_headers``, the
    headers a transport sends): values of headers named like a credential (``Authorization``,
    ``api-key``, ``x-api-key``, ``Cookie``, …), and the token after an auth scheme."""
    found: list[str] = []
    for name, value in (headers or {}).items():
        if not isinstance(name, str) or not isinstance(value, str):
            continue
        lowered = name.lower()
        if not any(word in lowered for word in _COMMON_SECRET_HEADER_WORDS):
            continue
        value = value.strip()
        _, _, token = value.partition(" ")
        token = token.strip()
        if token:
            found.append(token)  # "Bearer sk-…": the key alone is what a server echoes
        if value:
            found.append(value)
    return found
