"""Attachments and the editor: `chat -a FILE|DIR|-` (repeatable), `/attach`, `/detach`,
`--max-attach`; `chat -e` and `/edit` with a fake $EDITOR (a small Python script).

In-process (``main(..., transport=MemoryTransport())``); what was attached is read off the
requests the transport recorded: the fenced file text, the image parts.
"""
import base64
import os
import signal
import tempfile
import unittest
from unittest import mock

from openai2.chat import image_part
from openai2.cli import EXIT_OK, EXIT_USAGE
from openai2.testing import Reply
from tests.test_cli_roles import CliCase

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(40))


class AttachCase(CliCase):
    def write(self, relative, data):
        path = os.path.join(self.tmp, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data if isinstance(data, bytes) else data.encode("utf-8"))
        return path

    def last_user(self, index=-1):
        return [m for m in self.sent(index)["messages"] if m["role"] == "user"][-1]["content"]


class AttachOptionTest(AttachCase):
    def test_a_text_file_goes_fenced_with_its_name_after_the_question(self):
        path = self.write("notes.txt", "line one\nline two\n")
        code, out, _ = self.run_cli("chat", "-a", path, "Summarise this")
        self.assertEqual(code, EXIT_OK)
        self.assertEqual(self.last_user(), "Summarise this\n\n```%s\nline one\nline two\n```" % path)

    def test_several_files_and_an_image_become_a_text_part_and_image_parts(self):
        text = self.write("a.py", "print(1)")
        picture = self.write("cat.png", PNG)
        photo = self.write("dog.JPG", b"\xff\xd8\xff\xe0jpeg")
        self.run_cli("chat", "-a", text, "-a", picture, "--attach", photo, "What is this?")
        content = self.last_user()
        self.assertEqual(content[0], {"type": "text", "text": "What is this?\n\n```%s\nprint(1)\n```" % text})
        self.assertEqual(content[1], image_part(picture))  # what Chat.request(images=...) sends
        self.assertEqual(content[1]["image_url"]["url"], "data:image/png;base64," + base64.b64encode(PNG).decode())
        self.assertTrue(content[2]["image_url"]["url"].startswith("data:image/jpeg;base64,"))
        self.assertEqual(len(content), 3)

    def test_attachments_alone_need_no_text(self):
        picture = self.write("cat.webp", b"RIFF....WEBP")
        self.assertEqual(self.run_cli("chat", "-a", picture, "--no-save", stdin="")[0], EXIT_OK)
        self.assertEqual([p["type"] for p in self.last_user()], ["image_url"])
        self.run_cli("chat", "-a", picture, "--no-save", "?")
        self.assertEqual([p["type"] for p in self.last_user()], ["text", "image_url"])
        text = self.write("t.txt", "just this")
        self.run_cli("chat", "-a", text, "--no-save", stdin="\n")
        self.assertEqual(self.last_user(), "```%s\njust this\n```" % text)
        self.assertEqual(self.run_cli("chat", "--no-save", stdin="\n")[0], EXIT_USAGE)  # nothing at all

    def test_stdin_as_an_attachment(self):
        code, _, _ = self.run_cli("chat", "-a", "-", "Review this diff", stdin="- old\n+ new\n")
        self.assertEqual(code, EXIT_OK)
        self.assertEqual(self.last_user(), "Review this diff\n\n```stdin\n- old\n+ new\n```")
        self.run_cli("chat", "-a", "-", "--no-save", stdin="only the text\n")
        self.assertEqual(self.last_user(), "```stdin\nonly the text\n```")

    def test_a_fence_is_longer_than_any_backticks_inside(self):
        path = self.write("README.md", "```python\nx = 1\n```\n")
        self.run_cli("chat", "-a", path, "check")
        self.assertEqual(self.last_user(), "check\n\n````%s\n```python\nx = 1\n```\n````" % path)

    def test_a_binary_file_is_refused_with_a_clear_message(self):
        path = self.write("data.bin", b"\x00\x01\x02binary")
        code, out, err = self.run_cli("chat", "-a", path, "what is it")
        self.assertEqual((code, out), (EXIT_USAGE, ""))
        self.assert_one_line_error(err, "binary", "PNG, JPEG, GIF or WebP")
        code, _, err = self.run_cli("chat", "-a", "-", "x", stdin=b"\x00\x00")
        self.assertEqual(code, EXIT_USAGE)
        self.assertIn("stdin is a binary file", err)
        self.assertEqual(self.transport.requests, [])

    def test_a_file_over_the_limit_names_the_limit_and_how_to_raise_it(self):
        path = self.write("big.log", "x" * (256 * 1024 + 1))
        code, _, err = self.run_cli("chat", "-a", path, "summarise")
        self.assertEqual(code, EXIT_USAGE)
        self.assert_one_line_error(err, "over the 256 KiB limit", "--max-attach")
        self.assertEqual(self.transport.requests, [])
        self.transport.replies.append(Reply("short"))  # the demo model would echo it all, piece by piece
        self.assertEqual(self.run_cli("chat", "--max-attach", "1M", "-a", path, "summarise")[0], EXIT_OK)
        self.assertIn("x" * 1000, self.last_user())
        code, _, err = self.run_cli("chat", "--max-attach", "10", "-a", "-", "q", stdin="eleven chars")
        self.assertEqual(code, EXIT_USAGE)
        self.assertIn("over the 10 bytes limit", err)
        code, _, err = self.run_cli("chat", "--max-attach", "lots", "-a", path, "q")
        self.assertEqual(code, EXIT_USAGE)
        self.assertIn("500k", err)

    def test_a_missing_file_or_a_fifo_is_a_usage_error(self):
        code, _, err = self.run_cli("chat", "-a", os.path.join(self.tmp, "nope.txt"), "q")
        self.assertEqual(code, EXIT_USAGE)
        self.assert_one_line_error(err, "nope.txt", "No such file")
        if hasattr(os, "mkfifo"):
            fifo = os.path.join(self.tmp, "pipe")
            os.mkfifo(fifo)
            code, _, err = self.run_cli("chat", "-a", fifo, "q")  # never opened: it would block
            self.assertEqual(code, EXIT_USAGE)
            self.assertIn("not a regular file", err)
        self.assertEqual(self.transport.requests, [])

    def test_not_utf8_text_is_sent_with_a_note(self):
        path = self.write("gbk.txt", "中文".encode("gbk"))
        code, _, err = self.run_cli("chat", "-a", path, "q")
        self.assertEqual(code, EXIT_OK)
        self.assertIn("is not UTF-8 text", err)
        self.assertIn("\ufffd", self.last_user())


class AttachFolderTest(AttachCase):
    def make_tree(self):
        self.write("proj/a.py", "A = 1\n")
        self.write("proj/sub/b.txt", "bee\n")
        self.write("proj/.env", "SECRET=1\n")
        self.write("proj/.git/config", "[core]\n")
        self.write("proj/logo.png", PNG)
        self.write("proj/data.bin", b"\x00\x01")
        self.write("proj/latin1.txt", "caf\xe9".encode("latin-1"))
        return os.path.join(self.tmp, "proj")

    def test_a_folder_attaches_its_text_files_and_lists_what_was_skipped(self):
        folder = self.make_tree()
        code, _, err = self.run_cli("chat", "-a", folder, "Explain the project")
        self.assertEqual(code, EXIT_OK, err)
        content = self.last_user()
        a, b = os.path.join(folder, "a.py"), os.path.join(folder, "sub", "b.txt")
        self.assertEqual(content, "Explain the project\n\n```%s\nA = 1\n```\n\n```%s\nbee\n```" % (a, b))
        self.assertNotIn("SECRET", content)
        self.assertIn("attached 2 files from %s" % folder, err)
        self.assertIn(a, err)
        for reason in (".env (hidden)", ".git%s (hidden)" % os.sep, "logo.png (an image", "data.bin (binary)",
                       "latin1.txt (not UTF-8 text)"):
            self.assertIn(reason, err)

    def test_a_folder_is_capped_in_total_and_says_how_to_raise_the_cap(self):
        self.write("many/1.txt", "a" * 600)
        self.write("many/2.txt", "b" * 600)
        self.write("many/3.txt", "c" * 300)
        folder = os.path.join(self.tmp, "many")
        code, _, err = self.run_cli("chat", "--max-attach", "1000", "-a", folder, "q")
        self.assertEqual(code, EXIT_OK, err)
        content = self.last_user()
        self.assertIn("a" * 600, content)
        self.assertNotIn("b" * 600, content)
        self.assertIn("c" * 300, content)  # the cap counts what fits, in order
        self.assertIn("2.txt (600 bytes: over the 1000 bytes cap)", err)
        self.assertIn("raise it with --max-attach", err)

    def test_a_folder_with_no_text_file_is_an_error(self):
        self.write("empty/.hidden", "x")
        code, _, err = self.run_cli("chat", "-a", os.path.join(self.tmp, "empty"), "q")
        self.assertEqual(code, EXIT_USAGE)
        self.assertIn("no text file to attach", err)
        self.assertEqual(self.transport.requests, [])


class AttachAtThePromptTest(AttachCase):
    def repl(self, *lines, args=()):
        return self.run_cli("chat", "-i", *args, stdin="".join(line + "\n" for line in lines))

    def test_attach_collects_for_the_next_message_only(self):
        path = self.write("f.txt", "file text")
        picture = self.write("p.gif", b"GIF89a....")
        code, out, err = self.repl("/attach", "/attach %s" % path, "/attach %s" % picture, "/attach",
                                   "First question", "Second question", "/attach")
        self.assertEqual(code, EXIT_OK, err)
        self.assertIn("Nothing attached", out)
        self.assertIn("1. %s (text, 9 bytes)" % path, out)
        self.assertIn("2. %s (image, 10 bytes)" % picture, out)
        first = self.last_user(0)
        self.assertEqual(first[0]["text"], "First question\n\n```%s\nfile text\n```" % path)
        self.assertEqual(first[1]["type"], "image_url")
        self.assertEqual(self.last_user(1), "Second question")
        self.assertEqual(out.count("Nothing attached"), 2)  # sent: nothing pending any more

    def test_attach_several_names_quoted_and_detach(self):
        one = self.write("one.txt", "1")
        spaced = self.write("with space.txt", "2")
        code, out, _ = self.repl('/attach %s "%s"' % (one, spaced), "/detach", "plain")
        self.assertEqual(code, EXIT_OK)
        self.assertIn("2 pending", out)
        self.assertIn("Dropped 2 attachments.", out)
        self.assertEqual(self.last_user(), "plain")

    def test_attachments_stay_pending_when_the_request_fails(self):
        path = self.write("f.txt", "keep me")
        self.transport.replies.append(Reply(status=400, content="bad request"))
        code, _, err = self.repl("/attach %s" % path, "first try", "second try")
        self.assertEqual(code, EXIT_OK)
        self.assertIn("stays for your next message", err)
        self.assertEqual(self.last_user(), "second try\n\n```%s\nkeep me\n```" % path)
        self.assertNotIn("first try", str(self.sent()["messages"]))

    def test_attach_errors_are_one_line_and_the_prompt_goes_on(self):
        binary = self.write("x.bin", b"\x00")
        code, _, err = self.repl("/attach %s" % binary, "/attach -", "/attach %s/none" % self.tmp, "hello")
        self.assertEqual(code, EXIT_OK)
        self.assertIn("/attach: %s is a binary file" % binary, err)
        self.assertIn("/attach - would read stdin", err)
        self.assertIn("No such file", err)
        self.assertEqual(self.last_user(), "hello")

    def test_chat_a_without_text_starts_the_prompt_with_the_file_pending(self):
        path = self.write("f.txt", "pending text")
        code, out, _ = self.repl("/attach", "go", args=("-a", path))
        self.assertEqual(code, EXIT_OK)
        self.assertIn("1 attachment goes with your first message", out)
        self.assertIn("1. %s (text" % path, out)
        self.assertEqual(self.last_user(), "go\n\n```%s\npending text\n```" % path)


class EditorTest(AttachCase):
    def setUp(self):
        super().setUp()
        patcher = mock.patch.object(tempfile, "tempdir", os.path.join(self.tmp, "scratch"))
        os.makedirs(os.path.join(self.tmp, "scratch"))
        patcher.start()
        self.addCleanup(patcher.stop)

    def scratch(self):
        return os.listdir(os.path.join(self.tmp, "scratch"))

    def test_chat_e_sends_what_was_saved_from_a_private_temporary_file(self):
        self.use_editor("An edited\nlong question\n\n")
        code, out, err = self.run_cli("chat", "-e")
        self.assertEqual(code, EXIT_OK, err)
        self.assertEqual(self.last_user(), "An edited\nlong question")
        record = self.editor_record()
        self.assertEqual(record["mode"], 0o600)
        self.assertEqual(record["folder_mode"], 0o700)
        self.assertEqual(record["before"], "")
        self.assertFalse(os.path.exists(record["path"]))
        self.assertEqual(self.scratch(), [])
        self.assertTrue(out.startswith("(demo) You said: An edited"), out)

    def test_text_is_the_first_draft_and_attachments_go_along(self):
        path = self.write("f.txt", "attached")
        self.use_editor(" and more", mode="append")
        self.run_cli("chat", "-e", "-a", path, "A draft")
        self.assertEqual(self.editor_record()["before"], "A draft")
        self.assertEqual(self.last_user(), "A draft and more\n\n```%s\nattached\n```" % path)

    def test_visual_wins_and_the_command_is_split_like_a_shell(self):
        self.use_editor("from visual", variable="VISUAL", extra=" --wait 'two words'")
        os.environ["EDITOR"] = "/nonexistent/editor"
        self.run_cli("chat", "-e")
        self.assertEqual(self.editor_record()["argv"], ["--wait", "two words"])
        self.assertEqual(self.last_user(), "from visual")

    def test_an_empty_or_blank_file_cancels_with_a_note(self):
        for text in ("", "  \n\t\n"):
            self.use_editor(text)
            self.run_cli("chat", "--session", "s1", "old question")
            code, out, err = self.run_cli("newchat", "--session", "s1", "-e")
            self.assertEqual((code, out), (EXIT_OK, ""))
            self.assertIn("nothing sent: the text was left empty", err)
            # cancelled before anything changed: newchat archived nothing
            self.assertEqual(self.store.read_session("s1")["messages"][0]["content"], "old question")
        self.assertEqual(len(self.transport.requests), 2)
        self.assertEqual(self.scratch(), [])

    def test_a_failing_editor_sends_nothing(self):
        self.use_editor("never", mode="fail")
        code, out, err = self.run_cli("chat", "-e")
        self.assertEqual((code, out), (EXIT_OK, ""))
        self.assertIn("the editor exited with status 3: nothing sent", err)
        self.assertEqual(self.transport.requests, [])
        self.assertEqual(self.scratch(), [])

    def test_no_editor_or_one_that_cannot_start_is_a_usage_error_and_leaves_nothing(self):
        code, _, err = self.run_cli("chat", "-e")
        self.assertEqual(code, EXIT_USAGE)
        self.assert_one_line_error(err, "set $VISUAL or $EDITOR")
        os.environ["EDITOR"] = os.path.join(self.tmp, "no-such-editor")
        self.addCleanup(os.environ.pop, "EDITOR", None)
        code, _, err = self.run_cli("chat", "-e")
        self.assertEqual(code, EXIT_USAGE)
        self.assert_one_line_error(err, "cannot start the editor", "$EDITOR")
        self.assertEqual(self.scratch(), [])
        self.assertEqual(self.transport.requests, [])

    @unittest.skipIf(not hasattr(signal, "SIGINT") or os.name == "nt", "POSIX signals")
    def test_ctrl_c_in_the_editor_belongs_to_the_editor(self):
        # the editor's terminal sends SIGINT to the whole foreground group, openai2 included
        self.use_editor("typed after a Ctrl-C", mode="interrupt")
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        self.addCleanup(signal.signal, signal.SIGINT, previous)
        code, _, err = self.run_cli("chat", "-e")
        self.assertEqual(code, EXIT_OK, err)
        self.assertEqual(self.last_user(), "typed after a Ctrl-C")
        self.assertIs(signal.getsignal(signal.SIGINT), signal.default_int_handler)  # put back
        self.assertEqual(self.scratch(), [])

    def test_slash_edit_at_the_prompt(self):
        self.use_editor("written in the editor")
        code, out, err = self.run_cli("chat", "-i", stdin="/edit\n/edit draft\n")
        self.assertEqual(code, EXIT_OK, err)
        self.assertEqual(self.last_user(0), "written in the editor")
        self.assertEqual(self.editor_record()["before"], "draft")
        self.assertIn("(sending the edited text: written in the editor)", out)
        self.use_editor("")
        code, _, err = self.run_cli("chat", "-i", stdin="/edit\n")
        self.assertIn("nothing sent", err)
        self.assertEqual(len(self.transport.requests), 2)
        self.assertEqual(self.scratch(), [])


if __name__ == "__main__":
    unittest.main()
