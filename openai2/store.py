"""CLI storage: where the config folder is, the key file, and named conversations (sessions).

This is the only code that decides paths.  Layout (everything under one folder, so moving it with
``OPENAI2_HOME`` moves all of it)::

    <home>/                      0700   $OPENAI2_HOME, else %APPDATA%\\openai2 (Windows),
                                        else $XDG_CONFIG_HOME/openai2 or ~/.config/openai2
    <home>/keys.json             0600   {"format": "openai2.keys", "version": 1, "keys": [...]}
    <home>/keys.lock             0600   held (flock) while the key file is read and rewritten
    <home>/input_history         0600   the interactive prompt's line history (no key lines)
    <home>/logs.db               0600   the exchange log (SQLite, WAL: logs.db-wal, logs.db-shm)
    <home>/logs.off                     present while ``openai2 logs off`` holds
    <home>/roles.json            0600   {"format": "openai2.roles", "version": 1, "roles": {NAME: {...}}}
    <home>/roles.lock            0600   held (flock) while the roles file is read and rewritten
    <home>/tokens.json           0600   {"format": "openai2.tokens", "version": 1, "servers": {...}}  what was
                                        learned of each server's token counts (window, calibration)
    <home>/tokens.lock           0600   held (flock) while the token file is read, merged and rewritten
    <home>/sessions/NAME.json    0600   one conversation, in Chat.dump's archive format
    <home>/sessions/NAME.lock    0600   held (flock) while a process uses the session
    <home>/sessions/NAME.conflict-<time>.json  a save refused because NAME.json changed meanwhile
    <home>/sessions/archive/     0700   conversations put aside by ``newchat`` / ``/new``

Nothing is created on import or by merely building a :class:`Store`: folders and files appear
only when something is saved (a session lock taken before its folder exists is taken at the first
save).  Folders created here are 0700 (each missing component); existing ones keep their mode.
Every write is atomic (temporary file, fsync, rename).  A file
that cannot be read back is never overwritten: it is moved aside to
``<file>.corrupt-<timestamp>`` and a :class:`StoreError` names both paths.  A file written by a
newer openai2 (a higher ``version``) is refused and left where it is.

A session save never replaces a file that changed on disk since this :class:`Store` read it (or
that appeared where it found none), whatever the lock timing: the content read or written last
is remembered (a SHA-256) and compared, under the lock, just before the rename.  A refused save is
written beside, to ``NAME.conflict-<timestamp>.json``, and :class:`SessionConflictError` names
both files.  Lock files are never followed through a symbolic link.
"""

from __future__ import annotations

import os
import time

from .common import TYPE_CHECKING
from .files import FileLock, atomic_write, is_windows, make_private_dir
from .history import ARCHIVE_FORMAT, ARCHIVE_VERSION, check_side_summary, from_archive

if TYPE_CHECKING:
    from typing import Any, Mapping

KEYS_FORMAT = "openai2.keys"
KEYS_VERSION = 1
ROLES_FORMAT = "openai2.roles"
ROLES_VERSION = 1
#: what a role may hold besides its system prompt, and the type each must have
ROLE_PARAMETERS = ("model", "temperature", "max_tokens")
TOKENS_FORMAT = "openai2.tokens"
TOKENS_VERSION = 1
#: what was learned of a model is forgotten this long (seconds) after it last changed: a server
#: may have grown its window since
TOKENS_MAX_AGE = 30 * 86400
#: at most this many models are remembered (the least recently updated are dropped first)
TOKENS_MAX_MODELS = 256
DEFAULT_SESSION = "default"
_STORE_TOO_DEEP = "JSON nested too deeply to read"
_STORE_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


class StoreError(Exception):
    """A storage problem the user must know about (a corrupt file, a session in use, a bad name)."""


class SessionLockedError(StoreError):
    """Another process is using the session (its lock file is held)."""


class SessionConflictError(StoreError):
    """The session file changed on disk since this process read it (or appeared where there
    was none): the save was refused and the conversation kept in ``kept_path`` instead."""

    def __init__(self, message: str, kept_path: str | None = None) -> None:
        super().__init__(message)
        #: where this process's conversation was written instead (None if that failed too)
        self.kept_path = kept_path


def config_home(environ: Mapping[str, str] | None = None, *, windows: bool | None = None) -> str:
    """The config folder: ``$OPENAI2_HOME``, else ``%APPDATA%\\openai2`` on Windows, else
    ``$XDG_CONFIG_HOME/openai2``, else ``~/.config/openai2``.  Nothing is created.

    :param environ: the environment to read (default ``os.environ``)
    :param windows: force the Windows rule on or off (default: the running OS)
    """
    env = os.environ if environ is None else environ
    explicit = env.get("OPENAI2_HOME")
    if explicit:
        return os.path.abspath(os.path.expanduser(explicit))
    if is_windows() if windows is None else windows:
        appdata = env.get("APPDATA")
        if appdata:
            return os.path.join(appdata, "openai2")
        return os.path.join(os.path.expanduser("~"), "AppData", "Roaming", "openai2")
    xdg = env.get("XDG_CONFIG_HOME")
    if xdg and os.path.isabs(xdg):  # the XDG spec: a relative value is ignored
        return os.path.join(xdg, "openai2")
    return os.path.join(os.path.expanduser("~"), ".config", "openai2")


def check_session_name(name: str) -> str:
    """Return ``name`` if it is a usable session name (letters, digits, ``_ . -``; 1-64 chars,
    not starting with a dot), else raise :class:`StoreError` saying what is allowed."""
    if (
        not isinstance(name, str)
        or not 0 < len(name) <= 64
        or name.startswith(".")
        or not set(name) <= _STORE_NAME_CHARS
    ):
        raise StoreError(
            "invalid session name %r: use 1-64 letters, digits, '_', '.' or '-' (not starting with '.')" % (name,)
        )
    return name


def check_role_name(name: str) -> str:
    """Return ``name`` if it is a usable role name (the rules of session names), else raise
    :class:`StoreError` saying what is allowed."""
    try:
        return check_session_name(name)
    except StoreError:
        raise StoreError(
            "invalid role name %r: use 1-64 letters, digits, '_', '.' or '-' (not starting with '.')" % (name,)
        ) from None


def check_role(role: object, where: str = "the role") -> dict[str, Any]:
    """A role as stored: ``{"system": str, "model": str, "temperature": number, "max_tokens":
    int}`` (only ``system`` required; nothing else allowed); raises ValueError naming the field."""
    import math

    if not isinstance(role, dict):
        raise ValueError('%s must be an object with a "system" text' % where)
    unknown = sorted(set(role) - {"system"} - set(ROLE_PARAMETERS))
    if unknown:
        raise ValueError(
            "%s has an unknown field %r (a role holds system, %s)" % (where, unknown[0], ", ".join(ROLE_PARAMETERS))
        )
    system = role.get("system")
    if not isinstance(system, str) or not system.strip():
        raise ValueError('%s needs a non-empty "system" text' % where)
    model = role.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise ValueError('%s: "model" must be a non-empty text' % where)
    temperature = role.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or math.isnan(temperature)
        or math.isinf(temperature)
    ):
        raise ValueError('%s: "temperature" must be a finite number' % where)
    tokens = role.get("max_tokens")
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1):
        raise ValueError('%s: "max_tokens" must be a whole number, 1 or more' % where)
    return {k: v for k, v in role.items() if v is not None}


def _store_stamp(clock: float | None = None) -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() if clock is None else clock))


def _store_free_path(base: str, suffix: str = "") -> str:
    """``base + suffix``, or ``base-2 + suffix`` ... when taken (never overwrite anything)."""
    path = base + suffix
    n = 2
    while os.path.lexists(path):
        path = "%s-%d%s" % (base, n, suffix)
        n += 1
    return path


_STORE_CONFLICT_STEM = 35  # + ".conflict-YYYYmmdd-HHMMSS" (25) + "-NNN" (4) = 64, a valid name


def _store_conflict_stem(name: str) -> str:
    """``name``, or for a long one its start plus a short digest of the whole (so two long
    names that begin alike still differ), so that ``STEM.conflict-<time>[-N]`` stays a valid
    session name that ``--session`` accepts."""
    if len(name) <= _STORE_CONFLICT_STEM:
        return name
    digest = _store_digest(name.encode("utf-8"))[:6]
    return "%s-%s" % (name[: _STORE_CONFLICT_STEM - 7], digest)


def _store_acquire(lock: FileLock) -> bool:
    """``lock.acquire()``, its OSErrors (a symbolic link planted at the lock file, no
    permission) told as a :class:`StoreError` naming the file."""
    try:
        return lock.acquire()
    except OSError as exc:
        text = exc.strerror or str(exc)
        raise StoreError(text if lock.path in text else "cannot use the lock file %s: %s" % (lock.path, text)) from None


def _store_read_bytes(path: str) -> bytes:
    """The bytes of the data file ``path``, refusing anything but a regular file.

    A FIFO would block the read forever and ``/dev/zero`` would never end, so the file is
    opened without blocking and checked with ``fstat`` before a byte is read.

    :raises FileNotFoundError: no such file
    :raises OSError: it cannot be read, or it is not a regular file (``strerror`` says so)
    """
    import errno
    import stat

    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    if not hasattr(os, "O_NONBLOCK") and os.path.exists(path) and not os.path.isfile(path):
        fd = -1  # no O_NONBLOCK (Windows): checked before opening instead
    else:
        fd = os.open(path, flags)
    try:
        if fd < 0 or not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(
                errno.EINVAL,
                "it is not a regular file (a FIFO, a device or a folder); openai2 reads only regular "
                "files: remove it, or put the real file there",
            )
        if hasattr(os, "O_NONBLOCK") and hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        with os.fdopen(fd, "rb") as handle:
            fd = -1
            return handle.read()
    finally:
        if fd >= 0:
            os.close(fd)


def _store_digest(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


_STORE_TOK_MODEL_CHARS = 200
_STORE_TOK_WINDOW_MAX = 100_000_000
#: Calibration's ratio range (tokens._TOK_RATIO_RANGE; store may not import tokens, so a test holds
#: the two equal)
_STORE_TOK_RATIO_RANGE = (0.2, 5.0)
_STORE_TOK_FUTURE = 86400  # an "updated" time further ahead than this would never expire: ignored
_STORE_TOK_DEFAULT_PORTS = {"http": 80, "https": 443}
_STORE_TOK_HEX = frozenset("0123456789abcdef")


def _store_tok_server(base_url: str) -> tuple[str, str]:
    """``(key, host)`` of a server: the key is the first 16 hex digits of the SHA-256 of the base
    URL normalised (scheme and host lower-cased, default port, trailing slash, user name,
    password, query and fragment dropped); ``host`` is the bare hostname, for display ("" if
    none).  The URL itself is never stored: it may hold a password, a key or a secret path."""
    from urllib.parse import urlsplit

    if not isinstance(base_url, str):
        raise TypeError("base_url must be a str, not %s" % type(base_url).__name__)
    text = base_url.strip()
    host = ""
    try:
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        host = parts.hostname or ""  # lower-cased, without user name, password or port
        try:
            port = parts.port
            hostport = "[%s]" % host if ":" in host else host
            if port is not None and port != _STORE_TOK_DEFAULT_PORTS.get(scheme):
                hostport += ":%d" % port
        except ValueError:  # a port that is not a number: the text after the user part
            hostport = parts.netloc.rpartition("@")[2].lower()
        normalised = "%s://%s%s" % (scheme, hostport, parts.path.rstrip("/"))
    except ValueError:  # not even a URL ("http://[::1"): the text, hashed, is all there is
        normalised = text
    if len(host) > 253 or not host.isprintable():
        host = ""
    key = _store_digest(normalised.encode("utf-8", "surrogatepass"))[:16]
    return key, host


def _store_tok_model_ok(model: object) -> bool:
    """Whether ``model`` is a name that is stored: a str of 1..200 characters, valid UTF-8."""
    if not isinstance(model, str) or not 0 < len(model) <= _STORE_TOK_MODEL_CHARS:
        return False
    try:
        model.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: it could not be written back
        return False
    return True


def _store_tok_int(value: object, low: int, high: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return None
    return value


def _store_tok_window(value: object) -> int | None:
    """A window as stored (an int in 1..100,000,000), else None (unknown)."""
    return _store_tok_int(value, 1, _STORE_TOK_WINDOW_MAX)


def _store_tok_calibration(ratio: object, samples: object) -> dict[str, Any] | None:
    """``{"ratio", "samples"}`` as stored (the ratio finite, within Calibration's range, rounded
    to 4 decimals; the samples a non-negative int), else None (unknown)."""
    import math

    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
        return None
    if not math.isfinite(ratio) or not _STORE_TOK_RATIO_RANGE[0] <= ratio <= _STORE_TOK_RATIO_RANGE[1]:
        return None
    count = _store_tok_int(samples, 0, 1 << 62)
    if count is None:
        return None
    return {"ratio": round(float(ratio), 4), "samples": count}


def _store_tok_entries(data: object, now: float) -> tuple[dict[tuple[str, str], dict[str, Any]], dict[str, str]]:
    """The live entries of a token file's data, ``{(server key, model): {"window", "calibration",
    "updated"}}``, and each server's host.  Bad entries (a wrong type, a value out of range, a
    missing or far-future ``updated``) and those older than :data:`TOKENS_MAX_AGE` are left out.

    :raises ValueError: the file as a whole has the wrong shape
    """
    if not isinstance(data, dict) or data.get("format", TOKENS_FORMAT) != TOKENS_FORMAT:
        raise ValueError('expected {"format": "%s", "servers": {...}}' % TOKENS_FORMAT)
    servers = data.get("servers", {})
    if not isinstance(servers, dict):
        raise ValueError('expected {"servers": {KEY: {"host": ..., "models": {...}}}}')
    entries: dict[tuple[str, str], dict[str, Any]] = {}
    hosts: dict[str, str] = {}
    for key, server in servers.items():
        if len(key) != 16 or not set(key) <= _STORE_TOK_HEX or not isinstance(server, dict):
            continue
        models = server.get("models")
        if not isinstance(models, dict):
            continue
        for model, entry in models.items():
            if not _store_tok_model_ok(model) or not isinstance(entry, dict):
                continue
            updated = entry.get("updated")
            if (
                isinstance(updated, bool)
                or not isinstance(updated, (int, float))
                or not now - TOKENS_MAX_AGE <= updated <= now + _STORE_TOK_FUTURE  # NaN fails too
            ):
                continue
            window = _store_tok_window(entry.get("window"))
            calibration = _store_tok_calibration(entry.get("ratio"), entry.get("samples"))
            if window is None and calibration is None:
                continue
            entries[(key, model)] = {"window": window, "calibration": calibration, "updated": int(updated)}
            host = server.get("host")
            hosts[key] = host if isinstance(host, str) and len(host) <= 253 and host.isprintable() else ""
    return entries, hosts


def _store_tok_render(
    entries: dict[tuple[str, str], dict[str, Any]], hosts: dict[str, str], keep: tuple[str, str]
) -> bytes:
    """The token file's bytes: the :data:`TOKENS_MAX_MODELS` most recently updated entries
    (``keep``, the one just saved, always among them), sorted."""
    import json

    newest = sorted((k for k in entries if k != keep), key=lambda k: (-entries[k]["updated"], k))
    chosen = sorted(([keep] if keep in entries else []) + newest[: TOKENS_MAX_MODELS - 1])
    servers: dict[str, Any] = {}
    for key, model in chosen:
        entry = entries[(key, model)]
        stored: dict[str, Any] = {}
        if entry["window"] is not None:
            stored["window"] = entry["window"]
        if entry["calibration"] is not None:
            stored.update(entry["calibration"])
        stored["updated"] = entry["updated"]
        server = servers.setdefault(key, {"host": hosts.get(key, ""), "models": {}})
        server["models"][model] = stored
    data = {"format": TOKENS_FORMAT, "version": TOKENS_VERSION, "servers": servers}
    return (json.dumps(data, ensure_ascii=False, indent=1) + "\n").encode("utf-8")


class SessionInfo:
    """One saved conversation as listed by :meth:`Store.list_sessions`."""

    __slots__ = ("name", "path", "modified", "size", "messages", "error")

    def __init__(
        self, name: str, path: str, modified: float, size: int, messages: int | None, error: str | None
    ) -> None:
        self.name = name
        self.path = path
        self.modified = modified
        self.size = size
        #: number of messages, or None when the file could not be read
        self.messages = messages
        #: why the file could not be read, or None
        self.error = error

    def __repr__(self) -> str:
        return "SessionInfo(%r, messages=%r)" % (self.name, self.messages)


class SessionLock:
    """A session lock; ``release()`` (or the end of the process) frees it.

    When the sessions folder did not exist yet, the lock is *deferred*: nothing is created until
    the session is first saved, and :meth:`Store.write_session` takes it then (``held`` False
    until that moment).
    """

    def __init__(self, lock: FileLock, *, held: bool = True, on_release: Any = None) -> None:
        self._lock = lock
        self.path = lock.path
        self.held = held
        self.released = False
        self._on_release = on_release

    def release(self) -> None:
        """Free the lock (safe to call twice)."""
        self.released = True
        self.held = False
        self._lock.release()
        callback, self._on_release = self._on_release, None
        if callback is not None:
            callback()

    def __enter__(self) -> SessionLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Store:
    """Paths and files of the command line, rooted at one config folder.

    :param home: the config folder (default: :func:`config_home`)
    :param clock: ``time.time``-like, for the timestamps of archived and corrupt files and the
        ``updated`` time of what is learned of token counts (tests)
    :param lock_wait: how long a busy key file is waited for (in pauses of 0.02 s)
    :param sleep: ``time.sleep``-like, the pause between tries for a busy key file (tests)
    """

    def __init__(
        self, home: str | None = None, *, clock: Any = None, lock_wait: float = 5.0, sleep: Any = None
    ) -> None:
        self.home = os.path.abspath(home) if home else config_home()
        self._clock = clock
        self._lock_wait = lock_wait
        self._sleep = sleep
        self._deferred: dict[str, SessionLock] = {}
        #: per session: SHA-256 of the file as this Store last read or wrote it (None: no file)
        self._seen: dict[str, str | None] = {}

    def __repr__(self) -> str:
        return "Store(%r)" % self.home

    # -- paths ----------------------------------------------------------------------------------
    @property
    def keys_path(self) -> str:
        """``<home>/keys.json``."""
        return os.path.join(self.home, "keys.json")

    @property
    def history_path(self) -> str:
        """``<home>/input_history``: the interactive prompt's line history."""
        return os.path.join(self.home, "input_history")

    @property
    def logs_path(self) -> str:
        """``<home>/logs.db``: the exchange log (see :mod:`logbook`)."""
        return os.path.join(self.home, "logs.db")

    @property
    def logs_off_path(self) -> str:
        """``<home>/logs.off``: present after ``openai2 logs off`` (logging stays off until ``logs on``)."""
        return os.path.join(self.home, "logs.off")

    @property
    def roles_path(self) -> str:
        """``<home>/roles.json``: the user's roles (saved system prompts with parameters)."""
        return os.path.join(self.home, "roles.json")

    @property
    def tokens_path(self) -> str:
        """``<home>/tokens.json``: what was learned of each server's token counts."""
        return os.path.join(self.home, "tokens.json")

    @property
    def sessions_dir(self) -> str:
        """``<home>/sessions``."""
        return os.path.join(self.home, "sessions")

    @property
    def archive_dir(self) -> str:
        """``<home>/sessions/archive``."""
        return os.path.join(self.sessions_dir, "archive")

    def session_path(self, name: str) -> str:
        """``<home>/sessions/<name>.json`` (the name is checked)."""
        return os.path.join(self.sessions_dir, check_session_name(name) + ".json")

    def ensure_home(self) -> str:
        """Create the config folder (0700) if needed and return it."""
        make_private_dir(self.home)
        return self.home

    def _ensure_sessions(self) -> None:
        self.ensure_home()
        make_private_dir(self.sessions_dir)

    def _stamp(self) -> str:
        return _store_stamp(self._clock() if self._clock is not None else None)

    def _newer_error(self, path: str, data: object, version: int) -> StoreError | None:
        """A :class:`StoreError` when ``data`` says it was written by a newer openai2, else None."""
        found = data.get("version") if isinstance(data, dict) else None
        if isinstance(found, int) and not isinstance(found, bool) and found > version:
            return StoreError(
                "%s was written by a newer openai2 (format version %d; this one reads up to %d); "
                "it was left untouched: upgrade openai2 to use it" % (path, found, version)
            )
        return None

    def _move_aside(self, path: str, why: str) -> StoreError:
        """Rename an unreadable file to ``<path>.corrupt-<stamp>``; return the error to raise."""
        aside = _store_free_path(path + ".corrupt-" + self._stamp())
        try:
            os.rename(path, aside)
        except OSError as exc:
            return StoreError(
                "%s is corrupted (%s) and could not be moved aside (%s); fix or remove it"
                % (path, why, exc.strerror or exc)
            )
        return StoreError(
            "%s is corrupted (%s); it was kept as %s and a fresh one will be started" % (path, why, aside)
        )

    # -- keys -----------------------------------------------------------------------------------
    def load_keys(self) -> list[str]:
        """The stored keys, in the order they were added ([] when there is no key file).

        :raises StoreError: the key file is unreadable (it is moved aside, never overwritten)
        """
        import json

        try:
            raw = _store_read_bytes(self.keys_path)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError("cannot read %s: %s" % (self.keys_path, exc.strerror or exc)) from None
        try:
            data = json.loads(raw.decode("utf-8"))
            newer = self._newer_error(self.keys_path, data, KEYS_VERSION)
            if newer is not None:
                raise newer
            keys = data.get("keys") if isinstance(data, dict) else None
            if not isinstance(keys, list) or not all(isinstance(k, str) and k.strip() for k in keys):
                raise ValueError('expected {"keys": ["sk-...", ...]}')
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            # The message of a JSON error quotes no content, so no key can leak through it.
            raise self._move_aside(
                self.keys_path, type(exc).__name__ if isinstance(exc, UnicodeDecodeError) else str(exc)
            ) from None
        except RecursionError:
            raise self._move_aside(self.keys_path, _STORE_TOO_DEEP) from None
        return [k.strip() for k in keys]

    def save_keys(self, keys: list[str]) -> None:
        """Write the key file (0600, atomically), creating the folder (0700) if needed."""
        import json

        self.ensure_home()
        data = {"format": KEYS_FORMAT, "version": KEYS_VERSION, "keys": list(keys)}
        atomic_write(self.keys_path, (json.dumps(data, indent=2) + "\n").encode("utf-8"), private=True)

    def add_keys(self, new_keys: list[str]) -> tuple[list[str], list[str]]:
        """Append keys to the key file (duplicates are skipped).

        :returns: ``(added, already_stored)``
        :raises ValueError: a key is empty or contains whitespace
        """
        cleaned = []
        for key in new_keys:
            key = key.strip()
            if not key:
                raise ValueError("the key is empty")
            if any(c.isspace() or ord(c) < 32 for c in key):
                raise ValueError("the key contains whitespace or a control character")
            cleaned.append(key)
        self.ensure_home()
        with self._keys_lock():
            stored = self.load_keys()
            added: list[str] = []
            skipped: list[str] = []
            for key in cleaned:
                if key in stored or key in added:
                    skipped.append(key)
                else:
                    added.append(key)
            if added:
                self.save_keys(stored + added)
        return added, skipped

    def _keys_lock(self) -> FileLock:
        """``<home>/keys.lock``, held (waiting up to ``lock_wait`` seconds) around a
        read-modify-write of the key file, so parallel ``add_apikey`` runs lose no key."""
        return self._wait_lock("keys.lock", "the key file")

    def _wait_lock(self, name: str, what: str) -> FileLock:
        """``<home>/<name>``, taken waiting up to ``lock_wait`` seconds, else a StoreError."""
        lock = FileLock(os.path.join(self.home, name))
        pause = self._sleep or time.sleep
        pauses = max(0, int(round(self._lock_wait / 0.02)))  # they add up to lock_wait
        while not _store_acquire(lock):
            if pauses <= 0:
                raise StoreError("%s is busy (%s is held by another process); try again" % (what, lock.path))
            pause(0.02)
            pauses -= 1
        return lock

    def clear_keys(self) -> list[str]:
        """Remove the key file and any moved-aside copies of it.

        :returns: the paths removed
        """
        removed: list[str] = []
        if not os.path.isdir(self.home):
            return removed
        base = os.path.basename(self.keys_path)
        with self._keys_lock():
            for entry in sorted(os.listdir(self.home)):
                if entry == base or entry.startswith(base + ".corrupt-"):
                    path = os.path.join(self.home, entry)
                    os.unlink(path)
                    removed.append(path)
        return removed

    # -- roles ----------------------------------------------------------------------------------
    def load_roles(self) -> dict[str, dict[str, Any]]:
        """The user's roles by name ({} when there is no roles file); built-in roles are the
        CLI's business, not stored here.

        :raises StoreError: the roles file is unreadable or holds an invalid role (it is moved
            aside, never overwritten), or it was written by a newer openai2 (left untouched)
        """
        import json

        path = self.roles_path
        try:
            raw = _store_read_bytes(path)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise StoreError("cannot read %s: %s" % (path, exc.strerror or exc)) from None
        try:
            try:
                data = json.loads(raw.decode("utf-8-sig"))
            except RecursionError:
                raise ValueError(_STORE_TOO_DEEP) from None
            newer = self._newer_error(path, data, ROLES_VERSION)
            if newer is not None:
                raise newer
            roles = data.get("roles") if isinstance(data, dict) else None
            if not isinstance(roles, dict):
                raise ValueError('expected {"roles": {"NAME": {"system": "..."}}}')
            checked: dict[str, dict[str, Any]] = {}
            for name, role in roles.items():
                try:
                    check_role_name(name)
                except StoreError as exc:
                    raise ValueError(str(exc)) from None
                checked[name] = check_role(role, "role %r" % name)
        except ValueError as exc:
            raise self._move_aside(path, "not UTF-8" if isinstance(exc, UnicodeDecodeError) else str(exc)) from None
        return checked

    def _save_roles(self, roles: Mapping[str, dict[str, Any]]) -> None:
        import json

        data = {"format": ROLES_FORMAT, "version": ROLES_VERSION, "roles": dict(sorted(roles.items()))}
        raw = (json.dumps(data, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
        atomic_write(self.roles_path, raw, private=True)

    def save_role(self, name: str, role: dict[str, Any]) -> bool:
        """Add or replace the role ``name`` (under ``roles.lock``, atomically, 0600).

        :returns: True if it replaced a role of the same name
        :raises StoreError: a bad name or an unreadable roles file; ValueError: a bad role
        """
        check_role_name(name)
        role = check_role(role)
        self.ensure_home()
        with self._wait_lock("roles.lock", "the roles file"):
            roles = self.load_roles()
            replaced = name in roles
            roles[name] = role
            self._save_roles(roles)
        return replaced

    def delete_role(self, name: str) -> bool:
        """Remove the user's role ``name``; False when there was none."""
        check_role_name(name)
        if not os.path.exists(self.roles_path):
            return False
        with self._wait_lock("roles.lock", "the roles file"):
            roles = self.load_roles()
            if name not in roles:
                return False
            del roles[name]
            self._save_roles(roles)
        return True

    # -- token counts ---------------------------------------------------------------------------
    def _now(self) -> float:
        return float(self._clock() if self._clock is not None else time.time())

    def _read_tokens(self, now: float) -> tuple[dict[tuple[str, str], dict[str, Any]], dict[str, str]] | None:
        """The token file's live entries and hosts (empty when there is no file), or None when a
        newer openai2 wrote it.

        :raises ValueError: it is corrupt (the reason; nothing was moved yet)
        :raises StoreError: it cannot be read
        """
        import json

        path = self.tokens_path
        try:
            raw = _store_read_bytes(path)
        except (FileNotFoundError, NotADirectoryError):  # no file, or no folder: nothing learned yet
            return {}, {}
        except OSError as exc:
            raise StoreError("cannot read %s: %s" % (path, exc.strerror or exc)) from None
        try:
            data = json.loads(raw.decode("utf-8-sig"))
        except UnicodeDecodeError:
            raise ValueError("not UTF-8") from None
        except RecursionError:
            raise ValueError(_STORE_TOO_DEEP) from None
        if self._newer_error(path, data, TOKENS_VERSION) is not None:
            return None
        return _store_tok_entries(data, now)

    def load_token_state(self, base_url: str, model: str) -> dict[str, Any]:
        """What was learned of ``model``'s token counts on the server at ``base_url``.

        Never creates anything.  Unknown (no file, no entry, a bad or expired entry, a model
        name over 200 characters, a file from a newer openai2) is ``None``.

        :returns: ``{"window": int | None, "calibration": {"ratio": float, "samples": int} | None}``
        :raises StoreError: the token file cannot be read, or is corrupt (it was moved aside;
            the next save starts a fresh one)
        """
        state: dict[str, Any] = {"window": None, "calibration": None}
        key, _host = _store_tok_server(base_url)
        if not _store_tok_model_ok(model):
            return state
        try:
            found = self._read_tokens(self._now())
        except ValueError as exc:
            raise self._move_aside(self.tokens_path, str(exc)) from None
        entry = found[0].get((key, model)) if found is not None else None
        if entry is not None:
            state["window"] = entry["window"]
            state["calibration"] = entry["calibration"]
        return state

    def save_token_state(
        self, base_url: str, model: str, *, window: int | None = None, calibration: dict[str, Any] | None = None
    ) -> None:
        """Remember what was learned of ``model`` on the server at ``base_url`` (under
        ``tokens.lock``: the file is read again, merged, written atomically, 0600).

        ``window`` only ever goes down (the smaller of the stored and the given one);
        ``calibration`` (``Calibration.to_dict()``) replaces the stored one.  ``None``, and a
        value the file could not hold (a window outside 1..100,000,000, a ratio outside 0.2..5),
        keep what is stored.  Nothing is written when nothing changes, when the model name is
        over 200 characters, or when a newer openai2 wrote the file (left untouched).  A corrupt
        file is moved aside and a fresh one written.  Entries not updated for 30 days are
        dropped, and only the 256 most recently updated models are kept.

        :raises StoreError: the folder or file cannot be read or written (the message says which)
        """
        key, host = _store_tok_server(base_url)
        new_window = _store_tok_window(window)
        new_calibration = (
            _store_tok_calibration(calibration.get("ratio"), calibration.get("samples"))
            if isinstance(calibration, dict)
            else None
        )
        if not _store_tok_model_ok(model) or (new_window is None and new_calibration is None):
            return
        path = self.tokens_path
        try:
            self.ensure_home()
        except OSError as exc:
            raise StoreError("cannot create the config folder %s: %s" % (self.home, exc.strerror or exc)) from None
        with self._wait_lock("tokens.lock", "the token file"):
            now = self._now()
            try:
                found = self._read_tokens(now)
            except ValueError as exc:
                error = self._move_aside(path, str(exc))
                if os.path.lexists(path):  # it could not be moved: never write over it
                    raise error from None
                found = {}, {}
            if found is None:
                return  # a newer openai2's file: a cache is not worth a conflict
            entries, hosts = found
            old = entries.get((key, model))
            merged = {
                "window": new_window,
                "calibration": new_calibration,
                "updated": int(now),
            }
            if old is not None:
                if old["window"] is not None:
                    merged["window"] = old["window"] if new_window is None else min(old["window"], new_window)
                if new_calibration is None:
                    merged["calibration"] = old["calibration"]
                if old["window"] == merged["window"] and old["calibration"] == merged["calibration"]:
                    return
            entries[(key, model)] = merged
            hosts[key] = host
            try:
                atomic_write(path, _store_tok_render(entries, hosts, (key, model)), private=True)
            except OSError as exc:
                text = exc.strerror or str(exc)
                raise StoreError(text if path in text else "cannot write %s: %s" % (path, text)) from None

    # -- sessions -------------------------------------------------------------------------------
    def lock_session(self, name: str) -> SessionLock:
        """Take the session's lock, or refuse.  When the sessions folder does not exist yet,
        nothing is created: the lock is deferred and taken by the first :meth:`write_session`.

        :raises SessionLockedError: another process holds it (the message names the lock file
            and, where it could be read, that process's id)
        """
        path = os.path.join(self.sessions_dir, check_session_name(name) + ".lock")
        if not os.path.isdir(self.sessions_dir):
            deferred = SessionLock(FileLock(path), held=False, on_release=lambda: self._deferred.pop(name, None))
            self._deferred[name] = deferred
            return deferred
        return SessionLock(self._take_session_lock(name, path))

    def _take_session_lock(self, name: str, path: str) -> FileLock:
        lock = FileLock(path)
        if not _store_acquire(lock):
            owner = FileLock.read_note(path)
            who = "process %s" % owner if owner else "another process"
            raise SessionLockedError(
                "session %r is in use by %s (lock file %s); finish that chat first, or use "
                "--session OTHER_NAME" % (name, who, path)
            )
        lock.write_note(str(os.getpid()))
        return lock

    def read_session(self, name: str, *, move_aside: bool = True) -> dict[str, Any] | None:
        """The archive data of a session (``{"format", "version", "messages", "pinned",
        "summary"}``), or None when it was never saved.  ``summary`` is the summary kept beside
        the messages (``Chat.summary``), or None (none saved, or not a valid one: it is only a
        cache of what the messages say, so a bad one is dropped, never an error).

        :param move_aside: False: report a corrupt file without moving it (``--no-save``)
        :raises StoreError: the file is not a valid archive (it is moved aside first, unless
            ``move_aside`` is False), or it was written by a newer openai2 (left untouched)
        """
        import json

        path = self.session_path(name)
        try:
            raw = _store_read_bytes(path)
        except FileNotFoundError:
            self._seen[name] = None
            return None
        except OSError as exc:
            raise StoreError("cannot read %s: %s" % (path, exc.strerror or exc)) from None
        self._seen[name] = _store_digest(raw)
        try:
            try:
                data = json.loads(raw.decode("utf-8-sig"))
                newer = self._newer_error(path, data, ARCHIVE_VERSION)
                if newer is not None:
                    raise newer
                messages, pins = from_archive(data)
            except RecursionError:
                raise ValueError(_STORE_TOO_DEEP) from None
        except ValueError as exc:
            why = str(exc) if not isinstance(exc, UnicodeDecodeError) else "not UTF-8"
            if not move_aside:
                raise StoreError("%s is corrupted (%s); it was left as it is" % (path, why)) from None
            error = self._move_aside(path, why)
            if not os.path.lexists(path):
                self._seen[name] = None
            raise error from None
        summary = check_side_summary(data.get("summary"), len(messages)) if isinstance(data, dict) else None
        return {
            "format": ARCHIVE_FORMAT,
            "version": ARCHIVE_VERSION,
            "messages": messages,
            "pinned": pins,
            "summary": summary,
        }

    def write_session(
        self, name: str, messages: list[dict[str, Any]], pinned: list[int], summary: dict[str, Any] | None = None
    ) -> str:
        """Save a conversation (0600, atomically) in ``Chat.dump``'s format; returns the path.
        ``summary`` (``Chat.summary``) is stored beside the messages, under ``"summary"``, which
        ``Chat.load`` and older openai2 versions ignore.

        :raises SessionConflictError: the file changed on disk since this Store read or wrote
            it (or appeared where it found none); it is left as it is and the conversation is
            written to ``NAME.conflict-<timestamp>.json`` instead (named in the error)
        :raises SessionLockedError: the lock was deferred and another process holds it now
            (the conversation is written to ``NAME.conflict-<timestamp>.json`` too, as when the
            deferred lock cannot be taken for another reason: a :class:`StoreError`)
        """
        import json

        path = self.session_path(name)
        data: dict[str, Any] = {
            "format": ARCHIVE_FORMAT,
            "version": ARCHIVE_VERSION,
            "messages": messages,
            "pinned": pinned,
        }
        if summary is not None:
            data["summary"] = {k: summary[k] for k in ("content", "covers", "digest")}
        try:
            raw = (json.dumps(data, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
        except RecursionError:
            raise StoreError("cannot save session %r: a message is nested too deeply for JSON" % name) from None
        self._ensure_sessions()
        deferred = self._deferred.get(name)
        if deferred is not None and not deferred.held and not deferred.released:
            # the first save of a session locked before its folder existed: take the lock now
            try:
                deferred._lock = self._take_session_lock(name, deferred.path)
            except StoreError as exc:  # held by another process now, or a planted symlink
                kept = self._keep_conflict(name, raw)
                raise type(exc)(str(exc) + "; " + self._kept_text(name, kept)) from None
            deferred.held = True

        def unchanged(tmp: str) -> None:
            # under the lock, just before the rename: is the file still the one this Store saw?
            if name not in self._seen:
                return  # never read here (a library caller writing a fresh name): nothing to compare
            expected = self._seen[name]
            current = self._session_digest(path)
            if current is not None and current != expected:
                raise SessionConflictError(path)

        try:
            atomic_write(path, raw, private=True, before_replace=unchanged)
        except SessionConflictError:
            kept = self._keep_conflict(name, raw)
            how = "was changed" if self._seen.get(name) is not None else "was created"
            raise SessionConflictError(
                "session %r %s by another process since this one read it: %s is that process's "
                "conversation and was left as it is; %s" % (name, how, path, self._kept_text(name, kept)),
                kept,
            ) from None
        self._seen[name] = _store_digest(raw)
        return path

    def _session_digest(self, path: str) -> str | None:
        try:
            return _store_digest(_store_read_bytes(path))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError("cannot read %s: %s" % (path, exc.strerror or exc)) from None

    def _keep_conflict(self, name: str, raw: bytes) -> str | None:
        """Write a refused save beside the session file; its path, or None if that failed too."""
        target = _store_free_path(
            os.path.join(self.sessions_dir, "%s.conflict-%s" % (_store_conflict_stem(name), self._stamp())), ".json"
        )
        try:
            atomic_write(target, raw, private=True)
        except OSError:
            return None
        return target

    @staticmethod
    def _kept_text(name: str, kept: str | None) -> str:
        if kept is None:
            return "this conversation could not be saved anywhere (writing beside it failed too)"
        other = os.path.basename(kept)[:-5]
        try:
            check_session_name(other)
            how = "continue it with --session %s, or compare the two files" % other
        except StoreError:
            how = "compare the two files (Chat.load reads it)"
        return "this conversation was saved to %s instead: %s" % (kept, how)

    def archive_session(self, name: str) -> str | None:
        """Move a session's file to ``archive/<name>-<timestamp>.json``.

        :returns: the archive path, or None when there was nothing saved
        """
        path = self.session_path(name)
        if not os.path.exists(path):
            self._seen[name] = None
            return None
        self._ensure_sessions()
        make_private_dir(self.archive_dir)
        target = _store_free_path(os.path.join(self.archive_dir, "%s-%s" % (name, self._stamp())), ".json")
        os.rename(path, target)
        self._seen[name] = None
        return target

    def delete_session(self, name: str) -> str:
        """Delete a session's file (refused while another process uses it).

        :returns: the path removed
        :raises StoreError: no such session, or it is in use
        """
        path = self.session_path(name)
        if not os.path.exists(path):
            raise StoreError("no session named %r (see `openai2 sessions list`)" % name)
        with self.lock_session(name):
            os.unlink(path)
        self._seen[name] = None
        # The lock file stays: removing it could let two processes lock two different files.
        return path

    def list_sessions(self) -> list[SessionInfo]:
        """Every saved session, sorted by name (unreadable ones included, with ``error`` set)."""
        import json

        found: list[SessionInfo] = []
        folder = self.sessions_dir
        if not os.path.isdir(folder):
            return found
        for entry in sorted(os.listdir(folder)):
            if not entry.endswith(".json") or entry.startswith("."):
                continue
            path = os.path.join(folder, entry)
            try:
                st = os.stat(path)
            except OSError:
                continue
            count: int | None = None
            error: str | None = None
            try:
                count = len(from_archive(json.loads(_store_read_bytes(path).decode("utf-8-sig")))[0])
            except OSError as exc:
                error = exc.strerror or str(exc)
            except ValueError as exc:
                error = str(exc) if not isinstance(exc, UnicodeDecodeError) else "not UTF-8"
            except RecursionError:
                error = _STORE_TOO_DEEP
            found.append(SessionInfo(entry[:-5], path, st.st_mtime, st.st_size, count, error))
        return found
