"""The exchange log: every question and answer the CLI completes, in one SQLite file, searchable.

One job: append exchanges to ``logs.db`` and read them back.  ``sqlite3`` is imported lazily,
so a Python built without it runs everything else (:func:`logbook_unavailable` says why the log
is off).  The file is created 0600 on first use, in WAL mode; its schema is versioned by the
``logbook_migrations`` table, and :data:`LOGBOOK_MIGRATIONS` holds one step per version (a later
version adds a step, never edits one).

History without quadratic growth: an exchange stores only the messages it sent that the
previous exchange of the same session did not already hold (``new_messages``) plus
``prefix_len``, how many messages of that exchange's conversation (its messages sent, then its
answer) come first.  Whether the prefix is the same is decided by SHA-256 digests of the
canonical JSON of the first N messages (``sent_hash`` over the messages sent, ``full_hash``
with the answer appended), so appending reads one row and never walks the chain.  A history
that changed otherwise (a trimmed or rolled-back one) is stored whole: correct, only larger.

Search (``-q``) is a case-insensitive (ASCII) substring of the question or the answer.  When the
interpreter's SQLite has FTS5 with the ``trigram`` tokenizer, a trigram index finds the
candidates of a query of 3+ characters (so Chinese is found by any 3-character substring) and
the same ``LIKE`` test keeps the exact ones; otherwise (1-2 characters, no FTS5, no trigram) the
``LIKE`` scan alone gives the same rows, only slower.  A default-tokenizer FTS5 index cannot
answer substrings, so it is not used.

Keys never reach the file: every text stored is masked with the caller's secrets first, and
the key is recorded only as :func:`mask_key` shows it.
"""

from __future__ import annotations

import os
import time

from .common import TYPE_CHECKING, mask_key
from .errors import redact_value
from .files import make_private_dir

if TYPE_CHECKING:
    from typing import Any, Callable, Iterable, Sequence

#: The schema: version -> SQL statements bringing a database of version - 1 to it.
LOGBOOK_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE exchanges (
            id INTEGER PRIMARY KEY,
            time REAL NOT NULL,
            session TEXT,
            model TEXT,
            host TEXT,
            system TEXT,
            prev_id INTEGER,
            prefix_len INTEGER NOT NULL DEFAULT 0,
            new_messages TEXT NOT NULL,
            sent_count INTEGER NOT NULL,
            sent_hash TEXT NOT NULL,
            full_hash TEXT NOT NULL,
            question TEXT,
            answer TEXT,
            reasoning TEXT,
            tool_calls TEXT,
            usage TEXT,
            latency REAL,
            finish_reason TEXT,
            error TEXT,
            status TEXT NOT NULL,
            key_fingerprint TEXT
        )""",
        "CREATE INDEX exchanges_session ON exchanges (session, id)",
        "CREATE INDEX exchanges_time ON exchanges (time)",
        "CREATE TABLE logbook_meta (name TEXT PRIMARY KEY, value TEXT)",
    ),
}
LOGBOOK_VERSION = max(LOGBOOK_MIGRATIONS)

_LOGBOOK_FIELDS = (
    "id, time, session, model, host, system, question, answer, reasoning, tool_calls, usage, "
    "latency, finish_reason, error, status, key_fingerprint"
)
_LOGBOOK_JSON_FIELDS = ("tool_calls", "usage")


class LogbookError(Exception):
    """The log could not be written or read (locked, corrupt, newer, no sqlite3)."""


def logbook_unavailable() -> str | None:
    """Why this Python cannot keep the log (no ``sqlite3`` module), or None when it can."""
    try:
        import sqlite3  # noqa: F401
    except ImportError as exc:
        return "this Python has no sqlite3 module (%s)" % exc
    return None


def logbook_since(text: str, now: float | None = None) -> float:
    """The time ``--since`` means: ``30m``, ``12h``, ``7d``, ``2w`` ago, or a local date
    ``YYYY-MM-DD`` (its midnight).

    :raises ValueError: anything else (the message shows the accepted forms)
    """
    text = text.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    current = time.time() if now is None else now
    digits = text[:-1]
    if len(text) > 1 and text[-1].lower() in units and digits.isdigit():
        if len(digits) > 15:  # older than the oldest log: everything (no float overflow)
            return float("-inf")
        return current - int(digits) * units[text[-1].lower()]
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%d"))
    except ValueError:
        raise ValueError("--since takes an age (30m, 12h, 7d, 2w) or a date (2026-11-01), not %r" % text) from None


def _logbook_dumps(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _logbook_text(content: Any) -> str:
    """The text of a message's content (a string, or the text parts of a list)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _logbook_reply(answer: str | None, tool_calls: Any) -> dict[str, Any]:
    """The history message an answer becomes (the last message of an exchange's conversation)."""
    reply: dict[str, Any] = {"role": "assistant", "content": answer}
    if tool_calls:
        reply["tool_calls"] = tool_calls
    return reply


def _logbook_rollback(conn: Any) -> None:
    """Roll back the open transaction, if any: SQLite ends one itself on some errors (a full
    disk), and ROLLBACK would then raise an error hiding the real one."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _logbook_errorname(exc: BaseException) -> str:
    return str(getattr(exc, "sqlite_errorname", "") or "")  # Python 3.11+


def _logbook_busy(exc: BaseException) -> bool:
    name = _logbook_errorname(exc)
    if name:
        return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
    return "locked" in str(exc) or "busy" in str(exc)


def _logbook_corrupt(exc: BaseException) -> bool:
    """Whether an error opening the log says the file is damaged or not a log (moved aside then),
    rather than that the disk is full, the file read-only, unreadable or busy (left alone)."""
    name = _logbook_errorname(exc)
    if name:
        return not name.startswith(_LOGBOOK_KEEP)
    text = str(exc).lower()
    return not any(word in text for word in _LOGBOOK_KEEP_WORDS)


#: SQLite errors that say nothing is wrong with the file itself
_LOGBOOK_KEEP = (
    "SQLITE_READONLY",
    "SQLITE_FULL",
    "SQLITE_IOERR",
    "SQLITE_CANTOPEN",
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_NOMEM",
    "SQLITE_PERM",
    "SQLITE_AUTH",
    "SQLITE_INTERRUPT",
    "SQLITE_NOLFS",
)
_LOGBOOK_KEEP_WORDS = (
    "readonly",
    "read-only",
    "disk is full",
    "i/o error",
    "unable to open",
    "locked",
    "busy",
    "out of memory",
    "not authorized",
    "interrupted",
    "permission",
)


def _logbook_like(query: str) -> str:
    return "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class Logbook:
    """The exchange log in one SQLite file (opened on first use, created 0600 if missing).

    :param path: the database file (the CLI's is ``Store.logs_path``)
    :param clock: ``time.time``-like, for the time of each exchange and of moved-aside files
    :param busy_timeout: seconds to wait for a database another process is writing
    :param use_index: False: never use the trigram index (the ``LIKE`` scan answers; tests)
    :raises LogbookError: (when used) no sqlite3, a locked database, a newer schema; a corrupt
        file is moved aside to ``<path>.corrupt-<time>`` and a fresh one started
    """

    def __init__(
        self, path: str, *, clock: Callable[[], float] | None = None, busy_timeout: float = 2.0, use_index: bool = True
    ) -> None:
        self.path = os.path.abspath(path)
        self._clock = clock or time.time
        self._busy_timeout = busy_timeout
        self._use_index = use_index
        self._conn: Any = None
        self._index: str | None = None  # "trigram" when the FTS table is usable, else None
        #: per session: the messages last logged, as given, masked and dumped (not dumped twice)
        self._dumps: dict[str, list[tuple[dict[str, Any], dict[str, Any], str]]] = {}
        #: set when a corrupt file was moved aside on opening: where it went
        self.moved_aside: str | None = None

    def __repr__(self) -> str:
        return "Logbook(%r)" % self.path

    # -- opening ----------------------------------------------------------------------------
    def _connect(self) -> Any:
        if self._conn is not None:
            return self._conn
        why = logbook_unavailable()
        if why:
            raise LogbookError("the log is off: " + why)
        import sqlite3

        self._check_path()
        try:
            self._conn = self._open(sqlite3)
        except LogbookError:  # a newer schema: no connection kept, every later use refused too
            self.close()
            raise
        except sqlite3.DatabaseError as exc:
            self.close()
            if _logbook_busy(exc):
                raise LogbookError("%s is busy (%s): another openai2 is writing it" % (self.path, exc)) from None
            if not _logbook_corrupt(exc) or not os.path.isfile(self.path):
                # a full disk, a read-only file, an I/O error: the file is fine, keep it
                raise LogbookError("cannot use %s: %s" % (self.path, exc)) from None
            self._move_aside(str(exc))
            try:
                self._conn = self._open(sqlite3)
            except sqlite3.DatabaseError as again:
                self.close()
                raise LogbookError("cannot use %s: %s" % (self.path, again)) from None
        return self._conn

    def _check_path(self) -> None:
        """Refuse a ``logs.db`` that is a symbolic link (openai2 never writes through one) or
        not a regular file (a folder, a FIFO, a device): left as it is."""
        import stat

        try:
            st = os.lstat(self.path)
        except OSError:
            return  # missing: created on opening
        if stat.S_ISLNK(st.st_mode):
            raise LogbookError(
                "%s is a symbolic link; openai2 does not write through links: replace it with the file "
                "itself (or remove it)" % self.path
            )
        if not stat.S_ISREG(st.st_mode):
            raise LogbookError(
                "%s is not a regular file (a folder, a FIFO or a device); it was left as it is: remove it "
                "or turn the log off (`openai2 logs off`)" % self.path
            )

    def _open(self, sqlite3: Any) -> Any:
        folder = os.path.dirname(self.path)
        if not os.path.isdir(folder):
            make_private_dir(folder)
        if not os.path.exists(self.path):
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                pass
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
        self._conn = conn
        conn.execute("PRAGMA journal_mode=WAL").fetchall()
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL: no fsync per exchange, safe against a crash of openai2
        logbook_migrate(conn)
        self._index = self._prepare_index(conn) if self._use_index else None
        return conn

    @staticmethod
    def _prepare_index(conn: Any) -> str | None:
        """Create (or check) the trigram FTS table; "trigram" when usable, else None."""
        import sqlite3

        try:
            conn.execute(
                "CREATE VIRTUAL TABLE IF NOT EXISTS exchanges_fts USING fts5"
                "(question, answer, content='exchanges', content_rowid='id', tokenize='trigram')"
            )
            conn.execute("SELECT rowid FROM exchanges_fts LIMIT 0").fetchall()
        except sqlite3.OperationalError:  # no FTS5, no trigram, or a table this SQLite cannot read
            return None
        return "trigram"

    def _move_aside(self, why: str) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(self._clock()))
        base = "%s.corrupt-%s" % (self.path, stamp)
        aside, n = base, 2
        while os.path.lexists(aside):
            aside, n = "%s-%d" % (base, n), n + 1
        try:
            os.rename(self.path, aside)
        except OSError as exc:
            raise LogbookError(
                "%s is corrupted (%s) and could not be moved aside (%s); fix or remove it"
                % (self.path, why, exc.strerror or exc)
            ) from None
        for tail in ("-wal", "-shm"):  # they belong to the corrupt file
            if os.path.exists(self.path + tail):
                try:
                    os.rename(self.path + tail, aside + tail)
                except OSError:
                    pass
        self.moved_aside = aside

    def close(self) -> None:
        """Close the database (safe to call twice)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __enter__(self) -> Logbook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def search_mode(self) -> str:
        """``"trigram"`` (FTS5 index for 3+ characters, ``LIKE`` below) or ``"like"`` (scan)."""
        self._connect()
        return self._index or "like"

    # -- writing ----------------------------------------------------------------------------
    def append(
        self,
        *,
        messages: Sequence[dict[str, Any]],
        answer: str | None = None,
        session: str | None = None,
        model: str | None = None,
        host: str | None = None,
        reasoning: str | None = None,
        tool_calls: Any = None,
        usage: Any = None,
        latency: float | None = None,
        finish_reason: str | None = None,
        error: str | None = None,
        status: str = "ok",
        key: Any = None,
        secrets: Iterable[str] = (),
    ) -> int:
        """Log one exchange; returns its id.

        :param messages: the messages sent (the system prompt is taken from the first one)
        :param session: what links the exchanges of one conversation (the CLI's session name;
            None: the exchange stands alone)
        :param status: ``"ok"``, ``"interrupted"`` (``answer`` is what arrived) or ``"error"``
        :param key: the key used (only its masked form is stored), or a description of it
        :param secrets: every key the caller knows: masked in everything stored
        :raises LogbookError: locked, corrupt beyond repair, or written by a newer openai2
        """
        import hashlib
        import sqlite3

        known = [s for s in secrets if s]
        if isinstance(key, str) and key:
            known.append(key)
        forms = [f for k in known for f in {k, _logbook_dumps(k)[1:-1]}]
        fields = redact_value(
            {
                "answer": answer,
                "reasoning": reasoning,
                "tool_calls": tool_calls,
                "usage": usage,
                "error": error,
                "session": session,
                "model": model,
                "host": host,
                "finish_reason": finish_reason,
            },
            known,
        )
        # each message dumped once (a history repeated from the last exchange of this Logbook
        # is not dumped again); only a message whose text holds a key is masked
        cache = self._dumps.get(session) if session is not None else None
        sent: list[dict[str, Any]] = []
        dumped: list[str] = []
        for i, raw in enumerate(messages):
            if cache is not None and i < len(cache) and cache[i][0] == raw:
                msg, text = cache[i][1], cache[i][2]
            else:
                cache = None
                msg = dict(raw)
                text = _logbook_dumps(msg)
                if any(f in text for f in forms):
                    msg = redact_value(msg, known)
                    text = _logbook_dumps(msg)
            sent.append(msg)
            dumped.append(text)
        if session is not None:
            self._dumps[session] = [(dict(m), s, t) for m, s, t in zip(messages, sent, dumped)]
        fingerprint = mask_key(key) if isinstance(key, str) else (str(key) if key else None)
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                prev = None
                if session is not None:
                    prev = conn.execute(
                        "SELECT id, sent_count, sent_hash, full_hash FROM exchanges WHERE session = ? "
                        "ORDER BY id DESC LIMIT 1",
                        (fields["session"],),
                    ).fetchone()
                running = hashlib.sha256()
                digests = {0: running.hexdigest()}
                for i, text in enumerate(dumped, 1):
                    running.update(text.encode("utf-8", "surrogatepass") + b"\n")
                    digests[i] = running.hexdigest()
                prev_id, prefix = None, 0
                if prev is not None:
                    pid, pcount, phash, pfull = prev
                    if digests.get(pcount + 1) == pfull:
                        prev_id, prefix = pid, pcount + 1
                    elif digests.get(pcount) == phash:
                        prev_id, prefix = pid, pcount
                reply = _logbook_reply(fields["answer"], fields["tool_calls"])
                full = running.copy()
                full.update(_logbook_dumps(reply).encode("utf-8", "surrogatepass") + b"\n")
                system = sent[0].get("content") if sent and sent[0].get("role") == "system" else None
                question = next((m for m in reversed(sent) if m.get("role") == "user"), None)
                row = (
                    self._clock(),
                    fields["session"],
                    fields["model"],
                    fields["host"],
                    _logbook_text(system) if system is not None else None,
                    prev_id,
                    prefix,
                    "[" + ",".join(dumped[prefix:]) + "]",
                    len(sent),
                    digests[len(sent)],
                    full.hexdigest(),
                    _logbook_text(question.get("content")) if question else None,
                    fields["answer"],
                    fields["reasoning"] or None,
                    _logbook_dumps(fields["tool_calls"]) if fields["tool_calls"] else None,
                    _logbook_dumps(fields["usage"]) if fields["usage"] else None,
                    latency,
                    fields["finish_reason"],
                    fields["error"],
                    status,
                    fingerprint,
                )
                cursor = conn.execute(
                    "INSERT INTO exchanges (time, session, model, host, system, prev_id, prefix_len, "
                    "new_messages, sent_count, sent_hash, full_hash, question, answer, reasoning, tool_calls, "
                    "usage, latency, finish_reason, error, status, key_fingerprint) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
                new_id = int(cursor.lastrowid)
                if self._index:
                    self._catch_up(conn, new_id)
                conn.execute("COMMIT")
            except BaseException:
                _logbook_rollback(conn)
                raise
        except sqlite3.DatabaseError as exc:
            raise LogbookError("cannot log to %s: %s" % (self.path, exc)) from None
        return new_id

    @staticmethod
    def _indexed(conn: Any) -> bool:
        """Whether the FTS table holds every exchange (read without a lock)."""
        found = conn.execute("SELECT value FROM logbook_meta WHERE name = 'fts_upto'").fetchone()
        last = conn.execute("SELECT MAX(id) FROM exchanges").fetchone()[0] or 0
        return (int(found[0]) if found else 0) >= last

    @staticmethod
    def _catch_up(conn: Any, upto: int | None = None) -> None:
        """Index the exchanges the FTS table does not hold yet (written by a Python without
        the trigram tokenizer, or this one)."""
        found = conn.execute("SELECT value FROM logbook_meta WHERE name = 'fts_upto'").fetchone()
        done = int(found[0]) if found else 0
        if upto is not None and done == upto - 1:
            conn.execute(
                "INSERT INTO exchanges_fts (rowid, question, answer) SELECT id, question, answer "
                "FROM exchanges WHERE id = ?",
                (upto,),
            )
        else:
            conn.execute(
                "INSERT INTO exchanges_fts (rowid, question, answer) SELECT id, question, answer "
                "FROM exchanges WHERE id > ?",
                (done,),
            )
        last = conn.execute("SELECT MAX(id) FROM exchanges").fetchone()[0] or 0
        conn.execute("INSERT OR REPLACE INTO logbook_meta (name, value) VALUES ('fts_upto', ?)", (str(last),))

    # -- reading ----------------------------------------------------------------------------
    def exchanges(
        self,
        *,
        limit: int | None = 10,
        query: str | None = None,
        session: str | None = None,
        model: str | None = None,
        since: float | None = None,
    ) -> list[dict[str, Any]]:
        """The latest ``limit`` exchanges matching every filter given, oldest first.

        :param query: a substring of the question or the answer (ASCII case ignored)
        """
        import sqlite3

        conn = self._connect()
        where: list[str] = []
        args: list[Any] = []
        if query:
            like = _logbook_like(query)
            where.append("(question LIKE ? ESCAPE '\\' OR answer LIKE ? ESCAPE '\\')")
            args += [like, like]
            if self._index and len(query) >= 3:
                try:
                    if not self._indexed(conn):  # a write lock only when there is something to index
                        conn.execute("BEGIN IMMEDIATE")
                        self._catch_up(conn)
                        conn.execute("COMMIT")
                except sqlite3.DatabaseError:  # busy, read-only: the scan alone answers
                    _logbook_rollback(conn)
                else:
                    where.append("id IN (SELECT rowid FROM exchanges_fts WHERE exchanges_fts MATCH ?)")
                    args.append('"%s"' % query.replace('"', '""'))
        for column, value in (("session", session), ("model", model)):
            if value is not None:
                where.append("%s = ?" % column)
                args.append(value)
        if since is not None:
            where.append("time >= ?")
            args.append(since)
        sql = "SELECT %s FROM exchanges%s ORDER BY id DESC" % (
            _LOGBOOK_FIELDS,
            " WHERE " + " AND ".join(where) if where else "",
        )
        if limit is not None:
            sql += " LIMIT %d" % min(max(0, int(limit)), 2**63 - 1)  # SQLite's integers end there
        try:
            rows = conn.execute(sql, args).fetchall()
            return [self._record(row) for row in reversed(rows)]
        except sqlite3.DatabaseError as exc:
            raise LogbookError("cannot read %s: %s" % (self.path, exc)) from None
        except ValueError as exc:  # a JSON field edited by hand
            raise LogbookError("%s holds a damaged exchange (%s)" % (self.path, exc)) from None

    @staticmethod
    def _record(row: Sequence[Any]) -> dict[str, Any]:
        import json

        names = [n.strip() for n in _LOGBOOK_FIELDS.split(",")]
        record = dict(zip(names, row))
        for name in _LOGBOOK_JSON_FIELDS:
            if record[name] is not None:
                record[name] = json.loads(record[name])
        return record

    def get(self, exchange_id: int) -> dict[str, Any] | None:
        """One exchange with ``messages`` (all the messages it sent, rebuilt), or None; in a log
        damaged by hand, ``incomplete`` says which messages could not be rebuilt (else None)."""
        import sqlite3

        if not -(2**63) <= exchange_id < 2**63:  # no such SQLite integer: no such exchange
            return None
        conn = self._connect()
        try:
            row = conn.execute("SELECT %s FROM exchanges WHERE id = ?" % _LOGBOOK_FIELDS, (exchange_id,)).fetchone()
            if row is None:
                return None
            record = self._record(row)
            record["messages"], record["incomplete"] = self._sent(conn, exchange_id)
        except sqlite3.DatabaseError as exc:
            raise LogbookError("cannot read %s: %s" % (self.path, exc)) from None
        except (ValueError, TypeError) as exc:  # a JSON field edited by hand
            raise LogbookError("exchange %d in %s is damaged (%s)" % (exchange_id, self.path, exc)) from None
        return record

    def conversation(self, exchange_id: int) -> list[dict[str, Any]] | None:
        """The conversation after an exchange: its messages sent, then its answer (None: no such
        id; a failed exchange, which has neither answer text nor tool calls, ends with its question).

        :raises LogbookError: the log was damaged by hand and the conversation cannot be rebuilt
        """
        record = self.get(exchange_id)
        if record is None:
            return None
        if record["incomplete"]:
            raise LogbookError("exchange %d cannot be rebuilt: %s" % (exchange_id, record["incomplete"]))
        if record["answer"] is None and not record["tool_calls"]:
            return list(record["messages"])
        return list(record["messages"]) + [_logbook_reply(record["answer"], record["tool_calls"])]

    @staticmethod
    def _sent(conn: Any, exchange_id: int) -> tuple[list[dict[str, Any]], str | None]:
        """The messages an exchange sent: its chain walked back to a whole one, then forward;
        and, for a log damaged by hand (an exchange deleted, a link that does not run back in
        time), what is missing (the messages are then only the ones that could be rebuilt)."""
        import json

        chain: list[tuple[int, str, str | None, str | None]] = []
        problem = None
        current: int | None = exchange_id
        while current is not None:
            row = conn.execute(
                "SELECT prev_id, prefix_len, new_messages, answer, tool_calls FROM exchanges WHERE id = ?", (current,)
            ).fetchone()
            if row is None:
                problem = "exchange %d, which it builds on, is not in the log" % current
                break
            prev_id, prefix, new, answer, tool_calls = row
            chain.append((prefix, new, answer, tool_calls))
            if not prefix:
                break
            if not isinstance(prev_id, int) or prev_id >= current:  # a cycle would never end
                problem = "exchange %d builds on %r, which cannot come before it" % (current, prev_id)
                break
            current = prev_id
        messages: list[dict[str, Any]] = []
        for i, (prefix, new, _answer, _calls) in enumerate(reversed(chain)):
            if i:
                _p, _n, answer, calls = chain[len(chain) - i]
                messages.append(_logbook_reply(answer, json.loads(calls) if calls else None))
            if len(messages) < prefix and problem is None:
                problem = "the messages it builds on are not all in the log"
            messages = messages[:prefix] + json.loads(new)
        return messages, problem


def logbook_version(conn: Any) -> int:
    """The schema version of an open database (0: empty)."""
    found = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'logbook_migrations'"
    ).fetchone()
    if not found:
        return 0
    value = conn.execute("SELECT MAX(version) FROM logbook_migrations").fetchone()[0]
    return int(value or 0)


def logbook_migrate(conn: Any, target: int | None = None) -> int:
    """Bring an open database (autocommit mode) up to ``target`` (default: the latest), one
    step per version, each in its own transaction; returns the version reached.

    :raises LogbookError: the database was written by a newer openai2 (left untouched)
    """
    target = LOGBOOK_VERSION if target is None else target
    current = logbook_version(conn)  # read first: an up-to-date log is opened without a write lock
    if current == target:
        return current
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = logbook_version(conn)
        if current > LOGBOOK_VERSION:
            raise LogbookError(
                "the log was written by a newer openai2 (schema version %d; this one knows up to %d); "
                "it was left untouched: upgrade openai2 to use it" % (current, LOGBOOK_VERSION)
            )
        if current == 0 and target > 0:
            conn.execute("CREATE TABLE logbook_migrations (version INTEGER PRIMARY KEY, applied REAL NOT NULL)")
        for version in range(current + 1, target + 1):
            for statement in LOGBOOK_MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute("INSERT INTO logbook_migrations (version, applied) VALUES (?, ?)", (version, time.time()))
        conn.execute("COMMIT")
    except BaseException:
        _logbook_rollback(conn)
        raise
    return max(current, target)
