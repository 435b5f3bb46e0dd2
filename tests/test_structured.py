"""Structured output: Chat.parse / async_parse / chat.completions.parse, the fallback ladder
against servers that refuse json_schema the way real ones do (DemoBrain(server=...) answers with
their recorded error bodies), the rung memory, repairs, refusals, cut-off answers, history.

All on MemoryTransport: the requests the server saw are read from ``transport.requests``.
"""

# ruff: noqa: UP006, UP045 - typing.List/Optional: the dataclasses' hints are evaluated on Python 3.8
from __future__ import annotations

import asyncio
import dataclasses
import enum
import typing
import unittest

import openai2
from openai2 import (
    Chat,
    LengthFinishReasonError,
    OpenAI,
    RefusalError,
    SchemaValidationError,
    StructuredOutputError,
)
from openai2.demo import DEMO_FORMAT_REFUSALS, DemoBrain
from openai2.errors import make_status_error
from openai2.structured import Target, find_json, forget_rungs, format_refused, remembered_rung
from openai2.testing import MemoryTransport, Reply

KEY = "sk-test-structured-0123456789abcdef"
BASE = "https://api.test/v1"


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass
class Person:
    name: str
    age: int
    city: str


@dataclasses.dataclass
class Team:
    title: str
    members: typing.List[Person]
    color: Color = Color.RED
    motto: typing.Optional[str] = None


class Movie(typing.TypedDict):
    title: str
    year: int


def make_chat(replies=None, handler=None, **options):
    transport = MemoryTransport(replies or [], handler=handler)
    chat = Chat(KEY, base_url=BASE, model="m", transport=transport, max_retries=0, **options)
    return chat, transport


def formats(transport):
    return [(r.json.get("response_format") or {}).get("type") for r in transport.requests]


class Base(unittest.TestCase):
    def setUp(self):
        forget_rungs()
        self.addCleanup(forget_rungs)


class Targets(Base):
    def test_a_dataclass_becomes_a_strict_object_schema(self):
        target = Target(Team)
        self.assertTrue(target.strict)
        self.assertFalse(target.wrapped)
        self.assertEqual(target.name, "Team")
        self.assertIs(target.schema["additionalProperties"], False)
        self.assertEqual(sorted(target.schema["required"]), ["color", "members", "motto", "title"])

    def test_roots_that_are_not_objects_are_wrapped_and_unwrapped(self):
        target = Target(typing.List[Person])
        self.assertTrue(target.wrapped)
        self.assertEqual(target.schema["required"], ["value"])
        self.assertEqual(target.convert({"value": [{"name": "A", "age": 1, "city": "B"}]}), [Person("A", 1, "B")])

    def test_a_schema_dict_is_kept_and_returns_the_json_value(self):
        schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}, "required": ["n"]}
        target = Target(schema)
        self.assertFalse(target.strict)
        self.assertEqual(target.convert({"n": 3}), {"n": 3})
        self.assertTrue(all(p.startswith("$.n") for p in target.problems({"n": -1})))
        self.assertTrue(target.problems({"n": -1}))
        self.assertTrue(target.problems({}))

    def test_a_schema_dict_with_keywords_that_cannot_be_checked_is_refused_loudly(self):
        with self.assertRaises(TypeError) as caught:
            Target({"type": "object", "properties": {"a": {"type": "string", "if": {"const": "x"}}}})
        self.assertIn("if", str(caught.exception))
        self.assertIn("properties/a", str(caught.exception))
        with self.assertRaises(TypeError):
            Target({"type": "object", "patternProperties": {"^x": {}}})

    def test_an_unsupported_annotation_names_it(self):
        with self.assertRaises(TypeError) as caught:
            Target(typing.Set[int])
        self.assertIn("parse()", str(caught.exception))

    def test_a_pydantic_like_model_is_used_through_its_two_methods(self):
        class FakeModel:
            @classmethod
            def model_json_schema(cls):
                return {
                    "type": "object",
                    "properties": {"x": {"type": "integer"}},
                    "required": ["x"],
                    "title": "FakeModel",
                }

            @classmethod
            def model_validate(cls, value):
                made = cls()
                made.x = value["x"]
                return made

        chat, transport = make_chat(['{"x": 7}'])
        made = chat.parse("seven", FakeModel)
        self.assertIsInstance(made, FakeModel)
        self.assertEqual(made.x, 7)
        spec = transport.requests[0].json["response_format"]["json_schema"]
        self.assertEqual(spec["name"], "FakeModel")
        self.assertNotIn("strict", spec)


class ClassesWithoutAModule(Base):
    def test_a_dataclass_made_by_exec_parses_on_every_python(self):
        namespace = {"__name__": "__not_a_module__"}
        source = "import dataclasses\n@dataclasses.dataclass\nclass Made:\n    name: str\n    n: int\n"
        exec(compile(source, "<made>", "exec", dont_inherit=True), namespace)  # as README's examples run
        made = namespace["Made"]
        self.assertEqual(made.__module__, "__not_a_module__")
        chat, _ = make_chat(['{"name": "a", "n": 1}'])
        self.assertEqual(chat.parse("x", made), made("a", 1))


class Ladder(Base):
    def test_the_top_rung_on_a_server_that_supports_it(self):
        chat, transport = make_chat(handler=DemoBrain())
        self.assertEqual(chat.parse("Alice is 30 and lives in Paris.", Person), Person("Alice", 30, "Paris"))
        self.assertEqual(formats(transport), ["json_schema"])
        spec = transport.requests[0].json["response_format"]["json_schema"]
        self.assertEqual((spec["name"], spec["strict"]), ("Person", True))

    def test_each_real_refusal_goes_one_rung_down(self):
        expected = {
            "deepseek": ["json_schema", "json_object"],
            "deepseek-422": ["json_schema", "json_object"],
            "llama.cpp": ["json_schema", "json_object"],
            "ollama-0.5.2": ["json_schema", "json_object"],
            "lmstudio": ["json_schema"],
            "azure-gpt-4": ["json_schema", "json_object", None],
        }
        self.assertEqual(sorted(expected), sorted(DEMO_FORMAT_REFUSALS))
        for server, rungs in expected.items():
            with self.subTest(server=server):
                forget_rungs()
                chat, transport = make_chat(handler=DemoBrain(server=server))
                self.assertEqual(chat.parse("Alice is 30 and lives in Paris.", Person), Person("Alice", 30, "Paris"))
                self.assertEqual(formats(transport), rungs)

    def test_every_recorded_refusal_body_is_recognised_and_ordinary_errors_are_not(self):
        for server, refusals in DEMO_FORMAT_REFUSALS.items():
            for kind, (status, body) in refusals.items():
                with self.subTest(server=server, kind=kind):
                    raw = body if isinstance(body, str) else __import__("json").dumps(body)
                    self.assertTrue(format_refused(make_status_error(status, {}, raw.encode())))
        ordinary = [
            (400, {"error": {"message": "max_tokens is too large: 100000", "type": "invalid_request_error"}}),
            (404, {"error": {"message": "The model `m` does not exist", "type": "invalid_request_error"}}),
            (500, {"error": {"message": "response_format handler crashed", "type": "server_error"}}),
            (
                401,
                {"error": {"message": "Incorrect API key provided: response_format", "type": "invalid_request_error"}},
            ),
        ]
        for status, body in ordinary:
            with self.subTest(status=status):
                raw = __import__("json").dumps(body).encode()
                self.assertFalse(format_refused(make_status_error(status, {}, raw)))

    def test_the_prompt_rung_states_the_schema_in_the_first_system_message_and_reads_a_fence(self):
        chat, transport = make_chat(handler=DemoBrain(server="azure-gpt-4"), system="You are terse.")
        chat.parse("Alice is 30 and lives in Paris.", Person)
        last = transport.requests[-1].json
        self.assertNotIn("response_format", last)
        system = last["messages"][0]
        self.assertEqual(system["role"], "system")
        self.assertTrue(system["content"].startswith("You are terse.\n\n"))
        self.assertIn('"additionalProperties": false', system["content"])
        self.assertEqual([m["role"] for m in last["messages"]].count("system"), 1)
        # the history keeps the Chat's own system prompt, not the instruction
        self.assertEqual(chat.fetch_messages()[0], {"role": "system", "content": "You are terse."})

    def test_the_rung_that_worked_is_remembered_per_base_url_and_model(self):
        chat, transport = make_chat(handler=DemoBrain(server="deepseek"))
        chat.parse("Alice is 30 and lives in Paris.", Person)
        chat.parse("Bob is 40 and lives in Rome.", Person)
        self.assertEqual(formats(transport), ["json_schema", "json_object", "json_object"])
        self.assertEqual(remembered_rung(BASE, "m"), "json_object")
        chat.parse("Carol is 50 and lives in Oslo.", Person, model="other")
        self.assertEqual(formats(transport)[3:], ["json_schema", "json_object"])

    def test_a_forced_strategy_uses_that_rung_alone(self):
        chat, transport = make_chat(handler=DemoBrain(server="deepseek"))
        chat.parse("Alice is 30 and lives in Paris.", Person, strategy="prompt")
        self.assertEqual(formats(transport), [None])
        with self.assertRaises(openai2.BadRequestError):
            chat.parse("Alice is 30 and lives in Paris.", Person, strategy="json_schema")
        with self.assertRaises(ValueError):
            chat.parse("x", Person, strategy="xml")

    def test_an_ordinary_error_is_raised_not_taken_for_a_refusal(self):
        chat, transport = make_chat([Reply(status=400, content="max_tokens is too large")])
        with self.assertRaises(openai2.BadRequestError):
            chat.parse("x", Person)
        self.assertEqual(len(transport.requests), 1)
        self.assertIsNone(remembered_rung(BASE, "m"))


class Repairs(Base):
    def test_an_answer_that_misses_the_schema_is_repaired_once_and_only_the_final_one_stays(self):
        chat, transport = make_chat(
            ['{"name": "Bob", "age": "forty", "city": "Rome"}', '{"name": "Bob", "age": 40, "city": "Rome"}']
        )
        self.assertEqual(chat.parse("Bob", Person), Person("Bob", 40, "Rome"))
        repair = transport.requests[1].json["messages"]
        self.assertEqual(
            repair[-2], {"role": "assistant", "content": '{"name": "Bob", "age": "forty", "city": "Rome"}'}
        )
        self.assertIn("$.age", repair[-1]["content"])
        self.assertEqual(
            chat.fetch_messages(),
            [
                {"role": "user", "content": "Bob"},
                {"role": "assistant", "content": '{"name": "Bob", "age": 40, "city": "Rome"}'},
            ],
        )

    def test_after_the_repairs_a_typed_error_with_the_raw_text_and_paths(self):
        chat, transport = make_chat(['{"name": 1}', "no json here"])
        with self.assertRaises(SchemaValidationError) as caught:
            chat.parse("x", Person)
        error = caught.exception
        self.assertIsInstance(error, StructuredOutputError)
        self.assertIsInstance(error, openai2.OpenAIError)
        self.assertEqual(error.raw, "no json here")
        self.assertTrue(all(e.startswith("$") for e in error.errors), error.errors)
        self.assertEqual(chat.fetch_messages(), [])
        self.assertEqual(len(transport.requests), 2)

    def test_max_repairs_zero_and_more(self):
        chat, transport = make_chat(['{"name": 1}'])
        with self.assertRaises(SchemaValidationError):
            chat.parse("x", Person, max_repairs=0)
        self.assertEqual(len(transport.requests), 1)
        chat, transport = make_chat(["{}", "{}", '{"name": "A", "age": 1, "city": "B"}'])
        self.assertEqual(chat.parse("x", Person, max_repairs=2), Person("A", 1, "B"))
        with self.assertRaises(ValueError):
            chat.parse("x", Person, max_repairs=-1)


class Failures(Base):
    def test_a_refusal_raises_with_its_text_and_keeps_the_history(self):
        chat, _ = make_chat(
            [
                Reply(
                    body={
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": None, "refusal": "I can't help with that."},
                                "finish_reason": "stop",
                            }
                        ]
                    }
                )
            ]
        )
        with self.assertRaises(RefusalError) as caught:
            chat.parse("x", Person)
        self.assertEqual(caught.exception.refusal, "I can't help with that.")
        self.assertEqual(chat.fetch_messages(), [])

    def test_a_cut_off_answer_raises_length_finish_reason(self):
        chat, _ = make_chat([Reply('{"name": "Al', finish_reason="length")])
        with self.assertRaises(LengthFinishReasonError) as caught:
            chat.parse("x", Person)
        self.assertEqual(caught.exception.raw, '{"name": "Al')
        self.assertEqual(chat.fetch_messages(), [])

    def test_response_format_given_by_hand_is_refused(self):
        chat, _ = make_chat([])
        with self.assertRaises(TypeError):
            chat.parse("x", Person, response_format={"type": "json_object"})


class Shapes(Base):
    def test_nested_dataclasses_enums_optional_typed_dict_and_lists(self):
        answer = '{"title": "T", "members": [{"name": "A", "age": 1, "city": "B"}], "color": "blue", "motto": null}'
        chat, _ = make_chat([answer, '{"title": "Up", "year": 2009}', '{"value": ["a", "b"]}'])
        self.assertEqual(chat.parse("x", Team), Team("T", [Person("A", 1, "B")], Color.BLUE, None))
        self.assertEqual(chat.parse("x", Movie), {"title": "Up", "year": 2009})
        self.assertEqual(chat.parse("x", typing.List[str]), ["a", "b"])

    def test_chinese_text_round_trips(self):
        chat, _ = make_chat(handler=DemoBrain(server="deepseek"))
        self.assertEqual(chat.parse("张三今年30岁，住在北京。", Person), Person("张三", 30, "北京"))
        self.assertIn("张三", chat.fetch_messages()[-1]["content"])  # not \\u escaped


class AsyncAndClient(Base):
    def test_async_parse_runs_the_same_ladder(self):
        chat, transport = make_chat(handler=DemoBrain(server="deepseek"))
        made = asyncio.run(chat.async_parse("Alice is 30 and lives in Paris.", Person))
        self.assertEqual(made, Person("Alice", 30, "Paris"))
        self.assertEqual(formats(transport), ["json_schema", "json_object"])

    def test_client_parse_sets_message_parsed(self):
        transport = MemoryTransport(handler=DemoBrain(server="deepseek"))
        client = OpenAI(api_key=KEY, base_url=BASE, transport=transport)
        done = client.chat.completions.parse(
            model="deepseek-chat",
            messages=[{"role": "user", "content": "Alice is 30 and lives in Paris."}],
            response_format=Person,
        )
        self.assertEqual(done.choices[0].message.parsed, Person("Alice", 30, "Paris"))
        self.assertEqual(formats(transport), ["json_schema", "json_object"])

    def test_client_parse_follows_the_sdk_on_a_refusal(self):
        body = {
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": None, "refusal": "no"},
                    "finish_reason": "stop",
                }
            ]
        }
        client = OpenAI(api_key=KEY, base_url=BASE, transport=MemoryTransport([Reply(body=body)]))
        done = client.chat.completions.parse(
            model="m", messages=[{"role": "user", "content": "x"}], response_format=Person
        )
        self.assertIsNone(done.choices[0].message.parsed)
        self.assertEqual(done.choices[0].message.refusal, "no")


class FindJson(unittest.TestCase):
    CASES = [
        ('{"a": 1}', (True, {"a": 1})),
        ('```json\n{"a": 1}\n```', (True, {"a": 1})),
        ("```\n[1, 2]\n```", (True, [1, 2])),
        ('Sure! Here it is: {"a": {"b": [1]}} Hope that helps.', (True, {"a": {"b": [1]}})),
        ('The list [x] is not JSON, but {"ok": true} is.', (True, {"ok": True})),
        ("no json at all", (False, None)),
        ("", (False, None)),
        ('{"a": 1', (False, None)),
    ]

    def test_cases(self):
        for text, expected in self.CASES:
            with self.subTest(text=text):
                self.assertEqual(find_json(text), expected)


if __name__ == "__main__":
    unittest.main()
