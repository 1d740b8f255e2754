"""Where an upstream is: IP addresses without a lookup, host names looked up once per TTL, and
the listen queue a listener gets."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IHostnameResolver, IHostResolution, IResolutionReceiver
from twisted.internet.testing import MemoryReactorClock
from zope.interface import implementer

from proxy.glue.addresses import ADDRESS_TTL, CachedAddresses, tcp_endpoint
from proxy.glue.tcp_options import DEFAULT_BACKLOG, with_default_backlog


@implementer(IHostnameResolver)
class PendingLookups:
    """A resolver whose lookups the test answers itself, in order."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, IResolutionReceiver]] = []

    def resolveHostName(self, resolutionReceiver: IResolutionReceiver, hostName: str,
                        portNumber: int = 0, addressTypes: Any = None,
                        transportSemantics: str = "TCP") -> IHostResolution:
        resolutionReceiver.resolutionBegan(None)  # type: ignore[arg-type]
        self.asked.append((hostName, resolutionReceiver))
        return None  # type: ignore[return-value]

    def answer(self, *hosts: str) -> None:
        _, receiver = self.asked[-1]
        for host in hosts:
            receiver.addressResolved(IPv4Address("TCP", host, 993))
        receiver.resolutionComplete()


@implementer(IResolutionReceiver)
class Found:
    def __init__(self) -> None:
        self.hosts: list[str] = []
        self.complete = False

    def resolutionBegan(self, resolutionInProgress: IHostResolution) -> None:
        pass

    def addressResolved(self, address: Any) -> None:
        self.hosts.append(address.host)

    def resolutionComplete(self) -> None:
        self.complete = True


def reactor_with(resolver: PendingLookups) -> MemoryReactorClock:
    reactor = MemoryReactorClock()
    reactor.nameResolver = resolver  # type: ignore[attr-defined]
    return reactor


def test_an_ip_address_is_connected_to_without_a_lookup() -> None:
    """An IPv4 or IPv6 upstream gets a plain TCP endpoint: no resolver, no thread."""
    reactor = MemoryReactorClock()
    assert isinstance(tcp_endpoint(reactor, "127.0.0.1", 993, 30, None), TCP4ClientEndpoint)
    assert isinstance(tcp_endpoint(reactor, "::1", 993, 30, None), TCP6ClientEndpoint)


def test_a_host_name_goes_through_its_cache() -> None:
    """A host name gets Twisted's HostnameEndpoint (parallel attempts), resolving through the cache."""
    resolver = PendingLookups()
    reactor = reactor_with(resolver)
    cache = CachedAddresses("mail.example", 993)
    endpoint = tcp_endpoint(reactor, "mail.example", 993, 30, cache)
    assert isinstance(endpoint, HostnameEndpoint)
    endpoint.connect(None)  # type: ignore[arg-type]
    assert [host for host, _ in resolver.asked] == ["mail.example"]


def test_logins_within_the_ttl_share_one_lookup() -> None:
    """Receivers asking while a lookup runs wait for it; later ones within the TTL get the
    kept addresses at once; after the TTL the name is looked up again."""
    resolver = PendingLookups()
    reactor = reactor_with(resolver)
    cache = CachedAddresses("mail.example", 993)
    first, second = Found(), Found()
    cache.resolve(reactor, first)
    cache.resolve(reactor, second)
    assert len(resolver.asked) == 1 and not first.complete
    resolver.answer("192.0.2.1", "192.0.2.2")
    assert first.hosts == second.hosts == ["192.0.2.1", "192.0.2.2"] and second.complete
    reactor.advance(ADDRESS_TTL - 1)
    kept = Found()
    cache.resolve(reactor, kept)
    assert kept.hosts == ["192.0.2.1", "192.0.2.2"] and len(resolver.asked) == 1
    reactor.advance(1)
    cache.resolve(reactor, Found())
    assert len(resolver.asked) == 2


def test_a_failed_lookup_or_connection_is_not_kept() -> None:
    """No addresses found means asking again next time; so does forget() after a failed connect."""
    resolver = PendingLookups()
    reactor = reactor_with(resolver)
    cache = CachedAddresses("mail.example", 993)
    nothing = Found()
    cache.resolve(reactor, nothing)
    resolver.answer()
    assert nothing.complete and nothing.hosts == []
    cache.resolve(reactor, Found())
    resolver.answer("192.0.2.1")
    cache.forget()
    cache.resolve(reactor, Found())
    assert len(resolver.asked) == 3


def test_listen_queue_default_and_explicit() -> None:
    """tcp, tcp6, ssl and unix listeners get backlog=1024 unless their string sets one."""
    assert with_default_backlog("tcp:1143:interface=127.0.0.1") == (
        f"tcp:1143:interface=127.0.0.1:backlog={DEFAULT_BACKLOG}")
    assert with_default_backlog("unix:/run/x.sock").endswith(f":backlog={DEFAULT_BACKLOG}")
    assert with_default_backlog("tcp:1143:backlog=200") == "tcp:1143:backlog=200"
    assert with_default_backlog("systemd:domain=INET:index=0") == "systemd:domain=INET:index=0"
