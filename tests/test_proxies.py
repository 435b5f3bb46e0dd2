"""Proxy tests: HTTP CONNECT / absolute-URI, https:// proxies, SOCKS5 (socks5 vs socks5h, auth),
environment proxies with NO_PROXY, and refusing or absent proxies — all on loopback."""
import os
import socket
import unittest

from openai2.errors import APIConnectionError
from openai2.transport import HTTPTransport, Timeout
from tests.support.proxies import ConnectProxy, OriginServer, Socks5Proxy

HERE = os.path.dirname(os.path.abspath(__file__))
CERTS = os.path.join(HERE, "certs")
CA = os.path.join(CERTS, "ca.pem")
SERVER_CERT = (os.path.join(CERTS, "server.pem"), os.path.join(CERTS, "server.key"))
T = Timeout(2.0, 5.0)
KEY = "sk-proxy-test-SECRET-abcdef0123456789"
PROXY_PASSWORD = "pr0xy-SECRET-pw"
ENV_NAMES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def get(t, url, **kw):
    kw.setdefault("headers", {"Authorization": "Bearer " + KEY})
    kw.setdefault("body", None)
    kw.setdefault("timeout", T)
    return t.request(kw.pop("method", "GET"), url, **kw)


def tls_origin():
    return OriginServer(certfile=SERVER_CERT[0], keyfile=SERVER_CERT[1], host="localhost")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class HTTPProxyTests(unittest.TestCase):
    def test_plain_http_uses_absolute_uri(self):
        with OriginServer() as o, ConnectProxy() as p:
            t = HTTPTransport(proxy=p.url)
            r = get(t, o.url("/v1/models"), method="POST", body=b"{}")
            self.assertIn(b"/v1/models", r.read())
            self.assertEqual(p.log, [("POST", o.url("/v1/models"))])
            self.assertEqual(o.requests[0].headers["authorization"], "Bearer " + KEY)
            self.assertGreater(p.bytes_up, 0)
            self.assertGreater(p.bytes_down, 0)

    def test_proxy_auth_sent_to_proxy_only(self):
        with OriginServer() as o, ConnectProxy(auth=("user", PROXY_PASSWORD)) as p:
            t = HTTPTransport(proxy="http://user:%s@127.0.0.1:%d" % (PROXY_PASSWORD, p.port))
            get(t, o.url("/plain")).read()
            self.assertTrue(p.auth_headers[0].startswith("Basic "))
            self.assertNotIn("proxy-authorization", o.requests[0].headers)
            self.assertNotIn(PROXY_PASSWORD, repr(t))

    def test_https_through_connect_tunnel_with_keep_alive(self):
        with tls_origin() as o, ConnectProxy(auth=("u", PROXY_PASSWORD)) as p:
            t = HTTPTransport(proxy="http://u:%s@127.0.0.1:%d" % (PROXY_PASSWORD, p.port), ca_file=CA)
            for i in range(3):
                self.assertIn(b"/s%d" % i, get(t, o.url("/s%d" % i)).read())
            self.assertEqual(p.log, [("CONNECT", "localhost:%d" % o.port)])
            self.assertEqual(p.connections, 1)
            self.assertEqual(o.connections, 1)
            self.assertEqual(o.requests[0].headers["authorization"], "Bearer " + KEY)
            self.assertGreater(p.bytes_down, 0)

    def test_wrong_proxy_password_names_proxy_masked(self):
        with tls_origin() as o, ConnectProxy(auth=("u", "right")) as p:
            t = HTTPTransport(proxy="http://u:%s@127.0.0.1:%d" % (PROXY_PASSWORD, p.port), ca_file=CA)
            with self.assertRaises(APIConnectionError) as cm:
                get(t, o.url("/"))
            msg = str(cm.exception)
            self.assertIn("http://u:****@127.0.0.1:%d" % p.port, msg)
            self.assertIn("407", msg)
            self.assertNotIn(PROXY_PASSWORD, msg)
        with OriginServer() as o, ConnectProxy(auth=("u", "right")) as p:  # absolute-URI mode
            t = HTTPTransport(proxy="http://u:%s@127.0.0.1:%d" % (PROXY_PASSWORD, p.port))
            with self.assertRaises(APIConnectionError) as cm:
                get(t, o.url("/"))
            self.assertIn("407", str(cm.exception))
            self.assertNotIn(PROXY_PASSWORD, str(cm.exception))

    def test_refusing_proxy_is_named(self):
        with tls_origin() as o, ConnectProxy(refuse=True) as p:
            with self.assertRaises(APIConnectionError) as cm:
                get(HTTPTransport(proxy=p.url, ca_file=CA), o.url("/"))
            self.assertIn("Proxy %s refused" % p.url, str(cm.exception))
            self.assertIn("403", str(cm.exception))
            self.assertEqual(o.requests, [])

    def test_refusing_proxy_for_plain_http_is_named(self):
        with OriginServer() as o, ConnectProxy(refuse=True) as p:
            with self.assertRaises(APIConnectionError) as cm:
                get(HTTPTransport(proxy=p.url), o.url("/v1/chat"))
            self.assertIn("Proxy %s refused the request (403" % p.url, str(cm.exception))
            self.assertEqual(o.requests, [])

    def test_origin_403_through_proxy_stays_a_response(self):
        def app(h, rec):
            h.reply(403, b'{"error": {"message": "no access"}}')

        with OriginServer(app) as o, ConnectProxy() as p:
            r = get(HTTPTransport(proxy=p.url), o.url("/v1/chat"))
            self.assertEqual(r.status, 403)
            self.assertIn(b"no access", r.read())

    def test_absent_proxy_is_named_not_the_api_host(self):
        port = free_port()
        with self.assertRaises(APIConnectionError) as cm:
            get(HTTPTransport(proxy="http://u:%s@127.0.0.1:%d" % (PROXY_PASSWORD, port)), "https://api.example.invalid/v1")
        msg = str(cm.exception)
        self.assertIn("proxy http://u:****@127.0.0.1:%d" % port, msg)
        self.assertIn("refused", msg)
        self.assertNotIn("api.example.invalid", msg)
        self.assertNotIn(PROXY_PASSWORD, msg)

    def test_https_proxy_tls_to_the_proxy(self):
        # the proxy itself speaks TLS (certificate for localhost); the origin is http, then https
        with ConnectProxy(certfile=SERVER_CERT[0], keyfile=SERVER_CERT[1]) as p:
            self.assertTrue(p.url.startswith("https://localhost:"))
            t = HTTPTransport(proxy=p.url, ca_file=CA)
            with OriginServer() as o:
                self.assertIn(b"/plain", get(t, o.url("/plain")).read())
                self.assertEqual(p.log[-1], ("GET", o.url("/plain")))
            with tls_origin() as o:  # TLS inside TLS
                for _ in range(2):
                    self.assertIn(b"/inner", get(t, o.url("/inner")).read())
                self.assertEqual(p.log[-1], ("CONNECT", "localhost:%d" % o.port))
                self.assertEqual(o.connections, 1)

    def test_unsupported_proxy_scheme(self):
        with self.assertRaises(ValueError):
            HTTPTransport(proxy="socks4://127.0.0.1:1080")


class Socks5Tests(unittest.TestCase):
    def test_socks5h_sends_the_name(self):
        with OriginServer() as o, Socks5Proxy() as s:
            t = HTTPTransport(proxy=s.url("socks5h"))
            for _ in range(2):
                get(t, "http://localhost:%d/h" % o.port).read()
            self.assertEqual(s.targets, [("localhost", o.port)])
            self.assertEqual(s.resolved_by_proxy, [True])
            self.assertGreater(s.bytes_up, 0)

    def test_socks5_resolves_locally(self):
        with OriginServer() as o, Socks5Proxy() as s:
            get(HTTPTransport(proxy=s.url("socks5")), "http://localhost:%d/l" % o.port).read()
            self.assertEqual(s.resolved_by_proxy, [False])
            self.assertIn(s.targets[0][0], ("127.0.0.1", "::1"))

    def test_socks5_local_dns_failure_suggests_socks5h(self):
        with Socks5Proxy() as s:
            with self.assertRaises(APIConnectionError) as cm:
                get(HTTPTransport(proxy=s.url("socks5")), "http://nowhere.invalid/")
            self.assertIn("nowhere.invalid", str(cm.exception))
            self.assertIn("socks5h", str(cm.exception))
            self.assertEqual(s.targets, [])

    def test_user_password(self):
        with OriginServer() as o, Socks5Proxy(auth=("alice", PROXY_PASSWORD)) as s:
            t = HTTPTransport(proxy=s.url("socks5h", ("alice", PROXY_PASSWORD)))
            self.assertIn(b"/auth", get(t, o.url("/auth")).read())
            self.assertEqual(s.auth_log, [("alice", PROXY_PASSWORD)])

    def test_wrong_password_and_missing_password(self):
        with OriginServer() as o, Socks5Proxy(auth=("alice", "right")) as s:
            with self.assertRaises(APIConnectionError) as cm:
                get(HTTPTransport(proxy=s.url("socks5h", ("alice", PROXY_PASSWORD))), o.url("/"))
            self.assertIn("socks5h://alice:****@127.0.0.1:%d" % s.port, str(cm.exception))
            self.assertIn("rejected", str(cm.exception))
            self.assertNotIn(PROXY_PASSWORD, str(cm.exception))
            with self.assertRaises(APIConnectionError) as cm:
                get(HTTPTransport(proxy=s.url("socks5h")), o.url("/"))
            self.assertIn("user:password", str(cm.exception))

    def test_reply_code_is_explained(self):
        with Socks5Proxy(reply_code=5) as s:
            with self.assertRaises(APIConnectionError) as cm:
                get(HTTPTransport(proxy=s.url("socks5h")), "http://api.example.invalid/v1")
            msg = str(cm.exception)
            self.assertIn(s.url("socks5h"), msg)
            self.assertIn("connection refused (reply code 5)", msg)
            self.assertEqual(cm.exception.reply_code, 5)

    def test_https_through_socks(self):
        with tls_origin() as o, Socks5Proxy() as s:
            t = HTTPTransport(proxy=s.url("socks5h"), ca_file=CA)
            for _ in range(2):
                self.assertIn(b"/tls", get(t, o.url("/tls")).read())
            self.assertEqual(s.targets, [("localhost", o.port)])
            self.assertEqual(o.connections, 1)
            self.assertGreater(s.bytes_down, 0)


class EnvironmentProxyTests(unittest.TestCase):
    def setUp(self):
        self.saved = {}
        for name in ENV_NAMES:
            for key in (name, name.upper()):
                self.saved[key] = os.environ.pop(key, None)

    def tearDown(self):
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def test_http_proxy_and_no_proxy(self):
        with OriginServer() as o, ConnectProxy() as p:
            os.environ["HTTP_PROXY"] = p.url
            get(HTTPTransport(), o.url("/via")).read()
            self.assertEqual(p.log, [("GET", o.url("/via"))])
            get(HTTPTransport(trust_env=False), o.url("/direct")).read()
            os.environ["NO_PROXY"] = "127.0.0.1"
            get(HTTPTransport(), o.url("/bypass")).read()
            self.assertEqual(len(p.log), 1)
            self.assertEqual([r.path for r in o.requests], ["/via", "/direct", "/bypass"])

    def test_environment_read_once_at_construction(self):
        with OriginServer() as o, ConnectProxy() as p:
            t = HTTPTransport()
            os.environ["HTTP_PROXY"] = p.url
            get(t, o.url("/x")).read()
            self.assertEqual(p.log, [])

    def test_all_proxy_socks(self):
        with tls_origin() as o, Socks5Proxy() as s:
            os.environ["ALL_PROXY"] = s.url("socks5h")
            get(HTTPTransport(ca_file=CA), o.url("/all")).read()
            self.assertEqual(s.targets, [("localhost", o.port)])

    def test_https_proxy_env_and_explicit_wins(self):
        with tls_origin() as o, ConnectProxy() as p, Socks5Proxy() as s:
            os.environ["HTTPS_PROXY"] = p.url
            get(HTTPTransport(ca_file=CA), o.url("/env")).read()
            self.assertEqual(p.log, [("CONNECT", "localhost:%d" % o.port)])
            get(HTTPTransport(proxy=s.url("socks5h"), ca_file=CA), o.url("/explicit")).read()
            self.assertEqual(len(p.log), 1)
            self.assertEqual(len(s.targets), 1)


if __name__ == "__main__":
    unittest.main()
