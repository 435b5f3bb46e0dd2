"""The command line against hostile circumstances: two processes on one brand-new session, an
interrupted /retry, a resumed system prompt under /undo, planted symbolic links, keys echoed
into saved conversations, files nested too deeply for JSON, and text that is not UTF-8 (stdin,
argv, a terminal that cannot show the answer).

In-process runs answer in memory (CLITestCase: a MemoryServer given as ``main(transport=...)``);
the tests that start ``python -m openai2`` are marked ``@over_sockets`` and get a FakeServer."""
import io
import json
import os
import subprocess
import sys
import unittest

from openai2.cli import EXIT_OK, EXIT_STORAGE, main
from openai2.testing import Reply
from tests.support.homes import DEEP, SYMLINKS
from tests.test_cli import ENV_KEY, KEY, KEY2, POSIX, CLITestCase, _subprocess_env, over_sockets

GBK_TEXT = "你好，世界".encode("gbk")


class HookedInput(io.StringIO):
    """Lines for the prompt; ``before_first`` runs when the prompt first waits for a line (what
    another terminal does while this one sits at the prompt)."""

    def __init__(self, text, before_first):
        super().__init__(text)
        self.before_first = before_first

    def readline(self, *args):
        hook, self.before_first = self.before_first, None
        if hook is not None:
            hook()
        return super().readline(*args)


class InterruptingOutput(io.StringIO):
    """stdout that raises KeyboardInterrupt (once) when ``marker`` is about to be shown: Ctrl-C
    pressed after some characters of an answer arrived."""

    def __init__(self, marker):
        super().__init__()
        self.marker = marker

    def write(self, text):
        if self.marker and self.marker in text:
            self.marker = None
            raise KeyboardInterrupt
        return super().write(text)


class HostileTestCase(CLITestCase):
    def main(self, argv, stdin, stdout=None, stderr=None):
        out = io.StringIO() if stdout is None else stdout
        err = io.StringIO() if stderr is None else stderr
        code = main(list(argv), stdin=stdin, stdout=out, stderr=err, transport=self.transport())
        shown = [getattr(stream, "getvalue", lambda: "")() for stream in (out, err)]
        self.outputs += shown
        return code, shown[0], shown[1]

    def conflict_files(self, name="default"):
        folder = self.store.sessions_dir
        return sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.startswith(name + ".conflict-"))

    def contents(self, path):
        with open(path, encoding="utf-8") as handle:
            return [m["content"] for m in json.load(handle)["messages"]]


class TwoProcessesTest(HostileTestCase):
    def test_a_prompt_started_on_a_new_home_never_overwrites_what_another_run_saved(self):
        self.assertFalse(os.path.exists(self.home))  # brand new: the prompt's lock is deferred
        other = []
        stdin = HookedInput("mine\n", lambda: other.append(self.run_cli("chat", "theirs")))
        code, out, err = self.main(["chat", "-i"], stdin)
        self.assertEqual(other[0][0], EXIT_OK)  # the other terminal's one-shot chat saved and left
        self.assertEqual(code, EXIT_STORAGE, err)
        path = self.store.session_path("default")
        self.assertEqual(self.contents(path), ["theirs", "(demo) You said: theirs"])  # not overwritten
        kept = self.conflict_files()
        self.assertEqual(len(kept), 1)
        self.assertEqual(self.contents(kept[0]), ["mine", "(demo) You said: mine"])  # nor lost
        self.assertIn("(demo) You said: mine", out)
        self.assertIn(path, err)
        self.assertIn(kept[0], err)
        self.assertEqual(err.count("openai2: error:"), 1)
        # what the message proposes works: the kept conversation can be continued
        name = os.path.basename(kept[0])[: -len(".json")]
        self.assertIn("--session " + name, err)
        code, out, _ = self.run_cli("chat", "--session", name, "again")
        self.assertEqual(code, EXIT_OK)
        self.assertEqual(self.contents(kept[0])[-2:], ["again", "(demo) You said: again"])

    def test_a_session_saved_before_this_run_read_it_is_continued_normally(self):
        # no false alarm: another run saved and left before this one started and read the file
        self.store.write_session("other", [], [])
        self.assertIsNone(self.store.read_session("s"))
        first = self.store.lock_session("s")
        try:
            self.store.write_session("s", [{"role": "user", "content": "theirs"}], [])
        finally:
            first.release()
        stdin = HookedInput("mine\n", lambda: None)
        code, _, err = self.main(["chat", "-i", "--session", "s"], stdin)
        self.assertEqual(code, EXIT_OK, err)  # this run read the file: nothing changed since
        self.assertEqual(self.contents(self.store.session_path("s")), ["theirs", "mine", "(demo) You said: mine"])

    @over_sockets
    def test_two_real_processes_on_a_new_home_keep_both_conversations(self):
        env = _subprocess_env(self.home, self.server.base_url)
        first = subprocess.Popen([sys.executable, "-m", "openai2", "chat", "-i"], env=env, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            banner = first.stdout.readline()  # at the prompt; nothing saved, no lock yet
            self.assertIn(b"openai2", banner)
            second = subprocess.run([sys.executable, "-m", "openai2", "chat", "theirs"], env=env,
                                    stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
            self.assertEqual(second.returncode, EXIT_OK, second.stderr)
            out, err = first.communicate(b"mine\n", timeout=30)
        finally:
            if first.poll() is None:
                first.kill()
                first.communicate()
        out, err = out.decode("utf-8"), err.decode("utf-8")
        self.outputs += [out, err, second.stdout.decode("utf-8"), second.stderr.decode("utf-8")]
        self.assertEqual(first.returncode, EXIT_STORAGE, err)
        path = self.store.session_path("default")
        self.assertIn(path, err)
        self.assertEqual(self.contents(path), ["theirs", "(demo) You said: theirs"])
        kept = self.conflict_files()
        self.assertEqual(len(kept), 1)
        self.assertIn(kept[0], err)
        self.assertEqual(self.contents(kept[0]), ["mine", "(demo) You said: mine"])


class RetryAndUndoTest(HostileTestCase):
    def test_retry_interrupted_after_some_characters_keeps_the_previous_answer(self):
        self.server.add_replies(
            Reply("first answer", chunks=["first answer"]),
            Reply("second answer that gets cut", chunks=["second ", "answer ", "that ", "gets cut"]),
        )
        stdout = InterruptingOutput("answer that")  # never shown as one piece: armed below
        stdin = HookedInput("one\n/retry\n/history\n", None)
        real_write = stdout.write

        def arm_after_first_answer(text):
            if "first answer" in text:
                stdout.marker = "answer "  # Ctrl-C once "second " of the new answer was shown
            return real_write(text)

        stdout.write = arm_after_first_answer
        code, out, err = self.main(["chat", "-i"], stdin, stdout=stdout)
        self.assertEqual(code, EXIT_OK, err)
        self.assertIn("previous answer is kept", err)
        self.assertNotIn("partial answer is kept", err)
        self.assertIn("[assistant]:first answer", out.split("Retrying")[-1])  # /history after it
        self.assertEqual(self.session()["messages"][-1]["content"], "first answer")
        self.assertEqual([m["content"] for m in self.session()["messages"]], ["one", "first answer"])
        self.assertEqual(len(self.chat_requests()), 2)

    def ctrl_c_during_save(self, which):
        """Store.write_session that gets a real SIGINT in the middle of its ``which``-th call
        (a Ctrl-C while the file is written)."""
        import signal
        from unittest import mock

        from openai2.store import Store

        real = Store.write_session
        calls = []

        def write_session(store, *args, **kwargs):
            calls.append(1)
            if len(calls) == which:
                signal.raise_signal(signal.SIGINT)
            return real(store, *args, **kwargs)

        patcher = mock.patch.object(Store, "write_session", write_session)
        patcher.start()
        self.addCleanup(patcher.stop)

    @unittest.skipUnless(hasattr(__import__("signal"), "raise_signal"), "signal.raise_signal")
    def test_ctrl_c_during_the_save_of_a_completed_retry_keeps_the_new_answer_in_memory_too(self):
        self.server.add_replies(Reply("first answer"), Reply("second answer"), Reply("third"))
        self.ctrl_c_during_save(2)  # 1: the first round's save, 2: the retry's
        code, out, err = self.main(["chat", "-i"], io.StringIO("one\n/retry\nnext\n"))
        self.assertEqual(code, EXIT_OK, err)
        self.assertNotIn("previous answer is kept", err)
        self.assertIn("the save finished", err)
        sent = [m["content"] for m in self.chat_requests()[-1].json["messages"]]
        self.assertEqual(sent, ["one", "second answer", "next"])  # memory holds what disk holds
        self.assertEqual([m["content"] for m in self.session()["messages"]], ["one", "second answer", "next", "third"])

    def test_ctrl_c_as_a_retry_begins_puts_the_round_back(self):
        self.server.add_replies(Reply("first answer"), Reply("third"))
        stdout = InterruptingOutput(None)
        real_write = stdout.write

        def arm_after_first_answer(text):
            if "first answer" in text:
                stdout.marker = "Retrying:"  # Ctrl-C as the retry starts, before any request
            return real_write(text)

        stdout.write = arm_after_first_answer
        code, out, err = self.main(["chat", "-i", "--no-stream"], io.StringIO("one\n/retry\nnext\n"), stdout=stdout)
        self.assertEqual(code, EXIT_OK, err)
        self.assertEqual(len(self.chat_requests()), 2)
        sent = [m["content"] for m in self.chat_requests()[-1].json["messages"]]
        self.assertEqual(sent, ["one", "first answer", "next"])  # the round was not lost
        self.assertEqual([m["content"] for m in self.session()["messages"]], ["one", "first answer", "next", "third"])

    @unittest.skipUnless(hasattr(__import__("signal"), "raise_signal"), "signal.raise_signal")
    def test_ctrl_c_during_the_save_of_a_completed_one_shot_exits_0(self):
        self.server.add_replies(Reply("the answer"))
        self.ctrl_c_during_save(1)
        code, out, err = self.run_cli("chat", "q")
        self.assertEqual(code, EXIT_OK, err)
        self.assertEqual(out, "the answer\n")
        self.assertNotIn("interrupted", err)
        self.assertEqual([m["content"] for m in self.session()["messages"]], ["q", "the answer"])

    def test_undo_of_the_only_round_of_a_resumed_session_keeps_its_system_prompt(self):
        self.assertEqual(self.run_cli("chat", "--system", "Be brief.", "one")[0], EXIT_OK)
        code, out, err = self.run_cli("chat", "-i", stdin="/undo\n/history\n")  # resumed, no --system
        self.assertEqual(code, EXIT_OK, err)
        self.assertIn("Rolled back 1 round. No rounds are left (the system prompt stays).", out)
        self.assertEqual(self.session()["messages"], [{"role": "system", "content": "Be brief."}])
        self.assertEqual(self.session()["pinned"], [0])
        code, out, _ = self.run_cli("chat", "-i", stdin="/undo\n")
        self.assertIn("Nothing to undo", out)
        self.assertEqual(self.session()["messages"], [{"role": "system", "content": "Be brief."}])


class HostileFilesTest(HostileTestCase):
    @unittest.skipUnless(SYMLINKS, "symbolic links")
    def test_a_symlinked_session_lock_exits_3_naming_it_and_leaves_its_target(self):
        victim = os.path.join(self.tmp, "victim.txt")
        with open(victim, "w") as handle:
            handle.write("precious")
        self.store.write_session("other", [], [])
        lock_path = os.path.join(self.store.sessions_dir, "work.lock")
        os.symlink(victim, lock_path)
        code, _, err = self.run_cli("chat", "--session", "work", "hi")
        self.assertEqual(code, EXIT_STORAGE)
        self.assertIn(lock_path, err)
        self.assertIn("symbolic link", err)
        self.assertEqual(err.count("\n"), 1)
        with open(victim) as handle:
            self.assertEqual(handle.read(), "precious")
        self.assertEqual(self.chat_requests(), [])

    def test_deeply_nested_session_and_key_files_are_moved_aside(self):
        self.store.write_session("default", [], [])
        path = self.store.session_path("default")
        for target in (path, self.store.keys_path):
            with open(target, "w") as handle:
                handle.write(DEEP)
        code, out, err = self.run_cli("sessions", "list")
        self.assertEqual(code, EXIT_OK, err)
        self.assertIn("unreadable", out)
        self.assertIn("nested too deeply", out)
        self.assertIn(self.store.keys_path, err)  # read to mask its keys: moved aside, with a note
        self.assertIn("nested too deeply", err)
        with open(self.store.keys_path, "w") as handle:
            handle.write(DEEP)  # again, for chat
        code, _, err = self.run_cli("chat", "hi")
        self.assertEqual(code, EXIT_STORAGE)
        self.assertNotIn("RecursionError", err)
        self.assertIn("nested too deeply", err)
        self.assertIn(self.store.keys_path, err)
        code, _, err = self.run_cli("chat", "hi")  # the key file was moved aside; the session next
        self.assertEqual(code, EXIT_STORAGE)
        self.assertIn(path, err)
        self.assertIn("nested too deeply", err)
        code, out, err = self.run_cli("chat", "hi")  # a fresh start
        self.assertEqual((code, out), (EXIT_OK, "(demo) You said: hi\n"), err)
        aside = sorted(n.split(".corrupt-")[0] for n in os.listdir(self.home) + os.listdir(self.store.sessions_dir)
                       if ".corrupt-" in n)
        self.assertEqual(aside, ["default.json", "keys.json", "keys.json"])

    def test_load_of_a_deeply_nested_file_is_a_one_line_error(self):
        path = os.path.join(self.tmp, "deep.json")
        with open(path, "w") as handle:
            handle.write(DEEP)
        code, out, err = self.run_cli("chat", "-i", stdin="/load %s\nhi\n" % path)
        self.assertEqual(code, EXIT_OK, err)
        self.assertIn("nested too deeply", err)
        self.assertIn("(demo) You said: hi", out)


class MaskedConversationsTest(HostileTestCase):
    def test_sessions_show_and_export_mask_every_known_key(self):
        self.store.add_keys([KEY])
        echoed = "flag %s env %s stored %s" % (KEY2, ENV_KEY, KEY)
        self.store.write_session("work", [{"role": "user", "content": "echo"}, {"role": "assistant", "content": echoed}], [])
        self.set_env("OPENAI_API_KEY", ENV_KEY)
        runs = [("sessions", "show", "work"), ("sessions", "export", "work"),
                ("sessions", "export", "work", "--format", "markdown")]
        for argv in runs:
            code, out, err = self.run_cli("--api-key", KEY2, *argv)  # tearDown: no key in any output
            self.assertEqual(code, EXIT_OK, err)
            for masked in ("sk-…cdef", "sk-…xwvu", "sk-…5555"):
                self.assertIn(masked, out)
        for fmt in ("json", "markdown"):
            target = os.path.join(self.tmp, "export." + fmt)
            code, out, err = self.run_cli("--api-key", KEY2, "sessions", "export", "work", "--format", fmt, "-o", target)
            self.assertEqual(code, EXIT_OK, err)
            with open(target, encoding="utf-8") as handle:
                text = handle.read()
            for secret in (KEY, KEY2, ENV_KEY):
                self.assertNotIn(secret, text)
            self.assertIn("sk-…cdef", text)
            if fmt == "json":
                self.assertEqual(json.loads(text)["messages"][0]["content"], "echo")
        with open(self.store.session_path("work"), encoding="utf-8") as handle:
            self.assertIn(KEY, handle.read())  # the session file itself is left as it was

    def test_a_key_the_server_echoes_is_masked_when_shown_later(self):
        self.set_env("OPENAI_API_KEY", ENV_KEY)
        self.server.add_replies(Reply("your key is %s" % ENV_KEY))
        code, out, _ = self.run_cli("chat", "hi")
        self.assertEqual(out, "your key is sk-…5555\n")
        code, out, _ = self.run_cli("sessions", "show")
        self.assertIn("your key is sk-…5555", out)


class SpecialFilesTest(HostileTestCase):
    """Only regular files are written: a FIFO (a stand-in for /dev/null, /dev/tty) or a link to
    one (the shape of /dev/stdout) at an output path is refused and left as it was."""

    def setUp(self):
        super().setUp()
        if not hasattr(os, "mkfifo"):
            self.skipTest("FIFOs")
        self.fifo = os.path.join(self.tmp, "pipe")
        os.mkfifo(self.fifo)

    def assert_still_a_fifo(self, path):
        import stat

        self.assertTrue(stat.S_ISFIFO(os.lstat(path).st_mode))

    def test_sessions_export_to_a_fifo_is_refused(self):
        self.assertEqual(self.run_cli("chat", "hi")[0], EXIT_OK)
        code, _, err = self.run_cli("sessions", "export", "-o", self.fifo)
        self.assertNotEqual(code, EXIT_OK)
        self.assertIn(self.fifo, err)
        self.assertIn("not a regular file", err)
        self.assert_still_a_fifo(self.fifo)

    @unittest.skipUnless(SYMLINKS, "symbolic links")
    def test_save_to_a_link_to_a_fifo_is_refused_and_the_prompt_goes_on(self):
        link = os.path.join(self.tmp, "stdout-like")
        os.symlink(self.fifo, link)
        code, out, err = self.main(["chat", "-i"], io.StringIO("hi\n/save %s\nagain\n" % link))
        self.assertEqual(code, EXIT_OK, err)
        self.assertIn("not a regular file", out + err)
        self.assertTrue(os.path.islink(link))
        self.assert_still_a_fifo(self.fifo)
        self.assertIn("(demo) You said: again", out)

    def test_sessions_export_dash_is_stdout(self):
        self.assertEqual(self.run_cli("chat", "hi")[0], EXIT_OK)
        code, out, err = self.run_cli("sessions", "export", "-o", "-")
        self.assertEqual(code, EXIT_OK, err)
        self.assertEqual(json.loads(out)["messages"][0]["content"], "hi")
        self.assertFalse(os.path.exists("-"))


class SetValuesTest(HostileTestCase):
    def test_set_refuses_nan_infinity_and_deep_nesting_and_the_prompt_goes_on(self):
        self.server.add_replies(Reply("fine"))
        deep = "[" * 5000 + "]" * 5000
        lines = ["/set temperature NaN", "/set temperature Infinity", "/set temperature -Infinity",
                 "/set temperature 1e999", "/set logit_bias " + deep, '/set metadata {"a": ' + "[" * 40 + "1" + "]" * 40 + "}", "/set top_p 0.5", "hi"]
        code, out, err = self.main(["chat", "-i"], io.StringIO("\n".join(lines) + "\n"))
        self.assertEqual(code, EXIT_OK, err)
        self.assertEqual(err.count("NaN or Infinity"), 4, err)
        self.assertEqual(err.count("nested too deeply"), 2, err)
        self.assertNotIn("unexpected", err)
        self.assertIn("fine", out)
        body = self.chat_requests()[-1].json
        self.assertEqual(body["top_p"], 0.5)
        for name in ("temperature", "logit_bias", "metadata"):
            self.assertNotIn(name, body)

    def test_a_request_that_cannot_be_built_is_an_error_line_not_the_end(self):
        from unittest import mock

        self.server.add_replies(Reply("fine"))
        # a NaN that reached the Chat without /set's check
        with mock.patch("openai2.cli._cli_parse_value", side_effect=[float("nan"), 0.5]):
            code, out, err = self.main(["chat", "-i"], io.StringIO("/set temperature x\nhi\n/set temperature y\nhi\n"))
        self.assertEqual(code, EXIT_OK, err)
        self.assertIn("the request could not be sent", err)
        self.assertNotIn("unexpected", err)
        self.assertIn("fine", out)
        self.assertEqual(self.chat_requests()[-1].json["temperature"], 0.5)
        self.assertEqual([m["content"] for m in self.session()["messages"]], ["hi", "fine"])


class FailedSaveTest(HostileTestCase):
    def fail_first_saves(self, count, error):
        from unittest import mock

        from openai2.store import Store

        real = Store.write_session
        calls = []

        def write_session(store, *args, **kwargs):
            calls.append(1)
            if len(calls) <= count:
                raise error
            return real(store, *args, **kwargs)

        patcher = mock.patch.object(Store, "write_session", write_session)
        patcher.start()
        self.addCleanup(patcher.stop)

    def test_a_failed_save_keeps_the_prompt_running_and_the_next_answer_saves(self):
        import errno

        self.fail_first_saves(1, OSError(errno.ENOSPC, "cannot write x: no space left on the device"))
        copy = os.path.join(self.tmp, "copy.json")
        code, out, err = self.main(["chat", "-i"], io.StringIO("one\n/save %s\ntwo\n" % copy))
        self.assertEqual(code, EXIT_OK, err)
        self.assertIn("(demo) You said: one", out)
        self.assertIn("no space left", err)
        self.assertIn("the conversation is still here: /save FILE", err)
        self.assertIn("(demo) You said: two", out)
        self.assertEqual(self.contents(copy), ["one", "(demo) You said: one"])
        self.assertEqual(self.contents(self.store.session_path("default")),
                         ["one", "(demo) You said: one", "two", "(demo) You said: two"])

    def test_a_failed_save_of_a_one_shot_still_exits_3_after_the_answer(self):
        import errno

        self.fail_first_saves(1, OSError(errno.ENOSPC, "cannot write x: no space left on the device"))
        code, out, err = self.run_cli("chat", "one")
        self.assertEqual(code, EXIT_STORAGE, err)
        self.assertEqual(out, "(demo) You said: one\n")
        self.assertIn("no space left", err)

    def test_a_conflict_still_ends_the_prompt(self):
        from openai2.store import SessionConflictError

        self.fail_first_saves(1, SessionConflictError("the session changed on disk"))
        code, out, err = self.main(["chat", "-i"], io.StringIO("one\ntwo\n"))
        self.assertEqual(code, EXIT_STORAGE, err)
        self.assertNotIn("You said: two", out)


class ClosedPipe(io.StringIO):
    """stdout whose reader goes away once ``marker`` is written (``openai2 chat ... | head -c 20``)."""

    def __init__(self, marker):
        super().__init__()
        self.marker = marker
        self.closed_pipe = False

    def write(self, text):
        if self.closed_pipe:
            raise BrokenPipeError(32, "Broken pipe")
        if self.marker in text:
            self.closed_pipe = True
        return super().write(text)


class ClosedPipeTest(HostileTestCase):
    def test_a_stream_into_a_closed_pipe_saves_what_arrived_and_ends_quietly(self):
        self.server.add_replies(Reply("a long essay", chunks=["first ", "second ", "third ", "fourth"]))
        stdout = ClosedPipe("first")
        code, out, err = self.main(["chat", "essay"], io.StringIO(""), stdout=stdout)
        self.assertEqual(code, 1, err)  # as before: a quiet exit 1, no traceback, no message
        self.assertEqual(err, "")
        self.assertEqual(out, "first ")
        saved = self.contents(self.store.session_path("default"))
        self.assertEqual(saved[0], "essay")
        self.assertTrue(saved[1].startswith("first second"), saved)

    def test_a_whole_answer_into_a_closed_pipe_is_saved(self):
        self.server.add_replies(Reply("the whole answer"))
        stdout = ClosedPipe("whole")
        code, out, err = self.main(["chat", "--no-stream", "q"], io.StringIO(""), stdout=stdout)
        self.assertEqual(code, 1, err)
        self.assertEqual(self.contents(self.store.session_path("default")), ["q", "the whole answer"])


class EncodingTest(HostileTestCase):
    def bytes_stdin(self, data):
        return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")  # strict, like en_US.UTF-8

    def test_non_utf8_stdin_is_sent_with_replacements_and_a_note(self):
        code, out, err = self.main(["chat", "--no-save"], self.bytes_stdin(b"diff: " + GBK_TEXT + b" end\n"))
        self.assertEqual(code, EXIT_OK, err)
        sent = self.chat_requests()[-1].json["messages"][-1]["content"]
        self.assertTrue(sent.startswith("diff: "), sent)
        self.assertTrue(sent.endswith(" end\n"), sent)
        self.assertIn("\ufffd", sent)
        self.assertEqual(err.count("\n"), 1, err)
        self.assertIn("not UTF-8", err)
        self.assertIn("at byte 6", err)
        self.assertIn("iconv -f GBK -t UTF-8", err)

    def test_utf8_stdin_with_a_bom_is_read_as_it_is(self):
        code, out, err = self.main(["chat", "--no-save"], self.bytes_stdin("\ufeff你好 \ufffd ok".encode("utf-8")))
        self.assertEqual((code, err), (EXIT_OK, ""))
        self.assertEqual(self.chat_requests()[-1].json["messages"][-1]["content"], "你好 \ufffd ok")

    def test_non_utf8_bytes_in_text_arguments_and_prompt_lines_do_not_crash(self):
        undecodable = os.fsdecode(b"caf\xe9")  # what Python makes of Latin-1 bytes in argv
        code, out, err = self.run_cli("chat", "--no-save", "--system", undecodable, undecodable)
        self.assertEqual(code, EXIT_OK, err)
        sent = self.chat_requests()[-1].json["messages"]
        self.assertEqual([m["content"] for m in sent], ["caf\ufffd", "caf\ufffd"])
        self.assertIn("not UTF-8", err)
        code, out, err = self.run_cli("chat", "-i", "--no-save", stdin="line " + undecodable + "\n")
        self.assertEqual(code, EXIT_OK, err)
        self.assertEqual(self.chat_requests()[-1].json["messages"][-1]["content"], "line caf\ufffd")

    def test_an_answer_the_terminal_cannot_show_does_not_crash(self):
        self.server.add_replies(Reply("答案 is 42"))
        raw = io.BytesIO()
        stdout = io.TextIOWrapper(raw, encoding="ascii")  # LANG=C / PYTHONIOENCODING=ascii
        code, _, err = self.main(["chat", "--no-save", "q"], io.StringIO(""), stdout=stdout)
        stdout.flush()
        self.assertEqual(code, EXIT_OK, err)
        self.assertEqual(raw.getvalue(), b"?? is 42\n")

    @over_sockets
    @unittest.skipUnless(POSIX, "bytes in argv")
    def test_as_a_subprocess_with_an_ascii_terminal(self):
        self.server.add_replies(Reply("答案 is 42"), Reply("second"))
        env = _subprocess_env(self.home, self.server.base_url, PYTHONIOENCODING="ascii", LC_ALL="C", LANG="C")
        result = subprocess.run([sys.executable, "-m", "openai2", "chat", "--no-save"], input=b"q " + GBK_TEXT,
                                env=env, capture_output=True, timeout=30)
        self.assertEqual(result.returncode, EXIT_OK, result.stderr)
        self.assertEqual(result.stdout, b"?? is 42\n")
        self.assertIn(b"iconv", result.stderr)
        self.assertTrue(self.chat_requests()[-1].json["messages"][-1]["content"].startswith("q \ufffd"))
        result = subprocess.run([sys.executable, "-m", "openai2", "chat", "--no-save", b"caf\xe9"], env=env,
                                stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
        self.assertEqual((result.returncode, result.stdout), (EXIT_OK, b"second\n"), result.stderr)
        self.assertEqual(self.chat_requests()[-1].json["messages"][-1]["content"], "caf\ufffd")

    def test_a_key_on_stdin_that_is_not_utf8_is_a_usage_error(self):
        code, _, err = self.main(["add_apikey"], self.bytes_stdin(b"sk-\xff\xfe-0123456789abcdef\n"))
        self.assertEqual(code, 2, err)
        self.assertIn("not UTF-8", err)
        self.assertFalse(os.path.exists(self.store.keys_path))


if __name__ == "__main__":
    unittest.main()
