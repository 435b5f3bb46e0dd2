"""The interactive prompt in a real pseudo-terminal (stdlib ``pty``): Ctrl-C during a streamed
answer returns to the prompt and the session goes on; Ctrl-C during a /retry (before or after its
first characters) keeps the previous answer; Ctrl-C at an empty prompt says how to quit; Ctrl-D
exits with status 0; the readline history file is private and holds no key; /role, /attach and
/edit (a real editor process on the same terminal: a fake one that reads a line from it); the
y/N question before a tool call (--functions) and /tools; the token budget's note on stderr and
/tokens."""
import json
import os
import shlex
import shutil
import stat
import sys
import tempfile
import time
import unittest
import warnings

try:
    import pty
    import select
except ImportError:  # pragma: no cover - Windows
    pty = None

from openai2.testing import FakeServer, Reply

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "sk-ptytest-RAWKEY-0123456789abcdef"


@unittest.skipIf(pty is None or not hasattr(os, "fork") or sys.platform == "win32", "needs the pty module (POSIX)")
class PtySessionTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="o2pty-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.home = os.path.join(self.tmp, "home")
        self.server = FakeServer().start()
        self.addCleanup(self.server.stop)
        self.buffer = b""
        self.fd = -1
        self.pid = 0

    def spawn(self, *args, **extra_env):
        env = dict(os.environ, OPENAI2_HOME=self.home, OPENAI_BASE_URL=self.server.base_url, PYTHONPATH=ROOT,
                   TERM="dumb", NO_COLOR="1", OPENAI_API_KEY=KEY,
                   PYTHONFAULTHANDLER="1")  # a hung child shows its threads' stacks (see read_until)
        env.pop("OPENAI2_DEBUG", None)
        env.update(extra_env)
        argv = [sys.executable, "-m", "openai2"] + list(args)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with server threads: we exec at once
            pid, fd = pty.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                import signal

                signal.signal(signal.SIGINT, signal.SIG_DFL)  # in case this test run ignores Ctrl-C
                os.execve(sys.executable, argv, env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.addCleanup(self._reap)

    def _reap(self):
        if self.pid:
            try:
                os.kill(self.pid, 9)
            except OSError:
                pass
            try:
                os.waitpid(self.pid, 0)
            except OSError:
                pass
            self.pid = 0
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _stacks(self):
        """What the terminal showed, then the stacks of every thread of the child (SIGABRT:
        faulthandler prints them), to say where a child that stopped answering hangs."""
        import signal

        if self.pid:
            try:
                os.kill(self.pid, signal.SIGABRT)
            except OSError:
                pass
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                ready, _, _ = select.select([self.fd], [], [], 0.2)
                if not ready:
                    continue
                try:
                    data = os.read(self.fd, 65536)
                except OSError:
                    break
                if not data:
                    break
                self.buffer += data
        return self.buffer.decode("utf-8", "replace")

    def read_until(self, needle, timeout=15.0, stacks=True):
        """Read the terminal until ``needle`` appears after what earlier calls consumed; on a
        timeout, with ``stacks``, the child's stacks are shown (which ends it)."""
        deadline = time.monotonic() + timeout
        while needle not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                shown = self._stacks() if stacks else self.buffer.decode("utf-8", "replace")
                self.fail("timed out waiting for %r; the terminal showed:\n%s" % (needle, shown))
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.5))
            if ready:
                try:
                    data = os.read(self.fd, 4096)
                except OSError:  # EIO: the child closed the terminal
                    data = b""
                if not data:
                    self.fail("the program ended while waiting for %r:\n%s" % (needle, self.buffer.decode("utf-8", "replace")))
                self.buffer += data
        seen, self.buffer = self.buffer.split(needle, 1)
        return seen + needle

    def send(self, data):
        os.write(self.fd, data)

    def interrupt_until(self, needle, tries=5):
        """Send Ctrl-C until ``needle`` shows.  CPython's readline can miss a SIGINT that lands
        in the instant between printing the prompt and waiting for keys (it only checks for
        signals when its select() is interrupted), so a lost Ctrl-C is sent again."""
        for attempt in range(tries):
            self.send(b"\x03")
            try:
                return self.read_until(needle, timeout=2.0, stacks=attempt == tries - 1)
            except AssertionError:
                if attempt == tries - 1:
                    raise
        return b""  # pragma: no cover

    def wait_exit(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # keep draining the terminal so the child never blocks writing to it
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:
                try:
                    self.buffer += os.read(self.fd, 4096)
                except OSError:
                    pass
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.pid = 0
                return os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else (status >> 8)
        self.fail("the program did not exit; the terminal showed:\n%s" % self.buffer.decode("utf-8", "replace"))

    def test_ctrl_c_stops_answer_then_session_continues_and_ctrl_d_exits(self):
        pieces = ["Once ", "upon ", "a ", "time "] + ["and so on "] * 20
        self.server.add_replies(Reply(chunks=pieces, stall_after=5, stall_seconds=30))
        self.spawn("chat")
        self.read_until(b"Ctrl-C stops an answer")
        self.read_until(b"You: ")
        self.send(b"tell me a story\r")
        self.read_until(b"Once upon")
        self.assertTrue(self.server.wait_for_requests(1))
        # Ctrl-C while the answer is streaming (the server stalls).  Sent again if it went
        # unnoticed for 2 s: seen rarely under load (CPython and PyPy), the child still blocked in
        # the socket read with no KeyboardInterrupt (its stack, from faulthandler, showed that)
        self.interrupt_until(b"partial answer is kept")
        self.read_until(b"You: ")
        self.send(b"What comes after the natural number 50?\r")
        shown = self.read_until(b"You: ")
        self.assertIn(b"51", shown)
        # the second request carried the partial answer as history
        sent = self.server.requests[-1].json["messages"]
        self.assertEqual(sent[0]["content"], "tell me a story")
        self.assertTrue(sent[1]["content"].startswith("Once upon"))
        self.interrupt_until(b"To quit")  # Ctrl-C at an empty prompt explains how to quit
        self.read_until(b"You: ")
        self.send(b"my key is " + KEY.encode() + b"\r")
        self.read_until(b"You: ")
        self.send(b"\x04")  # Ctrl-D
        self.assertEqual(self.wait_exit(), 0)
        self.assertNotIn(KEY.encode(), self.buffer)
        with open(os.path.join(self.home, "sessions", "default.json"), encoding="utf-8") as handle:
            messages = json.load(handle)["messages"]
        self.assertEqual([m["role"] for m in messages], ["user", "assistant"] * 3)
        self.assertEqual(messages[3]["content"], "51")
        history = os.path.join(self.home, "input_history")
        if os.path.exists(history):  # only where readline is available
            self.assertEqual(stat.S_IMODE(os.stat(history).st_mode), 0o600)
            with open(history, encoding="utf-8") as handle:
                recorded = handle.read()
            self.assertIn("natural number 50", recorded)
            self.assertNotIn(KEY, recorded)

    @unittest.skipIf(
        sys.implementation.name == "pypy",
        "PyPy sometimes delivers a Ctrl-C that arrives while waiting for response headers only when "
        "the read ends (open item in the README's Reliability notes); CPython checks the behaviour",
    )
    def test_ctrl_c_before_a_retry_answers_keeps_the_last_round(self):
        self.server.add_replies(Reply("first answer"), Reply("late", delay=30))
        self.spawn("chat", "--session", "pty3")
        self.read_until(b"You: ")
        self.send(b"one\r")
        self.read_until(b"first answer")
        self.read_until(b"You: ")
        self.send(b"/retry\r")
        self.assertTrue(self.server.wait_for_requests(2))
        self.send(b"\x03")  # Ctrl-C before the first byte of the new answer
        self.read_until(b"previous answer is kept")
        self.read_until(b"You: ")
        self.send(b"/history\r")
        self.read_until(b"[assistant]:first answer")
        self.read_until(b"You: ")
        self.send(b"\x04")
        self.assertEqual(self.wait_exit(), 0)
        with open(os.path.join(self.home, "sessions", "pty3.json"), encoding="utf-8") as handle:
            messages = json.load(handle)["messages"]
        self.assertEqual([m["content"] for m in messages], ["one", "first answer"])

    def test_ctrl_c_during_a_retry_answer_keeps_the_previous_answer(self):
        pieces = ["new ", "partial ", "words "] + ["and more "] * 20
        self.server.add_replies(Reply("first answer"), Reply(chunks=pieces, stall_after=4, stall_seconds=30))
        self.spawn("chat", "--session", "pty4")
        self.read_until(b"You: ")
        self.send(b"one\r")
        self.read_until(b"first answer")
        self.read_until(b"You: ")
        self.send(b"/retry\r")
        self.read_until(b"new partial words")  # some characters of the new answer have arrived
        self.send(b"\x03")  # Ctrl-C while the server stalls in the middle of the new answer
        self.read_until(b"previous answer is kept")
        self.read_until(b"You: ")
        self.send(b"/history\r")
        shown = self.read_until(b"You: ")
        self.assertIn(b"[assistant]:first answer", shown)
        self.assertNotIn(b"[assistant]:new partial", shown)
        self.send(b"\x04")
        self.assertEqual(self.wait_exit(), 0)
        with open(os.path.join(self.home, "sessions", "pty4.json"), encoding="utf-8") as handle:
            messages = json.load(handle)["messages"]
        self.assertEqual([m["content"] for m in messages], ["one", "first answer"])

    def test_quit_word_and_multiline(self):
        self.spawn("chat", "--session", "pty2")
        self.read_until(b"You: ")
        self.send(b'"""\r')
        self.read_until(b"... ")
        self.send(b"line one\r")
        self.read_until(b"... ")
        self.send(b'line two"""\r')
        self.read_until(b"(demo) You said: line one")
        self.read_until(b"You: ")
        self.send(b"quit\r")
        self.assertEqual(self.wait_exit(), 0)
        self.assertEqual(self.server.requests[-1].json["messages"][-1]["content"], "line one\nline two")

    def test_a_tool_call_is_asked_on_the_terminal_and_runs_only_after_y(self):
        path = os.path.join(self.tmp, "weather.py")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(
                "def get_weather(city: str) -> str:\n"
                '    """Get the current weather in a city."""\n'
                "    return 'sunny in ' + city\n"
            )
        self.spawn("chat", "--session", "ptytools", "--functions", path)
        self.read_until(b"You: ")
        self.send(b"What is the weather in Paris?\r")
        self.read_until(b"Run get_weather(city='Paris')? [y/N] ")
        self.send(b"y\r")
        self.read_until(b"-> sunny in Paris")
        self.read_until(b"Here is what the tools said: sunny in Paris.")
        self.read_until(b"You: ")
        self.send(b"And the weather in Rome?\r")
        self.read_until(b"Run get_weather(city='Rome')? [y/N] ")
        self.send(b"\r")  # Enter alone: no
        self.read_until(b"not run (declined)")
        self.read_until(b"You: ")
        self.send(b"/tools\r")
        self.read_until(b"get_weather(city)")
        self.read_until(b"You: ")
        self.send(b"\x04")
        self.assertEqual(self.wait_exit(), 0)
        sent = [r.json["messages"][-1] for r in self.server.requests if r.json["messages"][-1]["role"] == "tool"]
        self.assertEqual([m["content"] for m in sent], ["sunny in Paris", "The user declined to run this tool."])

    def test_slash_role_shows_and_sets_the_role(self):
        self.spawn("chat", "--session", "ptyrole")
        self.read_until(b"You: ")
        self.send(b"/role\r")
        self.read_until(b"No role")
        self.read_until(b"You: ")
        self.send(b"/role shell\r")
        self.read_until(b"Role shell (built-in): its system prompt is pinned as message 0; temperature 0.")
        self.read_until(b"You: ")
        self.send(b"/role\r")
        self.read_until(b"Role: shell (built-in); temperature 0")
        self.read_until(b"You: ")
        self.send(b"list files\r")
        self.read_until(b"You said: list files")
        self.read_until(b"You: ")
        self.send(b"\x04")
        self.assertEqual(self.wait_exit(), 0)
        body = self.server.requests[-1].json
        self.assertIn("exactly one command", body["messages"][0]["content"])
        self.assertEqual(body["temperature"], 0)

    def test_a_token_budget_notes_what_was_left_out_and_slash_tokens_shows_it(self):
        self.spawn("chat", "--session", "ptytokens", "--max-history-tokens", "80")
        for i in range(6):
            self.read_until(b"You: ")
            self.send(b"question %d: tell me about the number %d and its many properties\r" % (i, i))
            self.read_until(b"You said: question %d" % i)
        self.read_until(b"earlier messages not sent, to fit 80 tokens; the session keeps them all)")
        self.read_until(b"You: ")
        self.send(b"/tokens\r")
        shown = self.read_until(b"You: ")
        self.assertIn(b"Budget: 80 tokens (--max-history-tokens)", shown)
        self.assertRegex(shown, rb"Next request: about \d+ tokens before your message")
        self.assertRegex(shown, rb"Messages: 12 in the session, \d+ sent \(\d+ left out\)")
        self.send(b"\x04")
        self.assertEqual(self.wait_exit(), 0)
        with open(os.path.join(self.home, "sessions", "ptytokens.json"), encoding="utf-8") as f:
            self.assertEqual(len(json.load(f)["messages"]), 12)  # the session keeps everything

    def test_slash_attach_collects_then_sends_with_the_next_message(self):
        path = os.path.join(self.tmp, "notes.txt")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("attached words\n")
        self.spawn("chat", "--session", "ptyattach")
        self.read_until(b"You: ")
        self.send(b"/attach " + path.encode() + b"\r")
        self.read_until(b"1 pending")
        self.read_until(b"You: ")
        self.send(b"/attach\r")
        self.read_until(b"1. " + path.encode() + b" (text, 15 bytes)")
        self.read_until(b"You: ")
        self.send(b"what is in it\r")
        self.read_until(b"You said: what is in it")
        self.read_until(b"You: ")
        self.send(b"/attach\r")
        self.read_until(b"Nothing attached")
        self.read_until(b"You: ")
        self.send(b"\x04")
        self.assertEqual(self.wait_exit(), 0)
        content = self.server.requests[-1].json["messages"][-1]["content"]
        self.assertEqual(content, "what is in it\n\n```%s\nattached words\n```" % path)

    def test_slash_edit_runs_the_editor_on_the_terminal_and_sends_what_it_saved(self):
        # the fake editor talks to the terminal as a real one does: it reads a line from it
        script = os.path.join(self.tmp, "editor.py")
        with open(script, "w", encoding="utf-8") as handle:
            handle.write(
                "import os, sys\n"
                "path = sys.argv[-1]\n"
                "sys.stdout.write('EDITOR OPEN mode=%o\\n' % (os.stat(path).st_mode & 0o777))\n"
                "sys.stdout.flush()\n"
                "line = sys.stdin.readline()\n"
                "with open(path, 'a', encoding='utf-8') as f:\n"
                "    f.write(line)\n"
                "with open(sys.argv[-2], 'w') as f:\n"
                "    f.write(path)\n"
            )
        seen = os.path.join(self.tmp, "seen-path")
        editor = "%s %s %s" % (shlex.quote(sys.executable), shlex.quote(script), shlex.quote(seen))
        self.spawn("chat", "--session", "ptyedit", VISUAL=editor)
        self.read_until(b"You: ")
        self.send(b"/edit Draft:\r")
        self.read_until(b"EDITOR OPEN mode=600")
        self.send(b" typed in the editor\r")
        self.read_until(b"(sending the edited text: Draft: typed in the editor)")
        self.read_until(b"You said: Draft: typed in the editor")
        self.read_until(b"You: ")
        self.send(b"\x04")
        self.assertEqual(self.wait_exit(), 0)
        self.assertEqual(self.server.requests[-1].json["messages"][-1]["content"], "Draft: typed in the editor")
        with open(seen, encoding="utf-8") as handle:
            self.assertFalse(os.path.exists(handle.read()))  # the temporary file is gone


if __name__ == "__main__":
    unittest.main()
