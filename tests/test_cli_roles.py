"""Roles: `openai2 roles list|show|add|edit|delete`, `chat --role NAME`, `/role` at the prompt.

In-process (``main(..., transport=MemoryTransport())``, no sockets), OPENAI2_HOME in a temporary
folder; what a role does is read off the requests the transport recorded.
"""
import json
import os
import shlex
import shutil
import stat
import sys
import tempfile
import unittest
from unittest import mock

from openai2.cli import EXIT_OK, EXIT_STORAGE, EXIT_USAGE
from openai2.store import Store
from openai2.testing import MemoryTransport, Reply
from tests.support.cli import run_main
from tests.support.serving import no_sleep

KEY = "sk-cliroles-RAWKEY-0123456789abcdef"
BASE = "https://api.test/v1"

# A stand-in for $EDITOR: records the file it was given (path, mode, text), then changes it as
# FAKE_EDITOR_MODE says (write FAKE_EDITOR_TEXT, append it, or fail with status 3).
FAKE_EDITOR = r'''
import json, os, sys
path = sys.argv[-1]
record = os.environ.get("FAKE_EDITOR_RECORD")
with open(path, encoding="utf-8") as handle:
    before = handle.read()
if record:
    with open(record, "w", encoding="utf-8") as handle:
        json.dump({"path": path, "mode": os.stat(path).st_mode & 0o777, "before": before, "argv": sys.argv[1:-1],
                   "folder_mode": os.stat(os.path.dirname(path)).st_mode & 0o777}, handle)
mode = os.environ.get("FAKE_EDITOR_MODE", "write")
text = os.environ.get("FAKE_EDITOR_TEXT", "")
if mode == "fail":
    sys.exit(3)
if mode == "interrupt":  # Ctrl-C typed in the editor: the whole foreground group gets SIGINT
    import signal
    os.kill(os.getppid(), signal.SIGINT)
    mode = "write"
with open(path, "a" if mode == "append" else "w", encoding="utf-8") as handle:
    handle.write(text)
'''


class CliCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="o2roles-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.home = os.path.join(self.tmp, "home")
        env = {"OPENAI2_HOME": self.home, "OPENAI_BASE_URL": BASE, "OPENAI_API_KEY": KEY}
        patcher = mock.patch.dict(os.environ, env)
        patcher.start()
        self.addCleanup(patcher.stop)
        for name in ("OPENAI2_MODEL", "OPENAI2_DEBUG", "OPENAI2_LOG", "VISUAL", "EDITOR"):
            os.environ.pop(name, None)
        self.store = Store(self.home)
        self.transport = MemoryTransport()
        self.editor_script = os.path.join(self.tmp, "fake_editor.py")
        with open(self.editor_script, "w", encoding="utf-8") as handle:
            handle.write(FAKE_EDITOR)
        self.record = os.path.join(self.tmp, "editor-record.json")

    def use_editor(self, text="", mode="write", variable="EDITOR", extra=""):
        command = "%s %s%s" % (shlex.quote(sys.executable), shlex.quote(self.editor_script), extra)
        os.environ.update({variable: command, "FAKE_EDITOR_TEXT": text, "FAKE_EDITOR_MODE": mode,
                           "FAKE_EDITOR_RECORD": self.record})
        for name in ("FAKE_EDITOR_TEXT", "FAKE_EDITOR_MODE", "FAKE_EDITOR_RECORD", variable):
            self.addCleanup(os.environ.pop, name, None)

    def editor_record(self):
        with open(self.record, encoding="utf-8") as handle:
            return json.load(handle)

    def run_cli(self, *argv, stdin=""):
        return run_main(argv, stdin=stdin, sleep=no_sleep, transport=self.transport, secret=KEY)

    def sent(self, index=-1):
        return self.transport.requests[index].json

    def assert_one_line_error(self, err, *words):
        lines = err.strip().splitlines()
        self.assertEqual(len(lines), 1, err)
        self.assertTrue(lines[0].startswith("openai2: error: "), err)
        for word in words:
            self.assertIn(word, lines[0])


class RoleCommandsTest(CliCase):
    def test_chat_role_sends_its_system_prompt_and_parameters(self):
        code, out, _ = self.run_cli("roles", "add", "terse", "--system", "Answer in five words.", "--model", "m2",
                                    "--temperature", "0.5", "--max-tokens", "7")
        self.assertEqual(code, EXIT_OK)
        self.assertIn("Saved the role terse", out)
        self.transport.replies.append(Reply("Paris is the capital."))
        code, out, _ = self.run_cli("chat", "--role", "terse", "Capital of France?")
        self.assertEqual((code, out), (EXIT_OK, "Paris is the capital.\n"))
        body = self.sent()
        self.assertEqual(body["messages"][0], {"role": "system", "content": "Answer in five words."})
        self.assertEqual((body["model"], body["temperature"], body["max_tokens"]), ("m2", 0.5, 7))
        saved = self.store.read_session("default")
        self.assertEqual(saved["messages"][0]["content"], "Answer in five words.")
        self.assertEqual(saved["pinned"], [0])

    def test_flags_win_over_the_roles_prompt_and_parameters(self):
        self.run_cli("roles", "add", "terse", "--system", "Role prompt.", "--model", "m2", "--temperature", "0.5")
        self.run_cli("chat", "--role", "terse", "--model", "flag-model", "--temperature", "0.9",
                     "--system", "Flag prompt.", "hi")
        body = self.sent()
        self.assertEqual((body["model"], body["temperature"]), ("flag-model", 0.9))
        self.assertEqual(body["messages"][0]["content"], "Flag prompt.")

    def test_builtins_are_listed_marked_and_usable(self):
        code, out, _ = self.run_cli("roles", "list")
        self.assertEqual(code, EXIT_OK)
        rows = {line.split()[0]: line for line in out.splitlines()}
        for name in ("translate", "shell", "review"):
            self.assertIn("[built-in]", rows[name])
        self.run_cli("chat", "--no-save", "--role", "shell", "list the files here")
        body = self.sent()
        self.assertIn("exactly one command", body["messages"][0]["content"])
        self.assertIn("no prose", body["messages"][0]["content"])
        self.assertEqual(body["temperature"], 0)
        self.run_cli("chat", "--no-save", "--role", "translate", "# 标题\n\n- 一项")
        self.assertIn("Keep the formatting", self.sent()["messages"][0]["content"])
        self.run_cli("chat", "--no-save", "--role", "review", "def f(): pass")
        self.assertIn("code reviewer", self.sent()["messages"][0]["content"])

    def test_a_user_role_overrides_a_builtin_until_it_is_deleted(self):
        code, out, _ = self.run_cli("roles", "add", "translate", "--system", "Translate into French.")
        self.assertEqual(code, EXIT_OK)
        self.assertIn("overrides the built-in", out)
        rows = {line.split()[0]: line for line in self.run_cli("roles", "list")[1].splitlines()}
        self.assertIn("[yours, overrides the built-in]", rows["translate"])
        self.assertIn("Translate into French.", self.run_cli("roles", "show", "translate")[1])
        self.run_cli("chat", "--no-save", "--role", "translate", "hello")
        self.assertEqual(self.sent()["messages"][0]["content"], "Translate into French.")
        self.assertNotIn("temperature", self.sent())  # the user's role sets none
        code, out, _ = self.run_cli("roles", "delete", "translate")
        self.assertEqual(code, EXIT_OK)
        self.assertIn("the built-in translate is back", out)
        self.assertIn("Role translate (built-in)", self.run_cli("roles", "show", "translate")[1])

    def test_show_prints_the_prompt_and_parameters(self):
        self.run_cli("roles", "add", "r", "--system", "Line one.\nLine two.", "--temperature", "0.3")
        code, out, _ = self.run_cli("roles", "show", "r")
        self.assertEqual(code, EXIT_OK)
        self.assertIn("temperature: 0.3", out)
        self.assertIn("model: (not set", out)
        self.assertTrue(out.endswith("System prompt:\nLine one.\nLine two.\n"), out)

    def test_a_key_pasted_into_a_prompt_is_masked_when_shown(self):
        self.run_cli("roles", "add", "leaky", "--system", "Use the key %s for everything." % KEY)
        self.assertIn(KEY, self.store.load_roles()["leaky"]["system"])  # stored as written
        for argv in (("roles", "show", "leaky"), ("roles", "list")):
            _, out, _ = self.run_cli(*argv)  # run_cli fails on an unmasked key
            self.assertIn("sk-…cdef", out)
        # a key where `roles list` cuts the summary: masked before the cut, no prefix of it shows
        self.run_cli("roles", "add", "cut", "--system", "x" * 55 + " " + KEY)
        row = [line for line in self.run_cli("roles", "list")[1].splitlines() if line.startswith("cut ")][0]
        self.assertIn("sk-…cdef", row)
        self.assertNotIn(KEY[:10], row)

    def test_add_reads_the_system_prompt_from_stdin(self):
        code, _, _ = self.run_cli("roles", "add", "long", "--system", "-", stdin="A long prompt\nover lines.\n")
        self.assertEqual(code, EXIT_OK)
        self.assertEqual(self.store.load_roles()["long"], {"system": "A long prompt\nover lines."})

    def test_a_missing_role_is_a_one_line_usage_error_and_nothing_is_sent(self):
        code, out, err = self.run_cli("chat", "--role", "nope", "hi")
        self.assertEqual((code, out), (EXIT_USAGE, ""))
        self.assert_one_line_error(err, "no role named 'nope'", "roles list")
        self.assertEqual(self.transport.requests, [])
        self.assertFalse(os.path.exists(self.home))
        for argv in (("roles", "show", "nope"), ("roles", "delete", "nope"), ("roles", "delete", "review")):
            code, _, err = self.run_cli(*argv)
            self.assertEqual(code, EXIT_USAGE, argv)
            self.assert_one_line_error(err)
        self.assertIn("built-in", self.run_cli("roles", "delete", "review")[2])

    def test_bad_names_and_values_are_refused(self):
        for argv in (
            ("roles", "add", "../evil", "--system", "x"),
            ("roles", "add", ".hidden", "--system", "x"),
            ("roles", "add", "blank", "--system", "   "),
            ("roles", "add", "tokens", "--system", "x", "--max-tokens", "0"),
            ("roles", "add", "hot", "--system", "x", "--temperature", "nan"),
            ("roles", "add", "nosystem"),
        ):
            code, _, err = self.run_cli(*argv)
            self.assertEqual(code, EXIT_USAGE, argv)
            self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertEqual(self.store.load_roles(), {})

    def test_the_roles_file_is_private_and_versioned(self):
        self.run_cli("roles", "add", "r", "--system", "S")
        self.assertEqual(stat.S_IMODE(os.stat(self.store.roles_path).st_mode), 0o600)
        with open(self.store.roles_path, encoding="utf-8") as handle:
            data = json.load(handle)
        self.assertEqual((data["format"], data["version"]), ("openai2.roles", 1))
        self.assertEqual(data["roles"], {"r": {"system": "S"}})

    def test_a_corrupt_roles_file_is_moved_aside_and_a_newer_one_left_alone(self):
        os.makedirs(self.home)
        with open(self.store.roles_path, "w", encoding="utf-8") as handle:
            handle.write('{"roles": {"r": {"system": 5}}}')
        code, _, err = self.run_cli("roles", "list")
        self.assertEqual(code, EXIT_STORAGE)
        self.assert_one_line_error(err, "corrupted", ".corrupt-")
        self.assertFalse(os.path.exists(self.store.roles_path))
        self.assertEqual(len([n for n in os.listdir(self.home) if n.startswith("roles.json.corrupt-")]), 1)
        self.assertEqual(self.run_cli("roles", "list")[0], EXIT_OK)  # a fresh start
        newer = {"format": "openai2.roles", "version": 99, "roles": {}}
        with open(self.store.roles_path, "w", encoding="utf-8") as handle:
            json.dump(newer, handle)
        code, _, err = self.run_cli("roles", "add", "x", "--system", "y")
        self.assertEqual(code, EXIT_STORAGE)
        self.assertIn("newer openai2", err)
        with open(self.store.roles_path, encoding="utf-8") as handle:
            self.assertEqual(json.load(handle), newer)

    def test_edit_opens_the_editor_on_the_prompt_and_keeps_the_parameters(self):
        self.use_editor(" Answer in English only.", mode="append")
        code, out, _ = self.run_cli("roles", "edit", "translate")
        self.assertEqual(code, EXIT_OK, out)
        record = self.editor_record()
        self.assertIn("Keep the formatting", record["before"])
        self.assertEqual(record["mode"], 0o600)
        self.assertFalse(os.path.exists(record["path"]))
        role = self.store.load_roles()["translate"]
        self.assertTrue(role["system"].endswith("Answer in English only."), role)
        self.assertEqual(role["temperature"], 0.2)  # the built-in's parameter comes along
        self.assertIn("overrides the built-in", out)

    def test_edit_left_empty_changes_nothing(self):
        self.run_cli("roles", "add", "r", "--system", "Keep me.")
        self.use_editor("   \n")
        code, out, err = self.run_cli("roles", "edit", "r")
        self.assertEqual(code, EXIT_OK)
        self.assertIn("unchanged", out)
        self.assertIn("nothing sent", err)
        self.assertEqual(self.store.load_roles()["r"]["system"], "Keep me.")

    def test_edit_of_a_new_name_creates_the_role(self):
        self.use_editor("Write haiku only.\n")
        code, out, _ = self.run_cli("roles", "edit", "haiku")
        self.assertEqual(code, EXIT_OK)
        self.assertEqual(self.editor_record()["before"], "")
        self.assertEqual(self.store.load_roles()["haiku"], {"system": "Write haiku only."})
        self.assertIn("Saved the role haiku", out)

    def test_edit_without_an_editor_says_how_to_set_one(self):
        code, _, err = self.run_cli("roles", "edit", "r")
        self.assertEqual(code, EXIT_USAGE)
        self.assert_one_line_error(err, "$VISUAL or $EDITOR")


class RoleAtThePromptTest(CliCase):
    def repl(self, *lines, args=()):
        return self.run_cli("chat", "-i", *args, stdin="".join(line + "\n" for line in lines))

    def test_slash_role_sets_the_prompt_and_parameters_and_slash_role_shows_it(self):
        self.run_cli("roles", "add", "warm", "--system", "Be warm.", "--temperature", "1.5")
        code, out, _ = self.repl("/role", "/role warm", "/role", "hello", "/role review", "again")
        self.assertEqual(code, EXIT_OK)
        self.assertIn("No role", out)
        self.assertIn("Role warm: its system prompt is pinned", out)
        self.assertIn("Role: warm; temperature 1.5", out)
        first, second = self.sent(0), self.sent(1)
        self.assertEqual(first["messages"][0]["content"], "Be warm.")
        self.assertEqual(first["temperature"], 1.5)
        self.assertIn("code reviewer", second["messages"][0]["content"])
        self.assertNotIn("temperature", second)  # the previous role's parameter is undone
        self.assertEqual(sum(1 for m in second["messages"] if m["role"] == "system"), 1)

    def test_chat_role_shows_in_the_banner_and_slash_role(self):
        code, out, _ = self.repl("/role", args=("--role", "shell"))
        self.assertEqual(code, EXIT_OK)
        self.assertIn("role shell", out.splitlines()[0])
        self.assertIn("Role: shell (built-in); temperature 0", out)

    def test_an_unknown_role_at_the_prompt_is_an_error_line_and_the_prompt_goes_on(self):
        code, out, err = self.repl("/role nope", "hello")
        self.assertEqual(code, EXIT_OK)
        self.assertIn("/role: no role named 'nope'", err)
        self.assertEqual(len(self.transport.requests), 1)
        self.assertNotEqual(self.sent()["messages"][0]["role"], "system")


if __name__ == "__main__":
    unittest.main()
