"""The exchange log (openai2.logbook): schema and migrations, the delta history, search with the
trigram index and with the LIKE scan (the same rows), Chinese search, keys never stored, a
corrupt file moved aside."""
import os
import shutil
import sqlite3
import stat
import tempfile
import unittest

from openai2.logbook import (
    LOGBOOK_MIGRATIONS,
    LOGBOOK_VERSION,
    Logbook,
    LogbookError,
    logbook_migrate,
    logbook_since,
    logbook_version,
)

KEY = "sk-logbook-SECRET-0123456789abcdef"


class LogbookCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="o2log-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.path = os.path.join(self.tmp, "home", "logs.db")

    def book(self, **kw):
        book = Logbook(self.path, **kw)
        self.addCleanup(book.close)
        return book

    def converse(self, book, rounds, session="s", answer="answer %d"):
        messages = [{"role": "system", "content": "Be brief."}]
        for i in range(rounds):
            messages.append({"role": "user", "content": "question %d" % i})
            book.append(messages=messages, answer=answer % i, session=session, model="m", host="h")
            messages.append({"role": "assistant", "content": answer % i})
        return messages


class SchemaTest(LogbookCase):
    def test_created_private_in_wal_mode_at_the_latest_version(self):
        book = self.book()
        book.append(messages=[{"role": "user", "content": "hi"}], answer="hello")
        if os.name == "posix":
            self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
            self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(self.path)).st_mode), 0o700)
        book.close()
        conn = sqlite3.connect(self.path)
        self.addCleanup(conn.close)
        self.assertEqual(conn.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        self.assertEqual(logbook_version(conn), LOGBOOK_VERSION)

    def test_migrates_from_every_earlier_version(self):
        # each earlier version: a database stopped there, with a row, then opened by this code
        for start in range(LOGBOOK_VERSION):
            path = os.path.join(self.tmp, "v%d.db" % start)
            conn = sqlite3.connect(path, isolation_level=None)
            self.assertEqual(logbook_migrate(conn, target=start), start)
            conn.close()
            book = Logbook(path)
            book.append(messages=[{"role": "user", "content": "after %d" % start}], answer="ok")
            self.assertEqual([r["question"] for r in book.exchanges()], ["after %d" % start])
            book.close()
            conn = sqlite3.connect(path)
            versions = [v for (v,) in conn.execute("SELECT version FROM logbook_migrations ORDER BY version")]
            conn.close()
            self.assertEqual(versions, list(range(1, LOGBOOK_VERSION + 1)))
        self.assertEqual(sorted(LOGBOOK_MIGRATIONS), list(range(1, LOGBOOK_VERSION + 1)))

    def test_a_newer_schema_is_refused_and_left_untouched(self):
        self.book().append(messages=[{"role": "user", "content": "hi"}], answer="x")
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("INSERT INTO logbook_migrations VALUES (?, 0)", (LOGBOOK_VERSION + 1,))
        conn.close()
        with self.assertRaisesRegex(LogbookError, "newer openai2"):
            Logbook(self.path).exchanges()
        self.assertTrue(os.path.exists(self.path))

    def test_a_corrupt_file_is_moved_aside_and_a_fresh_log_started(self):
        os.makedirs(os.path.dirname(self.path))
        with open(self.path, "wb") as handle:
            handle.write(b"this is not a database" * 100)
        book = self.book(clock=lambda: 0.0)
        book.append(messages=[{"role": "user", "content": "hi"}], answer="x")
        self.assertIsNotNone(book.moved_aside)
        self.assertIn(".corrupt-", book.moved_aside)
        with open(book.moved_aside, "rb") as handle:
            self.assertTrue(handle.read().startswith(b"this is not a database"))
        self.assertEqual(len(book.exchanges()), 1)

    def test_since_takes_ages_and_dates(self):
        self.assertEqual(logbook_since("7d", now=1000000.0), 1000000.0 - 7 * 86400)
        self.assertEqual(logbook_since("30m", now=5000.0), 5000.0 - 1800)
        self.assertGreater(logbook_since("2026-11-01"), logbook_since("2026-10-31"))
        with self.assertRaises(ValueError):
            logbook_since("yesterday")


class HistoryTest(LogbookCase):
    def test_a_conversation_is_rebuilt_from_its_deltas(self):
        book = self.book()
        messages = self.converse(book, 30)
        last = book.exchanges(limit=1)[0]["id"]
        self.assertEqual(book.conversation(last), messages)
        self.assertEqual(book.get(3)["messages"], messages[:6])

    def test_each_exchange_stores_only_its_new_messages(self):
        book = self.book()
        self.converse(book, 40)
        conn = sqlite3.connect(self.path)
        self.addCleanup(conn.close)
        rows = conn.execute("SELECT prefix_len, new_messages FROM exchanges ORDER BY id").fetchall()
        self.assertEqual(rows[0][0], 0)
        for prefix, new in rows[1:]:
            self.assertGreater(prefix, 0)
            self.assertEqual(new.count('"role"'), 1)  # only the new question

    def test_a_changed_history_is_stored_whole_and_still_rebuilt(self):
        book = self.book()
        self.converse(book, 3)
        other = [{"role": "user", "content": "a different start"}]
        book.append(messages=other, answer="x", session="s")
        last = book.exchanges(limit=1)[0]["id"]
        self.assertEqual(book.get(last)["messages"], other)

    def test_a_retry_refers_to_the_messages_the_previous_exchange_sent(self):
        book = self.book()
        sent = [{"role": "user", "content": "q"}]
        book.append(messages=sent, answer="first try", session="s")
        book.append(messages=sent, answer="second try", session="s")
        self.assertEqual(book.get(2)["messages"], sent)
        self.assertEqual(book.conversation(2)[-1]["content"], "second try")

    def test_the_history_is_rebuilt_by_a_new_logbook_on_the_same_file(self):
        messages = self.converse(self.book(), 5)
        book2 = Logbook(self.path)
        self.addCleanup(book2.close)
        messages.append({"role": "user", "content": "six"})
        book2.append(messages=messages, answer="6", session="s")
        self.assertEqual(book2.get(6)["messages"], messages)
        conn = sqlite3.connect(self.path)
        self.addCleanup(conn.close)
        self.assertEqual(conn.execute("SELECT prefix_len FROM exchanges WHERE id = 6").fetchone()[0], 11)


class KeyTest(LogbookCase):
    def test_a_key_in_any_field_never_reaches_the_file(self):
        book = self.book()
        book.append(
            messages=[{"role": "system", "content": "key " + KEY}, {"role": "user", "content": "echo " + KEY}],
            answer="here it is: " + KEY,
            reasoning="the key is " + KEY,
            error="HTTP 401: bad key " + KEY,
            status="error",
            key=KEY,
            session="s",
        )
        book.append(messages=[{"role": "user", "content": "again " + KEY}], answer=KEY, key=KEY, session="s")
        record = book.get(1)
        book.close()
        self.assertEqual(record["key_fingerprint"], "sk-…cdef")
        found = b""
        for name in os.listdir(os.path.dirname(self.path)):
            with open(os.path.join(os.path.dirname(self.path), name), "rb") as handle:
                found += handle.read()
        self.assertIn(b"echo sk-", found)  # the texts are there, masked
        self.assertNotIn(KEY.encode(), found)
        self.assertNotIn(KEY[3:].encode(), found)


class SearchTest(LogbookCase):
    TEXTS = [
        ("我们今天讨论一下人工智能的发展", "人工智能正在快速发展"),
        ("How do I read a file in Python?", "Use open(path) in a with block."),
        ("100% sure_thing?", "yes, 100% and a_b"),
        ("北京是中国的首都吗", "是的，北京是首都"),
        ("Tell me about CAFÉ culture", "Cafés are common."),
    ]
    QUERIES = ["人工智能", "智能的", "北京", "京", "python", "PYTHON", "fi", "100%", "_b", "a_", "首都", "xyz", "é c",
               "with block", "c"]

    def fill(self, book):
        for question, answer in self.TEXTS:
            book.append(messages=[{"role": "user", "content": question}], answer=answer)

    def ids(self, book, query):
        return [r["id"] for r in book.exchanges(limit=None, query=query)]

    def test_chinese_is_found_by_any_substring(self):
        book = self.book()
        self.fill(book)
        self.assertEqual(book.search_mode, "trigram" if self.has_trigram() else "like")
        self.assertEqual(self.ids(book, "人工智能"), [1])
        self.assertEqual(self.ids(book, "讨论一下"), [1])
        self.assertEqual(self.ids(book, "首都"), [4])  # two characters: the LIKE scan
        self.assertEqual(self.ids(book, "中国的首"), [4])

    def test_the_scan_gives_the_same_rows_as_the_index(self):
        indexed = self.book()
        self.fill(indexed)
        scanned = Logbook(self.path, use_index=False)
        self.addCleanup(scanned.close)
        self.assertEqual(scanned.search_mode, "like")
        for query in self.QUERIES:
            self.assertEqual(self.ids(indexed, query), self.ids(scanned, query), query)
        self.assertEqual(self.ids(scanned, "python"), [2])
        self.assertEqual(self.ids(scanned, "100%"), [3])
        self.assertEqual(self.ids(scanned, "a_"), [3])

    def test_exchanges_written_without_the_index_are_found_once_it_is_back(self):
        scanned = self.book(use_index=False)
        self.fill(scanned)
        scanned.close()
        indexed = self.book()
        indexed.append(messages=[{"role": "user", "content": "人工智能又来了"}], answer="x")
        self.assertEqual(self.ids(indexed, "人工智能"), [1, 6])

    def test_filters_and_order(self):
        clock = iter(range(1000, 2000, 100))
        book = self.book(clock=lambda: float(next(clock)))
        self.converse(book, 3, session="a")
        self.converse(book, 2, session="b")
        self.assertEqual([r["id"] for r in book.exchanges(limit=2)], [4, 5])  # newest last
        self.assertEqual([r["id"] for r in book.exchanges(session="a")], [1, 2, 3])
        self.assertEqual([r["id"] for r in book.exchanges(since=1150.0)], [3, 4, 5])
        self.assertEqual(book.exchanges(model="nope"), [])

    @staticmethod
    def has_trigram():
        conn = sqlite3.connect(":memory:")
        try:
            conn.execute("CREATE VIRTUAL TABLE t USING fts5(x, tokenize='trigram')")
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            conn.close()


if __name__ == "__main__":
    unittest.main()
