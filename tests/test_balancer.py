"""Listeners behind a load balancer: only the balancers may connect, and the device side (its
greeting, allow_from, session counting, login source) starts once the PROXY header named the
device."""

from __future__ import annotations

import socket
import struct
from ipaddress import ip_network
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from proxy.config import ListenerConfig
from proxy.glue.balancer import HEADER_TIMEOUT, MAX_HEADER_BYTES, BalancerFactory, read_header
from proxy.glue.front import FrontFactory
from proxy.imap.device import ImapSession
from proxy.protocols import IMAP_BUSY
from tests.test_front import DEFAULT_LIMITS, ScriptedGateway

BALANCER = "10.0.0.2"
DEVICE = "192.0.2.7"
LISTENER = ListenerConfig(
    "imap", "haproxy:tcp:1143:interface=10.0.0.5", "tls:x:993", allow_plaintext=True,
    allow_from=(ip_network("192.0.2.0/24"),), proxy_protocol_from=(ip_network("10.0.0.2/32"),),
)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(source: str = DEVICE, port: int = 40000) -> bytes:
    return f"PROXY TCP4 {source} 10.0.0.5 {port} 1143\r\n".encode()


def v2(source: str = DEVICE, port: int = 40000, command: int = 1, tlv: bytes = b"") -> bytes:
    body = socket.inet_aton(source) + socket.inet_aton("10.0.0.5") + struct.pack("!HH", port, 1143)
    body += tlv
    return V2_SIGNATURE + bytes([0x20 | command, 0x11]) + struct.pack("!H", len(body)) + body


class Setup:
    def __init__(self, peer: str = BALANCER) -> None:
        self.gateway = ScriptedGateway()
        self.clock = MemoryReactorClock()
        self.front = FrontFactory(LISTENER, ImapSession, self.gateway, self.clock,  # type: ignore[arg-type]
                                  DEFAULT_LIMITS, IMAP_BUSY)
        self.factory = BalancerFactory(self.front, LISTENER, self.clock)
        self.protocol: Any = self.factory.buildProtocol(IPv4Address("TCP", peer, 5555))
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", peer, 5555))
        if self.protocol is not None:
            self.protocol.makeConnection(self.transport)

    def said(self) -> bytes:
        return self.transport.value()


def test_only_the_balancers_may_connect() -> None:
    """A connection from an address outside proxy_protocol_from is refused at accept time."""
    assert Setup(peer="10.0.0.9").protocol is None
    assert Setup(peer=DEVICE).protocol is None


@pytest.mark.parametrize("header", [v1(), v2()], ids=["v1", "v2"])
def test_the_device_side_starts_after_the_header(header: bytes) -> None:
    """Nothing is said and no session is counted before the header; then the greeting comes,
    the session counts for the device's address, and its login's source is the device."""
    s = Setup()
    assert s.said() == b"" and not s.front.sessions
    s.protocol.dataReceived(header[:9])
    assert s.said() == b"" and not s.front.sessions
    s.protocol.dataReceived(header[9:] + b"a1 LOGIN alice pw\r\n")
    assert s.said().startswith(b"* OK")
    assert dict(s.front.sessions.by_address) == {DEVICE: 1}
    assert s.protocol.getPeer().host == DEVICE
    assert [user for user, _ in s.gateway.attempts] == ["alice"]


def test_a_device_outside_allow_from_is_refused_after_the_header() -> None:
    """allow_from applies to the device's address the header names, not to the balancer."""
    s = Setup()
    s.protocol.dataReceived(v2(source="198.51.100.1"))
    assert s.said() == b"" and s.transport.disconnecting
    assert not s.front.sessions


def test_a_health_check_is_the_balancer_itself() -> None:
    """A LOCAL header (HAProxy's check-send-proxy) stands for the balancer's own address."""
    s = Setup()
    s.protocol.dataReceived(v2(command=0))
    assert s.protocol.getPeer().host == BALANCER
    assert s.transport.disconnecting  # the balancer is not in allow_from


@pytest.mark.parametrize("data", [
    b"a1 LOGIN alice pw\r\n",  # no header at all
    b"PROXY TCP4 not-an-address 10.0.0.5 1 2\r\n",
    b"PROXY NONSENSE\r\n",
    V2_SIGNATURE + b"\x31\x11\x00\x0c" + b"\x00" * 12,  # version 3
    b"PROXY TCP4 " + b"1" * MAX_HEADER_BYTES,  # never ends
], ids=["none", "bad-address", "bad-v1", "bad-version", "too-long"])
def test_a_bad_header_ends_the_connection(data: bytes) -> None:
    """Anything but a valid header is refused before the device side exists."""
    s = Setup()
    s.protocol.dataReceived(data)
    assert s.said() == b"" and s.transport.disconnecting
    assert not s.front.sessions and not s.gateway.attempts


def test_a_header_that_never_comes_times_out() -> None:
    """A balancer-side connection that sends no header is cut after HEADER_TIMEOUT."""
    s = Setup()
    s.protocol.dataReceived(V2_SIGNATURE[:5])
    s.clock.advance(HEADER_TIMEOUT - 0.1)
    assert not s.transport.disconnecting
    s.clock.advance(0.2)
    assert s.transport.disconnecting and not s.front.sessions


def test_the_session_ends_for_the_device_address() -> None:
    """Closing a proxied connection gives its session slot back to the device's address."""
    s = Setup()
    s.protocol.dataReceived(v1())
    s.protocol.connectionLost(None)
    assert not s.front.sessions


def test_read_header_with_tlvs_and_leftover() -> None:
    """A v2 header with TLVs (what HAProxy may add) and the bytes after it are told apart."""
    header = v2(tlv=b"\x04\x00\x03abc")
    source, rest = read_header(header + b"tail") or (None, b"")
    assert source is not None and (source.host, source.port) == (DEVICE, 40000)
    assert rest == b"tail"
    assert read_header(header[:20]) is None
