"""Compatibility module-level api (``openai.api_key`` / ``ChatCompletion.create``): clients are
cached in a bounded LRU and share one transport (connection pool) per proxy setting; the pre-1.0
``openai.error`` names catch what they used to; ``ChatCompletion.acreate`` for old async code."""
import asyncio
import socket
import subprocess
import sys
import threading
import unittest

import openai2
from openai2 import compat
from openai2.testing import FakeServer, Reply

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
            self.assertEqual(direct._transport._pool.idle_count(), 1)
            compat._compat_close_all()
            self.assertEqual(direct._transport._pool.idle_count(), 0)
            self.assertEqual(len(compat._compat_clients), 0)
            self.assertEqual(len(compat._compat_transports), 0)


#: What pre-1.0 openai raised for each case (api_requestor.handle_error_response of 0.28).
OLD_NAMES = (
    "OpenAIError", "APIError", "TryAgain", "Timeout", "APIConnectionError", "InvalidRequestError",
    "AuthenticationError", "PermissionError", "RateLimitError", "ServiceUnavailableError",
)


def _refused_url():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return "http://127.0.0.1:%d/v1" % port


class CompatErrorNamesTests(unittest.TestCase):
    def setUp(self):
        self.saved = {name: getattr(openai2, name, None) for name in SETTINGS}
        compat._compat_close_all()
        openai2.proxy = None
        openai2.organization = None
        openai2.api_key = "sk-test-compat-errors-0000"

    def tearDown(self):
        compat._compat_close_all()
        for name, value in self.saved.items():
            setattr(openai2, name, value)

    def _provoke(self, base_url, **params):
        """Call the old API once (no retries, so a 429 or a timeout comes back at once)."""
        openai2.api_base = base_url
        compat._compat_client().max_retries = 0
        try:
            openai2.ChatCompletion.create(model="m", messages=MESSAGES, **params)
        except Exception as exc:  # noqa: BLE001 - examined by the caller
            return exc
        self.fail("no error raised")

    def _caught_by(self, exc):
        """The old names whose ``except`` clause catches ``exc`` (a real except, not isinstance)."""
        import openai2 as openai

        caught = []
        for name in OLD_NAMES:
            try:
                raise exc
            except getattr(openai.error, name):
                caught.append(name)
            except Exception:  # noqa: BLE001, S110 - not this one
                pass
        return caught

    def test_old_except_clauses_catch_what_they_used_to(self):
        cases = [
            (429, "RateLimitError"),
            (400, "InvalidRequestError"),
            (404, "InvalidRequestError"),
            (401, "AuthenticationError"),
            (403, "PermissionError"),
            (409, "TryAgain"),
            (422, "APIError"),
        ]
        for status, name in cases:
            with self.subTest(status=status), FakeServer([Reply(status=status, content="no")]) as srv:
                exc = self._provoke(srv.base_url)
                self.assertEqual(self._caught_by(exc), ["OpenAIError", name])
        with FakeServer([Reply(status=503, content="overloaded")]) as srv:
            exc = self._provoke(srv.base_url)
            caught = self._caught_by(exc)
        # every 5xx is one class in openai2: the first of the two clauses listed wins
        self.assertEqual(caught, ["OpenAIError", "APIError", "ServiceUnavailableError"])

    def test_timeout_and_refused_connection(self):
        with FakeServer([Reply(content="late", delay=5)]) as srv:
            exc = self._provoke(srv.base_url, request_timeout=0.3)
            self.assertEqual(self._caught_by(exc), ["OpenAIError", "Timeout", "APIConnectionError"])
        exc = self._provoke(_refused_url())
        self.assertEqual(self._caught_by(exc), ["OpenAIError", "APIConnectionError"])

    def test_a_tutorial_except_chain_reaches_its_rate_limit_branch(self):
        # the error-handling example of the pre-1.0 docs lists APIError before RateLimitError
        import openai2 as openai

        with FakeServer([Reply(status=429, content="slow down")]) as srv:
            openai.api_base = srv.base_url
            compat._compat_client().max_retries = 0
            try:
                openai.ChatCompletion.create(model="m", messages=MESSAGES)
                branch = "none"
            except openai.error.Timeout:
                branch = "timeout"
            except openai.error.APIError:
                branch = "api"
            except openai.error.APIConnectionError:
                branch = "connection"
            except openai.error.InvalidRequestError:
                branch = "invalid"
            except openai.error.AuthenticationError:
                branch = "auth"
            except openai.error.PermissionError:
                branch = "permission"
            except openai.error.RateLimitError as e:
                branch = "rate limit: " + e.message
            except openai.error.SignatureVerificationError:  # never raised, but must resolve
                branch = "signature"
        self.assertEqual(branch, "rate limit: slow down")

    def test_import_forms(self):
        import openai2.error
        from openai2.error import PermissionError as OldPermissionError
        from openai2.error import RateLimitError

        self.assertIs(openai2.error, sys.modules["openai2.error"])
        self.assertIs(RateLimitError, openai2.RateLimitError)
        self.assertIs(OldPermissionError, openai2.PermissionDeniedError)
        self.assertEqual(sorted(openai2.error.__all__), sorted(OLD_NAMES + ("InvalidAPIType", "SignatureVerificationError")))
        self.assertIs(PermissionError, __builtins__["PermissionError"] if isinstance(__builtins__, dict)
                      else __builtins__.PermissionError)
        self.assertFalse(hasattr(openai2, "PermissionError"))  # the builtin is not shadowed

    def test_fresh_process_import_forms(self):
        code = (
            "import openai2.error, openai2 as openai\n"
            "from openai2.error import RateLimitError, InvalidRequestError\n"
            "assert openai.error.RateLimitError is RateLimitError is openai.RateLimitError\n"
            "assert openai2.error is openai.error\n"
            "print('ok')\n"
        )
        import os

        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
        self.assertEqual(out.stdout.strip(), "ok", out.stderr)


class CompatAcreateTests(unittest.TestCase):
    def setUp(self):
        self.saved = {name: getattr(openai2, name, None) for name in SETTINGS}
        compat._compat_close_all()
        openai2.proxy = None
        openai2.organization = None
        openai2.api_key = "sk-test-compat-acreate-0000"

    def tearDown(self):
        compat._compat_close_all()
        for name, value in self.saved.items():
            setattr(openai2, name, value)

    def test_acreate_answers(self):
        with FakeServer([Reply(content="The Pacific Ocean.")]) as srv:
            openai2.api_base = srv.base_url
            r = asyncio.run(openai2.ChatCompletion.acreate(model="m", messages=MESSAGES, request_timeout=5))
        self.assertEqual(r.choices[0].message.content, "The Pacific Ocean.")
        self.assertEqual(r["choices"][0]["message"]["content"], "The Pacific Ocean.")

    def test_acreate_streams(self):
        async def main():
            pieces = []
            stream = await openai2.ChatCompletion.acreate(model="m", messages=MESSAGES, stream=True)
            async for chunk in stream:
                if chunk.choices:
                    pieces.append(chunk.choices[0].delta.content or "")
            return "".join(pieces), stream.accumulator.finish_reason

        with FakeServer([Reply(content="a streamed answer")]) as srv:
            openai2.api_base = srv.base_url
            self.assertEqual(asyncio.run(main()), ("a streamed answer", "stop"))

    def test_acreate_is_cancellable(self):
        gate = threading.Event()  # the server answers only when the test is over
        with FakeServer([Reply(content="never", gate=gate)]) as srv:
            openai2.api_base = srv.base_url
            before = set(threading.enumerate())

            async def main():
                task = asyncio.ensure_future(openai2.ChatCompletion.acreate(model="m", messages=MESSAGES))
                for _ in range(500):  # until the request is at the server (5 s at most)
                    if srv.requests:
                        break
                    await asyncio.sleep(0.01)
                self.assertEqual(len(srv.requests), 1)
                task.cancel()
                with self.assertRaises(asyncio.CancelledError):
                    await asyncio.wait_for(task, 5)

            try:
                asyncio.run(main())
                workers = [t for t in set(threading.enumerate()) - before if t.name == "openai2-worker"]
                for t in workers:  # cancelling shut the socket down: the worker returns at once
                    t.join(5)
                self.assertEqual([t for t in workers if t.is_alive()], [])
            finally:
                gate.set()


class TestOldErrorAttributes(unittest.TestCase):
    def test_0_28_attribute_names_read_the_new_ones(self):
        import openai2

        status = openai2.NotFoundError("no such model", status_code=404, body={"error": {"message": "x"}})
        self.assertEqual((status.http_status, status.user_message, status.json_body),
                         (404, "no such model", {"error": {"message": "x"}}))
        event = openai2.APIError("stream said no", body="text body")
        self.assertEqual((event.http_status, event.user_message, event.json_body), (None, "stream said no", None))
        self.assertIsNone(openai2.APIConnectionError().http_status)
        with self.assertRaises(AttributeError):
            status.http_status = 500


if __name__ == "__main__":
    unittest.main()
