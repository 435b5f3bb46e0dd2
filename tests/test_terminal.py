"""terminal: which prompt lines count as secrets (never kept in the history), colour only on a
real terminal that wants it, the width without a terminal.  (LineEditor's reading and history,
DeferInterrupt and NO_COLOR are also exercised by tests/test_cli.py.)"""

import io
import os
import unittest
from unittest import mock

from openai2.terminal import LineEditor, supports_color, terminal_width

KEY = "sk-termtest-RAWKEY-0123456789abcdef"


class Tty(io.StringIO):
    def isatty(self):
        return True


class SecretLineTest(unittest.TestCase):
    def setUp(self):
        self.editor = LineEditor(io.StringIO(), io.StringIO(), secrets=[KEY, ""])

    def test_a_given_secret_anywhere_in_the_line_is_secret(self):
        self.assertTrue(self.editor.is_secret("please use %s now" % KEY))
        self.assertEqual(self.editor.secrets, [KEY])  # an empty secret would match every line

    def test_key_shaped_tokens_are_secret_from_sixteen_characters_after_sk(self):
        self.assertTrue(self.editor.is_secret("sk-" + "a" * 16))
        self.assertFalse(self.editor.is_secret("sk-" + "a" * 15))
        self.assertTrue(self.editor.is_secret('key="sk-%s"' % ("b" * 20)))
        self.assertTrue(self.editor.is_secret("OPENAI:sk-%s" % ("c" * 20)))

    def test_words_that_announce_a_key_are_secret_whatever_their_case(self):
        for line in ("/set API_KEY x", "my apikey", "api-key: 1", "Authorization: x", "a Bearer token"):
            self.assertTrue(self.editor.is_secret(line), line)

    def test_ordinary_lines_are_kept(self):
        for line in ("hello", "what is a task-list?", "sk-short", "bearer"):
            self.assertFalse(self.editor.is_secret(line), line)


class ColourAndWidthTest(unittest.TestCase):
    def test_no_colour_for_a_dumb_terminal_or_a_non_terminal(self):
        with mock.patch.dict(os.environ, {"TERM": "dumb"}):
            os.environ.pop("NO_COLOR", None)
            self.assertFalse(supports_color(Tty()))
        with mock.patch.dict(os.environ, {"TERM": "xterm"}):
            os.environ.pop("NO_COLOR", None)
            self.assertFalse(supports_color(io.StringIO()))
            self.assertFalse(supports_color(object()))
            if os.name == "posix":
                self.assertTrue(supports_color(Tty()))

    def test_a_closed_stream_gets_no_colour_and_the_default_width(self):
        closed = io.StringIO()
        closed.close()
        with mock.patch.dict(os.environ, {"TERM": "xterm"}):
            os.environ.pop("NO_COLOR", None)
            self.assertFalse(supports_color(closed))
        with mock.patch.dict(os.environ, {}):
            os.environ.pop("COLUMNS", None)
            self.assertEqual(terminal_width(closed, default=66), 66)

    def test_a_tiny_columns_value_is_raised_to_twenty(self):
        with mock.patch.dict(os.environ, {"COLUMNS": "5"}):
            self.assertEqual(terminal_width(io.StringIO()), 20)


if __name__ == "__main__":
    unittest.main()
