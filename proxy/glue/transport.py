"""The transport methods the proxy uses, as one typed interface.

Twisted's TCP and TLS transports provide all of these, spread over several zope interfaces
(ITransport, IPushProducer, IConsumer, ITLSTransport); a typing Protocol names the union once.
"""

from __future__ import annotations

from typing import Any, cast
from typing import Protocol as TypingProtocol

from twisted.internet.protocol import Protocol


class StreamTransport(TypingProtocol):
    def write(self, data: bytes) -> None: ...
    def loseConnection(self) -> None: ...
    def abortConnection(self) -> None: ...
    def pauseProducing(self) -> None: ...
    def resumeProducing(self) -> None: ...
    def registerProducer(self, producer: Any, streaming: bool) -> None: ...
    def startTLS(self, contextFactory: Any) -> None: ...
    def getHandle(self) -> Any: ...


class StreamProtocol(Protocol):
    """A Protocol whose transport is known to be a connected stream."""

    @property
    def stream(self) -> StreamTransport:
        assert self.transport is not None, "not connected"
        return cast(StreamTransport, self.transport)
