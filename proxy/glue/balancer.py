"""Listeners behind a load balancer: `listen = "haproxy:tcp:..."` takes the PROXY protocol.

Twisted's own `haproxy:` endpoint trusts a header from anyone and connects the listener's
protocol (greeting, allow_from, session counting, the log's peer) before the header is read,
with the balancer's address. Here the balancer is checked first (proxy_protocol_from, when
the connection is accepted), the header is read with Twisted's v1/v2 parsers, and only then is
the listener's own protocol built for the device's address, so everything after sees the
device. A balancer's health check (a LOCAL header, or none before it hangs up) is the balancer
itself. A header that does not come within HEADER_TIMEOUT, or is not one, ends the connection.
"""

from __future__ import annotations

import ipaddress
from typing import Any, cast

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    ITCPTransport,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.haproxy._v1parser import V1Parser  # Twisted's parsers; only its
from twisted.protocols.haproxy._v2parser import V2Parser  # endpoint wrapper is public
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

from ..config import BALANCER_PREFIX, ListenerConfig
from .front import address_within

log = Logger(namespace="xoauth2-proxy")

HEADER_TIMEOUT = 10.0  # seconds; a balancer sends the header at once
MAX_HEADER_BYTES = 2048  # v1 is at most 107 bytes; v2 with the TLVs HAProxy may add is far less
V1_PREFIX = b"PROXY "

Peer = IPv4Address | IPv6Address


def inner_endpoint(listen: str) -> str:
    """The endpoint a `haproxy:` listener listens on, without the prefix."""
    return listen.removeprefix(BALANCER_PREFIX)


def read_header(buffer: bytes) -> tuple[Peer | None, bytes] | None:
    """The device's address a PROXY header (v1 or v2) names (None for a LOCAL or UNKNOWN
    header: the balancer speaking for itself) and the bytes after it; None while more bytes
    are needed. ValueError when `buffer` does not start with a valid header."""
    v2 = V2Parser.PREFIX
    if buffer[: len(v2)] == v2[: len(buffer)]:
        if len(buffer) < 16:
            return None
        if buffer[12] & 0xF0 != 0x20:
            raise ValueError("not PROXY protocol version 2")
        parser: V1Parser | V2Parser = V2Parser()
    elif buffer[: len(V1_PREFIX)] == V1_PREFIX[: len(buffer)]:
        parser = V1Parser()
    else:
        raise ValueError("no PROXY header")
    try:
        info, rest = parser.feed(buffer)
    except Exception as e:  # Twisted's parsers raise InvalidProxyHeader and, on odd bytes, more
        raise ValueError(f"invalid PROXY header ({type(e).__name__})") from None
    if info is None or rest is None:
        if len(buffer) > MAX_HEADER_BYTES:
            raise ValueError("PROXY header too long")
        return None
    source = info.source
    if isinstance(source, (IPv4Address, IPv6Address)):
        try:
            ipaddress.ip_address(source.host)
        except ValueError:
            raise ValueError("the PROXY header's source is not an IP address") from None
        return source, rest
    return None, rest


class BalancerFactory(Factory):
    """Accepts connections from the balancers only; each reads its PROXY header and then
    carries the listener's own protocol (`inner`) built for the device's address."""

    def __init__(self, inner: IProtocolFactory, listener: ListenerConfig,
                 clock: IReactorTime, header_timeout: float = HEADER_TIMEOUT) -> None:
        self.inner = inner
        self.listener = listener
        self.clock = clock
        self.header_timeout = header_timeout

    def doStart(self) -> None:
        self.inner.doStart()

    def doStop(self) -> None:
        self.inner.doStop()

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        host = getattr(addr, "host", None)
        if addr is None or not address_within(host, self.listener.proxy_protocol_from):
            log.warn("{protocol} refused connection from {host}: not in proxy_protocol_from",
                     protocol=self.listener.protocol, host=host)
            return None
        return HeaderReader(self, addr)


@implementer(IHalfCloseableProtocol)
class HeaderReader(ProtocolWrapper):
    """Reads the PROXY header, then stands as the inner protocol's transport, reporting the
    device's address as its peer."""

    def __init__(self, factory: BalancerFactory, balancer: IAddress) -> None:
        self.balancer_factory = factory
        self.wrappedProtocol: IProtocol | None = None  # type: ignore[assignment]
        self.balancer = balancer
        self.peer: IAddress = balancer
        self._buffer = b""
        self._timer: IDelayedCall | None = None

    def makeConnection(self, transport: Any) -> None:
        directlyProvides(self, providedBy(transport))  # TLS, producer, ... as the real one
        Protocol.makeConnection(self, transport)

    def connectionMade(self) -> None:
        factory = self.balancer_factory
        self._timer = factory.clock.callLater(factory.header_timeout, self._no_header)

    def dataReceived(self, data: bytes) -> None:
        if self.wrappedProtocol is not None:
            self.wrappedProtocol.dataReceived(data)
            return
        if self.disconnecting:
            return
        self._buffer += data
        try:
            found = read_header(self._buffer)
        except ValueError as e:
            self._refuse(str(e))
            return
        if found is not None:
            source, rest = found
            self._buffer = b""
            self._start(source, rest)

    def _start(self, source: Peer | None, rest: bytes) -> None:
        self._cancel_timer()
        self.peer = source or self.balancer
        inner = self.balancer_factory.inner.buildProtocol(self.peer)
        if inner is None:  # not in allow_from: refused without a word
            self._close()
            return
        self.wrappedProtocol = inner
        inner.makeConnection(cast(ITransport, self))
        if rest and not self.disconnecting:
            inner.dataReceived(rest)

    def _refuse(self, reason: str) -> None:
        log.warn("{protocol} closing connection from balancer {host}: {reason}",
                 protocol=self.balancer_factory.listener.protocol,
                 host=getattr(self.balancer, "host", None), reason=reason)
        self._close()

    def _no_header(self) -> None:
        self._timer = None
        if self.wrappedProtocol is None:
            self._refuse(f"no PROXY header within {self.balancer_factory.header_timeout:g} s")
            cast(ITCPTransport, self.transport).abortConnection()

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def getPeer(self) -> IAddress:
        return self.peer

    def _close(self) -> None:
        self.disconnecting = 1
        cast(ITransport, self.transport).loseConnection()

    def readConnectionLost(self) -> None:
        if IHalfCloseableProtocol.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.readConnectionLost()
        else:
            self._close()

    def writeConnectionLost(self) -> None:
        if IHalfCloseableProtocol.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.writeConnectionLost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_timer()
        inner, self.wrappedProtocol = self.wrappedProtocol, None
        if inner is not None:
            inner.connectionLost(reason)
