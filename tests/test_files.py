"""files: atomic_write's errors name the user's path (never the temporary file) and say what to
do; read_json_file treats JSON nested too deeply as a bad file; lock files are never followed
through a symbolic link (nor written through a hard link)."""
import os
import stat
import unittest

from openai2 import Chat
from openai2.files import FileLock, atomic_write, read_json_file
from tests.support.homes import DEEP, SYMLINKS, TempDirCase

POSIX = os.name == "posix"


class FilesTestCase(TempDirCase):
    tmp_prefix = "o2files-"

    def write(self, path, data):
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(data)

    def read(self, path):
        with open(path, encoding="utf-8") as handle:
            return handle.read()


class AtomicWriteErrorsTest(FilesTestCase):
    def test_missing_folder_is_named_with_the_target_not_the_temporary_file(self):
        target = self.path("no-such-folder", "out.json")
        with self.assertRaises(OSError) as caught:
            atomic_write(target, b"x")
        message = str(caught.exception)
        self.assertIn(target, message)
        self.assertIn("the folder %s does not exist" % self.path("no-such-folder"), message)
        self.assertNotIn(".tmp", message)
        self.assertIsInstance(caught.exception, FileNotFoundError)  # still the same kind of error

    @unittest.skipUnless(POSIX and hasattr(os, "geteuid") and os.geteuid() != 0, "POSIX permissions, not root")
    def test_permission_denied_names_the_target_and_the_folder(self):
        folder = self.path("ro")
        os.mkdir(folder)
        os.chmod(folder, 0o500)
        self.addCleanup(os.chmod, folder, 0o700)
        target = os.path.join(folder, "out.json")
        with self.assertRaises(PermissionError) as caught:
            atomic_write(target, b"x")
        message = str(caught.exception)
        self.assertIn(target, message)
        self.assertIn("permissions", message)
        self.assertNotIn(".tmp", message)

    def test_a_folder_in_the_way_is_named_and_nothing_is_left_behind(self):
        target = self.path("taken")
        os.mkdir(target)
        with self.assertRaises(OSError) as caught:
            atomic_write(target, b"x")
        self.assertIn(target, str(caught.exception))
        self.assertNotIn(".tmp", str(caught.exception))
        self.assertEqual(os.listdir(self.tmp), ["taken"])  # the temporary file was removed

    def test_chat_dump_errors_name_the_target(self):
        target = self.path("missing", "chat.json")
        with self.assertRaises(OSError) as caught:
            Chat("", base_url="http://127.0.0.1:9/v1", model="m").dump(target)
        self.assertIn(target, str(caught.exception))
        self.assertNotIn(".tmp", str(caught.exception))

    @unittest.skipUnless(SYMLINKS, "symbolic links")
    def test_a_symlink_at_the_target_is_replaced_not_followed(self):
        victim = self.path("victim.txt")
        self.write(victim, "precious")
        link = self.path("out.json")
        os.symlink(victim, link)
        atomic_write(link, b"new", private=True)
        self.assertFalse(os.path.islink(link))
        self.assertEqual(self.read(link), "new")
        self.assertEqual(self.read(victim), "precious")


class AtomicWriteRegularFilesOnlyTest(FilesTestCase):
    @unittest.skipUnless(hasattr(os, "mkfifo"), "FIFOs")
    def test_a_fifo_at_the_target_is_refused_not_replaced(self):
        fifo = self.path("pipe")
        os.mkfifo(fifo)
        with self.assertRaises(OSError) as caught:
            atomic_write(fifo, b"x")
        message = str(caught.exception)
        self.assertIn(fifo, message)
        self.assertIn("not a regular file", message)
        self.assertIn("a FIFO", message)
        self.assertTrue(stat.S_ISFIFO(os.lstat(fifo).st_mode))  # still the FIFO
        self.assertEqual(os.listdir(self.tmp), ["pipe"])  # no temporary file left

    @unittest.skipUnless(hasattr(os, "mkfifo") and SYMLINKS, "FIFOs and symbolic links")
    def test_a_symlink_to_a_fifo_is_refused_and_neither_is_replaced(self):
        # the shape of /dev/stdout (a link to /proc/self/fd/1): the link must survive
        fifo = self.path("pipe")
        os.mkfifo(fifo)
        link = self.path("out")
        os.symlink(fifo, link)
        with self.assertRaises(OSError) as caught:
            atomic_write(link, b"x", private=True)
        self.assertIn(link, str(caught.exception))
        self.assertIn("a symbolic link to a FIFO", str(caught.exception))
        self.assertTrue(os.path.islink(link))
        self.assertTrue(stat.S_ISFIFO(os.lstat(fifo).st_mode))

    @unittest.skipUnless(hasattr(os, "mkfifo"), "FIFOs")
    def test_chat_dump_to_a_fifo_is_refused(self):
        fifo = self.path("pipe")
        os.mkfifo(fifo)
        with self.assertRaises(OSError) as caught:
            Chat("", base_url="http://127.0.0.1:9/v1", model="m").dump(fifo)
        self.assertIn(fifo, str(caught.exception))
        self.assertTrue(stat.S_ISFIFO(os.lstat(fifo).st_mode))

    @unittest.skipUnless(SYMLINKS, "symbolic links")
    def test_a_dangling_symlink_at_the_target_is_replaced_by_the_file(self):
        link = self.path("out.json")
        os.symlink(self.path("nowhere"), link)
        atomic_write(link, b"new")
        self.assertFalse(os.path.islink(link))
        self.assertEqual(self.read(link), "new")
        self.assertFalse(os.path.exists(self.path("nowhere")))


class ReadJsonFileTest(FilesTestCase):
    def test_deeply_nested_json_is_a_bad_file_not_a_recursion_error(self):
        path = self.path("deep.json")
        self.write(path, DEEP)
        with self.assertRaises(ValueError) as caught:
            read_json_file(path, "conversation archive")
        self.assertIn(path, str(caught.exception))
        self.assertIn("nested too deeply", str(caught.exception))
        chat = Chat("", base_url="http://127.0.0.1:9/v1", model="m")
        with self.assertRaises(ValueError):
            chat.load(path)
        self.assertEqual(chat.fetch_messages(), [])
        self.assertEqual(self.read(path), DEEP)  # nothing was changed


@unittest.skipUnless(SYMLINKS, "symbolic links")
class FileLockLinksTest(FilesTestCase):
    def test_a_symlinked_lock_file_is_refused_and_its_target_untouched(self):
        victim = self.path("victim.txt")
        self.write(victim, "precious")
        lock_path = self.path("s.lock")
        os.symlink(victim, lock_path)
        lock = FileLock(lock_path)
        with self.assertRaises(OSError) as caught:
            lock.acquire()
        self.assertIn(lock_path, str(caught.exception))
        self.assertIn("symbolic link", str(caught.exception))
        self.assertEqual(self.read(victim), "precious")
        self.assertEqual(FileLock.read_note(lock_path), "")  # the note is never read through it

    def test_a_dangling_symlink_creates_nothing(self):
        victim = self.path("would-be-created")
        lock_path = self.path("s.lock")
        os.symlink(victim, lock_path)
        with self.assertRaises(OSError):
            FileLock(lock_path).acquire()
        self.assertFalse(os.path.exists(victim))

    @unittest.skipUnless(POSIX, "hard links")
    def test_a_hard_linked_lock_file_is_refused(self):
        victim = self.path("victim.txt")
        self.write(victim, "precious")
        lock_path = self.path("s.lock")
        os.link(victim, lock_path)
        with self.assertRaises(OSError) as caught:
            FileLock(lock_path).acquire()
        self.assertIn("hard link", str(caught.exception))
        self.assertEqual(self.read(victim), "precious")

    def test_a_plain_lock_file_still_works(self):
        lock_path = self.path("s.lock")
        lock = FileLock(lock_path)
        self.assertTrue(lock.acquire())
        lock.write_note("1234")
        self.assertFalse(FileLock(lock_path).acquire())
        self.assertEqual(FileLock.read_note(lock_path), "1234")
        lock.release()
        if POSIX:
            self.assertEqual(stat.S_IMODE(os.stat(lock_path).st_mode), 0o600)


if __name__ == "__main__":
    unittest.main()
