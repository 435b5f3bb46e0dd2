"""Files: the package's one way to put bytes on disk and read them back.

Atomic writes (temporary file in the same folder, flush, fsync, rename; only regular files are
ever replaced, a link at the path is replaced and never followed), JSON file reading with errors
that name the file, private folders (0700 from the moment they exist), and an advisory lock file
that is never opened through a link.  POSIX is exercised by the test suite; the Windows branches
(``msvcrt`` locking, no ``fchmod``) follow the documented APIs but have no test machine here.
"""

from __future__ import annotations

import os
import sys

from .common import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import IO, Any, Callable

_FILES_WINDOWS = os.name == "nt"


def atomic_write(
    path: str,
    data: bytes,
    *,
    private: bool = False,
    before_replace: Callable[[str], None] | None = None,
) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half.

    The bytes go to a temporary file in the same folder, which is flushed, fsynced and renamed
    over ``path``; the folder is fsynced too where the OS allows.  A failure at any step removes
    the temporary file and leaves the previous ``path`` untouched.  A symbolic link at ``path``
    is replaced by the new file, never followed (its target is not touched).  Only regular files
    are ever replaced: a device, a FIFO, a folder, or a link to one of them (``/dev/null``,
    ``/dev/stdout``, ``/dev/tty``) is refused, never replaced by a file.

    :param private: create the file 0600 (owner only) from the start, whatever the umask
    :param before_replace: called with the temporary path just before the rename (tests use it
        to inject a failure there; the store compares the file on disk there)
    :raises OSError: the error names ``path`` (never the temporary file) and says what to do
        ("the folder ... does not exist"), or ``path`` is not a regular file (a device, a FIFO,
        a folder, or a link to one)
    """
    _files_refuse_non_regular(path)
    folder = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    mode = 0o600 if private else 0o666  # the umask still applies to 0o666
    if not private and os.path.exists(path):
        try:
            mode = os.stat(path).st_mode & 0o777
        except OSError:
            pass
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    tmp = ""
    fd = -1
    for attempt in range(100):
        tmp = os.path.join(folder, ".%s.%d.%d.tmp" % (base, os.getpid(), attempt))
        try:
            fd = os.open(tmp, flags, mode)
            break
        except FileExistsError:
            continue
        except OSError as exc:
            raise _files_write_error(exc, path, folder) from None
    if fd < 0:
        raise FileExistsError(0, "cannot write %s: could not create a temporary file beside it" % path)
    try:
        try:
            if private and hasattr(os, "fchmod"):
                os.fchmod(fd, 0o600)
            elif not private and os.path.exists(path) and hasattr(os, "fchmod"):
                os.fchmod(fd, mode)
            with os.fdopen(fd, "wb") as handle:
                fd = -1
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise _files_write_error(exc, path, folder) from None
        if before_replace is not None:
            before_replace(tmp)  # its own errors go through as they are
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise _files_write_error(exc, path, folder) from None
        tmp = ""
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    if not _FILES_WINDOWS:
        try:
            dir_fd = os.open(folder, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)


def _files_refuse_non_regular(path: str) -> None:
    """Raise when ``path`` exists and is not a regular file, or is a link to something that
    exists and is not one: renaming over it would destroy a device (``/dev/null``), a FIFO,
    or the link ``/dev/stdout``.  A link to a regular file, or a dangling link, is fine."""
    import errno
    import stat

    try:
        st = os.lstat(path)
    except OSError:
        return  # nothing there (or nothing we can see): the write itself reports the rest
    if stat.S_ISREG(st.st_mode):
        return
    kind = _files_file_kind(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        try:
            st = os.stat(path)
        except OSError:
            return  # a dangling link: replaced by the new file
        if stat.S_ISREG(st.st_mode):
            return
        kind = "a symbolic link to %s" % _files_file_kind(st.st_mode)
    code = errno.EISDIR if stat.S_ISDIR(st.st_mode) else errno.EINVAL
    raise OSError(
        code,
        "cannot write %s: it is not a regular file (it is %s); openai2 writes only regular files "
        "and never replaces a device, a FIFO or a folder (nor a link to one): give a file path" % (path, kind),
    )


def _files_file_kind(mode: int) -> str:
    import stat

    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "a special file"


def _files_write_error(exc: OSError, path: str, folder: str) -> OSError:
    """``exc`` retold about ``path`` (the user's file), not the temporary file, with the fix."""
    import errno

    code = exc.errno
    if code == errno.ENOENT and not os.path.isdir(folder):
        why = "the folder %s does not exist; create it first or choose another path" % folder
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "%s: cannot create files in the folder %s (check its permissions, or choose another path)" % (
            exc.strerror or "permission denied",
            folder,
        )
    elif code == errno.EISDIR or os.path.isdir(path):
        why = "it is a folder; give a file name"
    elif code == errno.ENOSPC:
        why = "no space left on the device; free some space and try again (the previous file is untouched)"
    else:
        why = "%s (the previous file, if any, is untouched)" % (exc.strerror or exc)
    # no filename attribute: str() would repeat the path after the message that already names it
    return type(exc)(code or 0, "cannot write %s: %s" % (path, why))


def read_json_file(path: str, what: str) -> Any:
    """Read a UTF-8 JSON file (a BOM is fine) for a ``load``, with errors that name the file.

    :param what: what the file should be, for messages ("conversation archive")
    :raises FileNotFoundError: no such file
    :raises ValueError: the file is not UTF-8 text, not valid JSON, or nested too deeply to read
        (nothing was changed)
    """
    import json

    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise FileNotFoundError("no %s at %s" % (what, path)) from None
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ValueError("%s is not a UTF-8 text file (%s); is it a %s?" % (path, exc.reason, what)) from None
    except ValueError as exc:
        raise ValueError("%s is not valid JSON (%s); nothing was changed" % (path, exc)) from None
    except RecursionError:
        raise ValueError(
            "%s is not a usable %s (JSON nested too deeply to read); nothing was changed" % (path, what)
        ) from None


def make_private_dir(path: str) -> None:
    """Create ``path`` and any missing parents, each with mode 0700 whatever the umask.

    Only folders created here are given 0700: a folder that already exists (an ``OPENAI2_HOME``
    the user made, ``~/.config``) keeps the permissions its owner chose.
    """
    path = os.path.abspath(path)
    missing = []
    current = path
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            if not os.path.isdir(folder):
                raise
            continue  # made by someone else meanwhile: theirs, leave its mode alone
        if not _FILES_WINDOWS:
            os.chmod(folder, 0o700)  # os.mkdir's mode is filtered by the umask; never widened


def _files_open_no_link(path: str, flags: int) -> int:
    """``os.open(path, flags, 0o600)`` that never follows a symbolic link at ``path``
    (``O_NOFOLLOW`` where the OS has it, else ``lstat`` before and ``fstat`` after) and refuses
    anything but a plain file with one name (a hard link to another file would be written too).

    :raises OSError: ``path`` is a link or not a plain file (the message names it and the fix)
    """
    import stat

    nofollow = getattr(os, "O_NOFOLLOW", 0)
    before = None
    if not nofollow:
        try:
            before = os.lstat(path)
        except FileNotFoundError:
            before = None
        if before is not None and stat.S_ISLNK(before.st_mode):
            raise _files_link_error(path, "a symbolic link")
    try:
        fd = os.open(path, flags | nofollow | getattr(os, "O_BINARY", 0), 0o600)
    except OSError:
        if os.path.islink(path):  # ELOOP on Linux; EMLINK (FreeBSD), EFTYPE (NetBSD)
            raise _files_link_error(path, "a symbolic link") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _files_link_error(path, "not a plain file")
        if st.st_nlink > 1:
            raise _files_link_error(path, "a hard link (%d names)" % st.st_nlink)
        if not nofollow:
            now = os.lstat(path)  # a link swapped in between lstat and open
            if stat.S_ISLNK(now.st_mode) or (now.st_ino, now.st_dev) != (st.st_ino, st.st_dev):
                raise _files_link_error(path, "a symbolic link")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _files_link_error(path: str, what: str) -> OSError:
    import errno

    return OSError(
        errno.ELOOP,
        "%s is %s: openai2 never follows or writes through one for a lock file (it would overwrite "
        "the file it points to); remove it and try again" % (path, what),
    )


class FileLock:
    """An advisory, non-blocking lock held on ``path`` (created 0600 if missing).

    ``flock`` on POSIX, ``msvcrt.locking`` on Windows; the lock dies with the process, so a
    killed program never leaves a stale lock behind.  A symbolic link (or any non-plain file)
    at ``path`` is refused, never followed.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._handle: IO[bytes] | None = None

    def acquire(self) -> bool:
        """Take the lock; False if another process (or another FileLock) holds it.

        :raises OSError: the lock file is a symbolic link, a hard link or not a plain file (it is
            never followed nor written: a planted link would make the process id overwrite the
            file it points to), or it cannot be created (the message names it)
        """
        if self._handle is not None:
            return True
        fd = _files_open_no_link(self.path, os.O_RDWR | os.O_CREAT)
        handle = os.fdopen(fd, "r+b")
        try:
            if _FILES_WINDOWS:  # pragma: no cover - no Windows test machine
                import msvcrt

                msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
            else:
                import fcntl

                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._handle = handle
        return True

    def write_note(self, text: str) -> None:
        """Write ``text`` (e.g. the process id) into the held lock file, for :meth:`read_note`."""
        handle = self._handle
        if handle is None:
            return
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(text.encode("utf-8"))
            handle.flush()
            handle.seek(0)
        except OSError:  # a note is a courtesy; the lock itself is what matters
            pass

    @staticmethod
    def read_note(path: str) -> str:
        """What the holder wrote with :meth:`write_note` ("" if unreadable: Windows locks bytes)."""
        try:
            fd = _files_open_no_link(path, os.O_RDONLY)
        except OSError:
            return ""
        try:
            with os.fdopen(fd, "rb") as handle:
                return handle.read(200).decode("utf-8", "replace").strip()
        except OSError:
            return ""

    def release(self) -> None:
        """Release the lock (safe to call when not held)."""
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()

    def __enter__(self) -> FileLock:
        if not self.acquire():
            raise OSError("%s is locked by another process" % self.path)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_windows() -> bool:
    """True on Windows (kept as a function so callers need not import ``os`` for it)."""
    return _FILES_WINDOWS and sys.platform == "win32"
