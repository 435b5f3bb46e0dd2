"""Load on loopback, bounded: 8 threads x 500 requests on one client and one AKPool; 200
concurrent async requests; 10,000 sequential requests with file descriptors, threads and RSS
measured before and after."""
from __future__ import annotations

import asyncio
import collections
import gc
import os
import threading
import time
import unittest

from openai2 import AKPool, Chat, OpenAI
from openai2.testing import FakeServer, Reply
from tests.integration.support import figure, set_figure, wait_for

THREADS = 8
PER_THREAD = 500
ASYNC = 200
SEQUENTIAL = int(os.environ.get("OPENAI2_LOAD_SEQUENTIAL", "10000"))
KEYS = ["sk-load-%020d" % i for i in range(4)]


def _echo(request):
    return Reply(content="echo:" + request.messages[-1]["content"], usage=None)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _key_counts(srv: FakeServer) -> collections.Counter:
    return collections.Counter(r.headers.get("authorization", "")[7:] for r in srv.requests)


@unittest.skipUnless(os.path.isdir("/proc/self/fd"), "needs /proc")
class Load(unittest.TestCase):
    def test_threads_share_one_client_and_pool(self) -> None:
        with FakeServer(handler=_echo) as srv:
            client = OpenAI(api_key=AKPool(KEYS), base_url=srv.base_url, max_retries=0, timeout=(5, 30))
            answers = collections.Counter()
            errors = []
            lock = threading.Lock()

            def work(t: int) -> None:
                for i in range(PER_THREAD):
                    text = "t%d-%d" % (t, i)
                    try:
                        r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": text}])
                        got = r.choices[0].message.content
                    except Exception as exc:  # noqa: BLE001 - counted
                        with lock:
                            errors.append(repr(exc))
                        continue
                    with lock:
                        answers[(text, got)] += 1

            started = time.monotonic()
            threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
            for th in threads:
                th.start()
            for th in threads:
                th.join(120)
            elapsed = time.monotonic() - started
            client.close()
            self.assertEqual(errors, [])
            self.assertEqual(len(answers), THREADS * PER_THREAD)
            self.assertTrue(all(n == 1 and got == "echo:" + text for (text, got), n in answers.items()))
            self.assertEqual(len(srv.requests), THREADS * PER_THREAD)
            counts = _key_counts(srv)
            per_key = THREADS * PER_THREAD / len(KEYS)
            self.assertEqual(set(counts), set(KEYS))
            for n in counts.values():
                self.assertLessEqual(abs(n - per_key), 1, counts)
            self.assertGreater(srv.max_in_flight, 1)
        figure("load: threaded requests answered", THREADS * PER_THREAD)
        set_figure("load: threaded requests per second", round(THREADS * PER_THREAD / elapsed))

    def test_async_requests(self) -> None:
        with FakeServer(handler=_echo) as srv:
            client = OpenAI(api_key=AKPool(KEYS), base_url=srv.base_url, max_retries=0, timeout=(5, 30))

            async def main():
                chats = [Chat(client=client, model="m") for _ in range(ASYNC)]
                return await asyncio.gather(*(c.async_request("a%d" % i) for i, c in enumerate(chats)),
                                            return_exceptions=True), chats

            results, chats = asyncio.run(main())
            client.close()
            self.assertEqual([r for r in results if isinstance(r, BaseException)], [])
            self.assertEqual(results, ["echo:a%d" % i for i in range(ASYNC)])
            self.assertTrue(all(len(c) == 2 for c in chats))
            self.assertEqual(len(srv.requests), ASYNC)
            counts = _key_counts(srv)
            for n in counts.values():
                self.assertLessEqual(abs(n - ASYNC / len(KEYS)), 1, counts)
            self.assertGreater(srv.max_in_flight, 1)
        figure("load: concurrent async requests answered", ASYNC)

    def test_sequential_requests_leak_nothing(self) -> None:
        with FakeServer(handler=_echo) as srv:
            chat = Chat(KEYS[0], base_url=srv.base_url, model="m", max_retries=0, MsgMaxCount=4)

            def run(n: int, offset: int) -> None:
                for i in range(n):
                    q = "s%d" % (offset + i)
                    if i % 10 == 9:
                        self.assertEqual("".join(chat.stream_request(q)), "echo:" + q)
                    else:
                        self.assertEqual(chat.request(q), "echo:" + q)
                    if i % 500 == 499:
                        srv.reset()  # the server's own record is not ours to measure

            run(300, 0)  # warm up: pool, lazy imports, caches
            srv.reset()
            gc.collect()
            time.sleep(0.2)
            fds, threads, rss = _fds(), threading.active_count(), _rss_kib()
            started = time.monotonic()
            run(SEQUENTIAL, 300)
            elapsed = time.monotonic() - started
            srv.reset()
            gc.collect()
            self.assertTrue(wait_for(lambda: _fds() <= fds and threading.active_count() <= threads, 5),
                            "fds %d -> %d, threads %d -> %d" % (fds, _fds(), threads, threading.active_count()))
            growth = _rss_kib() - rss
            self.assertLess(growth, 5 * 1024, "RSS grew by %d KiB" % growth)
            self.assertEqual(len(chat), 4)
            chat.client.close()
        figure("load: sequential requests", SEQUENTIAL)
        set_figure("load: sequential RSS growth KiB", growth)
        set_figure("load: sequential requests per second", round(SEQUENTIAL / elapsed))


if __name__ == "__main__":
    unittest.main()
