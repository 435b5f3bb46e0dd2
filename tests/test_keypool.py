"""AKPool: round-robin fairness, thread safety, 429 cool-down, 401/403 set aside, validation, masking."""
import collections
import threading
import unittest

from openai2.errors import AuthenticationError
from openai2.keypool import AKPool, PoolSnapshot

K1 = "sk-test-aaaaaaaaaaaaaaaa1111"
K2 = "sk-test-bbbbbbbbbbbbbbbb2222"
K3 = "sk-test-cccccccccccccccc3333"
KEYS = [K1, K2, K3]


class FakeClock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


class RotationTest(unittest.TestCase):
    def test_exact_round_robin(self):
        pool = AKPool(KEYS)
        draws = [pool.next_key() for _ in range(1000)]
        self.assertEqual(draws, [KEYS[i % 3] for i in range(1000)])

    def test_duplicates_are_slots(self):
        pool = AKPool([K1, K1, K2])
        self.assertEqual(len(pool), 3)
        self.assertEqual([pool.next_key() for _ in range(6)], [K1, K1, K2, K1, K1, K2])

    def test_accepts_any_iterable(self):
        pool = AKPool(k for k in (K1, K2))
        self.assertEqual([pool.next_key() for _ in range(3)], [K1, K2, K1])
        self.assertEqual(AKPool((K3,)).next_key(), K3)

    def test_threads_share_fairly(self):
        pool = AKPool(KEYS)
        counts = collections.Counter()
        lock = threading.Lock()
        start = threading.Barrier(8)

        def worker():
            start.wait()
            mine = collections.Counter(pool.next_key() for _ in range(500))
            with lock:
                counts.update(mine)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        self.assertEqual(sum(counts.values()), 4000)
        self.assertEqual(set(counts), set(KEYS))
        self.assertLessEqual(max(counts.values()) - min(counts.values()), 1)


class CooldownTest(unittest.TestCase):
    def test_rate_limited_key_is_skipped_until_retry_time(self):
        clock = FakeClock()
        pool = AKPool(KEYS, cooldown=5.0, clock=clock)
        self.assertEqual(pool.next_key(), K1)
        self.assertTrue(pool.mark_rate_limited(K2, 2.0))
        self.assertEqual([pool.next_key() for _ in range(4)], [K3, K1, K3, K1])
        self.assertEqual(pool.seconds_until_available(), 0.0)
        clock.now += 2.0
        self.assertEqual([pool.next_key() for _ in range(3)], [K2, K3, K1])

    def test_default_cooldown_and_longest_wins(self):
        clock = FakeClock()
        pool = AKPool([K1, K2], cooldown=7.5, clock=clock)
        pool.mark_rate_limited(K1, None)
        clock.now += 7.0
        self.assertEqual(pool.next_key(), K2)
        self.assertEqual(pool.next_key(), K2)
        clock.now += 0.5
        self.assertEqual(pool.next_key(), K1)
        pool.mark_rate_limited(K1, 30)
        pool.mark_rate_limited(K1, 1)  # a shorter mark does not shorten the cool-down
        clock.now += 10
        self.assertEqual([pool.next_key() for _ in range(2)], [K2, K2])

    def test_all_cooling_returns_soonest_and_wait(self):
        clock = FakeClock()
        pool = AKPool(KEYS, clock=clock)
        pool.mark_rate_limited(K1, 9)
        pool.mark_rate_limited(K2, 3)
        pool.mark_rate_limited(K3, 6)
        self.assertEqual(pool.seconds_until_available(), 3.0)
        self.assertEqual(pool.next_key(), K2)
        clock.now += 1
        self.assertEqual(pool.seconds_until_available(), 2.0)
        clock.now += 2
        self.assertEqual(pool.seconds_until_available(), 0.0)
        self.assertEqual(pool.next_key(), K2)

    def test_unknown_key_and_bad_retry_after(self):
        pool = AKPool([K1])
        self.assertFalse(pool.mark_rate_limited(K2, 5))
        self.assertFalse(pool.mark_invalid(K2, 401))
        self.assertEqual(pool.usable_count, 1)
        for bad in ("5", float("nan"), True):
            with self.assertRaises(ValueError):
                pool.mark_rate_limited(K1, bad)
        self.assertTrue(pool.mark_rate_limited(K1, -3))  # negative counts as zero
        self.assertEqual(pool.seconds_until_available(), 0.0)


class SetAsideTest(unittest.TestCase):
    def test_invalid_keys_set_aside_then_all_rejected(self):
        pool = AKPool(KEYS)
        pool.mark_invalid(K2, 401)
        self.assertEqual(pool.usable_count, 2)
        self.assertEqual([pool.next_key() for _ in range(4)], [K1, K3, K1, K3])
        pool.mark_invalid(K1, 403)
        pool.mark_invalid(K1, 401)  # the first status is kept
        self.assertEqual(pool.set_aside, [("sk-…2222", 401), ("sk-…1111", 403)])
        self.assertEqual(pool.next_key(), K3)
        pool.mark_invalid(K3)
        self.assertEqual(pool.usable_count, 0)
        self.assertEqual(pool.seconds_until_available(), 0.0)
        with self.assertRaises(AuthenticationError) as cm:
            pool.next_key()
        err = cm.exception
        self.assertEqual(err.status_code, 401)
        text = str(err)
        self.assertIn("every key in the pool was rejected", text)
        self.assertIn("sk-…2222 (401)", text)
        self.assertIn("sk-…1111 (403)", text)
        self.assertIn("sk-…3333 (401)", text)
        for key in KEYS:
            self.assertNotIn(key, text)
            self.assertNotIn(key, repr(err))
            self.assertNotIn(key, err.message)

    def test_set_aside_beats_cooldown(self):
        clock = FakeClock()
        pool = AKPool([K1, K2], clock=clock)
        pool.mark_rate_limited(K2, 100)
        pool.mark_invalid(K1, 401)
        self.assertEqual(pool.seconds_until_available(), 100.0)
        self.assertEqual(pool.next_key(), K2)  # cooling, but the only usable key

    def test_duplicates_set_aside_together(self):
        pool = AKPool([K1, K2, K1])
        pool.mark_invalid(K1, 401)
        self.assertEqual(pool.usable_count, 1)
        self.assertEqual([pool.next_key() for _ in range(3)], [K2, K2, K2])


class SnapshotTest(unittest.TestCase):
    """snapshot(key): the pool as the retry policy sees it from one key, frozen, unchanged."""

    def test_other_keys_their_first_free_time_and_this_keys_own(self):
        clock = FakeClock()
        pool = AKPool(KEYS, cooldown=2.5, clock=clock)
        self.assertEqual(pool.snapshot(K1), PoolSnapshot(3, 2, 0.0, 0.0, 2.5))
        pool.mark_rate_limited(K2, 10)
        pool.mark_rate_limited(K3, 4)
        pool.mark_rate_limited(K1, 30)
        self.assertEqual(pool.snapshot(K1), PoolSnapshot(3, 2, 4.0, 30.0, 2.5))
        clock.now += 5  # K3's cool-down is over
        self.assertEqual(pool.snapshot(K1), PoolSnapshot(3, 2, 0.0, 25.0, 2.5))
        pool.mark_invalid(K3)
        self.assertEqual(pool.snapshot(K1), PoolSnapshot(3, 1, 5.0, 25.0, 2.5))
        pool.mark_invalid(K2)
        self.assertEqual(pool.snapshot(K1), PoolSnapshot(3, 0, None, 25.0, 2.5))

    def test_copies_of_the_key_are_not_others(self):
        pool = AKPool([K1, K1, K2])
        self.assertEqual(pool.snapshot(K1).others_usable, 1)
        self.assertEqual(pool.snapshot(K2).others_usable, 2)
        self.assertEqual(AKPool([K1, K1]).snapshot(K1), PoolSnapshot(2, 0, None, 0.0, 5.0))

    def test_a_key_not_in_the_pool_sees_every_key_as_other(self):
        self.assertEqual(AKPool([K1, K2]).snapshot(K3), PoolSnapshot(2, 2, 0.0, 0.0, 5.0))

    def test_snapshot_changes_nothing_and_is_frozen(self):
        clock = FakeClock()
        pool = AKPool([K1, K2], clock=clock)
        pool.mark_rate_limited(K1, 3)
        snap = pool.snapshot(K1)
        self.assertEqual([pool.next_key() for _ in range(3)], [K2, K2, K2])
        with self.assertRaises(AttributeError):
            snap.others_usable = 0
        self.assertNotIn(K1, repr(snap))
        self.assertEqual(snap.key_wait, 3.0)


class ValidationTest(unittest.TestCase):
    def test_bad_pools(self):
        cases = [
            ([], "empty"),
            (iter(()), "empty"),
            (K1, "list of keys"),
            (b"sk-bytes", "list of keys"),
            (None, "list of keys"),
            (42, "list of keys"),
            ([K1, ""], "key 1"),
            ([K1, None], "key 1"),
            ([K1, 7], "key 1"),
            ([K1 + "\n"], "whitespace"),
            (["sk-abc def-ghijklmnop"], "whitespace"),
        ]
        for keys, words in cases:
            with self.subTest(keys=type(keys).__name__):
                with self.assertRaises(ValueError) as cm:
                    AKPool(keys)
                self.assertIn(words, str(cm.exception))
                self.assertNotIn(K1, str(cm.exception))

    def test_bad_cooldown(self):
        for bad in (-1, "5", None, float("nan"), True):
            with self.assertRaises(ValueError):
                AKPool([K1], cooldown=bad)
        self.assertEqual(len(AKPool([K1], cooldown=0)), 1)


class MaskingTest(unittest.TestCase):
    def test_repr_and_str_masked(self):
        pool = AKPool(KEYS + ["sk-test-dddddddddddddddd4444"])
        for text in (repr(pool), str(pool), "%s" % pool, f"{[pool]!r}"):
            for key in pool.keys():
                self.assertNotIn(key, text)
        self.assertEqual(repr(pool), "AKPool(4 keys: sk-…1111, sk-…2222, sk-…3333, …)")
        pool.mark_invalid(K1, 401)
        self.assertIn("1 set aside", repr(pool))
        self.assertEqual(repr(AKPool([K1])), "AKPool(1 key: sk-…1111)")

    def test_keys_is_a_copy(self):
        pool = AKPool(KEYS)
        got = pool.keys()
        got.clear()
        self.assertEqual(pool.keys(), KEYS)
        self.assertFalse(hasattr(pool, "__iter__"))


class IndependentPoolsTest(unittest.TestCase):
    def test_shared_keys_do_not_share_state(self):
        clock = FakeClock()
        p1 = AKPool([K1, K2], clock=clock)
        p2 = AKPool([K2, K1], clock=clock)
        p1.mark_rate_limited(K1, 60)
        p1.mark_invalid(K2, 401)
        self.assertEqual([p2.next_key() for _ in range(4)], [K2, K1, K2, K1])
        self.assertEqual(p2.usable_count, 2)
        self.assertEqual(p2.set_aside, [])
        self.assertEqual(p1.next_key(), K1)
        self.assertEqual(p1.seconds_until_available(), 60.0)


class ClientWaitsForAFreeKeyTest(unittest.TestCase):
    """The client with a pool whose keys all cool down: wait for the first (injected sleep), or
    refuse at once when it is further away than a request waits."""

    def setUp(self):
        from openai2.testing import FakeServer

        self.server = FakeServer()
        self.server.start()
        self.addCleanup(self.server.stop)
        self.clock = FakeClock()
        self.delays = []

    def sleep(self, seconds, cancel):
        self.delays.append(seconds)
        self.clock.now += seconds  # the injected clock moves as far as the injected sleep

    def client(self, pool, **kw):
        from openai2 import OpenAI

        kw.setdefault("max_retries", 0)
        c = OpenAI(api_key=pool, base_url=self.server.base_url, sleep=self.sleep, **kw)
        self.addCleanup(c.close)
        return c

    def both_limited(self, client, retry_after):
        from openai2 import RateLimitError
        from openai2.testing import Reply

        self.server.replies.extend([Reply(status=429, headers={"Retry-After": retry_after})] * 2)
        with self.assertRaises(RateLimitError):
            self.ask(client)
        self.assertEqual(len(self.server.requests), 2)  # the second key was tried at once
        self.assertEqual(self.delays, [])

    def ask(self, client):
        return client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])

    def test_next_request_waits_for_the_first_free_key(self):
        pool = AKPool([K1, K2], clock=self.clock)
        c = self.client(pool)
        self.both_limited(c, "5")
        self.server.replies.append("ok")
        self.assertEqual(self.ask(c).choices[0].message.content, "ok")
        self.assertEqual(self.delays, [5.0])
        self.assertEqual(len(self.server.requests), 3)
        self.assertIn(self.server.requests[-1].headers["authorization"][7:], (K1, K2))

    def test_a_key_free_only_in_an_hour_is_refused_at_once(self):
        from openai2 import RateLimitError

        pool = AKPool([K1, K2], clock=self.clock)
        c = self.client(pool)
        self.both_limited(c, "3600")
        with self.assertRaises(RateLimitError) as cm:
            self.ask(c)
        self.assertEqual(self.delays, [])
        self.assertEqual(len(self.server.requests), 2)  # nothing more was sent
        text = str(cm.exception)
        self.assertIn("3600 s", text)
        self.assertIn("free again", text)
        for key in (K1, K2):
            self.assertNotIn(key, text)

    def test_the_wait_never_exceeds_the_read_timeout(self):
        from openai2 import RateLimitError

        pool = AKPool([K1, K2], clock=self.clock)
        c = self.client(pool, timeout=(5, 4))
        self.both_limited(c, "5")
        with self.assertRaises(RateLimitError) as cm:
            self.ask(c)
        self.assertIn("5.0 s", str(cm.exception))
        self.assertEqual(self.delays, [])

    def test_retries_stop_at_once_when_no_key_is_free_soon(self):
        from openai2 import RateLimitError
        from openai2.testing import Reply

        pool = AKPool([K1, K2], clock=self.clock)
        c = self.client(pool, max_retries=2)
        self.server.replies.extend([Reply(status=429, headers={"Retry-After": "3600"})] * 2)
        with self.assertRaises(RateLimitError) as cm:
            self.ask(c)
        self.assertEqual(self.delays, [])  # no minute-long sleep ahead of a certain 429
        self.assertEqual(len(self.server.requests), 2)
        self.assertIn("free again in 3600 s", str(cm.exception))

    def test_a_retry_waits_for_the_first_free_key(self):
        from openai2.testing import Reply

        pool = AKPool([K1, K2], clock=self.clock)
        c = self.client(pool, max_retries=1)
        self.server.replies.extend([Reply(status=429, headers={"Retry-After": "3"}), Reply(status=429, headers={"Retry-After": "30"}), "ok"])
        self.assertEqual(self.ask(c).choices[0].message.content, "ok")
        self.assertEqual(self.delays, [3.0])  # K1 is free after 3 s, whatever K2's Retry-After says
        self.assertEqual(self.server.requests[-1].headers["authorization"][7:], K1)

    def test_the_wait_is_cancellable(self):
        from openai2 import OpenAI, RequestCancelledError
        from openai2.transport import CancelScope

        pool = AKPool([K1, K2], clock=self.clock)
        pool.mark_rate_limited(K1, 5)
        pool.mark_rate_limited(K2, 5)
        c = OpenAI(api_key=pool, base_url=self.server.base_url, max_retries=0)  # the real sleep
        self.addCleanup(c.close)
        scope = CancelScope()
        scope.cancel()
        with self.assertRaises(RequestCancelledError):
            c.complete({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, cancel=scope)
        self.assertEqual(self.server.requests, [])


if __name__ == "__main__":
    unittest.main()
