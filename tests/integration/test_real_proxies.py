"""Real proxies from Debian (tinyproxy: HTTP + CONNECT; microsocks: SOCKS5 with and without
user/password) between openai2 (library and CLI) and the loopback fake server, plain HTTP and
HTTPS with the test CA.  The proxies' own logs must show each request."""
from __future__ import annotations

import os
import shutil
import unittest
from unittest import mock

from openai2 import Chat, OpenAI
from openai2.errors import APIConnectionError
from openai2.testing import FakeServer
from tests.integration.support import (
    CA,
    Microsocks,
    TempDir,
    Tinyproxy,
    figure,
    free_port,
    run_cli,
    server_tls_context,
    wait_for,
)

MISSING = [tool for tool in ("tinyproxy", "microsocks") if shutil.which(tool) is None]
KEY = "sk-proxytest-0123456789abcdef"


@unittest.skipIf(MISSING, "not installed: %s (make integration installs them)" % ", ".join(MISSING))
class RealProxies(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = TempDir()
        cls.plain = FakeServer().start()
        cls.tls = FakeServer(ssl_context=server_tls_context()).start()
        cls.tiny = Tinyproxy(cls.tmp.path, connect_ports=[cls.tls.port, cls.plain.port])
        cls.socks = Microsocks(cls.tmp.path)
        cls.socks_auth = Microsocks(cls.tmp.path, user="alice", password="s3cret")

    @classmethod
    def tearDownClass(cls) -> None:
        for thing in (cls.tiny, cls.socks, cls.socks_auth, cls.plain, cls.tls):
            thing.stop()
        cls.tmp.cleanup()

    def proxies(self):
        return [
            ("tinyproxy", self.tiny.url, self.tiny),
            ("microsocks socks5", self.socks.url, self.socks),
            ("microsocks socks5h", self.socks.url_h, self.socks),
            ("microsocks socks5h user:password", self.socks_auth.url_h, self.socks_auth),
            ("microsocks socks5 user:password", self.socks_auth.url, self.socks_auth),
        ]

    def targets(self):
        return [("http", self.plain), ("https", self.tls)]

    def assert_logged(self, proxy, before: int, server: FakeServer) -> None:
        """The proxy's own log grew and names the fake server's port."""
        ok = wait_for(lambda: len(proxy.log_text()) > before and (":%d" % server.port) in proxy.log_text()[before:], 5)
        self.assertTrue(ok, "proxy log shows no traffic to port %d:\n%s" % (server.port, proxy.log_text()[before:][-2000:]))

    def test_library_client_and_chat_through_each_proxy(self) -> None:
        for name, url, proxy in self.proxies():
            for scheme, server in self.targets():
                with self.subTest(proxy=name, scheme=scheme):
                    before = len(proxy.log_text())
                    seen = len(server.requests)
                    client = OpenAI(api_key=KEY, base_url=server.base_url, proxy=url, ca_file=CA, max_retries=0, timeout=10)
                    try:
                        r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "ping %s" % name}])
                        self.assertEqual(r.choices[0].message.content, "(demo) You said: ping %s" % name)
                        chat = Chat(client=client, model="m")
                        pieces = list(chat.stream_request("stream via %s" % name))
                        self.assertEqual("".join(pieces), "(demo) You said: stream via %s" % name)
                        self.assertEqual(len(chat), 2)
                    finally:
                        client.close()
                    self.assertEqual(len(server.requests), seen + 2)
                    self.assertEqual(server.requests[-1].headers.get("authorization"), "Bearer " + KEY)
                    self.assert_logged(proxy, before, server)
                    figure("proxy requests (library)", 2)

    def test_cli_through_each_proxy(self) -> None:
        for name, url, proxy in self.proxies():
            for scheme, server in self.targets():
                with self.subTest(proxy=name, scheme=scheme):
                    home = TempDir()
                    try:
                        before = len(proxy.log_text())
                        r = run_cli(home.path, "chat", "cli via %s" % name, "--proxy", url, "--base-url", server.base_url,
                                    "--ca-file", CA, "--api-key", KEY, "--model", "m")
                        self.assertEqual(r.returncode, 0, r.stderr)
                        self.assertIn("(demo) You said: cli via %s" % name, r.stdout)
                        self.assertNotIn(KEY, r.stdout + r.stderr)
                        self.assert_logged(proxy, before, server)
                        figure("proxy requests (CLI)")
                    finally:
                        home.cleanup()

    def test_environment_proxies_and_no_proxy(self) -> None:
        for scheme, server in self.targets():
            var = "HTTPS_PROXY" if scheme == "https" else "HTTP_PROXY"
            with self.subTest(scheme=scheme, via="environment"):
                before = len(self.tiny.log_text())
                with mock.patch.dict(os.environ, {var: self.tiny.url, "NO_PROXY": ""}):
                    client = OpenAI(api_key=KEY, base_url=server.base_url, ca_file=CA, max_retries=0, timeout=10)
                r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "env"}])
                client.close()
                self.assertEqual(r.choices[0].message.content, "(demo) You said: env")
                self.assert_logged(self.tiny, before, server)
            with self.subTest(scheme=scheme, via="NO_PROXY bypass"):
                before = len(self.tiny.log_text())
                host = "localhost" if scheme == "https" else "127.0.0.1"
                with mock.patch.dict(os.environ, {var: self.tiny.url, "NO_PROXY": "example.invalid," + host}):
                    client = OpenAI(api_key=KEY, base_url=server.base_url, ca_file=CA, max_retries=0, timeout=10)
                r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "direct"}])
                client.close()
                self.assertEqual(r.choices[0].message.content, "(demo) You said: direct")
                self.assertTrue(server.requests[-1].path.startswith("/"), "went through a proxy: %s" % server.requests[-1].path)
                self.assertEqual(self.tiny.log_text()[before:].count(":%d" % server.port), 0)
            with self.subTest(scheme=scheme, via="CLI environment"):
                home = TempDir()
                try:
                    before = len(self.tiny.log_text())
                    r = run_cli(home.path, "chat", "cli env", "--base-url", server.base_url, "--ca-file", CA,
                                "--api-key", KEY, "--model", "m", "--no-save", env_extra={var: self.tiny.url})
                    self.assertEqual(r.returncode, 0, r.stderr)
                    self.assertIn("(demo) You said: cli env", r.stdout)
                    self.assert_logged(self.tiny, before, server)
                finally:
                    home.cleanup()
            figure("proxy requests (environment / NO_PROXY)", 3)

    def test_refusing_proxy_is_named(self) -> None:
        strict = Tinyproxy(self.tmp.path, allow="192.0.2.1", connect_ports=[self.tls.port])  # our 127.0.0.1 is not allowed
        closed = "http://127.0.0.1:%d" % free_port()
        try:
            cases = [("tinyproxy Allow mismatch", strict.url), ("closed port", closed),
                     ("closed socks port", "socks5h://127.0.0.1:%d" % free_port())]
            for why, url in cases:
                for scheme, server in self.targets():
                    with self.subTest(why=why, scheme=scheme):
                        client = OpenAI(api_key=KEY, base_url=server.base_url, proxy=url, ca_file=CA, max_retries=0, timeout=5)
                        try:
                            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
                        except Exception as exc:  # noqa: BLE001 - the type is what is checked
                            error = exc
                        else:
                            self.fail("a refusing proxy let the request through")
                        finally:
                            client.close()
                        message = str(error)
                        # Known bug (reported): plain http:// through tinyproxy that denies the client
                        # comes back as PermissionDeniedError 403 "from the API", proxy not named.
                        self.assertIsInstance(error, APIConnectionError,
                                              "%s instead of APIConnectionError: %s" % (type(error).__name__, message))
                        port = url.rsplit(":", 1)[1]
                        self.assertIn("proxy", message.lower(), message)
                        self.assertIn(port, message, "the message does not name the proxy: %s" % message)
                        self.assertNotIn(KEY, message)
                        figure("faults: refusing proxies")
        finally:
            strict.stop()


if __name__ == "__main__":
    unittest.main()
