"""`xoauth2-proxy health`: exit 0 when every configured listener accepts a connection and greets.

For container health checks and monitoring. Each listener gets a connection from this machine
(a listener on every address is reached on loopback); its first line must be the protocol's
greeting, after a TLS handshake on `tls = "implicit"` listeners whose certificate must be the
listener's own (pinned by its SHA-256 fingerprint). A listener whose allow_from leaves out
loopback shows it is alive by closing the connection at once, as it does for any stranger.
No login is tried and nothing is sent.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from typing import TextIO

from ..config import Config, ListenerConfig, endpoint_parts
from ..glue.front_tls import certificate_path, fingerprint
from . import EXIT_FAILED, EXIT_OK

TIMEOUT = 5.0
GREETINGS = {"imap": b"* OK", "pop3": b"+OK", "smtp": b"220"}


class Unhealthy(Exception):
    """Why a listener failed its check."""


@dataclass(frozen=True)
class Target:
    host: str
    port: int


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
    target = _target(listener)
    with socket.create_connection((target.host, target.port), timeout=TIMEOUT) as raw:
        if not _admits_loopback(listener, target.host):
            if raw.recv(1):
                raise Unhealthy("sent data to an address allow_from leaves out")
            return "accepts connections (and closes them: allow_from leaves out loopback)"
        stream: socket.socket = raw
        if listener.tls == "implicit":
            stream = _tls(raw, listener, config)
        line = _first_line(stream)
    expected = GREETINGS[listener.protocol]
    if not line.startswith(expected):
        raise Unhealthy(f"greeted with {line[:80]!r}, expected {expected.decode()} ...")
    return "greets"


def _target(listener: ListenerConfig) -> Target:
    kind, args, kwargs = endpoint_parts(listener.listen)
    if kind not in ("tcp", "tcp6"):
        raise Unhealthy(f"listen = {listener.listen!r}: only tcp: listeners can be checked")
    port = int(kwargs.get("port") or args[0])
    interface = kwargs.get("interface", "")
    if interface in ("", "0.0.0.0"):
        interface = "127.0.0.1"
    elif interface == "::":
        interface = "::1"
    return Target(interface, port)


def _admits_loopback(listener: ListenerConfig, host: str) -> bool:
    address = ipaddress.ip_address(host.split("%", 1)[0])
    source = address if address.is_loopback else ipaddress.ip_address("127.0.0.1")
    return any(source in network for network in listener.allow_from)


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
