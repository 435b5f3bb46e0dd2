"""SOCKS5 client handshake (RFC 1928 CONNECT, RFC 1929 user/password) on a connected socket.

The transport opens the TCP connection to the proxy (so its connect timeout and error
translation apply) and hands the socket here; after ``socks5_handshake`` returns, the socket
is a byte pipe to the target host, ready for HTTP or TLS.  ``socks5h`` sends the host name to
the proxy (the proxy resolves it); ``socks5`` resolves the name locally and sends the address.
"""

from __future__ import annotations

from .common import TYPE_CHECKING
from .errors import APIConnectionError

if TYPE_CHECKING:
    import socket

#: RFC 1928 section 6 reply codes.
SOCKS5_REPLIES = {
    0x01: "general SOCKS server failure",
    0x02: "connection not allowed by ruleset",
    0x03: "network unreachable",
    0x04: "host unreachable",
    0x05: "connection refused",
    0x06: "TTL expired",
    0x07: "command not supported",
    0x08: "address type not supported",
}


class _SocksError(APIConnectionError):
    """A SOCKS5 proxy refused the handshake; ``reply_code`` is the RFC 1928 reply (or None)."""

    def __init__(self, message: str, *, reply_code: int | None = None) -> None:
        super().__init__(message)
        self.reply_code = reply_code


def _socks_recv_exact(sock: socket.socket, n: int, proxy_name: str) -> bytes:
    """Read exactly ``n`` bytes (never more: what follows belongs to the tunnelled protocol)."""
    buf = b""
    while len(buf) < n:
        data = sock.recv(n - len(buf))
        if not data:
            raise _SocksError("SOCKS5 proxy %s closed the connection during the handshake" % proxy_name)
        buf += data
    return buf


def _socks_address(host: str, port: int, remote_dns: bool, proxy_name: str) -> bytes:
    """The ATYP + address + port part of a CONNECT request."""
    import socket

    for family, atyp in ((socket.AF_INET, b"\x01"), (socket.AF_INET6, b"\x04")):
        try:
            return atyp + socket.inet_pton(family, host) + port.to_bytes(2, "big")
        except (OSError, ValueError):
            pass
    if remote_dns:
        try:
            name = host.encode("idna")
        except UnicodeError:
            name = host.encode("utf-8")
        if not 0 < len(name) <= 255:
            raise _SocksError("Host name too long for SOCKS5 (%d bytes): %s" % (len(name), host[:80]))
        return b"\x03" + bytes([len(name)]) + name + port.to_bytes(2, "big")
    try:
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        err = _SocksError(
            "Could not resolve host name %r (DNS lookup failed: %s). With a socks5:// proxy names "
            "are resolved on this machine; use socks5h:// to let the proxy %s resolve them."
            % (host, exc.strerror or exc, proxy_name)
        )
        err.cause = exc
        raise err from exc
    family, _, _, _, sockaddr = infos[0]
    address = str(sockaddr[0])
    if family == socket.AF_INET6:
        return b"\x04" + socket.inet_pton(socket.AF_INET6, address) + port.to_bytes(2, "big")
    return b"\x01" + socket.inet_pton(socket.AF_INET, address) + port.to_bytes(2, "big")


def socks5_handshake(
    sock: socket.socket,
    host: str,
    port: int,
    *,
    remote_dns: bool = True,
    username: str | None = None,
    password: str | None = None,
    proxy_name: str = "SOCKS5 proxy",
) -> None:
    """Ask the SOCKS5 proxy at the other end of ``sock`` to CONNECT to ``host:port``.

    :param sock: a socket already connected to the proxy (its timeout applies to every read)
    :param host: target host name or IP literal (IPv6 without brackets)
    :param remote_dns: True (``socks5h``) sends names to the proxy; False resolves them here
    :param username: RFC 1929 user name; offered together with "no authentication"
    :param password: RFC 1929 password
    :param proxy_name: how to name the proxy in error messages (password already masked)
    :raises APIConnectionError: (a private subclass) when the proxy refuses or misbehaves;
        socket errors and timeouts propagate unchanged for the transport to translate
    """
    use_auth = username is not None
    sock.sendall(b"\x05\x02\x00\x02" if use_auth else b"\x05\x01\x00")
    ver, method = _socks_recv_exact(sock, 2, proxy_name)
    if ver != 5:
        raise _SocksError("%s did not answer as a SOCKS5 proxy (version byte %d)" % (proxy_name, ver))
    if method == 0xFF:
        raise _SocksError(
            "SOCKS5 proxy %s accepts none of the offered authentication methods%s"
            % (proxy_name, "" if use_auth else " (it probably needs user:password in the proxy URL)")
        )
    if method == 0x02:
        if not use_auth:
            raise _SocksError("SOCKS5 proxy %s asked for a password but none was given" % proxy_name)
        user = (username or "").encode("utf-8")
        pwd = (password or "").encode("utf-8")
        if len(user) > 255 or len(pwd) > 255:
            raise _SocksError("SOCKS5 user name and password must be at most 255 bytes each")
        sock.sendall(b"\x01" + bytes([len(user)]) + user + bytes([len(pwd)]) + pwd)
        _, status = _socks_recv_exact(sock, 2, proxy_name)
        if status != 0:
            raise _SocksError("SOCKS5 proxy %s rejected the user name or password (status %d)" % (proxy_name, status))
    elif method != 0x00:
        raise _SocksError("SOCKS5 proxy %s chose an unsupported method %d" % (proxy_name, method))
    sock.sendall(b"\x05\x01\x00" + _socks_address(host, port, remote_dns, proxy_name))
    ver, rep, _, atyp = _socks_recv_exact(sock, 4, proxy_name)
    if ver != 5:
        raise _SocksError("%s sent an invalid SOCKS5 reply (version byte %d)" % (proxy_name, ver))
    if rep != 0:
        meaning = SOCKS5_REPLIES.get(rep, "unknown error")
        raise _SocksError(
            "SOCKS5 proxy %s could not connect to %s:%d: %s (reply code %d)" % (proxy_name, host, port, meaning, rep),
            reply_code=rep,
        )
    if atyp == 1:
        _socks_recv_exact(sock, 4 + 2, proxy_name)
    elif atyp == 4:
        _socks_recv_exact(sock, 16 + 2, proxy_name)
    elif atyp == 3:
        (length,) = _socks_recv_exact(sock, 1, proxy_name)
        _socks_recv_exact(sock, length + 2, proxy_name)
    else:
        raise _SocksError("%s sent an invalid SOCKS5 address type %d" % (proxy_name, atyp))
