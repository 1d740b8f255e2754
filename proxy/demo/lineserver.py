"""The base of the demo mail servers (for `xoauth2-proxy demo` only): CRLF lines, typed writes."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IAddress, IProtocolFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.basic import LineReceiver


class LineServer(LineReceiver):
    delimiter = b"\r\n"

    def send_line(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data + self.delimiter)

    def send(self, text: str) -> None:
        self.send_line(text.encode())

    def close(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()

    def discard_buffered(self) -> None:
        self.clearLineBuffer()  # type: ignore[no-untyped-call]


class _DemoFactory(Factory):
    noisy = False  # no line per connection; the servers log each sign-in instead

    def __init__(self, build: Callable[[], Protocol], name: str) -> None:
        self.build = build
        self.name = name

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        protocol = self.build()
        protocol.factory = self
        return protocol

    def logPrefix(self) -> str:
        return self.name  # Twisted's "<name> starting on <port>" line


def demo_factory(build: Callable[[], Protocol], name: str) -> IProtocolFactory:
    return _DemoFactory(build, name)
