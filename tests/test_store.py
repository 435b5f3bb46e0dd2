"""store: the config folder rule, the key file, sessions (locks, corrupt files, archives)."""
import json
import os
import shutil
import stat
import tempfile
import threading
import unittest

from openai2 import Chat
from openai2.store import SessionLockedError, Store, StoreError, check_session_name, config_home

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


class StoreTestCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="o2store-")
        self.home = os.path.join(self.tmp, "cfg", "openai2")
        self.now = [1700000000.0]
        self.store = Store(self.home, clock=lambda: self.now[0])

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


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


if __name__ == "__main__":
    unittest.main()


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
