"""store: the config folder rule, the key file, sessions (locks, corrupt files, archives)."""
import json
import os
import shutil
import stat
import threading
import unittest

from openai2 import Chat
from openai2.store import SessionConflictError, SessionLockedError, Store, StoreError, check_session_name, config_home
from tests.support.homes import DEEP, SYMLINKS, TempDirCase

POSIX = os.name == "posix"


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


class ConfigHomeTest(unittest.TestCase):
    def test_openai2_home_wins(self):
        env = {"OPENAI2_HOME": "/tmp/x-o2", "XDG_CONFIG_HOME": "/cfg", "APPDATA": "C:\\A"}
        self.assertEqual(config_home(env, windows=False), os.path.abspath("/tmp/x-o2"))
        self.assertEqual(config_home(env, windows=True), os.path.abspath("/tmp/x-o2"))

    def test_windows_appdata(self):
        self.assertEqual(config_home({"APPDATA": "/appdata"}, windows=True), os.path.join("/appdata", "openai2"))

    def test_xdg_then_home(self):
        self.assertEqual(config_home({"XDG_CONFIG_HOME": "/cfg"}, windows=False), os.path.join("/cfg", "openai2"))
        default = os.path.join(os.path.expanduser("~"), ".config", "openai2")
        self.assertEqual(config_home({}, windows=False), default)
        # The XDG spec says a relative XDG_CONFIG_HOME is invalid and must be ignored.
        self.assertEqual(config_home({"XDG_CONFIG_HOME": "rel/cfg"}, windows=False), default)

    def test_session_names(self):
        for good in ("default", "work-2", "a.b_c"):
            self.assertEqual(check_session_name(good), good)
        for bad in ("", ".hidden", "../x", "a/b", "a\\b", "x" * 65, "sp ace"):
            with self.assertRaises(StoreError):
                check_session_name(bad)


class StoreTestCase(TempDirCase):
    tmp_prefix = "o2store-"

    def setUp(self):
        super().setUp()
        self.home = os.path.join(self.tmp, "cfg", "openai2")
        self.now = [1700000000.0]
        self.store = Store(self.home, clock=lambda: self.now[0])


class KeysTest(StoreTestCase):
    def test_nothing_created_until_saved(self):
        self.assertEqual(self.store.load_keys(), [])
        self.assertIsNone(self.store.read_session("default"))
        self.assertEqual(self.store.list_sessions(), [])
        self.assertEqual(self.store.clear_keys(), [])
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "cfg")))

    @unittest.skipUnless(POSIX, "POSIX permissions")
    def test_modes_even_with_umask_000(self):
        for umask in (0o000, 0o022):
            with self.subTest(umask=oct(umask)):
                shutil.rmtree(os.path.join(self.tmp, "cfg"), ignore_errors=True)
                old = os.umask(umask)
                try:
                    self.store.add_keys(["sk-aaaaaaaaaaaaaaaa1111"])
                    self.store.write_session("s", [{"role": "user", "content": "hi"}], [])
                    self.store.archive_session("s")
                    self.store.lock_session("s").release()
                finally:
                    os.umask(old)
                self.assertEqual(mode(self.home), 0o700)
                self.assertEqual(mode(self.store.keys_path), 0o600)
                self.assertEqual(mode(self.store.sessions_dir), 0o700)
                self.assertEqual(mode(self.store.archive_dir), 0o700)
                for name in os.listdir(self.store.archive_dir):
                    self.assertEqual(mode(os.path.join(self.store.archive_dir, name)), 0o600)
                self.assertEqual(mode(os.path.join(self.store.sessions_dir, "s.lock")), 0o600)

    def test_add_dedup_and_validate(self):
        added, skipped = self.store.add_keys(["  sk-one-1111111111111111\n", "sk-two-2222222222222222"])
        self.assertEqual(added, ["sk-one-1111111111111111", "sk-two-2222222222222222"])
        self.assertEqual(skipped, [])
        added, skipped = self.store.add_keys(["sk-two-2222222222222222"])
        self.assertEqual((added, skipped), ([], ["sk-two-2222222222222222"]))
        self.assertEqual(self.store.load_keys(), ["sk-one-1111111111111111", "sk-two-2222222222222222"])
        for bad in ("", "   ", "sk-a b"):
            with self.assertRaises(ValueError):
                self.store.add_keys([bad])
        with open(self.store.keys_path) as handle:
            self.assertEqual(json.load(handle)["format"], "openai2.keys")

    def test_corrupt_key_file_moved_aside_not_overwritten(self):
        self.store.ensure_home()
        with open(self.store.keys_path, "w") as handle:
            handle.write("{not json sk-secret-abcdefghijklmnop")
        with self.assertRaises(StoreError) as caught:
            self.store.load_keys()
        message = str(caught.exception)
        self.assertIn(self.store.keys_path, message)
        self.assertNotIn("sk-secret-abcdefghijklmnop", message)
        aside = [n for n in os.listdir(self.home) if n.startswith("keys.json.corrupt-")]
        self.assertEqual(len(aside), 1)
        with open(os.path.join(self.home, aside[0])) as handle:
            self.assertIn("sk-secret", handle.read())
        # clear removes the moved-aside copy too (it holds keys)
        self.store.add_keys(["sk-new-0000000000000000"])
        removed = self.store.clear_keys()
        self.assertEqual(len(removed), 2)
        self.assertEqual(self.store.load_keys(), [])

    def hold_keys_lock(self):
        from openai2.files import FileLock

        self.store.ensure_home()
        held = FileLock(os.path.join(self.home, "keys.lock"))
        self.assertTrue(held.acquire())
        self.addCleanup(held.release)
        return held

    def test_busy_key_file_is_waited_for_through_the_injected_sleep(self):
        held = self.hold_keys_lock()
        events = []

        def sleep(seconds):  # the other process lets go while we pause
            events.append(("pause", seconds))
            if len(events) == 2:
                held.release()

        store = Store(self.home, sleep=sleep)
        self.assertEqual(store.add_keys(["sk-busy-0000000000000000"]), (["sk-busy-0000000000000000"], []))
        self.assertEqual(events, [("pause", 0.02), ("pause", 0.02)])
        self.assertEqual(store.load_keys(), ["sk-busy-0000000000000000"])

    def test_key_file_busy_for_longer_than_lock_wait_is_a_store_error(self):
        self.hold_keys_lock()
        pauses = []
        store = Store(self.home, lock_wait=0.1, sleep=pauses.append)
        with self.assertRaises(StoreError) as caught:
            store.add_keys(["sk-busy-0000000000000000"])
        self.assertIn("keys.lock", str(caught.exception))
        self.assertEqual(pauses, [0.02] * 5)  # pauses adding up to lock_wait, none of them real
        self.assertEqual(store.load_keys(), [])


class SessionTest(StoreTestCase):
    MESSAGES = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "自然数50的后面是几?"},
        {"role": "assistant", "content": "51"},
    ]

    def test_round_trip_in_chat_dump_format(self):
        path = self.store.write_session("work", self.MESSAGES, [0])
        self.assertEqual(path, self.store.session_path("work"))
        data = self.store.read_session("work")
        self.assertEqual(data["messages"], self.MESSAGES)
        self.assertEqual(data["pinned"], [0])
        chat = Chat("", base_url="http://127.0.0.1:9/v1", model="m")
        chat.load(path)  # Chat.load reads what the store writes
        self.assertEqual(chat.fetch_messages(), self.MESSAGES)
        self.assertEqual(chat.pinned_indexes(), [0])
        # and the store reads what Chat.dump writes
        chat.dump(os.path.join(self.store.sessions_dir, "dumped.json"))
        self.assertEqual(self.store.read_session("dumped")["messages"], self.MESSAGES)

    def test_corrupt_session_moved_aside_with_clear_error(self):
        self.store.write_session("s", self.MESSAGES, [])
        path = self.store.session_path("s")
        for garbage in (b'{"format": "openai2.chat", "version": 1, "messages": [', b"\xff\xfe\x00", b'{"format": "other"}'):
            with open(path, "wb") as handle:
                handle.write(garbage)
            with self.assertRaises(StoreError) as caught:
                self.store.read_session("s")
            self.assertIn(path, str(caught.exception))
            self.assertFalse(os.path.exists(path))
        aside = sorted(n for n in os.listdir(self.store.sessions_dir) if ".corrupt-" in n)
        self.assertEqual(len(aside), 3)  # same timestamp: distinct names, none overwritten
        contents = set()
        for name in aside:
            with open(os.path.join(self.store.sessions_dir, name), "rb") as handle:
                contents.add(handle.read())
        self.assertEqual(len(contents), 3)
        self.assertIsNone(self.store.read_session("s"))

    def test_archive_never_overwrites(self):
        self.assertIsNone(self.store.archive_session("s"))
        first = self.store.write_session("s", self.MESSAGES[:1], [])
        a1 = self.store.archive_session("s")
        self.store.write_session("s", self.MESSAGES, [])
        a2 = self.store.archive_session("s")
        self.assertNotEqual(a1, a2)
        self.assertFalse(os.path.exists(first))
        with open(a1) as h1, open(a2) as h2:
            self.assertEqual(len(json.load(h1)["messages"]), 1)
            self.assertEqual(len(json.load(h2)["messages"]), 3)
        self.assertTrue(os.path.basename(a1).startswith("s-"))
        self.assertEqual(os.path.dirname(a1), self.store.archive_dir)

    def test_lock_refuses_second_holder_and_names_it(self):
        self.store.write_session("other", self.MESSAGES, [])  # the folder exists: locks are taken at once
        lock = self.store.lock_session("s")
        with self.assertRaises(SessionLockedError) as caught:
            self.store.lock_session("s")
        message = str(caught.exception)
        self.assertIn(lock.path, message)
        self.assertIn(str(os.getpid()), message)
        lock.release()
        self.store.lock_session("s").release()

    def test_delete_and_list(self):
        self.store.write_session("a", self.MESSAGES, [])
        self.store.write_session("b", self.MESSAGES[:1], [])
        with open(os.path.join(self.store.sessions_dir, "c.json"), "w") as handle:
            handle.write("[")
        infos = self.store.list_sessions()
        self.assertEqual([i.name for i in infos], ["a", "b", "c"])
        self.assertEqual([i.messages for i in infos], [3, 1, None])
        self.assertIsNotNone(infos[2].error)
        held = self.store.lock_session("a")
        with self.assertRaises(SessionLockedError):
            self.store.delete_session("a")
        held.release()
        self.assertEqual(self.store.delete_session("a"), self.store.session_path("a"))
        self.assertFalse(os.path.exists(self.store.session_path("a")))
        with self.assertRaises(StoreError):
            self.store.delete_session("a")



class ReviewRegressionTest(StoreTestCase):
    @unittest.skipUnless(POSIX, "POSIX permissions")
    def test_every_created_parent_is_private_with_umask_000(self):
        old = os.umask(0)
        try:
            self.store.save_keys(["sk-store-0123456789abcdef"])
        finally:
            os.umask(old)
        self.assertEqual(mode(os.path.join(self.tmp, "cfg")), 0o700)
        self.assertEqual(mode(self.home), 0o700)

    @unittest.skipUnless(POSIX, "POSIX permissions")
    def test_an_existing_folder_keeps_its_mode(self):
        os.makedirs(self.home)
        os.chmod(self.home, 0o750)
        self.store.write_session("s", [{"role": "user", "content": "x"}], [])
        self.assertEqual(mode(self.home), 0o750)
        self.assertEqual(mode(self.store.sessions_dir), 0o700)

    def test_parallel_add_keys_lose_nothing(self):
        keys = ["sk-parallel-%02d-0123456789" % i for i in range(20)]
        barrier = threading.Barrier(len(keys))
        errors = []

        def add(key):
            try:
                barrier.wait(5)
                Store(self.home).add_keys([key])
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=add, args=(k,)) for k in keys]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(errors, [])
        self.assertEqual(sorted(self.store.load_keys()), keys)

    def test_lock_taken_before_the_folder_exists_creates_nothing(self):
        first = self.store.lock_session("s")
        other = Store(self.home)
        second = other.lock_session("s")
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "cfg")))
        self.store.write_session("s", [{"role": "user", "content": "x"}], [])  # takes the lock now
        self.assertTrue(first.held)
        with self.assertRaises(SessionLockedError):
            other.write_session("s", [], [])  # the process that saves second is refused
        second.release()
        first.release()
        first.release()
        self.store.lock_session("s").release()

    def test_newer_version_refused_and_left_in_place(self):
        self.store.write_session("s", [], [])
        path = self.store.session_path("s")
        with open(path, "w") as handle:
            json.dump({"format": "openai2.chat", "version": 99, "messages": []}, handle)
        with self.assertRaises(StoreError) as caught:
            self.store.read_session("s")
        self.assertIn("newer openai2", str(caught.exception))
        self.assertEqual(os.listdir(self.store.sessions_dir), ["s.json"])

    def test_corrupt_session_not_moved_when_asked(self):
        self.store.write_session("s", [], [])
        with open(self.store.session_path("s"), "w") as handle:
            handle.write("[")
        with self.assertRaises(StoreError) as caught:
            self.store.read_session("s", move_aside=False)
        self.assertIn("corrupted", str(caught.exception))
        self.assertEqual(os.listdir(self.store.sessions_dir), ["s.json"])


A = [{"role": "user", "content": "from A"}, {"role": "assistant", "content": "answer A"}]
B = [{"role": "user", "content": "from B"}, {"role": "assistant", "content": "answer B"}]


class ConflictTest(StoreTestCase):
    """A save never replaces a session file that changed on disk since this Store read it."""

    def conflict_files(self):
        return sorted(n for n in os.listdir(self.store.sessions_dir) if ".conflict-" in n)

    def messages_in(self, path):
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)["messages"]

    def test_a_file_that_appeared_since_none_was_found_is_not_replaced(self):
        self.assertIsNone(self.store.read_session("s"))  # this process: no conversation yet
        other = Store(self.home)
        self.assertIsNone(other.read_session("s"))
        other.write_session("s", B, [])  # the other process saves and exits
        with self.assertRaises(SessionConflictError) as caught:
            self.store.write_session("s", A, [])
        path = self.store.session_path("s")
        self.assertEqual(self.messages_in(path), B)  # the other process's conversation survives
        kept = caught.exception.kept_path
        self.assertEqual(self.conflict_files(), [os.path.basename(kept)])
        self.assertEqual(self.messages_in(kept), A)  # and this one's answer is not lost
        message = str(caught.exception)
        self.assertIn(path, message)
        self.assertIn(kept, message)
        self.assertIn("--session " + os.path.basename(kept)[:-5], message)
        self.assertEqual(self.store.read_session(os.path.basename(kept)[:-5])["messages"], A)  # resumable
        if POSIX:
            self.assertEqual(mode(kept), 0o600)

    def test_conflict_files_of_long_session_names_are_valid_distinct_session_names(self):
        kept = []
        for name in ("a" * 64, "a" * 63 + "b", "x" * 40):
            for _ in range(2):  # the same second twice: "-2" is added and must still fit
                self.assertIsNone(self.store.read_session(name))
                Store(self.home).write_session(name, B, [])
                with self.assertRaises(SessionConflictError) as caught:
                    self.store.write_session(name, A, [])
                stem = os.path.basename(caught.exception.kept_path)[:-5]
                self.assertEqual(check_session_name(stem), stem)  # --session accepts it
                self.assertIn("--session " + stem, str(caught.exception))
                self.assertEqual(self.store.read_session(stem)["messages"], A)
                kept.append(stem)
                os.unlink(self.store.session_path(name))
        self.assertEqual(len(set(kept)), 6)
        self.assertNotEqual(kept[0][:35], kept[2][:35])  # names alike at the start still differ

    def test_a_file_changed_since_it_was_read_is_not_replaced(self):
        self.store.write_session("s", A[:1], [])
        self.assertEqual(self.store.read_session("s")["messages"], A[:1])
        other = Store(self.home)
        other.read_session("s")
        other.write_session("s", B, [])
        with self.assertRaises(SessionConflictError):
            self.store.write_session("s", A, [])
        self.assertEqual(self.messages_in(self.store.session_path("s")), B)
        self.assertEqual(len(self.conflict_files()), 1)

    def test_own_saves_follow_each_other_and_an_unchanged_rewrite_is_fine(self):
        self.assertIsNone(self.store.read_session("s"))
        self.store.write_session("s", A[:1], [])
        self.store.write_session("s", A, [])  # what this Store wrote last is what it expects
        other = Store(self.home)
        other.read_session("s")
        other.write_session("s", A, [])  # same bytes: nothing of anyone's is lost
        self.store.write_session("s", A + B, [])
        self.assertEqual(self.messages_in(self.store.session_path("s")), A + B)
        self.assertEqual(self.conflict_files(), [])

    def test_a_file_deleted_meanwhile_is_written_again(self):
        self.store.write_session("s", A, [])
        os.unlink(self.store.session_path("s"))  # nothing of anyone's can be lost by saving
        self.store.write_session("s", A + B, [])
        self.assertEqual(self.messages_in(self.store.session_path("s")), A + B)

    def test_archive_and_a_moved_aside_corrupt_file_mean_no_file_is_expected(self):
        self.store.write_session("s", A, [])
        self.store.archive_session("s")
        self.store.write_session("s", B, [])  # a new conversation after newchat
        path = self.store.session_path("s")
        with open(path, "w") as handle:
            handle.write("[")
        with self.assertRaises(StoreError):
            self.store.read_session("s")  # moved aside
        self.store.write_session("s", A, [])
        self.assertEqual(self.messages_in(path), A)
        self.assertEqual(self.conflict_files(), [])

    def test_a_deferred_lock_held_by_another_process_at_the_first_save_keeps_the_answer(self):
        mine = self.store.lock_session("s")  # no sessions folder yet: deferred
        self.assertIsNone(self.store.read_session("s"))
        other = Store(self.home)
        other.read_session("s")
        held = other.lock_session("s")
        other.write_session("s", B, [])  # the other process saves first and keeps its lock
        try:
            with self.assertRaises(SessionLockedError) as caught:
                self.store.write_session("s", A, [])
        finally:
            held.release()
            mine.release()
        kept = self.conflict_files()
        self.assertEqual(len(kept), 1)
        self.assertIn(kept[0], str(caught.exception))
        self.assertEqual(self.messages_in(os.path.join(self.store.sessions_dir, kept[0])), A)
        self.assertEqual(self.messages_in(self.store.session_path("s")), B)


@unittest.skipUnless(hasattr(os, "mkfifo"), "FIFOs")
class SpecialDataFilesTest(StoreTestCase):
    """A FIFO (or a link to one) at a data file is refused at once, naming it, never read (a read
    would wait forever) and never moved aside (it is not a corrupt file)."""

    def fifo_at(self, path, link=False):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if link:
            target = os.path.join(self.tmp, "pipe")
            os.mkfifo(target)
            os.symlink(target, path)
        else:
            os.mkfifo(path)
        return path

    def assert_refused(self, call, path, errors=StoreError):
        with self.assertRaises(errors) as caught:
            call()
        self.assertIn(path, str(caught.exception))
        self.assertIn("not a regular file", str(caught.exception))
        self.assertTrue(os.path.lexists(path))  # left where it is

    def test_a_fifo_at_a_session_file_is_refused_naming_it(self):
        path = self.fifo_at(self.store.session_path("s"))
        self.assert_refused(lambda: self.store.read_session("s"), path)
        self.assert_refused(lambda: self.store.write_session("s", [], []), path, (StoreError, OSError))
        self.assertTrue(stat.S_ISFIFO(os.lstat(path).st_mode))
        [info] = self.store.list_sessions()
        self.assertIn("not a regular file", info.error)

    def test_a_link_to_a_fifo_at_the_key_file_is_refused_naming_it(self):
        path = self.fifo_at(self.store.keys_path, link=True)
        self.assert_refused(self.store.load_keys, path)
        self.assertEqual(os.listdir(self.home), ["keys.json"])  # nothing moved aside


class HostileFilesTest(StoreTestCase):
    def make_victim(self):
        victim = os.path.join(self.tmp, "victim.txt")
        with open(victim, "w") as handle:
            handle.write("precious")
        return victim

    def victim_text(self, victim):
        with open(victim) as handle:
            return handle.read()

    @unittest.skipUnless(SYMLINKS, "symbolic links")
    def test_a_symlinked_session_lock_is_refused_naming_it(self):
        victim = self.make_victim()
        self.store.write_session("other", [], [])  # the folder exists: locks are taken at once
        lock_path = os.path.join(self.store.sessions_dir, "s.lock")
        os.symlink(victim, lock_path)
        with self.assertRaises(StoreError) as caught:
            self.store.lock_session("s")
        self.assertIn(lock_path, str(caught.exception))
        self.assertIn("symbolic link", str(caught.exception))
        self.assertEqual(self.victim_text(victim), "precious")

    @unittest.skipUnless(SYMLINKS, "symbolic links")
    def test_a_symlinked_deferred_lock_is_refused_at_the_first_save(self):
        victim = self.make_victim()
        lock = self.store.lock_session("s")  # deferred: no folder yet
        os.makedirs(self.store.sessions_dir)
        lock_path = os.path.join(self.store.sessions_dir, "s.lock")
        os.symlink(victim, lock_path)
        with self.assertRaises(StoreError) as caught:
            self.store.write_session("s", A, [])
        lock.release()
        self.assertIn(lock_path, str(caught.exception))
        self.assertEqual(self.victim_text(victim), "precious")
        self.assertFalse(os.path.exists(self.store.session_path("s")))
        kept = [n for n in os.listdir(self.store.sessions_dir) if n.startswith("s.conflict-")]
        self.assertEqual(len(kept), 1)  # the conversation is not lost
        self.assertIn(kept[0], str(caught.exception))

    @unittest.skipUnless(SYMLINKS, "symbolic links")
    def test_a_symlinked_keys_lock_is_refused_naming_it(self):
        victim = self.make_victim()
        self.store.ensure_home()
        lock_path = os.path.join(self.home, "keys.lock")
        os.symlink(victim, lock_path)
        for action in (lambda: self.store.add_keys(["sk-link-0123456789abcdef"]), self.store.clear_keys):
            with self.assertRaises(StoreError) as caught:
                action()
            self.assertIn(lock_path, str(caught.exception))
        self.assertEqual(self.victim_text(victim), "precious")
        self.assertFalse(os.path.exists(self.store.keys_path))

    @unittest.skipUnless(SYMLINKS, "symbolic links")
    def test_a_symlink_at_the_key_or_session_file_is_replaced_not_followed(self):
        victim = self.make_victim()
        self.store._ensure_sessions()
        os.symlink(victim, self.store.keys_path)
        os.symlink(victim, self.store.session_path("s"))
        self.store.save_keys(["sk-link-0123456789abcdef"])
        self.store.write_session("s", A, [])
        for path in (self.store.keys_path, self.store.session_path("s")):
            self.assertFalse(os.path.islink(path))
            if POSIX:
                self.assertEqual(mode(path), 0o600)
        self.assertEqual(self.store.load_keys(), ["sk-link-0123456789abcdef"])
        self.assertEqual(self.store.read_session("s")["messages"], A)
        self.assertEqual(self.victim_text(victim), "precious")

    def test_deeply_nested_files_are_corrupt_files(self):
        self.store._ensure_sessions()
        for path in (self.store.keys_path, self.store.session_path("s")):
            with open(path, "w") as handle:
                handle.write(DEEP)
        infos = self.store.list_sessions()
        self.assertEqual([(i.name, i.messages) for i in infos], [("s", None)])
        self.assertIn("nested too deeply", infos[0].error)
        for read in (self.store.load_keys, lambda: self.store.read_session("s")):
            with self.assertRaises(StoreError) as caught:
                read()
            self.assertIn("nested too deeply", str(caught.exception))
        self.assertEqual(sorted(n.split(".corrupt-")[0] for n in os.listdir(self.home) if ".corrupt-" in n), ["keys.json"])
        self.assertEqual([n.split(".corrupt-")[0] for n in os.listdir(self.store.sessions_dir) if ".corrupt-" in n], ["s.json"])
        self.assertEqual(self.store.load_keys(), [])  # a fresh start
        self.assertIsNone(self.store.read_session("s"))


if __name__ == "__main__":
    unittest.main()
