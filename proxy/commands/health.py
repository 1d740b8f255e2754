"""`xoauth2-proxy health`: exit 0 when every configured listener accepts a connection and greets.

For container health checks and monitoring. Each listener gets a connection from this machine
(a listener on every address is reached on loopback; a `unix:` one on its socket); its first
line must be the protocol's greeting, after a TLS handshake on `tls = "implicit"` listeners
whose certificate must be the listener's own (pinned by its SHA-256 fingerprint). A listener
that would not serve this machine's address (allow_from, or proxy_protocol_from on a `haproxy:`
listener) shows it is alive by closing the connection at once, as it does for any stranger.
Where this machine is one of a `haproxy:` listener's balancers, the check speaks as a balancer
checking its server does: a PROXY v2 LOCAL header. No login is tried and nothing else is sent.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
from typing import TextIO

from ..config import BALANCER_PREFIX, Config, ListenerConfig, Network, endpoint_parts
from ..glue.front import address_within
from ..glue.front_tls import certificate_path, fingerprint
from . import EXIT_FAILED, EXIT_OK

TIMEOUT = 5.0
GREETINGS = {"imap": b"* OK", "pop3": b"+OK", "smtp": b"220"}
# PROXY protocol v2: the signature, version 2 with the LOCAL command, no address, no length.
LOCAL_HEADER = b"\r\n\r\n\x00\r\nQUIT\n" + b"\x20\x00\x00\x00"


class Unhealthy(Exception):
    """Why a listener failed its check."""


def check_health(config: Config, out: TextIO) -> int:
    healthy = True
    for listener in config.listeners:
        try:
            verdict = check_listener(listener, config)
        except (Unhealthy, OSError) as e:
            healthy = False
            print(f"FAILED {listener.name}: {e}", file=out)
        else:
            print(f"ok     {listener.name}: {verdict}", file=out)
    return EXIT_OK if healthy else EXIT_FAILED


def check_listener(listener: ListenerConfig, config: Config) -> str:
    with _connect(listener.listen.removeprefix(BALANCER_PREFIX)) as raw:
        source = _source(raw)  # None on a unix socket: no address to judge
        if listener.behind_balancer:
            if not _within(source, listener.proxy_protocol_from):
                return _closes_at_once(raw, "proxy_protocol_from leaves out this machine")
            raw.sendall(LOCAL_HEADER)  # the balancer speaking for itself: judged as the device
        if not _within(source, listener.allow_from):
            return _closes_at_once(raw, "allow_from leaves out this machine")
        stream: socket.socket = raw
        if listener.tls == "implicit":
            stream = _tls(raw, listener, config)
        line = _first_line(stream)
    expected = GREETINGS[listener.protocol]
    if not line.startswith(expected):
        raise Unhealthy(f"greeted with {line[:80]!r}, expected {expected.decode()} ...")
    return "greets" + (" (as its balancer)" if listener.behind_balancer else "")


def _connect(listen: str) -> socket.socket:
    kind, args, kwargs = endpoint_parts(listen)
    if kind == "unix":
        if not hasattr(socket, "AF_UNIX"):
            raise Unhealthy(f"listen = {listen!r}: this system has no unix sockets")
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        unix.settimeout(TIMEOUT)
        try:
            unix.connect(kwargs.get("address") or args[0])
        except OSError:
            unix.close()
            raise
        return unix
    if kind not in ("tcp", "tcp6"):
        raise Unhealthy(f"listen = {listen!r}: only tcp: and unix: listeners can be checked")
    port = int(kwargs.get("port") or args[0])
    interface = kwargs.get("interface", "")
    if interface in ("", "0.0.0.0"):
        interface = "127.0.0.1"
    elif interface == "::":
        interface = "::1"
    return socket.create_connection((interface, port), timeout=TIMEOUT)


def _source(connection: socket.socket) -> str | None:
    """This end's address, which is what the listener judges (a listener on a LAN address is
    reached from that address, not from loopback); None on a unix socket."""
    if connection.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    return str(connection.getsockname()[0])


def _within(source: str | None, networks: tuple[Network, ...]) -> bool:
    """As the listener judges it: a unix socket's peer has no address to refuse."""
    return source is None or address_within(source, networks)


def _closes_at_once(connection: socket.socket, why: str) -> str:
    if connection.recv(1):
        raise Unhealthy(f"sent data to an address it should refuse ({why})")
    return f"accepts connections (and closes them: {why})"


def _tls(raw: socket.socket, listener: ListenerConfig, config: Config) -> ssl.SSLSocket:
    """TLS with the listener's own certificate pinned: a generated one names no CA to check."""
    try:
        expected = fingerprint(certificate_path(listener, config.store_path).read_bytes())
    except OSError as e:
        raise Unhealthy(f"its certificate cannot be read ({e.strerror})") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # checked below against the pinned fingerprint
    stream = context.wrap_socket(raw)
    presented = stream.getpeercert(binary_form=True) or b""
    digest = ":".join(f"{b:02X}" for b in hashlib.sha256(presented).digest())
    if digest != expected:
        stream.close()
        raise Unhealthy("presented a certificate that is not the listener's own")
    return stream


def _first_line(stream: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data and len(data) < 4096:
        chunk = stream.recv(4096)
        if not chunk:
            break
        data += chunk
    if not data:
        raise Unhealthy("closed the connection without a greeting")
    return data.split(b"\n", 1)[0].rstrip(b"\r")
