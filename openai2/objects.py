"""Parsed JSON that also allows attribute access: ``r.choices[0].message.content``.

Responses stay plain ``dict``/``list`` subclasses, so ``r["choices"][0]["message"]["content"]``,
``r.get("usage")`` and ``json.dumps(r)`` keep working.  Nested values are wrapped lazily, the
first time they are reached (and stored back, so a later mutation sticks): parsing a stream
chunk costs nothing extra unless the caller looks inside it.
"""

from __future__ import annotations

from .common import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any


def _obj_wrap(value: Any) -> Any:
    cls = type(value)
    if cls is dict:
        return AttrDict(value)
    if cls is list:
        return AttrList(value)
    return value


class AttrDict(dict):  # type: ignore[type-arg]
    """A ``dict`` whose keys are also attributes; a missing key reads as ``None``.

    ``None`` for a missing attribute mirrors the official SDK, where optional fields that the
    server did not send are ``None`` (``message.tool_calls`` on a plain answer, say).
    """

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self[name] if name in self else None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, key: Any) -> Any:
        value = dict.__getitem__(self, key)
        cls = type(value)
        if cls is dict or cls is list:
            value = _obj_wrap(value)
            dict.__setitem__(self, key, value)
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        return self[key] if key in self else default

    def to_dict(self) -> dict[str, Any]:
        """A deep plain-``dict`` copy (what ``model_dump()`` gives in the official SDK)."""
        import json

        return json.loads(json.dumps(self))  # type: ignore[no-any-return]

    model_dump = to_dict

    def __repr__(self) -> str:
        return "AttrDict(%s)" % dict.__repr__(self)


class AttrList(list):  # type: ignore[type-arg]
    """A ``list`` whose ``dict`` items come out as :class:`AttrDict`."""

    __slots__ = ()

    def __getitem__(self, index: Any) -> Any:
        value = list.__getitem__(self, index)
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        cls = type(value)
        if cls is dict or cls is list:
            value = _obj_wrap(value)
            list.__setitem__(self, index, value)
        return value

    def __iter__(self) -> Any:
        for i in range(len(self)):
            yield self[i]


def to_attr(value: Any) -> Any:
    """Wrap parsed JSON (a dict or list) for attribute access; other values pass through."""
    return _obj_wrap(value)
