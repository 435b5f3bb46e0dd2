"""`openai2 chat --schema SPEC`: the answer parsed into a JSON Schema (a file, inline JSON, or llm's
concise syntax) and printed as JSON, alone on stdout; --schema-multi asks for a list; on a
server without json_schema (the demo model answering as DeepSeek does) too."""

from __future__ import annotations

import json
import os

from openai2.cli import _cli_concise_schema, _CliUsageError
from openai2.demo import DemoBrain
from openai2.structured import forget_rungs
from openai2.testing import MemoryTransport
from tests.support.cli import run_main
from tests.support.homes import TempHomeCase

KEY = "sk-test-clischema-0123456789abcdef"


class CliSchemaTest(TempHomeCase):
    def setUp(self):
        super().setUp()
        forget_rungs()  # the rung memory is per process: each test starts at the top rung
        self.addCleanup(forget_rungs)

    def run_cli(self, *args, server="deepseek", stdin=""):
        self.transport = MemoryTransport(handler=DemoBrain(server=server))
        return run_main(list(args) + ["--api-key", KEY, "--base-url", "https://mem.test/v1"], stdin=stdin, transport=self.transport)

    def test_concise_syntax(self):
        schema = _cli_concise_schema("name, age int, score float: out of ten, active bool, bio: one sentence")
        self.assertEqual(schema["required"], ["name", "age", "score", "active", "bio"])
        self.assertEqual(
            {k: v["type"] for k, v in schema["properties"].items()},
            {"name": "string", "age": "integer", "score": "number", "active": "boolean", "bio": "string"},
        )
        self.assertEqual(schema["properties"]["score"]["description"], "out of ten")
        lines = _cli_concise_schema("name\nnote: a note, with a comma\n")
        self.assertEqual(lines["properties"]["note"]["description"], "a note, with a comma")
        for bad in ("", " , ", "name, age number int", "age integerish", "name, name"):
            with self.subTest(bad=bad), self.assertRaises(_CliUsageError):
                _cli_concise_schema(bad)

    def test_prints_only_the_parsed_json_and_keeps_the_exchange(self):
        code, out, err = self.run_cli("chat", "--schema", "name, age int, city", "Alice is 30 and lives in Paris.")
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out), {"name": "Alice", "age": 30, "city": "Paris"})
        formats = [(r.json.get("response_format") or {}).get("type") for r in self.transport.requests]
        self.assertEqual(formats, ["json_schema", "json_object"])  # DeepSeek refused json_schema
        session = self.store.read_session("default")
        self.assertEqual(session["messages"][0]["content"], "Alice is 30 and lives in Paris.")

    def test_inline_json_a_file_and_multi(self):
        code, out, _ = self.run_cli(
            "chat", "--no-save", "--schema", '{"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}', "the number 7"
        )
        self.assertEqual((code, json.loads(out)), (0, {"n": 7}))
        path = os.path.join(self.tmp, "person.json")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}, handle)
        code, out, _ = self.run_cli("chat", "--no-save", "--schema", path, "Bob")
        self.assertEqual((code, json.loads(out)), (0, {"name": "Bob"}))
        code, out, _ = self.run_cli("chat", "--no-save", "--schema", "name, age int", "--schema-multi", "Alice is 30.")
        self.assertEqual(code, 0)
        self.assertIsInstance(json.loads(out), list)

    def test_usage_errors_send_nothing(self):
        cases = [
            (["--schema", "age integerish", "x"], "unknown type"),
            (["--schema", '{"type": "object", "if": {}}', "x"], "if"),
            (["--schema", "{not json", "x"], "not JSON"),
            (["--schema-multi", "x"], "--schema"),
        ]
        for extra, expected in cases:
            with self.subTest(extra=extra):
                code, out, err = self.run_cli("chat", "--no-save", *extra)
                self.assertEqual(code, 2, err)
                self.assertIn(expected, err)
                self.assertEqual(out, "")
                self.assertEqual(self.transport.requests, [])


if __name__ == "__main__":
    import unittest

    unittest.main()
