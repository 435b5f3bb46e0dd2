"""Loopback test servers for the transport and proxy tests (standard library only).

- ``ConnectProxy``: an HTTP proxy (CONNECT tunnels, absolute-URI forwarding of plain http),
  optional Basic auth, optional "refuse" mode answering 403; records ``log`` of
  (method, target) and byte counts.
- ``Socks5Proxy``: a SOCKS5 proxy (no auth or user/password), records the targets and whether
  the proxy resolved a name (``socks5h``) or got an address (``socks5``).
- ``OriginServer``: a tiny HTTP/1.1 keep-alive server (optionally TLS) whose answers a test
  scripts with a function of the request; records requests and connection ids.
- ``ScriptedServer``: a raw TCP (optionally TLS) server handing each accepted socket to a test's
  function, for what an HTTP server library will not do (answer before reading the body, say).

All listen on 127.0.0.1:0 and work as context managers.
"""
import base64
import http.server
import select
import socket
import socketserver
import ssl
import struct
import threading
import time

__all__ = ["ConnectProxy", "Socks5Proxy", "OriginServer", "Recorded", "ScriptedServer", "read_request_head"]


def _recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        data = sock.recv(n - len(buf))
        if not data:
            raise ConnectionError("peer closed")
        buf += data
    return buf


class _LoopbackServer:
    """Accept loop on 127.0.0.1:0 with one daemon thread per connection."""

    def __init__(self, certfile=None, keyfile=None):
        self._tls = None
        if certfile:
            self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls.load_cert_chain(certfile, keyfile)
        self._listener = None
        self._threads = []
        self._socks = set()
        self._lock = threading.Lock()
        self._running = False
        self.connections = 0
        self.bytes_up = 0  # client -> upstream
        self.bytes_down = 0  # upstream -> client
        self.port = 0

    def start(self):
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._running = True
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self):
        self._running = False
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
        for t in self._threads:
            t.join(2)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _track(self, sock):
        with self._lock:
            self._socks.add(sock)
        return sock

    def _accept_loop(self):
        self._listener.settimeout(0.05)  # poll, so stop() never waits on a blocked accept()
        while self._running:
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self._lock:
                self.connections += 1
            self._track(client)
            t = threading.Thread(target=self._serve, args=(client,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, client):
        try:
            if self._tls is not None:
                client.settimeout(5)
                client = self._track(self._tls.wrap_socket(client, server_side=True))
                client.settimeout(None)
            self.handle(client)
        except (OSError, ValueError, ConnectionError):
            pass
        finally:
            try:
                client.close()
            except OSError:
                pass

    def handle(self, client):  # pragma: no cover - overridden
        raise NotImplementedError

    def relay(self, client, upstream, first_up=b""):
        """Copy bytes both ways until either side closes; counts bytes."""
        self._track(upstream)
        try:
            if first_up:
                upstream.sendall(first_up)
                with self._lock:
                    self.bytes_up += len(first_up)
            socks = [client, upstream]
            while True:
                readable, _, _ = select.select(socks, [], [], 5)
                if not readable:
                    if not self._running:
                        return
                    continue
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        return
                    while isinstance(s, ssl.SSLSocket) and s.pending():
                        data += s.recv(s.pending())
                    other = upstream if s is client else client
                    # counted before forwarding: once the client has the bytes, they are counted
                    with self._lock:
                        if s is client:
                            self.bytes_up += len(data)
                        else:
                            self.bytes_down += len(data)
                    other.sendall(data)
        finally:
            try:
                upstream.close()
            except OSError:
                pass


def _read_head(sock):
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed before the request head")
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return method, target, version, headers, rest


def read_request_head(sock):
    """Read one request head from ``sock``: ``(method, target, headers dict lower-case, rest)``,
    ``rest`` being the bytes read past the head (the start of the body)."""
    method, target, _, headers, rest = _read_head(sock)
    return method, target, {k.lower(): v for k, v in headers}, rest


class ScriptedServer(_LoopbackServer):
    """Raw loopback server: ``script(sock, conn_id)`` runs in its own thread for each connection.

    The socket is closed when the script returns (with unread data in it, the kernel then sends
    a TCP RST, as a real server that stops reading does).

    :param certfile: with ``keyfile``, the socket handed over is TLS (tests/certs)
    :ivar connections: connections accepted
    """

    def __init__(self, script, *, certfile=None, keyfile=None):
        super().__init__(certfile, keyfile)
        self.script = script
        self._ids = 0

    def url(self, path="/"):
        return "%s://%s:%d%s" % ("https" if self._tls else "http", "localhost" if self._tls else "127.0.0.1",
                                 self.port, path)

    def handle(self, client):
        with self._lock:
            self._ids += 1
            conn_id = self._ids
        self.script(client, conn_id)


class ConnectProxy(_LoopbackServer):
    """HTTP proxy on loopback: CONNECT tunnels and absolute-URI forwarding of plain http.

    :param auth: (user, password) required as Basic Proxy-Authorization, or None
    :param refuse: answer every request with 403 Forbidden
    :param certfile: with ``keyfile``, accept TLS from the client (an ``https://`` proxy)
    :ivar log: list of (method, target) in arrival order
    :ivar auth_headers: the Proxy-Authorization values seen (None when absent)
    """

    def __init__(self, *, auth=None, refuse=False, certfile=None, keyfile=None):
        super().__init__(certfile, keyfile)
        self.auth = auth
        self.refuse = refuse
        self.log = []
        self.auth_headers = []
        self.forwarded_heads = []  # request heads forwarded in absolute-URI mode

    @property
    def url(self):
        return "%s://%s:%d" % ("https" if self._tls else "http", "localhost" if self._tls else "127.0.0.1", self.port)

    def handle(self, client):
        method, target, version, headers, rest = _read_head(client)
        lower = {k.lower(): v for k, v in headers}
        with self._lock:
            self.log.append((method, target))
            self.auth_headers.append(lower.get("proxy-authorization"))
        if self.auth is not None:
            expected = "Basic " + base64.b64encode(("%s:%s" % self.auth).encode()).decode()
            if lower.get("proxy-authorization") != expected:
                client.sendall(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"t\"\r\n"
                    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
                )
                return
        if self.refuse:
            client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\nConnection: close\r\n\r\nforbidden")
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            try:
                upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=5)
            except OSError:
                client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            upstream.settimeout(None)
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            self.relay(client, upstream, rest)
            return
        # absolute-URI forwarding: one request per client connection (Connection: close upstream)
        if not target.startswith("http://"):
            client.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        hostport, _, path = target[len("http://"):].partition("/")
        host, _, port = hostport.rpartition(":") if ":" in hostport.strip("[]").rpartition("]")[2] or hostport.count(":") == 1 else (hostport, "", "80")
        upstream = socket.create_connection((host.strip("[]"), int(port or 80)), timeout=5)
        upstream.settimeout(None)
        kept = [(k, v) for k, v in headers if k.lower() not in ("proxy-authorization", "proxy-connection", "connection")]
        head = "%s /%s %s\r\n" % (method, path, version)
        head += "".join("%s: %s\r\n" % kv for kv in kept) + "Connection: close\r\n\r\n"
        with self._lock:
            self.forwarded_heads.append(head)
        self.relay(client, upstream, head.encode("latin-1") + rest)


class Socks5Proxy(_LoopbackServer):
    """SOCKS5 proxy on loopback (RFC 1928 CONNECT, RFC 1929 user/password).

    :param auth: (user, password) to require, or None for no authentication
    :param reply_code: answer CONNECT with this RFC 1928 reply code instead of connecting
    :ivar targets: list of (host, port) asked for
    :ivar resolved_by_proxy: list of bools, True when the client sent a name (socks5h)
    :ivar auth_log: (user, password) pairs received
    """

    def __init__(self, *, auth=None, reply_code=0):
        super().__init__()
        self.auth = auth
        self.reply_code = reply_code
        self.targets = []
        self.resolved_by_proxy = []
        self.auth_log = []

    def url(self, scheme="socks5h", auth=None):
        cred = "%s:%s@" % auth if auth else ""
        return "%s://%s127.0.0.1:%d" % (scheme, cred, self.port)

    def handle(self, client):
        ver, n = _recv_exact(client, 2)
        methods = _recv_exact(client, n)
        if ver != 5:
            return
        if self.auth is not None:
            if 2 not in methods:
                client.sendall(b"\x05\xff")
                return
            client.sendall(b"\x05\x02")
            _, ulen = _recv_exact(client, 2)
            user = _recv_exact(client, ulen).decode()
            (plen,) = _recv_exact(client, 1)
            pwd = _recv_exact(client, plen).decode()
            with self._lock:
                self.auth_log.append((user, pwd))
            if (user, pwd) != tuple(self.auth):
                client.sendall(b"\x01\x01")
                return
            client.sendall(b"\x01\x00")
        else:
            if 0 not in methods:
                client.sendall(b"\x05\xff")
                return
            client.sendall(b"\x05\x00")
        ver, cmd, _, atyp = _recv_exact(client, 4)
        if atyp == 1:
            host = socket.inet_ntop(socket.AF_INET, _recv_exact(client, 4))
        elif atyp == 4:
            host = socket.inet_ntop(socket.AF_INET6, _recv_exact(client, 16))
        else:
            (length,) = _recv_exact(client, 1)
            host = _recv_exact(client, length).decode("idna")
        (port,) = struct.unpack("!H", _recv_exact(client, 2))
        with self._lock:
            self.targets.append((host, port))
            self.resolved_by_proxy.append(atyp == 3)
        failure = b"\x00\x01\x00\x00\x00\x00\x00\x00"
        if cmd != 1:
            client.sendall(b"\x05\x07" + failure)
            return
        if self.reply_code:
            client.sendall(b"\x05" + bytes([self.reply_code]) + failure)
            return
        try:
            upstream = socket.create_connection((host, port), timeout=5)
        except socket.gaierror:
            client.sendall(b"\x05\x04" + failure)
            return
        except OSError:
            client.sendall(b"\x05\x05" + failure)
            return
        upstream.settimeout(None)
        bound_host, bound_port = upstream.getsockname()[:2]
        client.sendall(b"\x05\x00\x00\x01" + socket.inet_aton(bound_host) + struct.pack("!H", bound_port))
        self.relay(client, upstream)


class Recorded:
    """One request as the origin saw it."""

    def __init__(self, method, path, headers, body, conn_id):
        self.method = method
        self.path = path
        self.headers = headers  # dict, lower-case names
        self.body = body
        self.conn_id = conn_id

    def __repr__(self):
        return "<Recorded %s %s conn=%d>" % (self.method, self.path, self.conn_id)


class _OriginHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        srv = self.server.origin
        with srv._lock:
            srv.connections += 1
            self.conn_id = srv.connections
            srv._socks.add(self.request)
        self.tls_failed = False
        if srv.tls:
            try:
                self.request.do_handshake()
            except (ssl.SSLError, OSError):
                self.tls_failed = True
        super().setup()

    def handle(self):
        if not self.tls_failed:
            try:
                super().handle()
            except (OSError, ssl.SSLError, ValueError):
                pass

    def _dispatch(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        rec = Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body, self.conn_id)
        srv = self.server.origin
        with srv._lock:
            srv.requests.append(rec)
        srv.app(self, rec)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch

    # helpers for apps
    def reply(self, status=200, body=b"{}", headers=None, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def reply_chunked(self, chunks, delay=0.0, headers=None, content_type="text/event-stream"):
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        for chunk in chunks:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
            if delay:
                time.sleep(delay)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def raw(self, data):
        self.wfile.write(data)
        self.wfile.flush()

    def hang_up(self):
        """Close the connection now, without an answer (or after whatever was written)."""
        self.close_connection = True
        try:
            self.request.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def reset(self):
        """Abort the connection with a TCP RST."""
        self.close_connection = True
        sock = self.request
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        try:
            socket.socket.close(sock) if not isinstance(sock, ssl.SSLSocket) else sock.close()
        except OSError:
            pass


def _default_app(h, rec):
    h.reply(200, b'{"ok": true, "path": "%s"}' % rec.path.encode())


class _OriginHTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass

    def get_request(self):
        sock, addr = super().get_request()
        if self.origin.tls:
            sock = self.origin._ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr


class OriginServer:
    """A loopback HTTP/1.1 (keep-alive) origin; ``app(handler, recorded)`` writes each answer.

    :param app: function(handler, Recorded); default answers 200 with a small JSON body
    :param certfile: with ``keyfile``, serve TLS with this certificate (tests/certs)
    :ivar requests: every Recorded request; ``connections``: TCP connections accepted
    """

    def __init__(self, app=None, *, certfile=None, keyfile=None, host="127.0.0.1"):
        self.app = app or _default_app
        self.tls = certfile is not None
        self._ctx = None
        if self.tls:
            self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._ctx.load_cert_chain(certfile, keyfile)
        self.requests = []
        self.connections = 0
        self._lock = threading.Lock()
        self._socks = set()
        self._httpd = None
        self._thread = None
        self.host = host

    @property
    def port(self):
        return self._httpd.server_address[1]

    @property
    def base_url(self):
        return "%s://%s:%d" % ("https" if self.tls else "http", self.host, self.port)

    def url(self, path="/"):
        return self.base_url + path

    def start(self):
        self._httpd = _OriginHTTPServer(("127.0.0.1", 0), _OriginHandler)
        self._httpd.origin = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            try:
                socket.socket.shutdown(s, socket.SHUT_RDWR)
            except (OSError, ValueError):
                pass
        self._thread.join(2)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
