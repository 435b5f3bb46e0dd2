"""Python type hints -> JSON Schema, docstring parameter descriptions, and JSON values checked
against those schemas and converted back into the annotated Python shapes.

One implementation shared by tool calling (a function's parameters) and structured output (a
dataclass, a TypedDict, ``list[X]``).  Public functions:

* :func:`parse_docstring` -- a docstring's summary and its parameters' descriptions (Google,
  reST/epytext and NumPy styles).
* :func:`schema_for` -- the JSON Schema of one annotation; ``strict=True`` gives OpenAI's
  strict-mode subset (``additionalProperties: false`` and every property required everywhere);
  :func:`strict_schema` rewrites a hand-written schema the same way.
* :func:`function_parameters` -- a callable's description and its parameters' object schema.
* :func:`validate` -- every way a JSON value misses a schema, each as ``"$.path: message"``;
  :func:`check_schema` refuses up front a schema (a user's dict) that validate() cannot honour.
* :func:`from_json` -- a parsed JSON value converted into an annotation's Python shape;
  :func:`function_arguments` -- a model's arguments converted for calling a function.

The type mapping::

    str -> string      int -> integer      float -> number      bool -> boolean
    None -> null       Any / object / no annotation -> {} (any value; not in strict mode)
    list[X], List[X], Sequence[X], tuple[X, ...] -> array of X      bare list / tuple -> array
    tuple[X, Y] -> array with prefixItems, minItems = maxItems = 2 (not in strict mode)
    dict[str, X], Dict, Mapping[str, X] -> object, additionalProperties X (not in strict mode)
    Literal[...] -> enum (+ the values' JSON type)    Enum subclass -> enum of its values
    Optional[X], X | None -> X or null (``["X", "null"]`` for scalars, else anyOf)
    Union[A, B] -> anyOf       Annotated[X, "text"] -> X with that description
    dataclass, TypedDict -> object with properties and required (recursive ones via $defs/$ref)

Nothing heavy is imported at module level (``typing``, ``dataclasses``, ``enum``, ``inspect``,
``re`` and ``json`` are imported on first use), so ``import openai2`` stays fast.
"""

from __future__ import annotations

import sys


class _schema_flags:  # noqa: N801 - a namespace, not a type
    """mypy reads any ``X.TYPE_CHECKING`` test as true; at run time this one is False.

    (schema imports no other openai2 module, so it cannot use common's flag.)
    """

    TYPE_CHECKING = False


if _schema_flags.TYPE_CHECKING:
    from typing import Any, Callable

#: What an unsupported annotation's error suggests instead.
_SCHEMA_SUPPORTED = "use str, int, float, bool, list, dict, Literal, Enum, a dataclass or TypedDict"

#: At most this many errors from one validate() (then a last line saying more were cut).
_SCHEMA_MAX_ERRORS = 20

#: Nesting deeper than this (a value, or $ref hops without descending) is reported, not followed.
_SCHEMA_MAX_DEPTH = 200

#: Docstring sections that describe parameters (Google headers, NumPy headers), lower case.
_SCHEMA_PARAM_SECTIONS = frozenset(
    (
        "args",
        "arguments",
        "parameters",
        "params",
        "keyword args",
        "keyword arguments",
        "other parameters",
        "other arguments",
        "attributes",
        "fields",
    )
)

#: Other sections: they end the summary, their entries are not parameters.
_SCHEMA_OTHER_SECTIONS = frozenset(
    (
        "returns",
        "return",
        "raises",
        "raise",
        "yields",
        "yield",
        "receives",
        "warns",
        "examples",
        "example",
        "note",
        "notes",
        "warning",
        "warnings",
        "see also",
        "seealso",
        "references",
        "todo",
        "methods",
    )
)

_schema_regex_cache: dict[str, Any] = {}


def _schema_regexes() -> dict[str, Any]:
    """The docstring patterns, compiled on first use (``re`` is not imported at module level)."""
    if not _schema_regex_cache:
        import re

        _schema_regex_cache.update(
            # Google entry: ``name (type): text`` / ``name: text`` / ``*args: text``
            google=re.compile(r"(\*{0,2}\w+)\s*(?:\((.*?)\))?\s*:(?:\s+(.*))?$"),
            # NumPy entry: ``x, y : int`` / ``x``
            numpy=re.compile(r"(\*{0,2}\w+(?:\s*,\s*\*{0,2}\w+)*)\s*(?::.*)?$"),
            # reST / epytext parameter field: ``:param int x: text`` / ``@param x: text``
            rest_param=re.compile(r"[:@](?:param|parameter|arg|argument|key|keyword)\s+([^:]*?)\s*:(.*)$"),
            # any reST / epytext field that belongs to the parameter/returns/raises part
            rest_field=re.compile(
                r"[:@](?:param|parameter|arg|argument|key|keyword|type|returns?|rtype|raises?|except|"
                r"exception|yields?|ytype|var|ivar|cvar|vartype|meta)\b"
            ),
        )
    return _schema_regex_cache


# --------------------------------------------------------------------------------------------
# Docstrings


def _schema_indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _schema_google_header(line: str) -> str | None:
    """``"Args:"`` -> ``"args"``; None when the line is not a known Google section header."""
    text = line.strip()
    if not text.endswith(":"):
        return None
    name = " ".join(text[:-1].split()).lower()
    if name in _SCHEMA_PARAM_SECTIONS or name in _SCHEMA_OTHER_SECTIONS:
        return name
    return None


def _schema_numpy_header(lines: list[str], i: int) -> str | None:
    """A NumPy section title (any title underlined with ``---``); None when line ``i`` is not one."""
    if i + 1 >= len(lines):
        return None
    title, rule = lines[i].strip(), lines[i + 1].strip()
    if title and len(rule) >= 3 and set(rule) == {"-"} and _schema_indent(lines[i]) == _schema_indent(lines[i + 1]):
        return " ".join(title.split()).lower()
    return None


def _schema_section_start(lines: list[str], i: int) -> bool:
    line = lines[i]
    head = line.strip().split(":", 1)[0].lower()
    return bool(
        _schema_google_header(line) is not None
        or (head in ("returns", "return", "raises", "yields") and ":" in line)  # "Returns: the id."
        or _schema_numpy_header(lines, i) is not None
        or _schema_regexes()["rest_field"].match(line.strip())
    )


def _schema_join(parts: list[str]) -> str:
    return " ".join(" ".join(parts).split())


def _schema_google_section(lines: list[str], i: int, found: dict[str, list[str]]) -> int:
    """Read the Google section whose header is line ``i``; returns the index after it."""
    header_indent = _schema_indent(lines[i])
    is_params = _schema_google_header(lines[i]) in _SCHEMA_PARAM_SECTIONS
    entry = _schema_regexes()["google"]
    entry_indent: int | None = None
    current: list[str] | None = None
    j = i + 1
    while j < len(lines):
        line = lines[j]
        if not line.strip():
            j += 1
            continue
        indent = _schema_indent(line)
        if entry_indent is None:
            entry_indent = indent
        if indent < entry_indent or (indent <= header_indent and _schema_section_start(lines, j)):
            break
        match = entry.match(line.strip()) if indent == entry_indent else None
        if match:
            current = [match.group(3) or ""]
            if is_params:
                found[match.group(1)] = current
        elif current is not None:
            current.append(line.strip())
        j += 1
    return j


def _schema_numpy_section(lines: list[str], i: int, found: dict[str, list[str]]) -> int:
    """Read the NumPy section titled on line ``i`` (underlined on ``i + 1``)."""
    header_indent = _schema_indent(lines[i])
    is_params = _schema_numpy_header(lines, i) in _SCHEMA_PARAM_SECTIONS
    entry = _schema_regexes()["numpy"]
    current: list[str] | None = None
    j = i + 2
    while j < len(lines):
        line = lines[j]
        if not line.strip():
            j += 1
            continue
        indent = _schema_indent(line)
        if indent < header_indent or (indent == header_indent and _schema_section_start(lines, j)):
            break
        if indent == header_indent:
            match = entry.match(line.strip())
            current = [] if match else None
            if current is not None and match and is_params:
                for name in match.group(1).split(","):
                    found[name.strip()] = current  # ``x, y : int`` share one description
        elif current is not None:
            current.append(line.strip())
        j += 1
    return j


def _schema_rest_field(lines: list[str], i: int, found: dict[str, list[str]]) -> int:
    """Read one reST/epytext field (``:param x: text`` and its more-indented continuation)."""
    line = lines[i]
    match = _schema_regexes()["rest_param"].match(line.strip())
    parts = [match.group(2)] if match else []
    indent = _schema_indent(line)
    j = i + 1
    while j < len(lines) and (not lines[j].strip() or _schema_indent(lines[j]) > indent):
        parts.append(lines[j].strip())
        j += 1
    if match and match.group(1).split():
        found[match.group(1).split()[-1]] = parts  # ``:param int x:`` -> x
    return j


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """A docstring's summary and its parameters' descriptions.

    The summary is the text before the first parameter/returns/raises/... section, whitespace
    normalised to one line (paragraphs joined by a space).  Parameters are read from Google
    sections (``Args:``, ``Arguments:``, ``Parameters:``, ``Keyword Args:``, ``Attributes:``;
    entries ``name (type): text`` continued on more-indented lines), reST/epytext fields
    (``:param x: text``, ``:param int x: text``, ``@param x: text``; ``:type x:``,
    ``:returns:``, ``:raises E:`` are not parameters) and NumPy sections (``Parameters`` or
    ``Attributes`` underlined with dashes, ``x : int`` then indented text).  Descriptions are
    whitespace normalised; a parameter documented without text is left out.  Raw indented
    docstrings and ``inspect.cleandoc``'d ones give the same result.

    :param doc: the docstring (``fn.__doc__``); None or empty gives ``("", {})``
    :returns: ``(summary, {parameter name: description})``
    """
    if not doc or not doc.strip():
        return "", {}
    import inspect

    lines = inspect.cleandoc(doc).split("\n")
    found: dict[str, list[str]] = {}
    i = 0
    while i < len(lines) and not _schema_section_start(lines, i):
        i += 1
    summary = _schema_join(lines[:i])
    while i < len(lines):
        if _schema_google_header(lines[i]) is not None:
            i = _schema_google_section(lines, i, found)
        elif _schema_numpy_header(lines, i) is not None:
            i = _schema_numpy_section(lines, i, found)
        elif _schema_regexes()["rest_field"].match(lines[i].strip()):
            i = _schema_rest_field(lines, i, found)
        else:
            i += 1
    params = {name: _schema_join(parts) for name, parts in found.items()}
    return summary, {name: text for name, text in params.items() if text}


# --------------------------------------------------------------------------------------------
# Annotations: evaluating them, naming them, taking them apart


def _schema_type_name(tp: object) -> str:
    """How an error names an annotation: ``int``, ``datetime.datetime``, ``typing.List[int]``."""
    if isinstance(tp, type) and not getattr(tp, "__args__", None):
        module = getattr(tp, "__module__", "")
        qualname = getattr(tp, "__qualname__", tp.__name__)
        return qualname if module == "builtins" else "%s.%s" % (module, qualname)
    return repr(tp)


def _schema_eval_hint(exc: BaseException) -> str:
    """The fix for a common reason an annotation cannot be evaluated."""
    text = str(exc)
    if sys.version_info < (3, 9) and "not subscriptable" in text:
        return "; list[int] and dict[str, int] need Python 3.9+: write typing.List[int], typing.Dict[str, int]"
    if sys.version_info < (3, 10) and "unsupported operand type(s) for |" in text:
        return "; X | Y needs Python 3.10+: write typing.Optional[X] or typing.Union[X, Y]"
    if isinstance(exc, NameError):
        return "; is that name imported at run time (not only under `if TYPE_CHECKING:`)?"
    return ""


_schema_hint_cache: Any = None  # a WeakKeyDictionary: function or class -> its evaluated hints


def _schema_hints(obj: object, where: str, kind: str) -> dict[str, Any]:
    """``typing.get_type_hints(obj)`` (extras kept), or a TypeError naming the annotation that
    cannot be evaluated (``kind`` is "parameter" or "field").

    Cached per function or class (evaluating string annotations is most of the cost of a tool
    call's argument conversion); the dict returned is shared: do not change it.
    """
    global _schema_hint_cache
    import typing

    obj = getattr(obj, "__func__", obj)  # a bound method's hints are its function's
    if not isinstance(obj, type) and getattr(obj, "__annotations__", None) is None:
        return {}  # a builtin function or a C method: nothing annotated
    if _schema_hint_cache is None:
        import weakref

        _schema_hint_cache = weakref.WeakKeyDictionary()
    try:
        cached = _schema_hint_cache.get(obj)
    except TypeError:  # not weakly referenceable, not hashable
        cached = None
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    hints: dict[str, Any] | None
    try:
        # a class made by exec() without a module in sys.modules: get_type_hints looks its
        # module up (a KeyError on Python 3.8, 3.9 and PyPy); no module globals is all there is
        orphan: dict[str, Any] = {"globalns": {}} if isinstance(obj, type) and obj.__module__ not in sys.modules else {}
        if sys.version_info >= (3, 9):
            hints = typing.get_type_hints(obj, include_extras=True, **orphan)  # novermin
        else:
            hints = typing.get_type_hints(obj, **orphan)
    except Exception as exc:  # NameError, TypeError, SyntaxError ... from user annotations
        error = exc
        hints = _schema_hints_without_return(obj) if kind == "parameter" else None
    if hints is not None:
        try:
            _schema_hint_cache[obj] = hints
        except TypeError:
            pass
        return hints
    # Find which annotation fails, to name it: evaluate each one in the namespace
    # get_type_hints would have used.
    owners: list[object] = list(reversed(obj.__mro__)) if isinstance(obj, type) else [obj]
    for owner in owners:
        raw = owner.__dict__.get("__annotations__", {}) if isinstance(owner, type) else None
        if raw is None:
            raw = getattr(owner, "__annotations__", None) or {}
        if isinstance(owner, type):
            module = sys.modules.get(owner.__module__)
            globalns = dict(vars(module)) if module else {}
            localns: dict[str, Any] = dict(vars(owner))
        else:
            import inspect

            target = inspect.unwrap(owner) if callable(owner) else owner
            globalns = dict(getattr(target, "__globals__", {}))
            localns = {}
        for name, annotation in raw.items():
            if not isinstance(annotation, str):
                continue
            try:
                value: object = annotation
                for _ in range(3):  # "'Name'": a quoted annotation under `from __future__ import annotations`
                    if isinstance(value, str):
                        value = eval(value, globalns, localns)  # what typing.get_type_hints does
            except Exception as exc:
                label = "return annotation" if name == "return" else "%s %r" % (kind, name)
                raise TypeError(
                    "%s: %s: cannot evaluate the annotation %r (%s: %s%s)"
                    % (where, label, annotation, type(exc).__name__, exc, _schema_eval_hint(exc))
                ) from None
    raise TypeError(
        "%s: cannot evaluate its annotations (%s: %s%s)"
        % (where, type(error).__name__, error, _schema_eval_hint(error))
    ) from None


def _schema_hints_without_return(obj: object) -> dict[str, Any] | None:
    """A function's parameter hints when only its return annotation cannot be evaluated (a
    local class under ``from __future__ import annotations``): what a tool's arguments need does
    not depend on what it returns.  None when a parameter's annotation fails too."""
    import types
    import typing

    raw = getattr(obj, "__annotations__", None)
    if isinstance(obj, type) or not isinstance(raw, dict) or "return" not in raw:
        return None
    target = getattr(obj, "__wrapped__", obj)
    proxy = types.SimpleNamespace(
        __annotations__={k: v for k, v in raw.items() if k != "return"},
        __globals__=getattr(target, "__globals__", {}),
    )
    try:
        if sys.version_info >= (3, 9):
            return typing.get_type_hints(proxy, include_extras=True)  # novermin
        return typing.get_type_hints(proxy)
    except Exception:
        return None


def _schema_union_types() -> tuple[object, ...]:
    import types
    import typing

    union_type = getattr(types, "UnionType", None)  # X | Y, Python 3.10+
    return (typing.Union,) if union_type is None else (typing.Union, union_type)


def _schema_unwrap(tp: object) -> tuple[object, str | None]:
    """Strip ``Annotated``, ``Required``/``NotRequired`` and ``NewType``; returns the inner type and
    the first string of ``Annotated``'s metadata (its description), if any."""
    import typing

    description = None
    annotated = getattr(typing, "Annotated", None)  # Python 3.9+
    wrappers = tuple(w for w in (getattr(typing, "Required", None), getattr(typing, "NotRequired", None)) if w)
    while True:
        origin = typing.get_origin(tp)
        if annotated is not None and origin is annotated:
            for extra in getattr(tp, "__metadata__", ()):
                if isinstance(extra, str) and description is None:
                    description = extra
            tp = getattr(tp, "__origin__", tp)  # Annotated[X, ...].__origin__ is X
        elif origin is not None and origin in wrappers:  # Required[X], NotRequired[X]: Python 3.11+
            tp = typing.get_args(tp)[0]
        elif callable(tp) and hasattr(tp, "__supertype__"):  # typing.NewType
            tp = tp.__supertype__
        else:
            return tp, description


def _schema_is_typeddict(tp: object) -> bool:
    import typing

    is_typeddict = getattr(typing, "is_typeddict", None)  # Python 3.10+
    if is_typeddict is not None:
        return bool(is_typeddict(tp))
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__total__")


def _schema_is_dataclass(tp: object) -> bool:
    import dataclasses

    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _schema_is_enum(tp: object) -> bool:
    import enum

    return isinstance(tp, type) and issubclass(tp, enum.Enum)


def _schema_accepts_none(tp: object) -> bool:
    """Does the annotation itself allow None (Optional, Any, None, a Literal with None)?"""
    import typing

    tp, _ = _schema_unwrap(tp)
    if tp is None or tp is type(None) or tp is typing.Any or tp is object:
        return True
    origin = typing.get_origin(tp)
    if origin in _schema_union_types():
        return any(_schema_accepts_none(arg) for arg in typing.get_args(tp))
    if origin is typing.Literal:
        return None in _schema_literal_values(tp)
    return False


def _schema_literal_values(tp: object) -> list[object]:
    """A Literal's values, nested Literals flattened (Python 3.8 does not), Enum members as values."""
    import enum
    import typing

    values: list[object] = []
    for arg in typing.get_args(tp):
        if typing.get_origin(arg) is typing.Literal:
            values.extend(_schema_literal_values(arg))
        elif isinstance(arg, enum.Enum):
            values.append(arg.value)
        else:
            values.append(arg)
    return values


def _schema_json_kind(value: object) -> str | None:
    """The JSON type of a Python scalar (None for anything that is not a JSON scalar)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _schema_enum_schema(values: list[object], where: str, what: str) -> dict[str, Any]:
    kinds: list[str] = []
    for value in values:
        kind = _schema_json_kind(value)
        if kind is None:
            raise TypeError(
                "%s: %s has the value %r, which is not a JSON string, number, boolean or null" % (where, what, value)
            )
        if kind not in kinds:
            kinds.append(kind)
    if not values:
        raise TypeError("%s: %s has no values" % (where, what))
    return {"type": kinds[0] if len(kinds) == 1 else kinds, "enum": list(values)}


def _schema_json_default(value: object, depth: int = 0) -> tuple[bool, object]:
    """``(True, the JSON form)`` when a default can be written in a schema, else ``(False, None)``."""
    import enum

    if depth > 20:
        return False, None
    if isinstance(value, enum.Enum):
        return _schema_json_default(value.value, depth + 1)
    if isinstance(value, float):
        return (value == value and value not in (float("inf"), float("-inf"))), value
    if value is None or isinstance(value, (bool, int, str)):
        return True, value
    if isinstance(value, (list, tuple)):
        items = [_schema_json_default(v, depth + 1) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            return False, None
        pairs = {k: _schema_json_default(v, depth + 1) for k, v in value.items()}
        return all(ok for ok, _ in pairs.values()), {k: v for k, (_, v) in pairs.items()}
    return False, None


def _schema_nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` that also accepts null: ``["string", "null"]`` for a plain scalar type, else
    ``anyOf [schema, {"type": "null"}]`` (the description moves to the outside)."""
    if not schema:
        return schema  # {} accepts null already
    kind = schema.get("type")
    if isinstance(kind, str) and set(schema) <= {"type", "description"}:
        if kind == "null":
            return schema
        if kind in ("string", "integer", "number", "boolean"):
            return dict(schema, type=[kind, "null"])
    if isinstance(kind, list) and set(schema) <= {"type", "description"}:
        return schema if "null" in kind else dict(schema, type=kind + ["null"])
    if "enum" in schema and None in schema["enum"]:
        return schema
    alternatives = schema.get("anyOf")
    if isinstance(alternatives, list) and set(schema) <= {"anyOf", "description"}:
        if {"type": "null"} in alternatives:
            return schema
        return dict(schema, anyOf=alternatives + [{"type": "null"}])
    inner = dict(schema)
    outer: dict[str, Any] = {}
    if "description" in inner:
        outer["description"] = inner.pop("description")
    outer["anyOf"] = [inner, {"type": "null"}]
    return outer


def _schema_describe(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """``schema`` with a description (a ``$ref`` gets no siblings: strict mode refuses them)."""
    if "$ref" in schema:
        return {"anyOf": [schema], "description": description}
    return dict(schema, description=description)


# --------------------------------------------------------------------------------------------
# Building schemas


class _schema_Builder:  # noqa: N801
    """One schema being built: the strict flag, and the ``$defs`` of recursive classes."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.defs: dict[str, dict[str, Any]] = {}
        self.def_names: dict[object, str] = {}
        self.building: list[object] = []
        self.recursive: set[object] = set()

    # -- errors

    def unsupported(self, tp: object, where: str, top: object, extra: str = "") -> TypeError:
        name = _schema_type_name(tp)
        text = "%s: unsupported annotation %s" % (where, name)
        if top is not tp and _schema_type_name(top) != name:
            text += " in %s" % _schema_type_name(top)
        if extra:
            text += " (%s)" % extra
        else:
            if tp in (set, frozenset) or getattr(tp, "__origin__", None) in (set, frozenset):
                text += " (a set is not JSON: use list[X])"
            elif tp in (bytes, bytearray):
                text += " (bytes are not JSON: use str)"
            text += " (%s)" % _SCHEMA_SUPPORTED
        return TypeError(text)

    def not_strict(self, tp: object, where: str, why: str) -> TypeError:
        return TypeError(
            "%s: %s cannot be expressed in OpenAI strict mode (%s); use strict=False, or a more precise type"
            % (where, _schema_type_name(tp) if tp is not None else "a parameter without annotation", why)
        )

    # -- the mapping

    def build(self, annotation: object, where: str, top: object = None) -> dict[str, Any]:
        top = annotation if top is None else top
        tp, description = _schema_unwrap(annotation)
        schema = self.build_plain(tp, where, top)
        if description is not None:
            schema = _schema_describe(schema, description)
        return schema

    def build_plain(self, tp: object, where: str, top: object) -> dict[str, Any]:
        import typing

        if tp is typing.Any or tp is object:
            if self.strict:
                raise self.not_strict(tp, where, "every value needs a type there")
            return {}
        if tp is None or tp is type(None):
            return {"type": "null"}
        if isinstance(tp, (str, typing.ForwardRef)):
            text = tp if isinstance(tp, str) else tp.__forward_arg__
            raise TypeError(
                "%s: the annotation %r is a string that was not evaluated to a type (pass the type itself)"
                % (where, text)
            )
        simple = {str: "string", bool: "boolean", int: "integer", float: "number"}
        if isinstance(tp, type) and tp in simple:
            return {"type": simple[tp]}
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin in _schema_union_types():
            return self.build_union(args, where, top)
        if origin is typing.Literal:
            return _schema_enum_schema(_schema_literal_values(tp), where, _schema_type_name(tp))
        if _schema_is_enum(tp):
            return _schema_enum_schema([m.value for m in tp], where, _schema_type_name(tp))  # type: ignore[attr-defined]
        if _schema_is_dataclass(tp) or _schema_is_typeddict(tp):
            return self.build_class(tp, where)
        return self.build_container(tp, origin, args, where, top)

    def build_union(self, args: tuple[object, ...], where: str, top: object) -> dict[str, Any]:
        others = [a for a in args if a is not type(None) and a is not None]
        if not others:
            return {"type": "null"}
        if len(others) == 1:
            schema = self.build(others[0], where, top)
        else:
            schema = {"anyOf": [self.build(a, where, top) for a in others]}
        return _schema_nullable(schema) if len(others) < len(args) else schema

    def build_container(
        self, tp: object, origin: object, args: tuple[object, ...], where: str, top: object
    ) -> dict[str, Any]:
        import collections.abc as abc

        kind = origin if origin is not None else tp
        if kind in (list, abc.Sequence, abc.MutableSequence):
            if not args:
                if self.strict:
                    raise self.not_strict(tp, where, "an array needs its item type: list[X]")
                return {"type": "array"}
            return {"type": "array", "items": self.build(args[0], where, top)}
        if kind is tuple:
            if not args:
                if self.strict:
                    raise self.not_strict(tp, where, "an array needs its item type: tuple[X, ...]")
                return {"type": "array"}
            if len(args) == 2 and args[1] is Ellipsis:
                return {"type": "array", "items": self.build(args[0], where, top)}
            if args == ((),):  # Python 3.8's Tuple[()]
                args = ()
            if self.strict:
                raise self.not_strict(tp, where, "fixed-length arrays (prefixItems) are not supported; use a dataclass")
            return {
                "type": "array",
                "prefixItems": [self.build(a, where, top) for a in args],
                "minItems": len(args),
                "maxItems": len(args),
            }
        if kind in (dict, abc.Mapping, abc.MutableMapping):
            if self.strict:
                raise self.not_strict(tp, where, "objects need fixed properties there; use a dataclass or TypedDict")
            if not args:
                return {"type": "object"}
            key, _ = _schema_unwrap(args[0])
            if key is not str:
                raise self.unsupported(tp, where, top, "JSON object keys are strings: use dict[str, X]")
            values = self.build(args[1], where, top)
            return {"type": "object", "additionalProperties": values} if values else {"type": "object"}
        raise self.unsupported(tp, where, top)

    def def_name(self, cls: object) -> str:
        name = self.def_names.get(cls)
        if name is None:
            base = getattr(cls, "__name__", "Type")
            name, n = base, 1
            while name in self.def_names.values():
                n += 1
                name = "%s%d" % (base, n)
            self.def_names[cls] = name
        return name

    def build_class(self, cls: Any, where: str) -> dict[str, Any]:
        if cls in self.building or self.def_names.get(cls) in self.defs:
            self.recursive.add(cls)
            return {"$ref": "#/$defs/" + self.def_name(cls)}
        self.building.append(cls)
        try:
            schema = self.build_fields(cls, where)
        finally:
            self.building.pop()
        if cls in self.recursive:
            name = self.def_name(cls)
            self.defs[name] = schema
            return {"$ref": "#/$defs/" + name}
        return schema

    def build_fields(self, cls: Any, where: str) -> dict[str, Any]:
        """The object schema of a dataclass or TypedDict."""
        name = getattr(cls, "__qualname__", cls.__name__)
        hints = _schema_hints(cls, "%s: %s" % (where, name), "field")
        summary, docs = parse_docstring(_schema_class_doc(cls))
        fields = []  # (name, annotation, has_default, default, description)
        if _schema_is_dataclass(cls):
            import dataclasses

            for f in dataclasses.fields(cls):
                if not f.init:
                    continue
                default: object = f.default
                has_default = default is not dataclasses.MISSING
                if f.default_factory is not dataclasses.MISSING:
                    has_default = True
                    factory = f.default_factory
                    default = factory() if factory in (list, dict, tuple) else dataclasses.MISSING
                text = f.metadata.get("description") if f.metadata else None
                fields.append((f.name, hints.get(f.name, f.type), has_default, default, text or docs.get(f.name)))
        else:
            required = _schema_typeddict_required(cls, hints)
            for key, annotation in hints.items():
                fields.append((key, annotation, key not in required, None, docs.get(key)))
        properties: dict[str, Any] = {}
        required_names: list[str] = []
        for key, annotation, has_default, default, text in fields:
            field_where = "%s: field %s.%s" % (where, name, key)
            prop, is_required = self.property(annotation, field_where, has_default, default)
            if text and _schema_unwrap(annotation)[1] is None:
                prop = _schema_describe(prop, text)
            properties[key] = prop
            if is_required:
                required_names.append(key)
        schema: dict[str, Any] = {"type": "object"}
        if summary:
            schema["description"] = summary
        schema["properties"] = properties
        schema["required"] = required_names
        if self.strict:
            schema["additionalProperties"] = False
        return schema

    def property(
        self, annotation: object, where: str, has_default: bool, default: object, parameter: bool = False
    ) -> tuple[dict[str, Any], bool]:
        """One property of an object: ``(schema, required?)`` under the parameter/field rules.

        Non-strict: a default makes it optional, with a ``default`` keyword when JSON can hold it
        (None is not written); a *parameter* ``Optional[X] = None`` gives X (the issue's rule for
        tools: leaving it out is how a model says None), a *field* keeps the null (a dataclass
        holding None must validate).  Strict: required, and nullable when it had a default.
        """
        import dataclasses

        if parameter and has_default and default is None and not self.strict and _schema_accepts_none(annotation):
            stripped = self.without_none(annotation)
            if stripped is not None:
                return self.build(stripped, where), False
        schema = self.build(annotation, where)
        if self.strict:
            return (_schema_nullable(schema) if has_default else schema), True
        if not has_default:
            return schema, True
        if default is not None and default is not dataclasses.MISSING:
            ok, value = _schema_json_default(default)
            if ok and "$ref" not in schema:
                schema = dict(schema, default=value)
        return schema, False

    def without_none(self, annotation: object) -> object:
        """``Optional[X]`` -> X (``Union[A, B, None]`` -> ``Union[A, B]``), through nested unions
        and ``Annotated`` (its description kept; Python < 3.11 wraps ``Annotated[Optional[X], ...]
        = None`` in one more Optional); None when nothing but None is left."""
        import typing

        members: list[object] = []
        texts: list[str] = []

        def walk(tp: object) -> None:
            inner, text = _schema_unwrap(tp)
            if typing.get_origin(inner) in _schema_union_types():
                if text is not None:
                    texts.append(text)
                for arg in typing.get_args(inner):
                    walk(arg)
            elif inner is not None and inner is not type(None):
                members.append(tp)

        walk(annotation)
        if not members:
            return None
        result: Any = members[0] if len(members) == 1 else typing.Union[tuple(members)]
        annotated = getattr(typing, "Annotated", None)
        if texts and annotated is not None:
            result = annotated[result, texts[0]]
        return result

    def finish(self, schema: dict[str, Any]) -> dict[str, Any]:
        """The root schema: ``$defs`` attached; a root that is itself a ``$ref`` is inlined."""
        if not self.defs:
            return schema
        ref = schema.get("$ref")
        if isinstance(ref, str) and len(schema) == 1:
            import copy

            schema = copy.deepcopy(self.defs[ref.rsplit("/", 1)[1]])  # the root shares nothing with $defs
        schema = dict(schema)
        schema["$defs"] = dict(self.defs)
        return schema


def _schema_class_doc(cls: Any) -> str | None:
    """A class's own docstring (not the ``Point(x: int, y: int)`` signature dataclass invents)."""
    doc = cls.__dict__.get("__doc__")
    if not isinstance(doc, str):
        return None
    if "\n" not in doc and doc.startswith(cls.__name__ + "(") and _schema_is_dataclass(cls):
        return None
    return doc


def _schema_typeddict_required(cls: Any, hints: dict[str, Any]) -> frozenset[str]:
    keys = getattr(cls, "__required_keys__", None)
    if keys is not None:
        return frozenset(keys)
    return frozenset(hints) if getattr(cls, "__total__", True) else frozenset()  # Python 3.8


def schema_for(annotation: object, *, strict: bool = False, where: str = "the annotation") -> dict[str, Any]:
    """The JSON Schema of a type annotation.

    See the module docstring for the mapping.  Decisions: ``Optional[X]`` in a nested position
    (a field, a list item) is X-or-null -- ``{"type": ["string", "null"]}`` for a plain scalar,
    ``anyOf [X, {"type": "null"}]`` otherwise; a dataclass/TypedDict field keeps the null too
    (only a function *parameter* ``Optional[X] = None`` drops it: see :func:`function_parameters`).
    A fixed tuple ``tuple[int, str]`` is ``{"type": "array", "prefixItems": [...], "minItems": 2,
    "maxItems": 2}`` and a TypeError in strict mode (OpenAI's strict subset has no
    ``prefixItems``).  A dataclass or TypedDict that
    contains itself (directly or through others) is defined once under ``"$defs"`` at the root
    and referenced with ``{"$ref": "#/$defs/Name"}``; a root that is such a class is inlined
    (strict mode wants an object at the root), keeping its ``$defs``.  Object schemas always
    list ``properties`` and ``required`` (possibly empty).  ``Annotated[X, "text"]`` gives X
    with that description (it wins over a docstring's).  Dataclass fields take their
    descriptions from ``field(metadata={"description": ...})`` or the class docstring's
    ``Attributes:``/``Args:`` section, the object's description from the docstring's summary.

    ``strict=True``: every object gets ``additionalProperties: false`` and lists every property
    in ``required``; the ones that had defaults become nullable; no ``default`` keywords; types
    strict mode cannot express (``Any``, ``dict[str, X]``, bare ``list``, fixed tuples) raise.

    :param annotation: a type (``int``, ``list[Point]``, ``Optional[Literal["c", "f"]]`` ...)
    :param strict: follow OpenAI's strict-mode rules
    :param where: how an error names the place of the annotation
    :returns: the schema (a new dict)
    :raises TypeError: for an annotation JSON cannot express, naming ``where`` and the annotation
    """
    builder = _schema_Builder(strict)
    return builder.finish(builder.build(annotation, where))


def function_parameters(
    fn: Callable[..., Any], *, strict: bool = False, where: str | None = None
) -> tuple[str, dict[str, Any]]:
    """A callable's description and the JSON Schema object of its parameters.

    Works with functions, bound methods (``self``/``cls`` skipped), ``functools.partial``
    (bound arguments left out) and objects with ``__call__``.  One property per parameter, except
    ``*args`` and ``**kwargs``; keyword-only ones included.  ``required`` lists the parameters
    without defaults.  Types come from ``typing.get_type_hints`` (so ``from __future__ import
    annotations`` works), descriptions from the docstring (:func:`parse_docstring`).  A
    parameter without annotation accepts any value (``{}``).  ``Optional[X] = None`` gives X,
    not required; another default is written as ``"default"`` when JSON can hold it.

    ``strict=True``: every parameter required, the ones with defaults nullable (a model sends
    null for "use the default"), ``additionalProperties: false``, no ``default`` keywords.

    :param fn: the callable
    :param strict: follow OpenAI's strict-mode rules
    :param where: how errors name the callable (default ``"name()"``)
    :returns: ``(description, {"type": "object", "properties": {...}, "required": [...]})``
        (``"additionalProperties": false`` in strict mode, ``"$defs"`` for recursive types)
    :raises TypeError: an annotation that cannot be evaluated or expressed, naming the callable,
        the parameter and the annotation; a callable without a signature
    """
    import functools
    import inspect

    base: Any = fn
    while isinstance(base, functools.partial):
        base = base.func
    plain = inspect.isroutine(base) or isinstance(base, type)
    name = getattr(base, "__name__", None) if plain else None
    if not isinstance(name, str):
        name = type(base).__name__
    where = "%s()" % name if where is None else where
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise TypeError("%s: no signature to describe (%s)" % (where, exc)) from None
    first = next(iter(signature.parameters), None)
    qualname = str(getattr(fn, "__qualname__", ""))
    if first == "self" and inspect.isfunction(fn) and qualname.count(".") and qualname.split(".")[-2] != "<locals>":
        # Class.method, not instance.method: the model would have to send "self" (a JSON value)
        raise TypeError(
            "%s: %s is a method taken from its class: give an instance's method (%s().%s, or a "
            "bound method of the object you use) or make it a @staticmethod"
            % (where, qualname, qualname.rsplit(".", 1)[0], fn.__name__)
        )
    hint_source: object
    doc_source: object
    if inspect.isroutine(base):
        hint_source, doc_source = base, base
    elif isinstance(base, type):
        hint_source, doc_source = next(vars(k)["__init__"] for k in base.__mro__ if "__init__" in vars(k)), base
    else:
        call = type(base).__call__
        hint_source = call
        doc_source = call if getattr(call, "__doc__", None) else type(base)
    hints = _schema_hints(hint_source, where, "parameter")
    summary, docs = parse_docstring(_schema_class_doc(base) if isinstance(base, type) else inspect.getdoc(doc_source))
    builder = _schema_Builder(strict)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        param_where = "%s: parameter %r" % (where, param.name)
        annotation = hints.get(param.name, inspect.Parameter.empty)
        if annotation is inspect.Parameter.empty:
            if isinstance(param.annotation, str) or param.annotation is inspect.Parameter.empty:
                if strict:
                    raise builder.not_strict(None, param_where, "every value needs a type there")
                annotation = object
            else:
                annotation = param.annotation
        has_default = param.default is not inspect.Parameter.empty
        default = param.default if has_default else None
        prop, is_required = builder.property(annotation, param_where, has_default, default, parameter=True)
        text = docs.get(param.name)
        if text and _schema_unwrap(annotation)[1] is None:
            prop = _schema_describe(prop, text)
        properties[param.name] = prop
        if is_required:
            required.append(param.name)
    schema: dict[str, Any] = {"type": "object", "properties": properties, "required": required}
    if strict:
        schema["additionalProperties"] = False
    return summary, builder.finish(schema)


# --------------------------------------------------------------------------------------------
# Validation


def _schema_path_key(path: str, key: str) -> str:
    if key.isidentifier():
        return "%s.%s" % (path, key)
    import json

    return "%s[%s]" % (path, json.dumps(key, ensure_ascii=False))


def _schema_value_kind(value: object) -> str:
    """``string "abc"``, ``integer 5``, ``object``: how an error names what it got."""
    kind = _schema_json_kind(value)
    if kind is None:
        if isinstance(value, dict):
            return "object"
        if isinstance(value, (list, tuple)):
            return "array"
        return type(value).__name__
    if kind == "null":
        return "null"
    if isinstance(value, float) and not (value == value and abs(value) != _SCHEMA_INF):
        return "%s (not a JSON number)" % ("NaN" if value != value else "Infinity" if value > 0 else "-Infinity")
    import json

    try:
        text = json.dumps(value, ensure_ascii=False)
    except ValueError:
        text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return "%s %s" % (kind, text)


def _schema_json_text(value: object) -> str:
    import json

    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


_SCHEMA_INF = float("inf")


def _schema_is_type(value: object, kind: object) -> bool:
    if kind == "null":
        return value is None
    if kind == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "integer":
        # models sometimes write 3.0 for 3
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if kind == "number":
        # NaN and Infinity are not JSON (Python's json reads them): no schema's number
        return isinstance(value, int) or (isinstance(value, float) and value == value and abs(value) != _SCHEMA_INF)
    if kind == "string":
        return isinstance(value, str)
    if kind == "array":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, dict)
    return False


def _schema_json_equal(a: object, b: object) -> bool:
    """Equality as JSON sees it: ``true`` is not ``1``, ``1`` is ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_schema_json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return set(a) == set(b) and all(_schema_json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _schema_is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _schema_bound(schema: dict[str, Any], key: str) -> float | None:
    """A numeric keyword's value (None when absent or not a number)."""
    value = schema.get(key)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class _schema_Validation:  # noqa: N801
    """One validate() run: the root (for ``$ref``), the errors, the limit."""

    def __init__(self, root: object, limit: int) -> None:
        self.root = root
        self.limit = limit
        self.errors: list[str] = []
        self.cut = False

    def error(self, path: str, message: str) -> None:
        if len(self.errors) >= self.limit:
            self.cut = True
        else:
            self.errors.append("%s: %s" % (path, message))

    def sub(self, value: object, schema: object, path: str, depth: int, refs: frozenset[str]) -> list[str]:
        """The errors of one alternative (anyOf/oneOf), kept apart from the main list."""
        run = _schema_Validation(self.root, self.limit)
        run.check(value, schema, path, depth, refs)
        return run.errors

    def resolve(self, ref: str) -> object:
        if ref == "#":
            return self.root
        if not ref.startswith("#/"):
            return None
        node: object = self.root
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return None
        return node

    def check(
        self, value: object, schema: object, path: str, depth: int = 0, refs: frozenset[str] = frozenset()
    ) -> None:
        if len(self.errors) >= self.limit:
            self.cut = True
            return
        if schema is False:
            self.error(path, "no value is allowed here")
            return
        if not isinstance(schema, dict):
            return  # True, and anything that is not a schema, accepts everything
        if depth > _SCHEMA_MAX_DEPTH:
            self.error(path, "nested too deeply to check (more than %d levels)" % _SCHEMA_MAX_DEPTH)
            return
        ref = schema.get("$ref")
        if isinstance(ref, str):
            target = self.resolve(ref)
            if target is None:
                self.error(path, "the schema's $ref %r cannot be resolved" % ref)
                return
            if ref in refs:
                self.error(path, "the schema's $ref %r refers to itself without describing a value" % ref)
                return
            self.check(value, target, path, depth + 1, refs | {ref})
        if value is None and schema.get("nullable") is True:
            return
        if not self.check_type(value, schema, path):
            return
        if "enum" in schema and isinstance(schema["enum"], list):
            if not any(_schema_json_equal(value, option) for option in schema["enum"]):
                options = ", ".join(_schema_json_text(option) for option in schema["enum"][:10])
                self.error(path, "expected one of %s; got %s" % (options, _schema_value_kind(value)))
        if "const" in schema and not _schema_json_equal(value, schema["const"]):
            self.error(path, "expected %s; got %s" % (_schema_json_text(schema["const"]), _schema_value_kind(value)))
        if isinstance(value, str):
            self.check_string(value, schema, path)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            self.check_number(value, schema, path)
        elif isinstance(value, list):
            self.check_array(value, schema, path, depth)
        elif isinstance(value, dict):
            self.check_object(value, schema, path, depth)
        for sub in schema.get("allOf", ()) if isinstance(schema.get("allOf"), list) else ():
            self.check(value, sub, path, depth + 1, refs)
        if "not" in schema and isinstance(schema["not"], (dict, bool)):
            if not self.sub(value, schema["not"], path, depth + 1, refs):
                self.error(path, "must not match %s" % _schema_json_text(schema["not"]))
        for keyword in ("anyOf", "oneOf"):
            alternatives = schema.get(keyword)
            if isinstance(alternatives, list) and alternatives:
                self.check_alternatives(value, alternatives, keyword, path, depth, refs)

    def check_type(self, value: object, schema: dict[str, Any], path: str) -> bool:
        kind = schema.get("type")
        if kind is None:
            return True
        kinds = kind if isinstance(kind, list) else [kind]
        if schema.get("nullable") is True:
            kinds = kinds + ["null"]
        if any(_schema_is_type(value, k) for k in kinds):
            return True
        self.error(path, "expected %s, got %s" % (" or ".join(str(k) for k in kinds), _schema_value_kind(value)))
        return False

    def check_string(self, value: str, schema: dict[str, Any], path: str) -> None:
        low, high = _schema_bound(schema, "minLength"), _schema_bound(schema, "maxLength")
        if low is not None and len(value) < low:
            self.error(path, "expected at least %s characters, got %d" % (low, len(value)))
        if high is not None and len(value) > high:
            self.error(path, "expected at most %s characters, got %d" % (high, len(value)))
        pattern = schema.get("pattern")
        if isinstance(pattern, str):
            import re

            try:
                matched = re.search(pattern, value) is not None
            except re.error as exc:
                self.error(path, "the schema's pattern %r is not a valid regular expression (%s)" % (pattern, exc))
                return
            if not matched:
                self.error(
                    path, "expected a string matching the pattern %r, got %s" % (pattern, _schema_value_kind(value))
                )

    def check_number(self, value: float, schema: dict[str, Any], path: str) -> None:
        got = _schema_value_kind(value)
        minimum, maximum = _schema_bound(schema, "minimum"), _schema_bound(schema, "maximum")
        low_x, high_x = _schema_bound(schema, "exclusiveMinimum"), _schema_bound(schema, "exclusiveMaximum")
        if minimum is not None:
            if schema.get("exclusiveMinimum") is True and value <= minimum:  # draft 4: a flag on minimum
                self.error(path, "expected a number > %s, got %s" % (minimum, got))
            elif value < minimum:
                self.error(path, "expected a number >= %s, got %s" % (minimum, got))
        if maximum is not None:
            if schema.get("exclusiveMaximum") is True and value >= maximum:
                self.error(path, "expected a number < %s, got %s" % (maximum, got))
            elif value > maximum:
                self.error(path, "expected a number <= %s, got %s" % (maximum, got))
        if low_x is not None and value <= low_x:
            self.error(path, "expected a number > %s, got %s" % (low_x, got))
        if high_x is not None and value >= high_x:
            self.error(path, "expected a number < %s, got %s" % (high_x, got))
        step = _schema_bound(schema, "multipleOf")
        if step is not None and step > 0:
            quotient = value / step
            if abs(quotient - round(quotient)) > 1e-9 * max(1.0, abs(quotient)):
                self.error(path, "expected a multiple of %s, got %s" % (step, got))

    def check_array(self, value: list[Any], schema: dict[str, Any], path: str, depth: int) -> None:
        low, high = _schema_bound(schema, "minItems"), _schema_bound(schema, "maxItems")
        if low is not None and len(value) < low:
            self.error(path, "expected at least %s items, got %d" % (low, len(value)))
        if high is not None and len(value) > high:
            self.error(path, "expected at most %s items, got %d" % (high, len(value)))
        prefix = schema.get("prefixItems")
        items = schema.get("items")
        if isinstance(items, list):  # draft 4-7 tuple form
            prefix, items = items, schema.get("additionalItems")
        prefix = prefix if isinstance(prefix, list) else []
        for i, item in enumerate(value):
            item_path = "%s[%d]" % (path, i)
            if i < len(prefix):
                self.check(item, prefix[i], item_path, depth + 1)
            elif items is False:
                self.error(item_path, "no item is allowed here (at most %d items)" % len(prefix))
                break
            elif isinstance(items, dict):
                self.check(item, items, item_path, depth + 1)
            if self.cut:
                return
        if schema.get("uniqueItems") is True:
            for i in range(1, len(value)):
                if any(_schema_json_equal(value[i], value[j]) for j in range(i)):
                    self.error("%s[%d]" % (path, i), "duplicate item (the items must be unique)")
                    break

    def check_object(self, value: dict[str, Any], schema: dict[str, Any], path: str, depth: int) -> None:
        low, high = _schema_bound(schema, "minProperties"), _schema_bound(schema, "maxProperties")
        if low is not None and len(value) < low:
            self.error(path, "expected at least %s properties, got %d" % (low, len(value)))
        if high is not None and len(value) > high:
            self.error(path, "expected at most %s properties, got %d" % (high, len(value)))
        required = schema.get("required")
        for key in required if isinstance(required, list) else ():
            if isinstance(key, str) and key not in value:
                self.error(path, "missing required property %s" % _schema_json_text(key))
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            key_path = _schema_path_key(path, str(key))
            if key in properties:
                self.check(item, properties[key], key_path, depth + 1)
            elif extra is False:
                self.error(
                    path,
                    "unexpected property %s (allowed: %s)"
                    % (_schema_json_text(key), ", ".join(_schema_json_text(k) for k in properties) or "none"),
                )
            elif isinstance(extra, dict):
                self.check(item, extra, key_path, depth + 1)
            if self.cut:
                return

    def check_alternatives(
        self, value: object, alternatives: list[Any], keyword: str, path: str, depth: int, refs: frozenset[str]
    ) -> None:
        results = [self.sub(value, alt, path, depth + 1, refs) for alt in alternatives]
        passed = sum(1 for errors in results if not errors)
        if keyword == "oneOf" and passed > 1:
            self.error(path, "matches %d of the oneOf alternatives, expected exactly one" % passed)
        if passed:
            return
        # The alternative meant for this kind of value says best what is wrong with it.
        fitting = [i for i, alt in enumerate(alternatives) if self.fits(value, alt)]
        if len(fitting) == 1:
            for message in results[fitting[0]]:
                if len(self.errors) >= self.limit:
                    self.cut = True
                    break
                self.errors.append(message)
            return
        wanted = [self.summary(alt) for alt in alternatives]
        self.error(path, "expected %s, got %s" % (" or ".join(wanted), _schema_value_kind(value)))

    def fits(self, value: object, alt: object) -> bool:
        """Is ``alt`` written for this kind of value (its ``type`` admits it)?"""
        for _ in range(20):
            if not isinstance(alt, dict):
                return False
            if isinstance(alt.get("$ref"), str) and "type" not in alt:
                alt = self.resolve(alt["$ref"])
                continue
            kind = alt.get("type")
            kinds = kind if isinstance(kind, list) else [kind] if kind is not None else []
            return any(_schema_is_type(value, k) for k in kinds)
        return False

    def summary(self, alt: object) -> str:
        if isinstance(alt, dict):
            if "const" in alt:
                return _schema_json_text(alt["const"])
            if isinstance(alt.get("enum"), list):
                return "one of " + ", ".join(_schema_json_text(v) for v in alt["enum"][:10])
            kind = alt.get("type")
            if isinstance(kind, list):
                return " or ".join(str(k) for k in kind)
            if isinstance(kind, str):
                return kind
            ref = alt.get("$ref")
            if isinstance(ref, str):
                return ref.rsplit("/", 1)[-1]
        return "the alternative %s" % _schema_json_text(alt)


def validate(value: object, schema: dict[str, Any]) -> list[str]:
    """Every way ``value`` (parsed JSON) misses ``schema``, each as ``"$.path[0].field: message"``.

    Keywords: ``type`` (a name or a list; ``integer`` accepts an integral float like ``3.0``,
    booleans are never numbers), ``enum``, ``const``, ``properties``, ``required``,
    ``additionalProperties`` (false or a schema), ``items``, ``prefixItems``, ``minItems``,
    ``maxItems``, ``uniqueItems``, ``minLength``, ``maxLength``, ``pattern``, ``minimum``,
    ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum``, ``multipleOf``, ``minProperties``,
    ``maxProperties``, ``anyOf``, ``oneOf``, ``allOf``, ``not``, ``$ref`` (``#``, ``#/$defs/...``,
    ``#/definitions/...`` of the root) and OpenAPI's ``nullable: true``.  Other keywords are
    ignored (:func:`check_schema` refuses the ones that would change the answer).  When no ``anyOf`` alternative
    matches, the one written for the value's kind explains why, else the alternatives are
    listed.  A self-referencing schema is fine; nesting deeper than 200 levels is reported.

    :param value: the value (from ``json.loads``)
    :param schema: the JSON Schema
    :returns: the errors, at most 20 (then a last line saying more were left out); [] when valid
    """
    run = _schema_Validation(schema, _SCHEMA_MAX_ERRORS)
    run.check(value, schema, "$")
    errors = run.errors
    if run.cut:
        errors.append("$: more errors not listed (the first %d are above)" % _SCHEMA_MAX_ERRORS)
    return errors


#: Keywords validate() does not check and that would change its answer: check_schema() refuses them.
_SCHEMA_UNCHECKED = frozenset(
    (
        "if",
        "then",
        "else",
        "patternProperties",
        "propertyNames",
        "dependentRequired",
        "dependentSchemas",
        "dependencies",
        "contains",
        "minContains",
        "maxContains",
        "unevaluatedProperties",
        "unevaluatedItems",
        "$dynamicRef",
        "$recursiveRef",
    )
)

_SCHEMA_TYPE_NAMES = frozenset(("string", "integer", "number", "boolean", "null", "array", "object"))


def _schema_problems(schema: object, root: object, pointer: str, problems: list[str], depth: int) -> None:
    """check_schema()'s walk: every subschema position, nothing else (property names are data)."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        problems.append("%s: a schema must be an object or a boolean, not %s" % (pointer, _schema_value_kind(schema)))
        return
    if depth > _SCHEMA_MAX_DEPTH:
        problems.append("%s: nested too deeply" % pointer)
        return
    for keyword in sorted(_SCHEMA_UNCHECKED.intersection(schema)):
        problems.append("%s: the keyword %r is not supported (openai2 cannot check it)" % (pointer, keyword))
    kind = schema.get("type")
    for name in kind if isinstance(kind, list) else [kind] if kind is not None else []:
        if name not in _SCHEMA_TYPE_NAMES:
            problems.append("%s: unknown type %s" % (pointer, _schema_json_text(name)))
    ref = schema.get("$ref")
    if ref is not None:
        if not isinstance(ref, str) or _schema_Validation(root, 1).resolve(ref) is None:
            problems.append(
                "%s: the $ref %s cannot be resolved (only #, #/$defs/... and #/definitions/... of this schema)"
                % (pointer, _schema_json_text(ref))
            )
        elif _schema_ref_loops(root, ref):
            problems.append(
                "%s: the $ref %s leads back to itself through $refs alone: it describes no value"
                % (pointer, _schema_json_text(ref))
            )
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        import re

        try:
            re.compile(pattern)
        except re.error as exc:
            problems.append("%s: the pattern %r is not a valid regular expression (%s)" % (pointer, pattern, exc))
    for keyword in ("properties", "$defs", "definitions"):
        group = schema.get(keyword)
        if isinstance(group, dict):
            for name, sub in group.items():
                _schema_problems(sub, root, "%s/%s/%s" % (pointer, keyword, name), problems, depth + 1)
    for keyword in ("items", "additionalProperties", "additionalItems", "not"):
        sub = schema.get(keyword)
        if isinstance(sub, (dict, bool)):
            _schema_problems(sub, root, "%s/%s" % (pointer, keyword), problems, depth + 1)
    for keyword in ("prefixItems", "items", "anyOf", "oneOf", "allOf"):
        group = schema.get(keyword)
        if isinstance(group, list):
            for i, sub in enumerate(group):
                _schema_problems(sub, root, "%s/%s/%d" % (pointer, keyword, i), problems, depth + 1)


def _schema_ref_loops(root: object, ref: str) -> bool:
    """Whether following ``ref`` from one ``{"$ref": ...}`` to the next comes back to a ref
    already followed (``A -> B -> A``) without reaching a schema that describes anything."""
    seen = set()
    finder = _schema_Validation(root, 1)
    while isinstance(ref, str) and ref not in seen:
        seen.add(ref)
        target = finder.resolve(ref)
        if not isinstance(target, dict):
            return False
        ref = target.get("$ref")  # type: ignore[assignment]
    return isinstance(ref, str)


def check_schema(schema: object, *, where: str = "the schema") -> None:
    """Refuse, loudly and up front, a JSON Schema that :func:`validate` could not honour.

    Refused: keywords validate() does not check and that would change its answer (``if``/
    ``then``/``else``, ``patternProperties``, ``propertyNames``, ``dependentRequired``,
    ``dependentSchemas``, ``dependencies``, ``contains``, ``unevaluatedProperties`` ...), a
    ``$ref`` that is not ``#``, ``#/$defs/...`` or ``#/definitions/...`` of this schema, an
    unknown ``type`` name, an invalid ``pattern``, a subschema that is not an object or a
    boolean.  Descriptive keywords (``title``, ``description``, ``default``, ``examples``,
    ``format`` -- not checked) are fine.

    :param schema: a JSON Schema (for example one a user passed to ``chat.parse``)
    :param where: how the error names it
    :raises TypeError: naming every problem with its JSON pointer (``#/properties/x``)
    """
    problems: list[str] = []
    _schema_problems(schema, schema, "#", problems, 0)
    if problems:
        shown = problems[:_SCHEMA_MAX_ERRORS]
        more = len(problems) - len(shown)
        raise TypeError(
            "%s is not supported: %s%s" % (where, "; ".join(shown), " (and %d more)" % more if more else "")
        )


def _schema_strict_copy(schema: object, pointer: str, where: str, depth: int) -> object:
    """strict_schema()'s walk (a new tree; the input is not changed)."""
    if isinstance(schema, bool) or not isinstance(schema, dict):
        return schema
    if depth > _SCHEMA_MAX_DEPTH:
        raise TypeError("%s: %s: nested too deeply" % (where, pointer))
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "default":
            continue  # strict mode refuses defaults
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            out[key] = {
                name: _schema_strict_copy(sub, "%s/%s/%s" % (pointer, key, name), where, depth + 1)
                for name, sub in value.items()
            }
        elif key in ("items", "not") and isinstance(value, dict):
            out[key] = _schema_strict_copy(value, "%s/%s" % (pointer, key), where, depth + 1)
        elif key in ("anyOf", "allOf", "oneOf") and isinstance(value, list):
            out[key] = [
                _schema_strict_copy(sub, "%s/%s/%d" % (pointer, key, n), where, depth + 1)
                for n, sub in enumerate(value)
            ]
        elif key in ("prefixItems",) or (key == "items" and isinstance(value, list)):
            raise TypeError(
                "%s: %s: fixed-length arrays (%s) are not supported in OpenAI strict mode" % (where, pointer, key)
            )
        else:
            out[key] = value
    kind = out.get("type")
    is_object = kind == "object" or (isinstance(kind, list) and "object" in kind) or "properties" in out
    if is_object:
        extra = out.get("additionalProperties", False)
        properties = out.get("properties")
        if extra is not False or not isinstance(properties, dict):
            raise TypeError(
                "%s: %s: an object with free-form keys (additionalProperties or no properties) cannot be expressed "
                "in OpenAI strict mode; list its properties" % (where, pointer)
            )
        required = out.get("required")
        required = [k for k in required if isinstance(k, str)] if isinstance(required, list) else []
        for name in properties:
            if name not in required:
                sub = properties[name]
                properties[name] = _schema_nullable(sub) if isinstance(sub, dict) else sub
                required.append(name)
        out["required"] = required
        out["additionalProperties"] = False
    if "$ref" in out and len(out) > 1:
        ref = {"$ref": out.pop("$ref")}
        out["anyOf"] = [ref] + list(out.get("anyOf", []))  # strict mode refuses keywords beside $ref
    return out


def strict_schema(schema: dict[str, Any], *, where: str = "the schema") -> dict[str, Any]:
    """A JSON Schema rewritten for OpenAI's strict mode (a new dict; ``schema`` is unchanged).

    Every object gets ``additionalProperties: false`` and lists all its properties in
    ``required``; a property that was not required becomes nullable (so null is how a model
    leaves it out); ``default`` keywords are dropped; a ``$ref`` with keywords beside it is
    wrapped in ``anyOf``.  For a schema a user wrote by hand; :func:`schema_for` with
    ``strict=True`` gives the same shape from a type.

    :param schema: the JSON Schema
    :param where: how errors name it
    :returns: the strict-mode schema
    :raises TypeError: what strict mode cannot express -- an object with free-form keys
        (``additionalProperties`` true or a schema, or no ``properties``), ``prefixItems``
    """
    result = _schema_strict_copy(schema, "#", where, 0)
    if not isinstance(result, dict):
        raise TypeError("%s: a schema for strict mode must be an object, not %s" % (where, _schema_value_kind(schema)))
    return result


# --------------------------------------------------------------------------------------------
# JSON -> Python


def _schema_convert(value: object, annotation: object, path: str, lax: bool) -> object:
    """One conversion step of :func:`from_json`; ``lax`` allows int <-> float."""
    import typing

    tp, _ = _schema_unwrap(annotation)
    if tp is typing.Any or tp is object:
        return value
    if tp is None or tp is type(None):
        if value is None:
            return None
        raise ValueError("%s: expected null, got %s" % (path, _schema_value_kind(value)))
    if tp is bool or tp is str:
        if isinstance(value, tp):  # type: ignore[arg-type]
            return value
        raise ValueError(
            "%s: expected %s, got %s" % (path, "boolean" if tp is bool else "string", _schema_value_kind(value))
        )
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if lax and isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError("%s: expected integer, got %s" % (path, _schema_value_kind(value)))
    if tp is float:
        if isinstance(value, float) or (lax and _schema_is_number(value)):
            return float(value)  # type: ignore[arg-type]
        raise ValueError("%s: expected number, got %s" % (path, _schema_value_kind(value)))
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in _schema_union_types():
        return _schema_convert_union(value, args, path, lax)
    if origin is typing.Literal:
        return _schema_convert_choice(value, typing.get_args(tp), _schema_literal_values(tp), path)
    if _schema_is_enum(tp):
        members = list(tp)  # type: ignore[call-overload]
        return _schema_convert_choice(value, members, [m.value for m in members], path)
    if _schema_is_dataclass(tp):
        return _schema_convert_dataclass(value, tp, path, lax)
    if _schema_is_typeddict(tp):
        return _schema_convert_typeddict(value, tp, path, lax)
    return _schema_convert_container(value, tp, origin, args, path, lax)


def _schema_convert_union(value: object, args: tuple[object, ...], path: str, lax: bool) -> object:
    # Exact matches first, so Union[float, int] keeps 3 an int and 2.5 a float.
    for allow in (False, True) if lax else (False,):
        for arg in args:
            try:
                return _schema_convert(value, arg, path, allow)
            except ValueError:
                continue
    failures = []
    for arg in args:
        try:
            _schema_convert(value, arg, path, lax)
        except ValueError as exc:
            failures.append(str(exc))
    detailed = [f for f in failures if not f.startswith(path + ": expected ")]
    if len(detailed) == 1:
        raise ValueError(detailed[0])  # the alternative of the right kind, failing deeper inside
    names = " or ".join(_schema_from_json_name(a) for a in args)
    raise ValueError("%s: expected %s, got %s" % (path, names, _schema_value_kind(value)))


def _schema_from_json_name(tp: object) -> str:
    inner, _ = _schema_unwrap(tp)
    if inner is None or inner is type(None):
        return "null"
    simple = {str: "string", bool: "boolean", int: "integer", float: "number"}
    if isinstance(inner, type) and inner in simple:
        return simple[inner]
    if isinstance(inner, type):
        return inner.__name__
    return _schema_type_name(inner)


def _schema_convert_choice(value: object, choices: Any, values: list[object], path: str) -> object:
    for choice, option in zip(choices, values):
        if _schema_json_equal(value, option):
            return choice
    shown = ", ".join(_schema_json_text(v) for v in values[:10])
    raise ValueError("%s: expected one of %s; got %s" % (path, shown, _schema_value_kind(value)))


def _schema_convert_dataclass(value: object, cls: Any, path: str, lax: bool) -> object:
    import dataclasses

    if not isinstance(value, dict):
        raise ValueError("%s: expected an object (%s), got %s" % (path, cls.__name__, _schema_value_kind(value)))
    hints = _schema_hints(cls, cls.__qualname__, "field")
    kwargs: dict[str, object] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        annotation = hints.get(f.name, f.type)
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        if f.name not in value:
            if not has_default:
                raise ValueError(
                    "%s: missing required property %s (%s)" % (path, _schema_json_text(f.name), cls.__name__)
                )
            continue
        item = value[f.name]
        if item is None and has_default and not _schema_accepts_none(annotation):
            continue  # strict-mode schemas make optional fields nullable: null means "the default"
        kwargs[f.name] = _schema_convert(item, annotation, _schema_path_key(path, f.name), lax)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            "%s: %s(...) refused the value: %s: %s" % (path, cls.__name__, type(exc).__name__, exc)
        ) from exc


def _schema_convert_typeddict(value: object, cls: Any, path: str, lax: bool) -> object:
    if not isinstance(value, dict):
        raise ValueError("%s: expected an object (%s), got %s" % (path, cls.__name__, _schema_value_kind(value)))
    hints = _schema_hints(cls, cls.__qualname__, "field")
    required = _schema_typeddict_required(cls, hints)
    result: dict[str, object] = {}
    for key, annotation in hints.items():
        if key not in value:
            if key in required:
                raise ValueError("%s: missing required property %s (%s)" % (path, _schema_json_text(key), cls.__name__))
            continue
        item = value[key]
        if item is None and key not in required and not _schema_accepts_none(annotation):
            continue  # null for a key that may be left out: left out
        result[key] = _schema_convert(item, annotation, _schema_path_key(path, key), lax)
    return result


def _schema_convert_container(
    value: object, tp: object, origin: object, args: tuple[object, ...], path: str, lax: bool
) -> object:
    import collections.abc as abc

    kind = origin if origin is not None else tp
    if kind in (list, abc.Sequence, abc.MutableSequence, tuple):
        if not isinstance(value, list):
            raise ValueError("%s: expected array, got %s" % (path, _schema_value_kind(value)))
        if kind is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            fixed = () if args == ((),) else args
            if len(value) != len(fixed):
                raise ValueError("%s: expected an array of %d items, got %d" % (path, len(fixed), len(value)))
            return tuple(_schema_convert(v, a, "%s[%d]" % (path, i), lax) for i, (v, a) in enumerate(zip(value, fixed)))
        item_type = args[0] if args else object
        items = [_schema_convert(v, item_type, "%s[%d]" % (path, i), lax) for i, v in enumerate(value)]
        return tuple(items) if kind is tuple else items
    if kind in (dict, abc.Mapping, abc.MutableMapping):
        if not isinstance(value, dict):
            raise ValueError("%s: expected object, got %s" % (path, _schema_value_kind(value)))
        item_type = args[1] if len(args) == 2 else object
        return {k: _schema_convert(v, item_type, _schema_path_key(path, str(k)), lax) for k, v in value.items()}
    raise TypeError("%s: unsupported annotation %s (%s)" % (path, _schema_type_name(tp), _SCHEMA_SUPPORTED))


def from_json(value: object, annotation: object, *, path: str = "$") -> Any:
    """Convert a parsed JSON value into the annotation's Python shape.

    Dataclasses become instances (nested ones too; a missing field with a default takes the
    default, and so does null for a field with a default whose type does not allow None --
    what a model sends for an optional field under a strict-mode schema); Enums become members
    (by value); ``tuple[...]`` a tuple; ``list``/``Sequence`` a list; ``dict``/``Mapping`` a
    dict; a TypedDict a plain dict (keys it does not declare are dropped, as they are for
    dataclasses); ``Literal`` the literal; ``Union``/``Optional`` the first alternative that
    takes the value exactly, else the first that takes it with int/float conversion (``float``
    accepts integers, ``int`` accepts integral floats like ``3.0``).  Strings are never parsed
    into numbers, and booleans are never numbers.

    :param value: the value (from ``json.loads``)
    :param annotation: the type to build (as for :func:`schema_for`)
    :param path: the JSON path of ``value``, for errors
    :returns: the converted value
    :raises ValueError: the value does not fit; the message names the JSON path and what was expected
    :raises TypeError: the annotation is unsupported or cannot be evaluated
    """
    return _schema_convert(value, annotation, path, True)


def function_arguments(fn: Callable[..., Any], arguments: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """A model's JSON arguments converted for a call: ``fn(*args, **kwargs)``.

    Each argument goes through :func:`from_json` with its parameter's annotation (path
    ``$.name``), so dataclasses, Enums and tuples arrive as such.  A null for a parameter that
    has a default, when its annotation does not accept None, means "the default" (what a model
    sends for an optional parameter under a strict-mode schema) and is left out.
    Positional-only parameters go in ``args``; the others in ``kwargs``; names the function does
    not take go to its ``**kwargs`` if it has one (converted with its annotation), else raise.

    :param fn: the callable (as for :func:`function_parameters`)
    :param arguments: the parsed JSON arguments (an object)
    :returns: ``(args, kwargs)``
    :raises ValueError: an argument that does not fit, a missing required one, an unknown name
    :raises TypeError: an annotation that cannot be evaluated
    """
    import functools
    import inspect

    if not isinstance(arguments, dict):
        raise ValueError("$: expected an object of arguments, got %s" % _schema_value_kind(arguments))
    base: Any = fn
    while isinstance(base, functools.partial):
        base = base.func
    if inspect.isroutine(base):
        hint_source: object = base
    elif isinstance(base, type):
        hint_source = next(vars(k)["__init__"] for k in base.__mro__ if "__init__" in vars(k))
    else:
        hint_source = type(base).__call__
    name = getattr(base, "__name__", None) if inspect.isroutine(base) or isinstance(base, type) else None
    where = "%s()" % (name if isinstance(name, str) else type(base).__name__)
    hints = _schema_hints(hint_source, where, "parameter")
    signature = inspect.signature(fn)
    args: list[Any] = []
    skipped: list[Any] = []  # defaults of omitted positional-only parameters, passed only if later ones are given
    kwargs: dict[str, Any] = {}
    var_keyword: object = None
    for param in signature.parameters.values():
        if param.kind == param.VAR_KEYWORD:
            var_keyword = hints.get(param.name, object)
            continue
        if param.kind == param.VAR_POSITIONAL:
            continue
        annotation = hints.get(param.name, object)
        has_default = param.default is not inspect.Parameter.empty
        if param.name not in arguments or (
            arguments[param.name] is None and has_default and not _schema_accepts_none(annotation)
        ):
            if not has_default:
                raise ValueError("$: missing required property %s" % _schema_json_text(param.name))
            if param.kind == param.POSITIONAL_ONLY:
                skipped.append(param.default)
            continue
        value = _schema_convert(arguments[param.name], annotation, _schema_path_key("$", param.name), True)
        if param.kind == param.POSITIONAL_ONLY:
            args.extend(skipped)
            del skipped[:]
            args.append(value)
        else:
            kwargs[param.name] = value
    for key in arguments:
        known = signature.parameters.get(key)
        if known is not None and known.kind not in (known.VAR_POSITIONAL, known.VAR_KEYWORD):
            continue  # converted above
        if var_keyword is None:
            raise ValueError("$: unexpected property %s" % _schema_json_text(key))
        kwargs[key] = _schema_convert(arguments[key], var_keyword, _schema_path_key("$", key), True)
    return args, kwargs
