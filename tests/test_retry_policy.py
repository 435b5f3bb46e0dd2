"""The retry and key-failover policy as a table: decide_retry / decide_pool_wait, no HTTP at all.

Each row is written by hand from the rules in client.py's docstrings and README's "Errors and
retries" and "A pool of API keys": status x headers x pool state x attempt -> the decision.
Then one check that OpenAI.post applies what the policy decides (in memory, no sockets).
"""
import unittest
from email.utils import formatdate

import openai2.client as client_module
from openai2 import AKPool, OpenAI
from openai2.client import RetryDecision, decide_pool_wait, decide_retry
from openai2.keypool import PoolSnapshot
from openai2.testing import MemoryTransport, Reply

NOW = 1_000_000.0  # the wall clock handed to the policy (for Retry-After HTTP dates)


def pool(size=2, others=1, others_wait=0.0, key_wait=0.0, cooldown=5.0):
    return PoolSnapshot(size, others, others_wait, key_wait, cooldown)


# (name, arguments for decide_retry, expected (action, delay, key_action, cool_down), hint part)
# Arguments not given: attempt 0, max_retries 2, no headers, no code, no pool, failovers 0,
# read timeout 600 s, jitter 0 (the backoff's full value: 0.5 s doubling, capped at 8 s).
RETRY_TABLE = [
    # -- connection errors: backoff, within max_retries, only when retryable
    ("connection error, first retry", {"status": None}, ("retry", 0.5, None, None), None),
    ("connection error, full jitter takes 25 % off", {"status": None, "attempt": 1, "jitter": 1.0}, ("retry", 0.75, None, None), None),
    ("connection error, backoff capped at 8 s", {"status": None, "attempt": 5, "max_retries": 9}, ("retry", 8.0, None, None), None),
    ("connection error, retries used up", {"status": None, "attempt": 2}, ("raise", 0.0, None, None), None),
    ("connection error, not retryable", {"status": None, "retryable": False}, ("raise", 0.0, None, None), None),
    ("connection error, max_retries 0", {"status": None, "max_retries": 0}, ("raise", 0.0, None, None), None),
    ("connection error ignores the pool", {"status": None, "pool": pool()}, ("retry", 0.5, None, None), None),
    # -- statuses without a pool
    ("500 retried", {"status": 500}, ("retry", 0.5, None, None), None),
    ("503 second retry doubles", {"status": 503, "attempt": 1}, ("retry", 1.0, None, None), None),
    ("599 retried", {"status": 599}, ("retry", 0.5, None, None), None),
    ("408 retried", {"status": 408}, ("retry", 0.5, None, None), None),
    ("409 retried", {"status": 409}, ("retry", 0.5, None, None), None),
    ("429 retried", {"status": 429}, ("retry", 0.5, None, None), None),
    ("400 never", {"status": 400}, ("raise", 0.0, None, None), None),
    ("401 never", {"status": 401}, ("raise", 0.0, None, None), None),
    ("403 never", {"status": 403}, ("raise", 0.0, None, None), None),
    ("404 never", {"status": 404}, ("raise", 0.0, None, None), None),
    ("413 never", {"status": 413}, ("raise", 0.0, None, None), None),
    ("422 never", {"status": 422}, ("raise", 0.0, None, None), None),
    ("500, retries used up", {"status": 500, "attempt": 2}, ("raise", 0.0, None, None), None),
    ("500, max_retries 0", {"status": 500, "max_retries": 0}, ("raise", 0.0, None, None), None),
    ("429 insufficient_quota never", {"status": 429, "code": "insufficient_quota"}, ("raise", 0.0, None, None), None),
    ("500 x-should-retry false", {"status": 500, "headers": {"x-should-retry": "false"}}, ("raise", 0.0, None, None), None),
    ("400 x-should-retry true", {"status": 400, "headers": {"x-should-retry": "true"}}, ("retry", 0.5, None, None), None),
    ("x-should-retry true beats insufficient_quota (no pool)", {"status": 429, "code": "insufficient_quota", "headers": {"x-should-retry": "true"}}, ("retry", 0.5, None, None), None),
    ("x-should-retry true still within max_retries", {"status": 400, "attempt": 2, "headers": {"x-should-retry": "true"}}, ("raise", 0.0, None, None), None),
    # -- Retry-After and retry-after-ms: they win over the backoff, up to 60 s
    ("Retry-After seconds", {"status": 429, "headers": {"retry-after": "3"}}, ("retry", 3.0, None, None), None),
    ("Retry-After fractional", {"status": 503, "headers": {"retry-after": "0.25"}}, ("retry", 0.25, None, None), None),
    ("Retry-After 0: at once", {"status": 429, "headers": {"retry-after": "0"}}, ("retry", 0.0, None, None), None),
    ("Retry-After capped at 60 s", {"status": 429, "headers": {"retry-after": "3600"}}, ("retry", 60.0, None, None), None),
    ("retry-after-ms wins over Retry-After", {"status": 429, "headers": {"retry-after-ms": "1500", "retry-after": "10"}}, ("retry", 1.5, None, None), None),
    ("retry-after-ms unreadable: Retry-After", {"status": 429, "headers": {"retry-after-ms": "soon", "retry-after": "2"}}, ("retry", 2.0, None, None), None),
    ("Retry-After negative: backoff", {"status": 429, "attempt": 1, "headers": {"retry-after": "-5"}}, ("retry", 1.0, None, None), None),
    ("Retry-After unreadable: backoff", {"status": 500, "headers": {"retry-after": "later"}}, ("retry", 0.5, None, None), None),
    ("Retry-After HTTP date, from now", {"status": 429, "headers": {"retry-after": formatdate(NOW + 30, usegmt=True)}}, ("retry", 30.0, None, None), None),
    ("Retry-After HTTP date in the past: backoff", {"status": 429, "headers": {"retry-after": formatdate(NOW - 30, usegmt=True)}}, ("retry", 0.5, None, None), None),
    ("Retry-After on a 400 changes nothing", {"status": 400, "headers": {"retry-after": "1"}}, ("raise", 0.0, None, None), None),
    # -- a pool: 401/403/insufficient_quota set the key aside and move on, costing no retry
    ("pool 401, another key: next key", {"status": 401, "pool": pool()}, ("next_key", 0.0, "set_aside", None), None),
    ("pool 403, another key: next key", {"status": 403, "pool": pool(size=3, others=2)}, ("next_key", 0.0, "set_aside", None), None),
    ("pool 401 even with retries used up", {"status": 401, "attempt": 2, "pool": pool()}, ("next_key", 0.0, "set_aside", None), None),
    ("pool 401, other key cooling: still next key", {"status": 401, "pool": pool(others_wait=30.0)}, ("next_key", 0.0, "set_aside", None), None),
    ("pool 401, last usable key: raise", {"status": 401, "pool": pool(size=2, others=0, others_wait=None)}, ("raise", 0.0, "set_aside", None), None),
    ("pool 403, single key: raise", {"status": 403, "pool": pool(size=1, others=0, others_wait=None)}, ("raise", 0.0, "set_aside", None), None),
    ("pool insufficient_quota: set aside, next key", {"status": 429, "code": "insufficient_quota", "pool": pool()}, ("next_key", 0.0, "set_aside", None), None),
    ("pool insufficient_quota beats x-should-retry", {"status": 429, "code": "insufficient_quota", "headers": {"x-should-retry": "true"}, "pool": pool(others=0, others_wait=None)}, ("raise", 0.0, "set_aside", None), None),
    ("pool 404: neither key action nor retry", {"status": 404, "pool": pool()}, ("raise", 0.0, None, None), None),
    ("pool 500: plain backoff, key kept", {"status": 500, "pool": pool(others_wait=None)}, ("retry", 0.5, None, None), None),
    # -- a pool and a 429: cool the key down, move on at once while another key is free
    ("pool 429 no Retry-After: default cooldown, next key", {"status": 429, "pool": pool()}, ("next_key", 0.0, "cool_down", 5.0), None),
    ("pool 429 pool's own cooldown", {"status": 429, "pool": pool(cooldown=0.5)}, ("next_key", 0.0, "cool_down", 0.5), None),
    ("pool 429 Retry-After: cool down that long", {"status": 429, "headers": {"retry-after": "3"}, "pool": pool()}, ("next_key", 0.0, "cool_down", 3.0), None),
    ("pool 429 retry-after-ms", {"status": 429, "headers": {"retry-after-ms": "250"}, "pool": pool()}, ("next_key", 0.0, "cool_down", 0.25), None),
    ("pool 429 Retry-After above an hour: an hour", {"status": 429, "headers": {"retry-after": "7200"}, "pool": pool()}, ("next_key", 0.0, "cool_down", 3600.0), None),
    ("pool 429 Retry-After negative: default cooldown", {"status": 429, "headers": {"retry-after": "-5"}, "pool": pool()}, ("next_key", 0.0, "cool_down", 5.0), None),
    ("pool 429 HTTP date", {"status": 429, "headers": {"retry-after": formatdate(NOW + 30, usegmt=True)}, "pool": pool()}, ("next_key", 0.0, "cool_down", 30.0), None),
    ("pool 429 next key even with retries used up", {"status": 429, "attempt": 2, "pool": pool()}, ("next_key", 0.0, "cool_down", 5.0), None),
    ("pool 429 third key after a failover", {"status": 429, "failovers": 1, "pool": pool(size=3, others=2)}, ("next_key", 0.0, "cool_down", 5.0), None),
    ("pool 429 Retry-After 0: this key is free again", {"status": 429, "headers": {"retry-after": "0"}, "pool": pool(others_wait=10.0)}, ("next_key", 0.0, "cool_down", 0.0), None),
    # -- failovers used up (size - 1) or every key cooling: wait for the first free key
    ("pool 429 failovers used up, other key free: Retry-After delay", {"status": 429, "failovers": 1, "headers": {"retry-after": "3"}, "pool": pool()}, ("retry", 3.0, "cool_down", 3.0), None),
    ("pool 429 failovers used up: backoff", {"status": 429, "failovers": 1, "pool": pool(cooldown=0.0)}, ("retry", 0.5, "cool_down", 0.0), None),
    ("pool 429 every key cooling: wait for the first", {"status": 429, "failovers": 1, "headers": {"retry-after": "30"}, "pool": pool(others_wait=3.0)}, ("retry", 3.0, "cool_down", 30.0), None),
    ("pool 429 this key is the first free", {"status": 429, "failovers": 1, "headers": {"retry-after": "2"}, "pool": pool(others_wait=40.0)}, ("retry", 2.0, "cool_down", 2.0), None),
    ("pool 429 other keys cooling, none free: no failover", {"status": 429, "headers": {"retry-after": "30"}, "pool": pool(size=3, others=2, others_wait=7.0)}, ("retry", 7.0, "cool_down", 30.0), None),
    ("single-key pool 429: wait its cooldown", {"status": 429, "pool": pool(size=1, others=0, others_wait=None)}, ("retry", 5.0, "cool_down", 5.0), None),
    ("single-key pool 429 Retry-After 0: at once", {"status": 429, "headers": {"retry-after": "0"}, "pool": pool(size=1, others=0, others_wait=None)}, ("retry", 0.0, "cool_down", 0.0), None),
    ("duplicates only: size 2, no other key", {"status": 429, "headers": {"retry-after": "1"}, "pool": pool(size=2, others=0, others_wait=None)}, ("retry", 1.0, "cool_down", 1.0), None),
    ("a longer cool-down in force is kept", {"status": 429, "headers": {"retry-after": "2"}, "pool": pool(size=1, others=0, others_wait=None, key_wait=20.0)}, ("retry", 20.0, "cool_down", 2.0), None),
    ("pool wait up to 60 s is waited", {"status": 429, "failovers": 1, "headers": {"retry-after": "60"}, "pool": pool(others_wait=60.0)}, ("retry", 60.0, "cool_down", 60.0), None),
    # -- ... or give up at once, saying when a key is free
    ("pool 429 first free key in an hour: raise now", {"status": 429, "failovers": 1, "headers": {"retry-after": "3600"}, "pool": pool(others_wait=3600.0)}, ("raise", 0.0, "cool_down", 3600.0), "free again in 3600 s"),
    ("pool wait above 60 s: raise", {"status": 429, "failovers": 1, "headers": {"retry-after": "61"}, "pool": pool(others_wait=61.0)}, ("raise", 0.0, "cool_down", 61.0), "free again in 61 s"),
    ("pool wait above the read timeout: raise", {"status": 429, "failovers": 1, "read_timeout": 4.0, "headers": {"retry-after": "5"}, "pool": pool(others_wait=5.0)}, ("raise", 0.0, "cool_down", 5.0), "free again in 5.0 s"),
    ("pool wait within the read timeout", {"status": 429, "failovers": 1, "read_timeout": 5.0, "headers": {"retry-after": "5"}, "pool": pool(others_wait=5.0)}, ("retry", 5.0, "cool_down", 5.0), None),
    ("pool 429 retries used up: raise with when", {"status": 429, "attempt": 2, "failovers": 1, "headers": {"retry-after": "5"}, "pool": pool(others_wait=5.0)}, ("raise", 0.0, "cool_down", 5.0), "free again in 5.0 s"),
    ("pool 429 x-should-retry false: raise with when", {"status": 429, "failovers": 1, "headers": {"x-should-retry": "false", "retry-after": "3"}, "pool": pool(others_wait=3.0)}, ("raise", 0.0, "cool_down", 3.0), "free again in 3.0 s"),
    ("pool 429 a key free, retries used up: no hint", {"status": 429, "attempt": 2, "failovers": 1, "pool": pool(cooldown=0.0)}, ("raise", 0.0, "cool_down", 0.0), None),
]

# (name, (wait, waited, read_timeout), expected (action, delay))
POOL_WAIT_TABLE = [
    ("a key is free", (0.0, 0.0, 600.0), ("send", 0.0)),
    ("a key is long free", (-1.0, 0.0, 600.0), ("send", 0.0)),
    ("wait for the first free key", (5.0, 0.0, 600.0), ("wait", 5.0)),
    ("up to 60 s", (60.0, 0.0, 600.0), ("wait", 60.0)),
    ("beyond 60 s: refuse at once", (61.0, 0.0, 600.0), ("raise", 0.0)),
    ("never longer than the read timeout", (5.0, 0.0, 4.0), ("raise", 0.0)),
    ("exactly the read timeout", (4.0, 0.0, 4.0), ("wait", 4.0)),
    ("60 s in all, counting what was waited", (30.0, 40.0, 600.0), ("raise", 0.0)),
    ("60 s in all, exactly", (30.0, 30.0, 600.0), ("wait", 30.0)),
]


class DecideRetryTableTest(unittest.TestCase):
    def test_table(self):
        for name, given, expected, hint in RETRY_TABLE:
            args = {"attempt": 0, "max_retries": 2, "read_timeout": 600.0, "now": NOW, "jitter": 0.0}
            args.update(given)
            with self.subTest(name):
                decision = decide_retry(**args)
                action, delay, key_action, cool_down = expected
                self.assertEqual(decision.action, action)
                self.assertAlmostEqual(decision.delay, delay, delta=1.5 if "date" in name else 1e-9)
                self.assertEqual(decision.key_action, key_action)
                if cool_down is None:
                    self.assertIsNone(decision.cool_down)
                else:
                    self.assertAlmostEqual(decision.cool_down, cool_down, delta=1.5 if "date" in name else 1e-9)
                if hint is None:
                    self.assertIsNone(decision.hint)
                else:
                    self.assertIn(hint, decision.hint)
                self.assertTrue(decision.reason)
                if args["status"] is not None:
                    self.assertIn(str(args["status"]), decision.reason)

    def test_the_table_covers_every_action(self):
        self.assertGreaterEqual(len(RETRY_TABLE), 60)
        self.assertEqual({row[2][0] for row in RETRY_TABLE}, {"retry", "next_key", "raise"})
        self.assertEqual({row[2][2] for row in RETRY_TABLE}, {None, "set_aside", "cool_down"})

    def test_retry_reason_says_which_retry_and_when(self):
        decision = decide_retry(attempt=1, max_retries=3, status=503, now=NOW, jitter=0.0)
        self.assertEqual(decision.reason, "HTTP 503, retry 2/3 in 1.00s")
        decision = decide_retry(attempt=0, max_retries=2, status=None, now=NOW, jitter=0.0)
        self.assertEqual(decision.reason, "connection failed, retry 1/2 in 0.50s")

    def test_pure_same_arguments_same_decision(self):
        args = {"attempt": 0, "max_retries": 2, "status": 429, "headers": {"retry-after": "3"}, "pool": pool(), "now": NOW, "jitter": 0.3}
        self.assertEqual(decide_retry(**args), decide_retry(**args))
        self.assertEqual(decide_retry(**args), RetryDecision("next_key", "rate limited (429); moving to the next key", 0.0, "cool_down", 3.0))

    def test_decision_is_frozen(self):
        decision = decide_retry(attempt=0, max_retries=2, status=500)
        with self.assertRaises(AttributeError):
            decision.action = "raise"
        self.assertIn("retry", repr(decision))


class DecidePoolWaitTableTest(unittest.TestCase):
    def test_table(self):
        for name, (wait, waited, read_timeout), (action, delay) in POOL_WAIT_TABLE:
            with self.subTest(name):
                decision = decide_pool_wait(wait, waited, read_timeout)
                self.assertEqual((decision.action, decision.delay), (action, delay))
                self.assertTrue(decision.reason)


K1 = "sk-policy-aaaaaaaaaaaa1111"
K2 = "sk-policy-bbbbbbbbbbbb2222"


class PostFollowsTheDecisionTest(unittest.TestCase):
    """post() does what the policy says, whatever it says: the policy is swapped for a script."""

    def setUp(self):
        self.delays = []
        self.calls = []
        self.script = []
        self.clock = [0.0]
        real = client_module.decide_retry

        def scripted(**kw):
            self.calls.append(kw)
            return self.script.pop(0) if self.script else real(**kw)

        client_module.decide_retry = scripted
        self.addCleanup(setattr, client_module, "decide_retry", real)

    def sleep(self, seconds, cancel):
        self.delays.append(seconds)
        self.clock[0] += seconds  # the pool's clock moves as far as the injected sleep

    def ask(self, client):
        return client.complete({"model": "m", "messages": [{"role": "user", "content": "hi"}]})

    def test_post_applies_retry_next_key_and_raise(self):
        keys = AKPool([K1, K2], clock=lambda: self.clock[0])
        transport = MemoryTransport([Reply(status=400), Reply(status=400), Reply(status=500), "not reached"])
        c = OpenAI(api_key=keys, base_url="https://api.test/v1", transport=transport, max_retries=5, sleep=self.sleep)
        self.script = [
            # a 400, which the real policy never retries: retried after 1.25 s, the key cooled 7 s
            RetryDecision("retry", "scripted", 1.25, "cool_down", 7.0),
            # a 400 again: moved on to the next key, this one set aside
            RetryDecision("next_key", "scripted", 0.0, "set_aside"),
            # a 500, which the real policy retries: raised at once
            RetryDecision("raise", "scripted", hint="scripted hint"),
        ]
        with self.assertRaises(Exception) as cm:
            self.ask(c)
        self.assertEqual(cm.exception.status_code, 500)
        self.assertIn("scripted hint", str(cm.exception))
        # the retry's 1.25 s; none for next_key; then K1's scripted 7 s cool-down, to its end
        self.assertEqual(self.delays, [1.25, 5.75])
        sent = [r.headers["authorization"][7:] for r in transport.requests]
        self.assertEqual(sent, [K1, K2, K1])
        self.assertEqual(keys.usable_count, 1)
        self.assertEqual([status for _, status in keys.set_aside], [400])  # K2, with the status
        # what the policy was told: the attempt counts retries, failovers count cool-down moves
        self.assertEqual([(k["status"], k["attempt"], k["failovers"]) for k in self.calls], [(400, 0, 0), (400, 1, 0), (500, 1, 0)])
        self.assertEqual(self.calls[0]["pool"], PoolSnapshot(2, 1, 0.0, 0.0, 5.0))
        self.assertEqual(self.calls[0]["read_timeout"], c.timeout.read)
        self.assertTrue(0.0 <= self.calls[0]["jitter"] < 1.0)

    def test_post_counts_failovers_and_passes_connection_errors(self):
        transport = MemoryTransport([Reply(status=429), Reply(status=429), "ok"])
        keys = AKPool([K1, K2], clock=lambda: self.clock[0])
        c = OpenAI(api_key=keys, base_url="https://api.test/v1", transport=transport, sleep=self.sleep)
        self.script = [
            RetryDecision("next_key", "scripted", 0.0, "cool_down", 0.0),
            RetryDecision("retry", "scripted", 0.5),
        ]
        self.assertEqual(self.ask(c)["choices"][0]["message"]["content"], "ok")
        self.assertEqual([(k["attempt"], k["failovers"]) for k in self.calls], [(0, 0), (0, 1)])
        self.assertEqual(self.delays, [0.5])

    def test_a_connection_reset_is_decided_too(self):
        from openai2 import APIConnectionError

        transport = MemoryTransport([Reply(reset=True), Reply(reset=True), "not reached"])
        c = OpenAI(api_key=K1, base_url="https://api.test/v1", transport=transport, max_retries=3, sleep=self.sleep)
        self.script = [RetryDecision("retry", "scripted", 0.125), RetryDecision("raise", "scripted")]
        with self.assertRaises(APIConnectionError):
            self.ask(c)
        self.assertEqual([(k["status"], k["attempt"], k["pool"]) for k in self.calls], [(None, 0, None), (None, 1, None)])
        self.assertEqual(self.delays, [0.125])
        self.assertEqual(len(transport.requests), 2)


if __name__ == "__main__":
    unittest.main()
