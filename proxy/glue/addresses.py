"""Where an upstream is: its addresses, looked up at most once per ADDRESS_TTL for a host name.

Twisted's HostnameEndpoint asks the reactor's resolver at every connection, and that resolver
runs getaddrinfo in a thread (even for an IP address), a round trip through the thread pool and
a DNS query per login. An upstream's addresses hardly change from one login to the next, so
they are kept for a short while; logins that find none kept share one lookup.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import (
    IAddress,
    IHostnameResolver,
    IHostResolution,
    IReactorPluggableNameResolver,
    IResolutionReceiver,
    IStreamClientEndpoint,
)
from zope.interface import implementer

# Office 365's DNS answers live one to five minutes; a moved upstream is followed within this.
ADDRESS_TTL = 30.0


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        """Nothing to stop: the lookup is shared, and a receiver ignores a late answer itself."""


class CachedAddresses:
    """One host name's addresses: kept for `ttl` seconds after a lookup that found some;
    forgotten at once when connecting to them failed."""

    def __init__(self, host: str, port: int, ttl: float = ADDRESS_TTL) -> None:
        self.host = host
        self.port = port
        self.ttl = ttl
        self._addresses: list[IAddress] = []
        self._expires = 0.0
        self._waiting: list[IResolutionReceiver] | None = None  # a lookup is under way

    def resolve(self, reactor: Any, receiver: IResolutionReceiver) -> IHostResolution:
        """Hands `receiver` the addresses: at once when kept, else after the reactor's own
        resolver answered (one lookup for every receiver that asks meanwhile)."""
        resolution = _Resolution(self.host)
        receiver.resolutionBegan(resolution)
        if self._addresses and reactor.seconds() < self._expires:
            _deliver(receiver, self._addresses)
        elif self._waiting is not None:
            self._waiting.append(receiver)
        else:
            self._waiting = [receiver]
            reactor.nameResolver.resolveHostName(_Collector(self, reactor), self.host, self.port)
        return resolution

    def forget(self) -> None:
        self._addresses = []

    def _found(self, addresses: list[IAddress], now: float) -> None:
        waiting, self._waiting = self._waiting or [], None
        if addresses:  # a failed lookup is not kept: the next login asks again
            self._addresses = addresses
            self._expires = now + self.ttl
        for receiver in waiting:
            _deliver(receiver, addresses)


@implementer(IResolutionReceiver)
class _Collector:
    def __init__(self, cache: CachedAddresses, reactor: Any) -> None:
        self.cache = cache
        self.reactor = reactor
        self.addresses: list[IAddress] = []

    def resolutionBegan(self, resolutionInProgress: IHostResolution) -> None:
        pass

    def addressResolved(self, address: IAddress) -> None:
        self.addresses.append(address)

    def resolutionComplete(self) -> None:
        self.cache._found(self.addresses, self.reactor.seconds())


def _deliver(receiver: IResolutionReceiver, addresses: list[IAddress]) -> None:
    for address in addresses:
        receiver.addressResolved(address)
    receiver.resolutionComplete()


@implementer(IHostnameResolver)
class _OneHost:
    def __init__(self, reactor: Any, cache: CachedAddresses) -> None:
        self.reactor = reactor
        self.cache = cache

    def resolveHostName(self, resolutionReceiver: IResolutionReceiver, hostName: str,
                        portNumber: int = 0, addressTypes: Any = None,
                        transportSemantics: str = "TCP") -> IHostResolution:
        assert hostName == self.cache.host, "asked for another host"
        return self.cache.resolve(self.reactor, resolutionReceiver)


@implementer(IReactorPluggableNameResolver)
class _ResolvingThrough:
    """The reactor, with the cache as its name resolver: Twisted's own way to give
    HostnameEndpoint another resolver (it keeps its parallel attempts over the addresses)."""

    def __init__(self, reactor: Any, cache: CachedAddresses) -> None:
        self._reactor = reactor
        self.nameResolver = _OneHost(reactor, cache)

    def installNameResolver(self, resolver: IHostnameResolver) -> IHostnameResolver:
        raise NotImplementedError("a view of the reactor for one host")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


def tcp_endpoint(reactor: Any, host: str, port: int, timeout: float,
                 cache: CachedAddresses | None) -> IStreamClientEndpoint:
    """An endpoint to `host`: straight to it when it is an IP address; through `cache` (made
    for this host and port) when it is a name."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        assert cache is not None and cache.host == host, "a host name needs its cache"
        return HostnameEndpoint(_ResolvingThrough(reactor, cache), host, port, timeout=timeout)
    if address.version == 6:
        return TCP6ClientEndpoint(reactor, host, port, timeout=timeout)
    return TCP4ClientEndpoint(reactor, host, port, timeout=timeout)

