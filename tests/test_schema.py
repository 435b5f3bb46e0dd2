"""openai2.schema: type hints -> JSON Schema, docstrings, validate(), from_json().

This module uses ``from __future__ import annotations``, so every class and function below has
string annotations that schema.py must resolve with ``typing.get_type_hints`` -- as user code
with that import does.  Annotations evaluated at definition time are tested through code
compiled without the future import (``_compile_plain``).
"""

# The typing spellings (List, Optional ...) are the point: these annotations are evaluated on
# Python 3.8 too, where list[int] and int | None cannot be.
# ruff: noqa: UP006, UP007, UP045

from __future__ import annotations

import dataclasses
import datetime
import enum
import functools
import inspect
import json
import os
import sys
import typing
import unittest
from typing import Any, Dict, List, Literal, Mapping, NewType, Optional, Sequence, Tuple, TypedDict, Union

from openai2.schema import (
    check_schema,
    from_json,
    function_arguments,
    function_parameters,
    parse_docstring,
    schema_for,
    strict_schema,
    validate,
)

PY39 = sys.version_info >= (3, 9)
PY310 = sys.version_info >= (3, 10)
PY311 = sys.version_info >= (3, 11)


_plain_modules = []


def _compile_plain(source: str) -> dict[str, Any]:
    """Run ``source`` as a module without this file's ``from __future__ import annotations``."""
    import types

    module = types.ModuleType("schema_plain_test_%d" % len(_plain_modules))
    sys.modules[module.__name__] = module  # typing.get_type_hints finds a class's globals here
    _plain_modules.append(module)
    exec(compile(source, "<schema test>", "exec", dont_inherit=True), module.__dict__)
    return module.__dict__


# ------------------------------------------------------------------------------------------
# Types used by the tests (module level: string annotations resolve against these globals)


class Unit(enum.Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class BadEnum(enum.Enum):
    PAIR = (1, 2)


UserId = NewType("UserId", str)


@dataclasses.dataclass
class Location:
    """A place on the map.

    Attributes:
        city: the city's name,
            in any language
        country (str): ISO 3166 code
    """

    city: str
    country: Optional[str] = None
    tags: List[str] = dataclasses.field(default_factory=list)
    zoom: int = dataclasses.field(default=3, metadata={"description": "map zoom"})
    cache: Dict[str, int] = dataclasses.field(default_factory=dict, init=False)


@dataclasses.dataclass
class Plain:
    x: int
    y: float


@dataclasses.dataclass
class Trip:
    """A trip."""

    start: Location
    stops: List[Location]
    mode: Literal["car", "train"] = "car"


@dataclasses.dataclass
class TreeNode:
    name: str
    children: List[TreeNode] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Ping:
    pong: Optional[Pong] = None


@dataclasses.dataclass
class Pong:
    ping: Ping


@dataclasses.dataclass
class Event:
    when: datetime.datetime


@dataclasses.dataclass
class HasEvent:
    event: Event


@dataclasses.dataclass
class Positive:
    n: int

    def __post_init__(self) -> None:
        if self.n <= 0:
            raise ValueError("n must be positive")


@dataclasses.dataclass
class Broken:
    field_a: NoSuchName  # type: ignore[name-defined]  # noqa: F821


class Movie(TypedDict):
    """A film.

    Args:
        title: the title
    """

    title: str
    year: int


class MovieOptional(TypedDict, total=False):
    title: str
    rating: float


class Nums(typing.NamedTuple):
    a: int


def get_weather(
    location: Location,
    when: str,
    unit: Unit = Unit.CELSIUS,
    days: int = 3,
    note: Optional[str] = None,
    *args: int,
    verbose: bool,
    extra: Any = None,
    **kwargs: str,
) -> str:
    """Get the weather forecast.

    Uses the best  source
    available.

    Args:
        location: where to look
        when (str): the day, in
            ISO format.
        unit: which unit
        days: how many days
        verbose: say more
    Returns:
        the forecast
    """
    return ""


def no_params() -> None:
    """Do nothing."""


def untyped(a, b=2):  # type: ignore[no-untyped-def]
    return a


def with_object_default(x: int, sentinel: object = object(), pair: Tuple[int, int] = (1, 2)) -> None:
    pass


def needs_when(when: datetime.datetime) -> None:
    pass


def unresolvable(x: NotDefinedAnywhere) -> None:  # type: ignore[name-defined]  # noqa: F821
    pass


def pep585(items: list[int], table: dict[str, float]) -> None:
    pass


def pep604(value: int | None = None) -> None:
    pass


def required_optional(value: Optional[int]) -> None:
    pass


def optional_with_default(value: Optional[int] = 5) -> None:
    pass


def tree_tool(root: TreeNode, other: TreeNode) -> None:
    pass


def fixed_tuple(point: Tuple[int, int]) -> None:
    pass


class Weather:
    """A weather service."""

    def forecast(self, city: str, days: int = 1) -> str:
        """Forecast.

        :param city: the city
        """
        return city

    @classmethod
    def build(cls, name: str) -> Weather:
        return cls()

    @staticmethod
    def helper(n: int) -> int:
        return n


class Adder:
    """Adds numbers."""

    def __call__(self, a: int, b: int = 0) -> int:
        return a + b


def add3(a: int, b: int, c: int = 0) -> int:
    """Add three numbers.

    Args:
        a: first
        b: second
        c: third
    """
    return a + b + c


# ------------------------------------------------------------------------------------------


class ParseDocstringTests(unittest.TestCase):
    def test_none_and_empty(self):
        self.assertEqual(parse_docstring(None), ("", {}))
        self.assertEqual(parse_docstring("   \n  "), ("", {}))

    def test_summary_only_is_whitespace_normalised(self):
        self.assertEqual(parse_docstring("  Say   hi.\n\n   Twice,\n   loudly.  "), ("Say hi. Twice, loudly.", {}))

    def test_google_with_types_continuations_and_later_sections(self):
        doc = """Fetch rows.

        More detail
        here.

        Args:
            table (str): the table
                name, quoted.
            limit (Optional[int]): at most
                this many (default 10).
            *args: ignored
            flag: on/off
        Returns:
            rows: the rows
        Raises:
            ValueError: bad table
        """
        summary, params = parse_docstring(doc)
        self.assertEqual(summary, "Fetch rows. More detail here.")
        self.assertEqual(
            params,
            {
                "table": "the table name, quoted.",
                "limit": "at most this many (default 10).",
                "*args": "ignored",
                "flag": "on/off",
            },
        )

    def test_google_raw_and_cleandoc_text_agree(self):
        raw = get_weather.__doc__
        self.assertEqual(parse_docstring(raw), parse_docstring(inspect.cleandoc(raw)))
        summary, params = parse_docstring(raw)
        self.assertEqual(summary, "Get the weather forecast. Uses the best source available.")
        self.assertEqual(params["when"], "the day, in ISO format.")
        self.assertNotIn("the forecast", params.values())

    def test_google_other_headers(self):
        for header in ("Arguments:", "Parameters:", "Keyword Args:", "Attributes:", "Params:"):
            with self.subTest(header=header):
                doc = "Do it.\n\n%s\n    x: the x\n\nExamples:\n    y: not a parameter\n" % header
                self.assertEqual(parse_docstring(doc), ("Do it.", {"x": "the x"}))

    def test_google_entries_not_indented_under_the_header(self):
        doc = "Args:\nx: the x\ny (int): the y\n    continued\nReturns:\n    z: no"
        self.assertEqual(parse_docstring(doc), ("", {"x": "the x", "y": "the y continued"}))

    def test_google_sections_before_args_end_the_summary(self):
        doc = "Do it.\n\nNote:\n    careful\n\nArgs:\n    x: the x\n"
        self.assertEqual(parse_docstring(doc), ("Do it.", {"x": "the x"}))

    def test_google_entry_text_with_a_colon_and_an_empty_description(self):
        doc = "Do it.\n\nArgs:\n    url: see http://example.com: ok\n    empty:\n    last: end\n"
        self.assertEqual(parse_docstring(doc)[1], {"url": "see http://example.com: ok", "last": "end"})

    def test_inline_returns_line_ends_the_summary(self):
        self.assertEqual(parse_docstring("Make an id.\n\nReturns: the id.\n"), ("Make an id.", {}))
        self.assertEqual(
            parse_docstring("Make an id.\nRaises: KeyError\nArgs:\n    n: count"), ("Make an id.", {"n": "count"})
        )

    def test_prose_colon_line_is_not_a_section(self):
        doc = "Do it like this:\n\n    example text\n\nArgs:\n    x: the x\n"
        self.assertEqual(parse_docstring(doc), ("Do it like this: example text", {"x": "the x"}))

    def test_rest_fields(self):
        doc = """Send a message.

        :param to: the
            recipient
        :param int retries: how often
        :param Dict[str, int] weights: per-channel weights
        :type to: str
        :returns: the id
        :rtype: str
        :raises ValueError: when empty
        """
        summary, params = parse_docstring(doc)
        self.assertEqual(summary, "Send a message.")
        self.assertEqual(params, {"to": "the recipient", "retries": "how often", "weights": "per-channel weights"})

    def test_rest_field_directly_after_summary_and_epytext(self):
        self.assertEqual(parse_docstring("Go.\n:param x: the x\n"), ("Go.", {"x": "the x"}))
        self.assertEqual(parse_docstring("Go.\n\n@param x: the x\n@return: y\n"), ("Go.", {"x": "the x"}))

    def test_numpy(self):
        doc = """Compute things.

        Parameters
        ----------
        x : int
            The first
            value.
        y, z : str, optional
            Two names.
        flag
            Without a type.

        Returns
        -------
        int
            The result.
        """
        summary, params = parse_docstring(doc)
        self.assertEqual(summary, "Compute things.")
        self.assertEqual(
            params, {"x": "The first value.", "y": "Two names.", "z": "Two names.", "flag": "Without a type."}
        )

    def test_numpy_section_before_parameters_ends_summary(self):
        doc = "Compute.\n\nNotes\n-----\nSome note.\n\nParameters\n----------\nx : int\n    The x.\n"
        self.assertEqual(parse_docstring(doc), ("Compute.", {"x": "The x."}))


class SchemaForScalarTests(unittest.TestCase):
    def test_scalars(self):
        self.assertEqual(schema_for(str), {"type": "string"})
        self.assertEqual(schema_for(int), {"type": "integer"})
        self.assertEqual(schema_for(float), {"type": "number"})
        self.assertEqual(schema_for(bool), {"type": "boolean"})
        self.assertEqual(schema_for(None), {"type": "null"})
        self.assertEqual(schema_for(type(None)), {"type": "null"})

    def test_any_and_object_accept_anything(self):
        self.assertEqual(schema_for(Any), {})
        self.assertEqual(schema_for(object), {})

    def test_newtype_is_its_supertype(self):
        self.assertEqual(schema_for(UserId), {"type": "string"})

    def test_literal(self):
        self.assertEqual(schema_for(Literal["a", "b"]), {"type": "string", "enum": ["a", "b"]})
        self.assertEqual(schema_for(Literal[1, "x"]), {"type": ["integer", "string"], "enum": [1, "x"]})
        self.assertEqual(schema_for(Literal["a", None]), {"type": ["string", "null"], "enum": ["a", None]})
        self.assertEqual(schema_for(Literal[Literal["a"], "b"]), {"type": "string", "enum": ["a", "b"]})
        self.assertEqual(schema_for(Literal[Unit.CELSIUS]), {"type": "string", "enum": ["celsius"]})

    @unittest.skipIf(sys.version_info < (3, 9, 1), "Python 3.8 caches Literal[True] as Literal[1] (bpo-42345)")
    def test_boolean_literal(self):
        self.assertEqual(schema_for(Literal[True]), {"type": "boolean", "enum": [True]})

    def test_enum(self):
        self.assertEqual(schema_for(Unit), {"type": "string", "enum": ["celsius", "fahrenheit"]})
        self.assertEqual(schema_for(Level), {"type": "integer", "enum": [1, 2]})

    def test_enum_with_a_non_json_value_raises(self):
        with self.assertRaises(TypeError) as cm:
            schema_for(BadEnum)
        self.assertIn("(1, 2)", str(cm.exception))
        self.assertIn("BadEnum", str(cm.exception))

    def test_string_annotation_raises(self):
        with self.assertRaises(TypeError) as cm:
            schema_for("int")
        self.assertIn("'int' is a string", str(cm.exception))


class SchemaForContainerTests(unittest.TestCase):
    def test_arrays(self):
        ints = {"type": "array", "items": {"type": "integer"}}
        self.assertEqual(schema_for(List[int]), ints)
        self.assertEqual(schema_for(Sequence[int]), ints)
        self.assertEqual(schema_for(Tuple[int, ...]), ints)
        self.assertEqual(schema_for(list), {"type": "array"})
        self.assertEqual(schema_for(List), {"type": "array"})
        self.assertEqual(schema_for(tuple), {"type": "array"})

    @unittest.skipIf(not PY39, "list[int] and collections.abc generics need Python 3.9")
    def test_builtin_generics(self):
        import collections.abc

        self.assertEqual(schema_for(list[str]), {"type": "array", "items": {"type": "string"}})
        self.assertEqual(schema_for(tuple[str, ...]), {"type": "array", "items": {"type": "string"}})
        self.assertEqual(schema_for(collections.abc.Sequence[int]), {"type": "array", "items": {"type": "integer"}})
        self.assertEqual(schema_for(dict[str, int]), {"type": "object", "additionalProperties": {"type": "integer"}})

    def test_fixed_tuple(self):
        self.assertEqual(
            schema_for(Tuple[int, str]),
            {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "minItems": 2, "maxItems": 2},
        )

    def test_objects(self):
        self.assertEqual(schema_for(Dict[str, int]), {"type": "object", "additionalProperties": {"type": "integer"}})
        self.assertEqual(
            schema_for(Mapping[str, float]), {"type": "object", "additionalProperties": {"type": "number"}}
        )
        self.assertEqual(schema_for(dict), {"type": "object"})
        self.assertEqual(schema_for(Dict), {"type": "object"})

    def test_non_string_keys_raise(self):
        with self.assertRaises(TypeError) as cm:
            schema_for(Dict[int, str], where="f(): parameter 'x'")
        self.assertEqual(
            str(cm.exception),
            "f(): parameter 'x': unsupported annotation typing.Dict[int, str] "
            "(JSON object keys are strings: use dict[str, X])",
        )

    def test_set_and_bytes_raise_with_advice(self):
        for tp, advice in ((set, "a set is not JSON"), (typing.Set[int], "a set is not JSON"), (bytes, "use str")):
            with self.subTest(tp=tp):
                with self.assertRaises(TypeError) as cm:
                    schema_for(tp)
                self.assertIn("the annotation: unsupported annotation", str(cm.exception))
                self.assertIn(advice, str(cm.exception))

    def test_unsupported_error_names_place_annotation_and_alternatives(self):
        with self.assertRaises(TypeError) as cm:
            schema_for(datetime.datetime, where="get_weather(): parameter 'when'")
        self.assertEqual(
            str(cm.exception),
            "get_weather(): parameter 'when': unsupported annotation datetime.datetime "
            "(use str, int, float, bool, list, dict, Literal, Enum, a dataclass or TypedDict)",
        )

    def test_unsupported_inside_a_container_names_both(self):
        with self.assertRaises(TypeError) as cm:
            schema_for(List[datetime.date])
        self.assertIn("unsupported annotation datetime.date in typing.List[datetime.date]", str(cm.exception))

    def test_unsupported_classes_and_callables(self):
        for tp in (Weather, typing.Callable[[int], int], complex, Nums):
            with self.subTest(tp=tp):
                self.assertRaises(TypeError, schema_for, tp)


class SchemaForUnionTests(unittest.TestCase):
    def test_optional_scalar_is_a_type_list(self):
        self.assertEqual(schema_for(Optional[int]), {"type": ["integer", "null"]})
        self.assertEqual(schema_for(Union[None, str]), {"type": ["string", "null"]})

    def test_optional_array_object_or_enum_is_any_of_null(self):
        self.assertEqual(
            schema_for(Optional[List[int]]),
            {"anyOf": [{"type": "array", "items": {"type": "integer"}}, {"type": "null"}]},
        )
        self.assertEqual(
            schema_for(Optional[Unit]),
            {"anyOf": [{"type": "string", "enum": ["celsius", "fahrenheit"]}, {"type": "null"}]},
        )

    def test_union_is_any_of(self):
        self.assertEqual(schema_for(Union[int, str]), {"anyOf": [{"type": "integer"}, {"type": "string"}]})
        self.assertEqual(
            schema_for(Union[int, str, None]),
            {"anyOf": [{"type": "integer"}, {"type": "string"}, {"type": "null"}]},
        )

    def test_optional_any_stays_any(self):
        self.assertEqual(schema_for(Optional[Any]), {})

    @unittest.skipIf(not PY310, "X | Y needs Python 3.10")
    def test_pep604_union(self):
        ns = _compile_plain("A = int | None\nB = int | str\n")
        self.assertEqual(schema_for(ns["A"]), {"type": ["integer", "null"]})
        self.assertEqual(schema_for(ns["B"]), {"anyOf": [{"type": "integer"}, {"type": "string"}]})

    @unittest.skipIf(not PY39, "typing.Annotated needs Python 3.9")
    def test_annotated_description(self):
        self.assertEqual(
            schema_for(typing.Annotated[int, "how many", 42]), {"type": "integer", "description": "how many"}
        )
        self.assertEqual(
            schema_for(Optional[typing.Annotated[str, "the name"]]),
            {"type": ["string", "null"], "description": "the name"},
        )
        self.assertEqual(schema_for(typing.Annotated[int, 42]), {"type": "integer"})


class SchemaForClassTests(unittest.TestCase):
    def test_dataclass_with_defaults_docstring_and_metadata(self):
        self.assertEqual(
            schema_for(Location),
            {
                "type": "object",
                "description": "A place on the map.",
                "properties": {
                    "city": {"type": "string", "description": "the city's name, in any language"},
                    "country": {"type": ["string", "null"], "description": "ISO 3166 code"},
                    "tags": {"type": "array", "items": {"type": "string"}, "default": []},
                    "zoom": {"type": "integer", "default": 3, "description": "map zoom"},
                },
                "required": ["city"],
            },
        )

    def test_dataclass_without_docstring_has_no_description(self):
        self.assertEqual(
            schema_for(Plain),
            {
                "type": "object",
                "properties": {"x": {"type": "integer"}, "y": {"type": "number"}},
                "required": ["x", "y"],
            },
        )

    def test_nested_dataclasses(self):
        schema = schema_for(Trip)
        self.assertEqual(schema["properties"]["start"], schema_for(Location))
        self.assertEqual(schema["properties"]["stops"], {"type": "array", "items": schema_for(Location)})
        self.assertEqual(schema["properties"]["mode"], {"type": "string", "enum": ["car", "train"], "default": "car"})
        self.assertEqual(schema["required"], ["start", "stops"])

    def test_typeddict(self):
        self.assertEqual(
            schema_for(Movie),
            {
                "type": "object",
                "description": "A film.",
                "properties": {"title": {"type": "string", "description": "the title"}, "year": {"type": "integer"}},
                "required": ["title", "year"],
            },
        )
        self.assertEqual(schema_for(MovieOptional)["required"], [])

    @unittest.skipIf(not PY311, "typing.Required/NotRequired need Python 3.11")
    def test_typeddict_required_and_not_required(self):
        ns = _compile_plain(
            "from typing import TypedDict, Required, NotRequired\n"
            "class A(TypedDict):\n    x: int\n    y: NotRequired[str]\n"
            "class B(TypedDict, total=False):\n    x: Required[int]\n    y: str\n"
        )
        for name in ("A", "B"):
            with self.subTest(name=name):
                schema = schema_for(ns[name])
                self.assertEqual(schema["properties"], {"x": {"type": "integer"}, "y": {"type": "string"}})
                self.assertEqual(schema["required"], ["x"])
        strict = schema_for(ns["A"], strict=True)
        self.assertEqual(strict["properties"]["y"], {"type": ["string", "null"]})
        self.assertEqual(strict["required"], ["x", "y"])

    def test_recursive_dataclass_uses_defs(self):
        schema = schema_for(TreeNode)
        node = {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/TreeNode"}, "default": []},
            },
            "required": ["name"],
        }
        self.assertEqual(schema, dict(node, **{"$defs": {"TreeNode": node}}))
        self.assertEqual(validate({"name": "a", "children": [{"name": "b", "children": []}]}, schema), [])
        self.assertEqual(
            validate({"name": "a", "children": [{"name": "b", "children": [{"name": 1}]}]}, schema),
            ["$.children[0].children[0].name: expected string, got integer 1"],
        )

    def test_mutually_recursive_dataclasses(self):
        schema = schema_for(Ping)
        self.assertEqual(set(schema["$defs"]), {"Ping"})
        self.assertEqual(schema["properties"]["pong"]["anyOf"][0]["properties"]["ping"], {"$ref": "#/$defs/Ping"})
        self.assertEqual(validate({"pong": {"ping": {"pong": None}}}, schema), [])
        self.assertEqual(
            validate({"pong": {"ping": {"pong": {"ping": 3}}}}, schema),
            ["$.pong.ping.pong.ping: expected object, got integer 3"],
        )

    def test_inlined_root_shares_nothing_with_defs(self):
        schema = schema_for(TreeNode)
        schema["properties"]["name"]["type"] = "integer"
        self.assertEqual(schema["$defs"]["TreeNode"]["properties"]["name"], {"type": "string"})

    def test_recursive_list_item_root_keeps_defs(self):
        schema = schema_for(List[TreeNode])
        self.assertEqual(schema["items"], {"$ref": "#/$defs/TreeNode"})
        self.assertIn("TreeNode", schema["$defs"])
        self.assertEqual(validate([{"name": "x"}], schema), [])

    def test_two_classes_with_one_name_get_two_defs(self):
        ns = _compile_plain(
            "import dataclasses\nfrom typing import List, Optional\n"
            "class Node:\n    up = None\n"
            "Node.__annotations__ = {'up': Optional[Node]}\n"
            "First = dataclasses.dataclass(Node)\n"
            "@dataclasses.dataclass\nclass Node:\n    first: First\n    down: Optional['Node'] = None\n"
        )
        second = ns["Node"]
        schema = schema_for(List[second])
        self.assertEqual(len(schema["$defs"]), 2)
        self.assertEqual(validate([{"first": {"up": {}}, "down": {"first": {}}}], schema), [])

    def test_unsupported_field_names_class_and_field(self):
        with self.assertRaises(TypeError) as cm:
            schema_for(HasEvent, where="f(): parameter 'e'")
        self.assertTrue(
            str(cm.exception).startswith(
                "f(): parameter 'e': field HasEvent.event: field Event.when: unsupported annotation datetime.datetime"
            ),
            str(cm.exception),
        )

    def test_unresolvable_field_annotation_names_the_field(self):
        with self.assertRaises(TypeError) as cm:
            schema_for(Broken)
        self.assertIn("field 'field_a'", str(cm.exception))
        self.assertIn("NoSuchName", str(cm.exception))


class StrictModeTests(unittest.TestCase):
    def assertStrictObjects(self, schema, seen=None):
        """Every object schema: additionalProperties false, every property required, no default."""
        if isinstance(schema, dict):
            self.assertNotIn("default", schema)
            if schema.get("type") == "object" or "properties" in schema:
                self.assertIs(schema.get("additionalProperties"), False, schema)
                self.assertEqual(sorted(schema["required"]), sorted(schema["properties"]), schema)
            for value in schema.values():
                self.assertStrictObjects(value)
        elif isinstance(schema, list):
            for value in schema:
                self.assertStrictObjects(value)

    def test_nested_objects_strict(self):
        schema = schema_for(Trip, strict=True)
        self.assertStrictObjects(schema)
        location = schema["properties"]["start"]
        self.assertEqual(
            location["properties"]["country"], {"type": ["string", "null"], "description": "ISO 3166 code"}
        )
        self.assertEqual(location["properties"]["zoom"], {"type": ["integer", "null"], "description": "map zoom"})
        self.assertEqual(
            location["properties"]["tags"],
            {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
        )
        self.assertEqual(
            location["properties"]["city"], {"type": "string", "description": "the city's name, in any language"}
        )
        self.assertEqual(
            schema["properties"]["mode"], {"anyOf": [{"type": "string", "enum": ["car", "train"]}, {"type": "null"}]}
        )

    def test_strict_recursive(self):
        schema = schema_for(TreeNode, strict=True)
        self.assertStrictObjects(schema)
        self.assertEqual(validate({"name": "a", "children": None}, schema), [])
        self.assertEqual(from_json({"name": "a", "children": None}, TreeNode), TreeNode("a", []))

    def test_strict_refuses_what_it_cannot_express(self):
        cases = (Any, object, Dict[str, int], dict, list, tuple, Tuple[int, int], List[Dict[str, int]])
        for tp in cases:
            with self.subTest(tp=tp):
                with self.assertRaises(TypeError) as cm:
                    schema_for(tp, strict=True, where="f(): parameter 'x'")
                self.assertIn("f(): parameter 'x': ", str(cm.exception))
                self.assertIn("cannot be expressed in OpenAI strict mode", str(cm.exception))
                schema_for(tp)  # fine outside strict mode

    def test_strict_function_parameters(self):
        summary, params = function_parameters(get_weather, strict=False)
        with self.assertRaises(TypeError):  # extra: Any
            function_parameters(get_weather, strict=True)

        def tool(city: str, days: int = 3, note: Optional[str] = None, unit: Unit = Unit.CELSIUS) -> None:
            pass

        summary, params = function_parameters(tool, strict=True)
        self.assertStrictObjects(params)
        self.assertEqual(
            params,
            {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "days": {"type": ["integer", "null"]},
                    "note": {"type": ["string", "null"]},
                    "unit": {"anyOf": [{"type": "string", "enum": ["celsius", "fahrenheit"]}, {"type": "null"}]},
                },
                "required": ["city", "days", "note", "unit"],
                "additionalProperties": False,
            },
        )

    def test_strict_parameter_without_annotation_raises(self):
        with self.assertRaises(TypeError) as cm:
            function_parameters(untyped, strict=True)
        self.assertIn("untyped(): parameter 'a'", str(cm.exception))
        self.assertIn("without annotation", str(cm.exception))


class FunctionParametersTests(unittest.TestCase):
    def test_function(self):
        summary, params = function_parameters(get_weather)
        self.assertEqual(summary, "Get the weather forecast. Uses the best source available.")
        location = schema_for(Location)
        self.assertEqual(
            params,
            {
                "type": "object",
                "properties": {
                    "location": dict(location, description="where to look"),
                    "when": {"type": "string", "description": "the day, in ISO format."},
                    "unit": {
                        "type": "string",
                        "enum": ["celsius", "fahrenheit"],
                        "default": "celsius",
                        "description": "which unit",
                    },
                    "days": {"type": "integer", "default": 3, "description": "how many days"},
                    "note": {"type": "string"},
                    "verbose": {"type": "boolean", "description": "say more"},
                    "extra": {},
                },
                "required": ["location", "when", "verbose"],
            },
        )

    def test_no_parameters(self):
        self.assertEqual(
            function_parameters(no_params), ("Do nothing.", {"type": "object", "properties": {}, "required": []})
        )

    def test_no_annotations_accept_anything(self):
        self.assertEqual(
            function_parameters(untyped),
            ("", {"type": "object", "properties": {"a": {}, "b": {"default": 2}}, "required": ["a"]}),
        )

    def test_only_json_defaults_are_written(self):
        _, params = function_parameters(with_object_default)
        self.assertEqual(params["properties"]["sentinel"], {})
        self.assertEqual(
            params["properties"]["pair"],
            {
                "type": "array",
                "prefixItems": [{"type": "integer"}, {"type": "integer"}],
                "minItems": 2,
                "maxItems": 2,
                "default": [1, 2],
            },
        )
        self.assertEqual(params["required"], ["x"])

        def floats(a: float = float("nan"), b: Dict[str, Any] = {"k": [1, None]}, c: Dict[str, Any] = {1: 2}) -> None:  # noqa: B006
            pass

        self.assertEqual(
            function_parameters(floats)[1]["properties"],
            {"a": {"type": "number"}, "b": {"type": "object", "default": {"k": [1, None]}}, "c": {"type": "object"}},
        )

    def test_optional_rules(self):
        self.assertEqual(
            function_parameters(required_optional)[1],
            {"type": "object", "properties": {"value": {"type": ["integer", "null"]}}, "required": ["value"]},
        )
        self.assertEqual(
            function_parameters(optional_with_default)[1],
            {"type": "object", "properties": {"value": {"type": ["integer", "null"], "default": 5}}, "required": []},
        )

    def test_methods(self):
        service = Weather()
        self.assertEqual(
            function_parameters(service.forecast),
            (
                "Forecast.",
                {
                    "type": "object",
                    "properties": {
                        "city": {"type": "string", "description": "the city"},
                        "days": {"type": "integer", "default": 1},
                    },
                    "required": ["city"],
                },
            ),
        )
        self.assertEqual(function_parameters(Weather.build)[1]["properties"], {"name": {"type": "string"}})
        self.assertEqual(function_parameters(Weather.helper)[1]["properties"], {"n": {"type": "integer"}})

    def test_partial_leaves_out_bound_arguments(self):
        summary, params = function_parameters(functools.partial(add3, 1))
        self.assertEqual(summary, "Add three numbers.")
        self.assertEqual(list(params["properties"]), ["b", "c"])
        self.assertEqual(params["required"], ["b"])
        self.assertEqual(params["properties"]["b"], {"type": "integer", "description": "second"})
        _, params = function_parameters(functools.partial(add3, b=2))
        self.assertEqual(params["required"], ["a"])
        with self.assertRaises(TypeError) as cm:
            function_parameters(functools.partial(needs_when))
        self.assertIn("needs_when(): parameter 'when'", str(cm.exception))

    def test_callable_object(self):
        summary, params = function_parameters(Adder())
        self.assertEqual(summary, "Adds numbers.")
        self.assertEqual(
            params,
            {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer", "default": 0}},
                "required": ["a"],
            },
        )

    def test_builtin_function_and_class(self):
        summary, params = function_parameters(len)
        self.assertEqual(summary, parse_docstring(len.__doc__)[0])
        self.assertEqual(params, {"type": "object", "properties": {"obj": {}}, "required": ["obj"]})
        summary, params = function_parameters(Plain)
        self.assertEqual(summary, "")
        self.assertEqual(params, schema_for(Plain))

    def test_unsupported_annotation_names_function_and_parameter(self):
        with self.assertRaises(TypeError) as cm:
            function_parameters(needs_when)
        self.assertEqual(
            str(cm.exception),
            "needs_when(): parameter 'when': unsupported annotation datetime.datetime "
            "(use str, int, float, bool, list, dict, Literal, Enum, a dataclass or TypedDict)",
        )
        with self.assertRaises(TypeError) as cm:
            function_parameters(needs_when, where="tool 'w'")
        self.assertTrue(str(cm.exception).startswith("tool 'w': parameter 'when': "))

    def test_unresolvable_annotation_names_function_and_parameter(self):
        with self.assertRaises(TypeError) as cm:
            function_parameters(unresolvable)
        text = str(cm.exception)
        self.assertTrue(text.startswith("unresolvable(): parameter 'x': cannot evaluate the annotation"), text)
        self.assertIn("NotDefinedAnywhere", text)
        self.assertIn("NameError", text)

    @unittest.skipIf(PY39, "the failure happens on Python 3.8 only")
    def test_pep585_annotation_on_python38_explains(self):
        with self.assertRaises(TypeError) as cm:
            function_parameters(pep585)
        text = str(cm.exception)
        self.assertIn("pep585(): parameter 'items': cannot evaluate the annotation 'list[int]'", text)
        self.assertIn("typing.List[int]", text)

    @unittest.skipIf(not PY39, "list[int] needs Python 3.9")
    def test_pep585_annotation(self):
        self.assertEqual(
            function_parameters(pep585)[1]["properties"],
            {
                "items": {"type": "array", "items": {"type": "integer"}},
                "table": {"type": "object", "additionalProperties": {"type": "number"}},
            },
        )

    @unittest.skipIf(PY310, "the failure happens before Python 3.10 only")
    def test_pep604_annotation_before_python310_explains(self):
        with self.assertRaises(TypeError) as cm:
            function_parameters(pep604)
        text = str(cm.exception)
        self.assertIn("pep604(): parameter 'value': cannot evaluate the annotation 'int | None'", text)
        self.assertIn("typing.Optional[X]", text)

    @unittest.skipIf(not PY310, "int | None needs Python 3.10")
    def test_pep604_annotation(self):
        self.assertEqual(
            function_parameters(pep604)[1],
            {"type": "object", "properties": {"value": {"type": "integer"}}, "required": []},
        )

    def test_evaluated_annotations(self):
        ns = _compile_plain(
            "from typing import List, Optional\n"
            "def f(xs: List[int], name: Optional[str] = None, *, k: bool = False):\n"
            "    '''Plain.\n\n    :param xs: numbers\n    '''\n"
        )
        self.assertEqual(
            function_parameters(ns["f"]),
            (
                "Plain.",
                {
                    "type": "object",
                    "properties": {
                        "xs": {"type": "array", "items": {"type": "integer"}, "description": "numbers"},
                        "name": {"type": "string"},
                        "k": {"type": "boolean", "default": False},
                    },
                    "required": ["xs"],
                },
            ),
        )

    def test_recursive_parameters_share_defs_at_the_parameters_root(self):
        _, params = function_parameters(tree_tool)
        self.assertEqual(params["properties"]["root"], {"$ref": "#/$defs/TreeNode"})
        self.assertEqual(params["properties"]["other"], {"$ref": "#/$defs/TreeNode"})
        self.assertEqual(list(params["$defs"]), ["TreeNode"])
        self.assertEqual(validate({"root": {"name": "a"}, "other": {"name": "b"}}, params), [])
        self.assertEqual(
            validate({"root": {"name": "a", "children": [{}]}, "other": {"name": "b"}}, params),
            ['$.root.children[0]: missing required property "name"'],
        )

    def test_description_beside_a_ref_is_wrapped(self):
        def tool(node: TreeNode) -> None:
            """Walk.

            Args:
                node: the start
            """

        _, params = function_parameters(tool)
        self.assertEqual(
            params["properties"]["node"], {"anyOf": [{"$ref": "#/$defs/TreeNode"}], "description": "the start"}
        )
        self.assertEqual(validate({"node": {"name": 1}}, params), ["$.node.name: expected string, got integer 1"])

    @unittest.skipIf(not PY39, "typing.Annotated needs Python 3.9")
    def test_annotated_description_wins_over_docstring(self):
        ns = _compile_plain(
            "from typing import Annotated, Optional\n"
            "def f(a: Annotated[int, 'from annotated'], b: Annotated[Optional[str], 'bee'] = None):\n"
            "    '''F.\n\n    Args:\n        a: from docstring\n    '''\n"
        )
        self.assertEqual(
            function_parameters(ns["f"])[1]["properties"],
            {"a": {"type": "integer", "description": "from annotated"}, "b": {"type": "string", "description": "bee"}},
        )

    def test_fixed_tuple_refused_in_strict_mode(self):
        self.assertIn("prefixItems", function_parameters(fixed_tuple)[1]["properties"]["point"])
        with self.assertRaises(TypeError) as cm:
            function_parameters(fixed_tuple, strict=True)
        self.assertIn("fixed_tuple(): parameter 'point'", str(cm.exception))
        self.assertIn("prefixItems", str(cm.exception))


class ValidateTests(unittest.TestCase):
    def test_type(self):
        cases = [
            ("x", "string", True),
            (3, "integer", True),
            (3.0, "integer", True),
            (3.5, "integer", False),
            (True, "integer", False),
            (True, "number", False),
            (2, "number", True),
            (2.5, "number", True),
            (True, "boolean", True),
            (0, "boolean", False),
            (None, "null", True),
            ([], "array", True),
            ({}, "array", False),
            ({}, "object", True),
            ("x", ["integer", "string"], True),
            (None, ["integer", "string"], False),
        ]
        for value, kind, ok in cases:
            with self.subTest(value=value, kind=kind):
                self.assertEqual(validate(value, {"type": kind}) == [], ok)
        self.assertEqual(validate("x", {"type": "integer"}), ['$: expected integer, got string "x"'])
        self.assertEqual(validate(None, {"type": ["integer", "string"]}), ["$: expected integer or string, got null"])

    def test_long_values_are_cut_in_messages(self):
        (error,) = validate("y" * 100, {"type": "integer"})
        self.assertLess(len(error), 80)
        self.assertTrue(error.startswith('$: expected integer, got string "yyy'))

    def test_enum_and_const_compare_as_json(self):
        self.assertEqual(validate(1, {"enum": [True, "1"]}), ['$: expected one of true, "1"; got integer 1'])
        self.assertEqual(validate(True, {"enum": [1]}), ["$: expected one of 1; got boolean true"])
        self.assertEqual(validate(1.0, {"enum": [1]}), [])
        self.assertEqual(validate({"a": [1]}, {"const": {"a": [1.0]}}), [])
        self.assertEqual(validate("b", {"const": "a"}), ['$: expected "a"; got string "b"'])

    def test_object_keywords_with_paths(self):
        schema = {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "object", "properties": {"c": {"type": "string"}}}},
            "required": ["a", "b"],
            "additionalProperties": False,
        }
        self.assertEqual(validate({"a": 1, "b": {"c": "x"}}, schema), [])
        self.assertEqual(
            validate({"b": {"c": 5}, "zz": 1}, schema),
            [
                '$: missing required property "a"',
                "$.b.c: expected string, got integer 5",
                '$: unexpected property "zz" (allowed: "a", "b")',
            ],
        )
        self.assertEqual(
            validate({"x y": "s"}, {"additionalProperties": {"type": "integer"}}),
            ['$["x y"]: expected integer, got string "s"'],
        )

    def test_array_keywords_with_paths(self):
        self.assertEqual(
            validate([1, "x", 3], {"type": "array", "items": {"type": "integer"}}),
            ['$[1]: expected integer, got string "x"'],
        )
        self.assertEqual(validate([1], {"minItems": 2}), ["$: expected at least 2 items, got 1"])
        self.assertEqual(validate([1, 2, 3], {"maxItems": 2}), ["$: expected at most 2 items, got 3"])
        tuple_schema = {"prefixItems": [{"type": "integer"}, {"type": "string"}], "items": False}
        self.assertEqual(validate([1, "a"], tuple_schema), [])
        self.assertEqual(
            validate(["a", "b", 3], tuple_schema),
            ['$[0]: expected integer, got string "a"', "$[2]: no item is allowed here (at most 2 items)"],
        )
        self.assertEqual(
            validate([1, 2], {"items": [{"type": "integer"}], "additionalItems": {"type": "string"}}),
            ["$[1]: expected string, got integer 2"],
        )
        self.assertEqual(
            validate([1, 2, 1], {"uniqueItems": True}), ["$[2]: duplicate item (the items must be unique)"]
        )
        self.assertEqual(validate([1, True], {"uniqueItems": True}), [])

    def test_nested_paths(self):
        schema = schema_for(Trip)
        value = {"start": {"city": "a"}, "stops": [{"city": "b"}, {"city": "c", "zoom": "far"}], "mode": "bus"}
        self.assertEqual(
            validate(value, schema),
            [
                '$.stops[1].zoom: expected integer, got string "far"',
                '$.mode: expected one of "car", "train"; got string "bus"',
            ],
        )

    def test_string_keywords(self):
        self.assertEqual(validate("ab", {"minLength": 3}), ["$: expected at least 3 characters, got 2"])
        self.assertEqual(validate("abcd", {"maxLength": 3}), ["$: expected at most 3 characters, got 4"])
        self.assertEqual(validate("北京", {"maxLength": 2}), [])
        self.assertEqual(validate("abc", {"pattern": "^a"}), [])
        self.assertEqual(
            validate("xbc", {"pattern": "^a"}), ["$: expected a string matching the pattern '^a', got string \"xbc\""]
        )
        self.assertIn("not a valid regular expression", validate("x", {"pattern": "("})[0])
        self.assertEqual(validate(5, {"minLength": 3, "pattern": "^a"}), [])  # string keywords: strings only

    def test_number_keywords(self):
        self.assertEqual(validate(-1, {"minimum": 0}), ["$: expected a number >= 0, got integer -1"])
        self.assertEqual(validate(11, {"maximum": 10}), ["$: expected a number <= 10, got integer 11"])
        self.assertEqual(validate(0, {"exclusiveMinimum": 0}), ["$: expected a number > 0, got integer 0"])
        self.assertEqual(validate(10, {"exclusiveMaximum": 10}), ["$: expected a number < 10, got integer 10"])
        self.assertEqual(
            validate(0, {"minimum": 0, "exclusiveMinimum": True}), ["$: expected a number > 0, got integer 0"]
        )
        self.assertEqual(
            validate(10, {"maximum": 10, "exclusiveMaximum": True}), ["$: expected a number < 10, got integer 10"]
        )
        self.assertEqual(validate(0, {"minimum": 0, "exclusiveMinimum": False}), [])
        self.assertEqual(validate(0.3, {"multipleOf": 0.1}), [])
        self.assertEqual(validate(7, {"multipleOf": 2}), ["$: expected a multiple of 2, got integer 7"])
        self.assertEqual(validate(True, {"minimum": 5}), [])  # booleans are not numbers
        self.assertEqual(validate("5", {"minimum": 10}), [])

    def test_any_of_reports_the_alternative_for_the_value_kind(self):
        schema = schema_for(Optional[Location])
        self.assertEqual(validate(None, schema), [])
        self.assertEqual(validate({"city": 5}, schema), ["$.city: expected string, got integer 5"])
        self.assertEqual(validate("x", schema), ['$: expected object or null, got string "x"'])
        self.assertEqual(
            validate("x", {"anyOf": [{"type": "integer"}, {"enum": [1, 2]}, {"const": True}]}),
            ['$: expected integer or one of 1, 2 or true, got string "x"'],
        )

    def test_one_of_and_all_of(self):
        one = {"oneOf": [{"type": "integer"}, {"type": "number"}]}
        self.assertEqual(validate(2.5, one), [])
        self.assertEqual(validate(2, one), ["$: matches 2 of the oneOf alternatives, expected exactly one"])
        self.assertEqual(validate("x", one), ['$: expected integer or number, got string "x"'])
        both = {"allOf": [{"type": "integer"}, {"minimum": 3}]}
        self.assertEqual(validate(5, both), [])
        self.assertEqual(validate(1, both), ["$: expected a number >= 3, got integer 1"])

    def test_property_counts_and_not(self):
        self.assertEqual(validate({}, {"minProperties": 1}), ["$: expected at least 1 properties, got 0"])
        self.assertEqual(validate({"a": 1, "b": 2}, {"maxProperties": 1}), ["$: expected at most 1 properties, got 2"])
        self.assertEqual(validate("x", {"not": {"type": "integer"}}), [])
        self.assertEqual(validate(1, {"not": {"type": "integer"}}), ['$: must not match {"type": "integer"}'])

    def test_refs(self):
        schema = {
            "type": "object",
            "properties": {"a": {"$ref": "#/$defs/Pos"}, "b": {"$ref": "#/definitions/Name"}, "c": {"$ref": "#"}},
            "$defs": {"Pos": {"type": "integer", "minimum": 1}},
            "definitions": {"Name": {"type": "string"}},
        }
        self.assertEqual(validate({"a": 1, "b": "x", "c": {"a": 2}}, schema), [])
        self.assertEqual(
            validate({"a": 0, "b": 1, "c": {"c": {"a": "z"}}}, schema),
            [
                "$.a: expected a number >= 1, got integer 0",
                "$.b: expected string, got integer 1",
                '$.c.c.a: expected integer, got string "z"',
            ],
        )
        self.assertEqual(
            validate(1, {"$ref": "#/$defs/Missing"}), ["$: the schema's $ref '#/$defs/Missing' cannot be resolved"]
        )
        self.assertEqual(
            validate(1, {"$ref": "http://example.com/s"}),
            ["$: the schema's $ref 'http://example.com/s' cannot be resolved"],
        )

    def test_self_referencing_schema_without_a_value_step_ends(self):
        loop = {"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}}
        errors = validate(1, loop)
        self.assertEqual(len(errors), 1)
        self.assertIn("refers to itself", errors[0])

    def test_cyclic_value_and_deep_nesting_end(self):
        schema = {"type": "array", "items": {"$ref": "#"}}
        value: list[Any] = []
        value.append(value)
        errors = validate(value, schema)
        self.assertEqual(len(errors), 1)
        self.assertIn("nested too deeply", errors[0])
        deep: Any = "leaf"
        for _ in range(500):
            deep = [deep]
        self.assertIn("nested too deeply", validate(deep, {"items": {"$ref": "#"}, "type": ["array", "string"]})[0])

    def test_nullable(self):
        self.assertEqual(validate(None, {"type": "string", "nullable": True}), [])
        self.assertEqual(validate(None, {"type": "string", "enum": ["a"], "nullable": True}), [])
        self.assertEqual(validate(None, {"type": "string"}), ["$: expected string, got null"])

    def test_boolean_schemas_and_unknown_keywords(self):
        self.assertEqual(validate(1, True), [])
        self.assertEqual(validate(1, {}), [])
        self.assertEqual(validate(1, False), ["$: no value is allowed here"])
        self.assertEqual(validate({"a": 1}, {"properties": {"a": False}}), ["$.a: no value is allowed here"])
        self.assertEqual(validate(1, {"format": "date-time", "x-custom": 1, "title": "t"}), [])

    def test_errors_are_bounded(self):
        errors = validate(list(range(100)), {"items": {"type": "string"}})
        self.assertEqual(len(errors), 21)
        self.assertEqual(errors[19], "$[19]: expected string, got integer 19")
        self.assertEqual(errors[20], "$: more errors not listed (the first 20 are above)")
        self.assertEqual(len(validate({str(i): i for i in range(50)}, {"additionalProperties": False})), 21)

    def test_function_arguments_against_their_schema(self):
        _, params = function_parameters(get_weather)
        good = {"location": {"city": "北京"}, "when": "2025-01-01", "verbose": True, "unit": "celsius"}
        self.assertEqual(validate(good, params), [])
        bad = {"location": {"city": "北京", "zoom": 2.0}, "when": "x", "unit": "kelvin"}
        self.assertEqual(
            validate(bad, params),
            [
                '$: missing required property "verbose"',
                '$.unit: expected one of "celsius", "fahrenheit"; got string "kelvin"',
            ],
        )


class FromJsonTests(unittest.TestCase):
    def test_scalars(self):
        self.assertEqual(from_json("x", str), "x")
        self.assertEqual(from_json(True, bool), True)
        self.assertIsNone(from_json(None, None))
        self.assertIsNone(from_json(None, type(None)))
        converted = from_json(3, float)
        self.assertEqual((converted, type(converted)), (3.0, float))
        converted = from_json(3.0, int)
        self.assertEqual((converted, type(converted)), (3, int))
        self.assertEqual(from_json({"a": [1]}, Any), {"a": [1]})
        self.assertEqual(from_json("u1", UserId), "u1")

    def test_scalar_errors(self):
        cases = [
            ("3", int, '$: expected integer, got string "3"'),
            (3.5, int, "$: expected integer, got number 3.5"),
            (True, int, "$: expected integer, got boolean true"),
            (False, float, "$: expected number, got boolean false"),
            (1, bool, "$: expected boolean, got integer 1"),
            (1, str, "$: expected string, got integer 1"),
            (0, None, "$: expected null, got integer 0"),
        ]
        for value, tp, message in cases:
            with self.subTest(value=value, tp=tp):
                with self.assertRaises(ValueError) as cm:
                    from_json(value, tp)
                self.assertEqual(str(cm.exception), message)

    def test_containers(self):
        self.assertEqual(from_json([1, 2.0], List[int]), [1, 2])
        self.assertEqual(from_json([1, 2], Sequence[float]), [1.0, 2.0])
        self.assertEqual(from_json([1, 2], Tuple[int, ...]), (1, 2))
        self.assertEqual(from_json([1, "a"], Tuple[int, str]), (1, "a"))
        self.assertEqual(from_json({"a": 1}, Dict[str, float]), {"a": 1.0})
        self.assertEqual(from_json({"a": 1}, Mapping[str, int]), {"a": 1})
        self.assertEqual(from_json([1, "x"], list), [1, "x"])
        self.assertEqual(from_json({"k": None}, dict), {"k": None})

    def test_container_errors(self):
        cases = [
            ({}, List[int], "$: expected array, got object"),
            ([1, "x"], List[int], '$[1]: expected integer, got string "x"'),
            ([1], Tuple[int, str], "$: expected an array of 2 items, got 1"),
            ([1, 2], Tuple[int, str], "$[1]: expected string, got integer 2"),
            ([], Dict[str, int], "$: expected object, got array"),
            ({"a b": "x"}, Dict[str, int], '$["a b"]: expected integer, got string "x"'),
        ]
        for value, tp, message in cases:
            with self.subTest(value=value, tp=tp):
                with self.assertRaises(ValueError) as cm:
                    from_json(value, tp)
                self.assertEqual(str(cm.exception), message)

    def test_literal_and_enum(self):
        self.assertEqual(from_json("car", Literal["car", "train"]), "car")
        self.assertEqual(from_json(1.0, Literal[1, 2]), 1)
        self.assertIs(from_json("celsius", Unit), Unit.CELSIUS)
        self.assertIs(from_json(2, Level), Level.HIGH)
        self.assertIs(from_json("celsius", Literal[Unit.CELSIUS]), Unit.CELSIUS)
        with self.assertRaises(ValueError) as cm:
            from_json("kelvin", Unit)
        self.assertEqual(str(cm.exception), '$: expected one of "celsius", "fahrenheit"; got string "kelvin"')
        with self.assertRaises(ValueError) as cm:
            from_json(True, Level)
        self.assertEqual(str(cm.exception), "$: expected one of 1, 2; got boolean true")
        with self.assertRaises(ValueError):
            from_json(True, Literal[1])

    def test_union_and_optional(self):
        self.assertIsNone(from_json(None, Optional[int]))
        self.assertEqual(from_json(5, Optional[int]), 5)
        value = from_json(3, Union[float, int])
        self.assertEqual((value, type(value)), (3, int))  # the exact match first
        value = from_json(2.5, Union[int, float])
        self.assertEqual((value, type(value)), (2.5, float))
        value = from_json(3.0, Union[int, str])
        self.assertEqual((value, type(value)), (3, int))  # then with int/float conversion
        self.assertEqual(from_json("x", Union[int, str]), "x")
        with self.assertRaises(ValueError) as cm:
            from_json([], Optional[int])
        self.assertEqual(str(cm.exception), "$: expected integer or null, got array")
        with self.assertRaises(ValueError) as cm:
            from_json({"city": 1}, Optional[Location])
        self.assertEqual(str(cm.exception), "$.city: expected string, got integer 1")

    def test_dataclasses(self):
        trip = from_json(
            {"start": {"city": "a", "zoom": 5.0}, "stops": [{"city": "b", "tags": ["x"]}], "mode": "train"}, Trip
        )
        self.assertEqual(trip, Trip(Location("a", zoom=5), [Location("b", tags=["x"])], "train"))
        self.assertIsInstance(trip.start.zoom, int)

    def test_dataclass_defaults_missing_keys_null_and_extra_keys(self):
        self.assertEqual(from_json({"city": "a"}, Location), Location("a"))
        # a strict-mode schema makes optional fields nullable: null means "use the default"
        self.assertEqual(from_json({"city": "a", "country": None, "tags": None, "zoom": None}, Location), Location("a"))
        self.assertEqual(from_json({"city": "a", "unknown": 1, "cache": {"x": 1}}, Location), Location("a"))
        self.assertEqual(from_json({"name": "r", "children": None}, TreeNode), TreeNode("r"))

    def test_dataclass_errors(self):
        cases = [
            ([], Location, "$: expected an object (Location), got array"),
            ({}, Location, '$: missing required property "city" (Location)'),
            ({"city": None}, Location, "$.city: expected string, got null"),
            ({"start": {"city": "a"}, "stops": [{"city": 2}]}, Trip, "$.stops[0].city: expected string, got integer 2"),
            (
                {"start": {"city": "a"}, "stops": [], "mode": "bus"},
                Trip,
                '$.mode: expected one of "car", "train"; got string "bus"',
            ),
            ({"n": 0}, Positive, "$: Positive(...) refused the value: ValueError: n must be positive"),
        ]
        for value, tp, message in cases:
            with self.subTest(value=value):
                with self.assertRaises(ValueError) as cm:
                    from_json(value, tp)
                self.assertEqual(str(cm.exception), message)

    def test_custom_path(self):
        with self.assertRaises(ValueError) as cm:
            from_json({"city": 1}, Location, path="$.arguments")
        self.assertEqual(str(cm.exception), "$.arguments.city: expected string, got integer 1")

    def test_recursive(self):
        value = {"name": "a", "children": [{"name": "b", "children": [{"name": "c"}]}]}
        self.assertEqual(from_json(value, TreeNode), TreeNode("a", [TreeNode("b", [TreeNode("c")])]))
        self.assertEqual(from_json({"pong": {"ping": {}}}, Ping), Ping(Pong(Ping())))

    def test_typeddict_is_a_plain_dict(self):
        movie = from_json({"title": "T", "year": 2000.0, "extra": 1}, Movie)
        self.assertEqual(movie, {"title": "T", "year": 2000})
        self.assertIs(type(movie), dict)
        self.assertEqual(from_json({"rating": 3}, MovieOptional), {"rating": 3.0})
        self.assertEqual(from_json({"title": None}, MovieOptional), {})
        with self.assertRaises(ValueError) as cm:
            from_json({"title": "T"}, Movie)
        self.assertEqual(str(cm.exception), '$: missing required property "year" (Movie)')
        with self.assertRaises(ValueError) as cm:
            from_json([{"title": "T", "year": "x"}], List[Movie])
        self.assertEqual(str(cm.exception), '$[0].year: expected integer, got string "x"')

    @unittest.skipIf(not PY39, "typing.Annotated needs Python 3.9")
    def test_annotated(self):
        self.assertEqual(from_json(2.0, typing.Annotated[int, "n"]), 2)

    def test_unsupported_annotation(self):
        with self.assertRaises(TypeError):
            from_json("2020-01-01", datetime.date)

    def test_round_trip_through_json_text(self):
        trip = Trip(Location("北京", "CN", ["a"], 4), [Location("上海")], "train")
        data = dataclasses.asdict(trip)
        for place in [data["start"]] + data["stops"]:
            del place["cache"]  # init=False: not part of the schema
        text = json.dumps(data, ensure_ascii=False)
        self.assertEqual(validate(json.loads(text), schema_for(Trip)), [])
        self.assertEqual(validate(json.loads(text), schema_for(Trip, strict=True)), [])
        self.assertEqual(from_json(json.loads(text), Trip), trip)


class CheckSchemaTests(unittest.TestCase):
    def test_supported_schemas_pass(self):
        for schema in (
            schema_for(Trip),
            schema_for(TreeNode, strict=True),
            function_parameters(tree_tool)[1],
            True,
            {},
        ):
            with self.subTest(schema=schema):
                self.assertIsNone(check_schema(schema))
        check_schema({"type": "string", "format": "date-time", "title": "t", "examples": ["x"], "x-extra": 1})
        # property names are data, not keywords
        check_schema({"properties": {"if": {"type": "string"}, "contains": {}}})

    def test_every_problem_is_named_with_its_pointer(self):
        schema = {
            "type": "object",
            "properties": {
                "a": {"type": "object", "patternProperties": {"^x": {}}},
                "b": {"type": "text"},
                "c": {"items": {"$ref": "#/$defs/Missing"}},
                "d": {"anyOf": [{"pattern": "("}, 5]},
            },
            "if": {"type": "object"},
            "then": {"required": ["a"]},
        }
        with self.assertRaises(TypeError) as cm:
            check_schema(schema, where="parse(): the schema")
        self.assertTrue(str(cm.exception).startswith("parse(): the schema is not supported: #"), str(cm.exception))
        text = str(cm.exception)
        for part in (
            "#: the keyword 'if' is not supported",
            "#: the keyword 'then' is not supported",
            "#/properties/a: the keyword 'patternProperties' is not supported",
            '#/properties/b: unknown type "text"',
            '#/properties/c/items: the $ref "#/$defs/Missing" cannot be resolved',
            "#/properties/d/anyOf/0: the pattern '(' is not a valid regular expression",
            "#/properties/d/anyOf/1: a schema must be an object or a boolean, not integer 5",
        ):
            self.assertIn(part, text)

    def test_external_refs_are_refused(self):
        with self.assertRaises(TypeError) as cm:
            check_schema({"$ref": "https://example.com/schema.json"})
        self.assertIn("cannot be resolved", str(cm.exception))


class StrictSchemaTests(unittest.TestCase):
    def test_a_built_schema_made_strict_equals_the_strict_build(self):
        for tp in (Trip, TreeNode, Ping, Movie, MovieOptional, List[Location]):
            with self.subTest(tp=tp):
                loose = schema_for(tp)
                before = json.dumps(loose, sort_keys=True)
                self.assertEqual(strict_schema(loose), schema_for(tp, strict=True))
                self.assertEqual(json.dumps(loose, sort_keys=True), before)  # the input is unchanged

    def test_hand_written_schema(self):
        schema = {
            "type": "object",
            "properties": {
                "name": {"type": "string", "default": "x"},
                "tags": {"type": "array", "items": {"type": "object", "properties": {"k": {"type": "string"}}}},
                "node": {"$ref": "#/$defs/N", "description": "a node"},
            },
            "required": ["tags"],
            "$defs": {"N": {"type": "object", "properties": {}}},
        }
        self.assertEqual(
            strict_schema(schema),
            {
                "type": "object",
                "properties": {
                    "name": {"type": ["string", "null"]},
                    "tags": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {"k": {"type": ["string", "null"]}},
                            "required": ["k"],
                            "additionalProperties": False,
                        },
                    },
                    "node": {"anyOf": [{"$ref": "#/$defs/N"}, {"type": "null"}], "description": "a node"},
                },
                "required": ["tags", "name", "node"],
                "$defs": {"N": {"type": "object", "properties": {}, "required": [], "additionalProperties": False}},
                "additionalProperties": False,
            },
        )

    def test_what_strict_mode_cannot_express(self):
        cases = [
            ({"type": "object"}, "#: an object with free-form keys"),
            (
                {
                    "type": "object",
                    "properties": {"a": {"type": "object", "additionalProperties": {"type": "integer"}}},
                },
                "#/properties/a: an object with free-form keys",
            ),
            ({"type": "array", "prefixItems": [{"type": "integer"}]}, "#: fixed-length arrays (prefixItems)"),
            ({"type": "array", "items": [{"type": "integer"}]}, "#: fixed-length arrays (items)"),
        ]
        for schema, message in cases:
            with self.subTest(schema=schema):
                with self.assertRaises(TypeError) as cm:
                    strict_schema(schema, where="parse()")
                self.assertTrue(str(cm.exception).startswith("parse(): " + message), str(cm.exception))
        self.assertRaises(TypeError, strict_schema, True)


def positional(a: int, b: int = 2, /, c: Unit = Unit.CELSIUS, *, d: Optional[Location] = None) -> None:
    pass


def two_positional(a: int = 1, b: int = 2, /) -> None:
    pass


def takes_kwargs(a: int, **rest: Any) -> None:
    pass


class FunctionArgumentsTests(unittest.TestCase):
    def test_converted_for_the_call(self):
        args, kwargs = function_arguments(
            get_weather,
            {"location": {"city": "北京"}, "when": "today", "verbose": True, "unit": "fahrenheit", "days": 2.0},
        )
        self.assertEqual(args, [])
        self.assertEqual(
            kwargs,
            {"location": Location("北京"), "when": "today", "verbose": True, "unit": Unit.FAHRENHEIT, "days": 2},
        )
        self.assertIsInstance(kwargs["days"], int)
        get_weather(*args, **kwargs)

    def test_null_for_a_parameter_with_a_default_means_the_default(self):
        _, kwargs = function_arguments(
            get_weather,
            {"location": {"city": "a"}, "when": "x", "verbose": False, "unit": None, "days": None, "note": None},
        )
        self.assertNotIn("unit", kwargs)
        self.assertNotIn("days", kwargs)
        self.assertIsNone(kwargs["note"])  # Optional[str]: None is a value it takes

    def test_errors_name_the_argument(self):
        cases = [
            ({"when": "x", "verbose": True}, '$: missing required property "location"'),
            (
                {"location": {"city": 1}, "when": "x", "verbose": True},
                "$.location.city: expected string, got integer 1",
            ),
            (
                {"location": {"city": "a"}, "when": "x", "verbose": True, "unit": "k"},
                '$.unit: expected one of "celsius", "fahrenheit"; got string "k"',
            ),
            (
                {"location": {"city": "a"}, "when": "x", "verbose": True, "colour": 1},
                "$.colour: expected string, got integer 1",
            ),
            ([], "$: expected an object of arguments, got array"),
        ]
        for arguments, message in cases:
            with self.subTest(arguments=arguments):
                with self.assertRaises(ValueError) as cm:
                    function_arguments(get_weather, arguments)
                self.assertEqual(str(cm.exception), message)

    def test_positional_only_and_keyword_only(self):
        self.assertEqual(function_arguments(positional, {"a": 1}), ([1], {}))
        self.assertEqual(
            function_arguments(positional, {"a": 1, "b": 3, "c": "celsius"}), ([1, 3], {"c": Unit.CELSIUS})
        )
        self.assertEqual(function_arguments(positional, {"a": 1, "d": {"city": "x"}}), ([1], {"d": Location("x")}))
        self.assertEqual(function_arguments(two_positional, {"b": 5}), ([1, 5], {}))
        self.assertEqual(function_arguments(two_positional, {}), ([], {}))

    def test_extra_names_go_to_var_keyword_or_raise(self):
        self.assertEqual(function_arguments(takes_kwargs, {"a": 1.0, "z": [1]}), ([], {"a": 1, "z": [1]}))
        arguments = {"location": {"city": "a"}, "when": "x", "verbose": True, "kwargs": "k"}
        self.assertEqual(function_arguments(get_weather, arguments)[1]["kwargs"], "k")
        for fn, arguments in ((add3, {"a": 1, "b": 2, "d": 3}), (positional, {"a": 1, "x": 1})):
            with self.subTest(fn=fn):
                with self.assertRaises(ValueError) as cm:
                    function_arguments(fn, arguments)
                self.assertEqual(str(cm.exception), '$: unexpected property "%s"' % list(arguments)[-1])

    def test_methods_partials_and_callable_objects(self):
        self.assertEqual(function_arguments(Weather().forecast, {"city": "x"}), ([], {"city": "x"}))
        self.assertEqual(function_arguments(functools.partial(add3, 1), {"b": 2.0}), ([], {"b": 2}))
        self.assertEqual(function_arguments(Adder(), {"a": 1, "b": 2}), ([], {"a": 1, "b": 2}))


class ImportCostTests(unittest.TestCase):
    @unittest.skipIf(os.environ.get("OPENAI2_SINGLE_FILE") == "1", "reads openai2/schema.py: checked by `make test`")
    def test_loading_the_module_imports_nothing_heavy(self):
        import subprocess

        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "openai2", "schema.py")
        code = (
            "import sys, importlib.util\n"
            "heavy = ('typing', 'dataclasses', 'enum', 'inspect', 're', 'json')\n"
            "before = {m for m in heavy if m in sys.modules}\n"
            "spec = importlib.util.spec_from_file_location('schema_alone', sys.argv[1])\n"
            "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
            "print(sorted(m for m in heavy if m in sys.modules and m not in before))\n"
        )
        out = subprocess.run(
            # -S: no site (a .pth file may import typing, enum and re before any openai2 code)
            [sys.executable, "-S", "-E", "-c", code, path],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        self.assertEqual(out.strip(), "[]")


if __name__ == "__main__":
    unittest.main()
