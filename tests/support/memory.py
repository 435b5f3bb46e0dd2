"""MemoryServer: a MemoryTransport standing where a FakeServer stood in a test.

The semantic tests of the client, Chat, GroupChat and the CLI need what a server answers and
what it recorded, not sockets.  ``MemoryServer`` is an ``openai2.testing.MemoryTransport`` with
the few names those tests used on ``FakeServer`` (``base_url``, ``start()``, ``stop()``) and
``options()``, the client options that reach it (``base_url`` and ``transport``).  A test
base class builds one of these by default and a ``FakeServer`` only for its end-to-end subset::

    server = memory_or_socket_server(sockets=False)     # or True: a started FakeServer
    Chat(model="m", **server_options(server))
"""
from openai2.testing import FakeServer, MemoryTransport

#: the base URL of every MemoryServer (any http(s) URL answers; no name is looked up)
MEMORY_BASE_URL = "https://api.test/v1"


class MemoryServer(MemoryTransport):
    """A MemoryTransport with FakeServer's ``base_url``/``start()``/``stop()``, and the list
    of the ``responses`` it handed out."""

    base_url = MEMORY_BASE_URL

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        #: every response handed out, in order (a test can see whether one was closed)
        self.responses = []

    def request(self, *args, **kwargs):
        response = super().request(*args, **kwargs)
        self.responses.append(response)
        return response

    def start(self):
        return self

    def stop(self):
        pass

    def options(self):
        """The client options that send to this transport."""
        return {"base_url": self.base_url, "transport": self}


def memory_or_socket_server(sockets=False, **kwargs):
    """A started FakeServer (``sockets=True``) or a MemoryServer, with the same arguments
    (``replies=``, ``handler=``; ``stalls=`` only for the MemoryServer)."""
    if sockets:
        kwargs.pop("stalls", None)
        return FakeServer(**kwargs).start()
    return MemoryServer(**kwargs)


def server_options(server):
    """The client options reaching ``server``: base_url, and the transport for a MemoryServer."""
    if isinstance(server, MemoryServer):
        return server.options()
    return {"base_url": server.base_url}
