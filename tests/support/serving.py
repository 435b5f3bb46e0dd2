"""What the Chat and GroupChat tests share: a server per test (a MemoryServer, or a FakeServer on
loopback sockets for a class's end-to-end subset), a temporary folder, conversations that
talk to it, and ``Gate``, a Reply gate that tells when the request arrived.

    class MyTest(ChatServerCase):
        key = "sk-test-mine-0123456789abcdef"
        chat_defaults = {"model": "gpt-4o-mini", "max_retries": 0}

        def test_x(self):
            self.assertEqual(self.chat().request("hi"), "(demo) You said: hi")

    class MyTestOverSockets(MyTest):
        sockets = True
"""
import threading

from openai2 import Chat, GroupChat
from tests.support.homes import TempDirCase
from tests.support.memory import memory_or_socket_server, server_options


def no_sleep(seconds, cancel):
    """The client's pause between retries, injected: none is waited."""


class Gate:
    """A Reply gate that is no Event (Reply takes anything with ``wait``): records that the
    request arrived, then holds the answer until ``release`` is set."""

    def __init__(self):
        self.arrived = threading.Event()
        self.release = threading.Event()

    def wait(self, timeout=None):
        self.arrived.set()
        return self.release.wait(timeout)


class ChatServerCase(TempDirCase):
    """``self.server`` (see tests/support/memory.py) and ``self.tmp`` for each test;
    ``chat()``/``group()`` make conversations sending to the server."""

    #: True: a real FakeServer over loopback sockets; False: a MemoryServer (no sockets)
    sockets = False
    #: the MemoryServer's stall mode ("block": delays and stalls really wait, until close/cancel)
    stalls = "timeout"
    #: the key the conversations send
    key = "sk-test-chatcase-0123456789abcdef"
    #: the options every conversation gets unless the test gives its own
    chat_defaults = {"model": "gpt-3.5-turbo"}

    def setUp(self):
        super().setUp()
        self.server = memory_or_socket_server(self.sockets, stalls=self.stalls)
        self.addCleanup(self.server.stop)

    def options(self, kw):
        """``kw`` completed with the defaults, the server's options and the injected sleep."""
        for name, value in dict(self.chat_defaults, sleep=no_sleep, **server_options(self.server)).items():
            kw.setdefault(name, value)
        kw.setdefault("api_key", self.key)
        return kw

    def chat(self, **kw):
        return Chat(**self.options(kw))

    def group(self, **kw):
        return GroupChat(**self.options(kw))
