"""The exchange log's cost: per exchange, and searching 100,000 logged exchanges.

    python3 tests/bench/bench_log.py [--exchanges 100000] [--reps 200]

1. Logging cost: the same exchange on MemoryTransport (no network), with and without
   ``Chat(log=PATH)``; the difference of the medians is what logging adds (issue target: under
   2 ms on this machine).
2. Search: ``openai2 logs -q`` over N logged exchanges (default 100,000; English and Chinese text),
   through ``Logbook.exchanges(query=...)`` as the command does, for a 3+ character query (the
   trigram index when this SQLite has it) and a 2-character Chinese one (the LIKE scan); median
   of several queries (issue target: under 200 ms).  Also the file size.
Nothing is asserted; figures are printed as a Markdown section.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from openai2 import Chat  # noqa: E402
from openai2.logbook import Logbook  # noqa: E402
from openai2.testing import MemoryTransport  # noqa: E402

KEY = "sk-bench-0123456789abcdef"
WORDS_EN = "deploy server config error timeout retry cache token stream proxy answer question".split()
WORDS_ZH = ["部署", "服务器", "配置", "错误", "超时", "重试", "缓存", "令牌", "代理", "回答"]


def timed(fn, reps):
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def logging_cost(folder, reps):
    def answer(request):
        return "an answer of a few words, about %d characters long" % len(request.messages)

    plain = Chat(KEY, base_url="https://bench.test/v1", model="m", transport=MemoryTransport(handler=answer))
    logged = Chat(
        KEY,
        base_url="https://bench.test/v1",
        model="m",
        transport=MemoryTransport(handler=answer),
        log=os.path.join(folder, "cost.db"),
    )
    for chat in (plain, logged):  # warm up; the log's file is created here
        chat.request("hello")

    def ask(chat):
        def run():
            chat.request("what does the deploy error mean?")
            if len(chat) > 40:
                chat.clear()

        return run

    return timed(ask(plain), reps), timed(ask(logged), reps)


def search(folder, count):
    path = os.path.join(folder, "search.db")
    book = Logbook(path)
    start = time.perf_counter()
    for i in range(count):
        en = " ".join(WORDS_EN[(i + k) % len(WORDS_EN)] for k in range(6))
        zh = "".join(WORDS_ZH[(i + k) % len(WORDS_ZH)] for k in range(4))
        book.append(
            messages=[{"role": "user", "content": "question %d: %s %s?" % (i, en, zh)}],
            answer="answer %d: the %s %s" % (i, en, zh),
            session=None,
            model="m",
        )
    filled = time.perf_counter() - start
    mode = book.search_mode
    queries = ["timeout retry", "部署服务器", "answer 99999", "no such text anywhere"]
    long_q = statistics.median(timed(lambda q=q: book.exchanges(limit=10, query=q), 5) for q in queries)
    # a 2-character query that matches nothing: the LIKE scan reads every row (the worst case)
    short_q = max(timed(lambda q=q: book.exchanges(limit=10, query=q), 5) for q in ("代理", "无此"))
    book.close()
    size = sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s))
    return filled, mode, long_q, short_q, size


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--exchanges", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=200)
    args = parser.parse_args(argv)
    folder = tempfile.mkdtemp(prefix="o2bench-log-")
    try:
        plain, logged = logging_cost(folder, args.reps)
        filled, mode, long_q, short_q, size = search(folder, args.exchanges)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print("## The exchange log\n")
    print("| figure | value | target |")
    print("| --- | --- | --- |")
    print("| one exchange, no log (MemoryTransport) | %.2f ms | |" % (plain * 1e3))
    print("| one exchange, `Chat(log=PATH)` | %.2f ms | |" % (logged * 1e3))
    print("| logging adds per exchange | %.2f ms | < 2 ms |" % ((logged - plain) * 1e3))
    print("| `logs -q` over %d exchanges, 3+ characters (%s) | %.1f ms | < 200 ms |" % (args.exchanges, mode, long_q * 1e3))
    print("| `logs -q` with 2 Chinese characters (LIKE scan, the slower of a hit and a miss) | %.1f ms | < 200 ms |" % (short_q * 1e3))
    print("| logging %d exchanges took | %.1f s | |" % (args.exchanges, filled))
    print("| logs.db size for %d exchanges | %.1f MiB | |" % (args.exchanges, size / 1048576))
    return 0


if __name__ == "__main__":
    sys.exit(main())
