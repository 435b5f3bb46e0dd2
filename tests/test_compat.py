"""Compatibility module-level api (``openai.api_key`` / ``ChatCompletion.create``): clients are
cached in a bounded LRU and share one transport (connection pool) per proxy setting."""
import unittest

import openai2
from openai2 import compat
from openai2.testing import FakeServer

MESSAGES = [{"role": "user", "content": "hi"}]
SETTINGS = ("api_key", "api_base", "organization", "proxy")


class CompatClientCacheTests(unittest.TestCase):
    def setUp(self):
        self.saved = {name: getattr(openai2, name, None) for name in SETTINGS}
        compat._compat_close_all()
        openai2.proxy = None
        openai2.organization = None

    def tearDown(self):
        compat._compat_close_all()
        for name, value in self.saved.items():
            setattr(openai2, name, value)

    def test_rotating_keys_share_one_connection_and_the_cache_is_bounded(self):
        with FakeServer() as srv:
            openai2.api_base = srv.base_url
            keys = ["sk-test-rotating-key-%04d" % i for i in range(compat._COMPAT_MAX_CLIENTS * 3)]
            for key in keys:
                openai2.api_key = key
                r = openai2.ChatCompletion.create(model="m", messages=MESSAGES)
                self.assertTrue(r.choices[0].message.content)
            self.assertEqual(len(srv.requests), len(keys))
            self.assertEqual([q.headers.get("authorization") for q in srv.requests], ["Bearer " + k for k in keys])
            self.assertEqual(srv.connection_count, 1)  # one pool, one kept-alive connection
            self.assertLessEqual(len(compat._compat_clients), compat._COMPAT_MAX_CLIENTS)
            self.assertEqual(len(compat._compat_transports), 1)
            transports = {id(c._transport) for c in compat._compat_clients.values()}
            self.assertEqual(transports, {id(next(iter(compat._compat_transports.values())))})

    def test_recently_used_client_is_kept(self):
        with FakeServer() as srv:
            openai2.api_base = srv.base_url
            openai2.api_key = "sk-test-first-0000"
            first = compat._compat_client()
            for i in range(compat._COMPAT_MAX_CLIENTS * 2):
                openai2.api_key = "sk-test-other-%04d" % i
                compat._compat_client()
                openai2.api_key = "sk-test-first-0000"
                self.assertIs(compat._compat_client(), first)
            openai2.api_key = "sk-test-other-0000"  # long evicted: a new client, same transport
            again = compat._compat_client()
            self.assertIs(again._transport, first._transport)

    def test_different_proxies_get_different_transports_closed_at_exit(self):
        with FakeServer() as srv:
            openai2.api_base = srv.base_url
            openai2.api_key = "sk-test-proxy-0000"
            direct = compat._compat_client()
            openai2.proxy = {"https": "http://127.0.0.1:9"}
            proxied = compat._compat_client()
            self.assertIsNot(direct._transport, proxied._transport)
            self.assertEqual(len(compat._compat_transports), 2)
            openai2.proxy = None
            openai2.ChatCompletion.create(model="m", messages=MESSAGES)
            self.assertEqual(direct._transport._tp_pool.idle_count(), 1)
            compat._compat_close_all()
            self.assertEqual(direct._transport._tp_pool.idle_count(), 0)
            self.assertEqual(len(compat._compat_clients), 0)
            self.assertEqual(len(compat._compat_transports), 0)


if __name__ == "__main__":
    unittest.main()
