"""Fuzz target for listeners behind a load balancer (proxy.glue.balancer): the bytes a
balancer-side connection sends first, valid PROXY headers (v1, v2, LOCAL) bent and cut at places
the input chooses, or anything at all, fed to the real glue in front of an IMAP front.

Rules checked on every input (tests/fuzz.py runs this as the "proxy-header" target):
  - no exception; the device side says nothing before a whole header was read;
  - the device side, once built, sees the header's source address (a valid IP address) or, for
    a LOCAL header, the balancer, and was counted for that address only;
  - the same bytes cut into other pieces give the same outcome.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from ipaddress import ip_network
from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from proxy.config import Limits, ListenerConfig
from proxy.glue.balancer import BalancerFactory
from proxy.glue.front import FrontFactory
from proxy.imap.device import ImapSession
from proxy.protocols import IMAP_BUSY

BALANCER = "10.0.0.2"
LISTENER = ListenerConfig(
    "imap", "haproxy:tcp:1143:interface=10.0.0.5", "tls:x:993", allow_plaintext=True,
    allow_from=(ip_network("0.0.0.0/0"), ip_network("::/0")),
    proxy_protocol_from=(ip_network(BALANCER + "/32"),),
)
SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


class _PendingGateway:
    """Logins never finish: the target is about what happens before."""

    async def login(self, username: str, password: str, source: str) -> Any:
        return await defer.Deferred()


def _headers(choice: int, tail: bytes) -> bytes:
    v4 = socket.inet_aton("192.0.2.7") + socket.inet_aton("10.0.0.5") + struct.pack("!HH", 1, 2)
    v6 = socket.inet_pton(socket.AF_INET6, "2001:db8::7") * 2 + struct.pack("!HH", 1, 2)
    options = [
        b"PROXY TCP4 192.0.2.7 10.0.0.5 40000 1143\r\n",
        b"PROXY TCP6 2001:db8::7 2001:db8::5 40000 1143\r\n",
        b"PROXY UNKNOWN\r\n",
        SIGNATURE + b"\x21\x11" + struct.pack("!H", len(v4)) + v4,
        SIGNATURE + b"\x21\x21" + struct.pack("!H", len(v6)) + v6,
        SIGNATURE + b"\x20\x00\x00\x00",  # LOCAL
        SIGNATURE + b"\x21\x11" + struct.pack("!H", len(v4) + 5) + v4 + b"\x04\x00\x02ab",
        b"",
    ]
    return options[choice % len(options)] + tail


def _outcome(pieces: list[bytes]) -> tuple[Any, ...]:
    clock = MemoryReactorClock()
    front = FrontFactory(LISTENER, ImapSession, _PendingGateway(), clock,  # type: ignore[arg-type]
                         Limits(), IMAP_BUSY)
    reader: Any = BalancerFactory(front, LISTENER, clock).buildProtocol(
        IPv4Address("TCP", BALANCER, 5555))
    transport = StringTransport()
    reader.makeConnection(transport)
    for piece in pieces:
        reader.dataReceived(piece)
        if reader.wrappedProtocol is None:
            _require(transport.value() == b"", "spoke before the header was read", pieces)
    peer = reader.getPeer().host
    built = reader.wrappedProtocol is not None
    if built:
        ipaddress.ip_address(peer)  # raises ValueError: a violation
        _require(set(front.sessions.by_address) == {peer}, "counted for another address", peer,
                 front.sessions.by_address)
        _require(transport.value().startswith(b"* OK"), "no greeting", transport.value())
    else:
        _require(peer == BALANCER and not front.sessions, "device side half built", pieces)
    reader.connectionLost(None)
    _require(not front.sessions, "session slot kept after the connection ended")
    return not built, peer, transport.value(), transport.disconnecting


def _require(condition: bool, message: str, *context: object) -> None:
    if not condition:
        raise AssertionError(" ".join([message, *(repr(c) for c in context)]))


def run_balancer(data: bytes) -> tuple[Any, ...]:
    """Build the bytes from the input, feed them whole and in pieces, check the rules."""
    if not data:
        return _outcome([b""])
    choice, flips, rest = data[0], data[1:3], data[3:]
    stream = bytearray(_headers(choice, rest[:64]) if choice < 224 else rest)
    for flip in flips if choice & 1 and stream else b"":
        stream[flip % len(stream)] ^= 1 << (flip % 8)
    whole = bytes(stream)
    cuts = sorted({b % (len(whole) + 1) for b in rest[64:68]})
    bounds = [0, *cuts, len(whole)]
    pieces = [whole[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a] or [whole]
    once = _outcome([whole])
    _require(_outcome(pieces) == once, "pieces changed the outcome", pieces)
    return once
