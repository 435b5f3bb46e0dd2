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
    cls = value.__class__
    if cls is dict:
        return AttrDict(value)
    if cls is list:
        return AttrList(value)
    return value


# The base types' own slots, called directly: no Python-level __getitem__ in between.
_obj_dict_getitem = dict.__getitem__
_obj_dict_get = dict.get
_obj_dict_setitem = dict.__setitem__
_obj_list_getitem = list.__getitem__
_obj_list_setitem = list.__setitem__


class AttrDict(dict):  # type: ignore[type-arg]
    """A ``dict`` whose keys are also attributes; a missing key reads as ``None``.

    ``None`` for a missing attribute mirrors the official SDK, where optional fields that the
    server did not send are ``None`` (``message.tool_calls`` on a plain answer, say).
    """

    __slots__ = ()

    def __getattribute__(self, name: str) -> Any:
        # ``__getattr__`` would be simpler, but CPython before 3.12 reaches it only through a
        # failed normal lookup, which costs ~0.5 us per access; the keys are looked up first here.
        # Names of the class (methods, dunders) keep their normal lookup, so methods win over keys.
        if name in _obj_class_names:
            try:
                return _obj_getattribute(self, name)
            except AttributeError:
                pass
        value = _obj_dict_get(self, name, _obj_missing)
        cls = value.__class__
        if cls is dict:
            value = AttrDict(value)
            _obj_dict_setitem(self, name, value)
        elif cls is list:
            value = AttrList(value)
            _obj_dict_setitem(self, name, value)
        elif value is _obj_missing:
            return _obj_missing_attribute(self, name)
        if name[:1] == "_" and name[:2] == "__" and name[-2:] == "__":
            raise AttributeError(name)  # a dunder-shaped key is not an attribute (copy/pickle probe them)
        return value

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _obj_class_names.update(dir(cls))  # a subclass's own attributes win over keys too

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, key: Any) -> Any:
        value = _obj_dict_getitem(self, key)
        cls = value.__class__
        if cls is dict:
            value = AttrDict(value)
            _obj_dict_setitem(self, key, value)
        elif cls is list:
            value = AttrList(value)
            _obj_dict_setitem(self, key, value)
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


_obj_getattribute = object.__getattribute__
#: Attribute names found on AttrDict and its subclasses (normal lookup first for these).
_obj_class_names = set(dir(AttrDict))


#: dict.get's default in AttrDict.__getattribute__: "no such key" without raising KeyError.
_obj_missing = object()


def _obj_missing_attribute(obj: AttrDict, name: str) -> Any:
    """Not a key: None, or AttributeError for a dunder name (copy/pickle probe for those)."""
    if name[:2] == "__" and name[-2:] == "__":
        return _obj_getattribute(obj, name)  # raises AttributeError (or finds a late class attribute)
    value = getattr(type(obj), name, _obj_missing)  # an attribute set on the class after import
    if value is not _obj_missing:
        return _obj_getattribute(obj, name)
    return None


class AttrList(list):  # type: ignore[type-arg]
    """A ``list`` whose ``dict`` items come out as :class:`AttrDict`."""

    __slots__ = ()

    def __getitem__(self, index: Any) -> Any:
        value = _obj_list_getitem(self, index)
        cls = value.__class__
        if cls is dict:
            value = AttrDict(value)
            _obj_list_setitem(self, index, value)
        elif cls is list:
            if index.__class__ is slice:
                return [self[i] for i in range(*index.indices(len(self)))]
            value = AttrList(value)
            _obj_list_setitem(self, index, value)
        return value

    def __iter__(self) -> Any:
        for i in range(len(self)):
            yield self[i]


def to_attr(value: Any) -> Any:
    """Wrap parsed JSON (a dict or list) for attribute access; other values pass through."""
    return _obj_wrap(value)
