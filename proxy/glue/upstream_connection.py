"""The upstream side: connecting to the mail server and running a protocol's XOAUTH2 login.

The connection is made only once the local password has been checked and a token is in hand.
`connect_upstream` returns a SignedInUpstream: a connection whose login succeeded, ready to be
handed over to the relay (or to `account check`'s probe); every way this can fail becomes a
TemporaryFailure with a reason.
"""

from __future__ import annotations

import errno
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol as TypingProtocol

from OpenSSL import SSL
from twisted.internet import defer
from twisted.internet import error as net_error
from twisted.internet.endpoints import wrapClientTLS
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IHandshakeListener,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from ..actions import Close, LoggedIn, LoginRefused, Send, StartTLS, UpstreamLogin
from ..config import ListenerConfig, endpoint_parts
from ..errors import UpstreamUnavailable
from ..metrics import Timing
from ..tokens.broker import Grant
from .addresses import CachedAddresses, tcp_endpoint
from .relay import Relay
from .signed_in import ClientReader, SessionEnded, SignedIn, SignIn
from .tcp_options import send_without_delay
from .transport import StreamProtocol, StreamTransport
from .upstream_tls import ResumingTLS, describe_tls_error


@dataclass(frozen=True, eq=False)
class UpstreamTarget:
    """Where a listener's upstream is and how to reach it securely."""

    host: str
    port: int
    implicit_tls: bool  # tls:HOST:PORT; tcp:HOST:PORT means plain TCP (SMTP then does STARTTLS)
    ca: Path | None = None
    timeout: float = 30.0  # seconds to connect, and then to sign in

    @classmethod
    def from_listener(cls, listener: ListenerConfig, timeout: float) -> UpstreamTarget:
        kind, args, kwargs = endpoint_parts(listener.upstream)
        ca = listener.upstream_ca
        if ca is None and "trustRoots" in kwargs:
            ca = Path(kwargs["trustRoots"])
        return cls(args[0], int(args[1]), kind == "tls", ca, timeout)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @functools.cached_property
    def tls_options(self) -> ResumingTLS:
        """Built once: loading CA files and making an SSL context per login costs milliseconds,
        and the session a login leaves is offered to the next."""
        return ResumingTLS(self.host, self.ca)

    @functools.cached_property
    def addresses(self) -> CachedAddresses:
        return CachedAddresses(self.host, self.port)

    def endpoint(self, reactor: IReactorTime) -> IStreamClientEndpoint:
        tcp = tcp_endpoint(reactor, self.host, self.port, self.timeout, self.addresses)
        if self.implicit_tls:
            return wrapClientTLS(self.tls_options, tcp)
        return tcp


class UpstreamReader(TypingProtocol):
    """What takes over the upstream's bytes and closes after login: the relay, or the probe of
    `account check`."""

    def from_upstream(self, data: bytes) -> None: ...

    def upstream_read_closed(self) -> None: ...

    def upstream_lost(self) -> None: ...


@dataclass(frozen=True)
class Handover:
    """What a reader gets when a signed-in connection is handed over to it."""

    unparsed: bytes  # what the server sent after its login answer: the reader's, first
    transport: StreamTransport  # the connection, to write to and to close


@implementer(IHalfCloseableProtocol, IHandshakeListener)
class UpstreamProtocol(StreamProtocol):
    """Runs the login core until it succeeds or fails; once handed over, passes everything
    from the server to its reader."""

    def __init__(self, core: UpstreamLogin, target: UpstreamTarget) -> None:
        self.core = core
        self.target = target
        self.outcome: defer.Deferred[LoggedIn] = defer.Deferred()
        self.reader: UpstreamReader | None = None

    def hand_over(self, reader: UpstreamReader) -> Handover:
        """From now on every byte and close from the server goes to `reader`, which gets what
        the login core left unparsed and the transport."""
        assert self.outcome.called and self.reader is None, "hand over once, after the login"
        self.reader = reader
        return Handover(self.core.take_unparsed(), self.stream)

    def connectionMade(self) -> None:
        send_without_delay(self.transport)

    def handshakeCompleted(self) -> None:
        """Every TLS handshake, resumed ones too, ends with the certificate's name checked."""
        try:
            self.target.tls_options.check_peer(self.stream.getHandle())
        except Exception as e:  # VerificationError, CertificateError: the same to the user
            if not self.outcome.called:
                self.outcome.errback(_insecure(self.target, e))
            self.stream.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        if self.reader is not None:
            self.reader.from_upstream(data)
            return
        if self.outcome.called:
            return
        for action in self.core.receive_data(data):
            if isinstance(action, Send):
                self.stream.write(action.data)
            elif isinstance(action, StartTLS):
                self.stream.startTLS(self.target.tls_options)
            elif isinstance(action, LoggedIn):
                self.outcome.callback(action)
            elif isinstance(action, LoginRefused):
                self.outcome.errback(action.error)
            elif isinstance(action, Close):
                self.stream.loseConnection()

    def readConnectionLost(self) -> None:
        if self.reader is not None:
            self.reader.upstream_read_closed()
        else:
            self.stream.loseConnection()

    def writeConnectionLost(self) -> None:
        """Our side was half-closed (relaying the client's end); nothing more to do."""

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.reader is not None:
            self.reader.upstream_lost()
        if not self.outcome.called:
            self.outcome.errback(_lost_during_login(self.target, reason))


def _lost_during_login(target: UpstreamTarget, reason: Failure) -> UpstreamUnavailable:
    if reason.value is not None and describe_tls_error(reason.value):
        return _insecure(target, reason.value)
    return UpstreamUnavailable(f"The mail server {target.address} closed the connection during login")


def _insecure(target: UpstreamTarget, error: BaseException) -> UpstreamUnavailable:
    target.tls_options.forget()  # whatever went wrong, the next handshake starts afresh
    problem = describe_tls_error(error) or "the TLS handshake failed"
    return UpstreamUnavailable(f"Could not connect securely to {target.address}: {problem}")


@dataclass(frozen=True, eq=False)
class SignedInUpstream:
    """A SignedIn over TCP: the client's stream is relayed to the signed-in connection."""

    connection: UpstreamProtocol
    logged_in: LoggedIn
    clock: IReactorTime

    @property
    def peer(self) -> str:
        return self.connection.target.address

    def take_client(
        self, client: StreamTransport, unparsed: bytes, on_end: SessionEnded
    ) -> ClientReader:
        relay = Relay(client, self.clock, on_end)
        upstream = self.connection.hand_over(relay)
        relay.start(upstream.transport, pending_to_upstream=unparsed,
                    pending_to_client=upstream.unparsed)
        return relay

    def close(self) -> None:
        self.connection.stream.loseConnection()


async def connect_upstream(
    reactor: IReactorTime,
    target: UpstreamTarget,
    make_core: Callable[[], UpstreamLogin],
    timing: Timing | None = None,
) -> SignedInUpstream:
    """Connect and sign in; raises ProxyError. `timing` is told how long connecting took, and
    then signing in, when each succeeded."""
    protocol = UpstreamProtocol(make_core(), target)
    factory = Factory.forProtocol(lambda: protocol)
    factory.noisy = False  # one factory per login: "Starting factory" lines would flood the log
    started = reactor.seconds()
    try:
        await target.endpoint(reactor).connect(factory)
    except net_error.ConnectError as e:
        target.addresses.forget()  # moved, or down: look the name up again next time
        raise UpstreamUnavailable(
            f"Could not connect to the mail server {target.address}: {_connect_reason(e)}"
        ) from None
    connected = reactor.seconds()
    timer = reactor.callLater(target.timeout, _give_up, protocol)
    try:
        logged_in = await protocol.outcome
    finally:
        if timer.active():
            timer.cancel()
    handle = protocol.stream.getHandle()
    if isinstance(handle, SSL.Connection):  # by now the server's session tickets have come
        target.tls_options.remember(handle)
    if timing is not None:
        timing("connect", connected - started)
        timing("login", reactor.seconds() - connected)
    return SignedInUpstream(protocol, logged_in, reactor)


def upstream_sign_in(
    reactor: IReactorTime, target: UpstreamTarget, make_login: Callable[[str, str], UpstreamLogin],
    timing: Timing | None = None,
) -> SignIn:
    """Signs in to `target` with the listener's login core, for the gateway."""

    def sign_in(grant: Grant) -> Awaitable[SignedIn]:
        return connect_upstream(
            reactor, target, lambda: make_login(grant.mailbox, grant.access_token), timing)

    return sign_in


def _give_up(protocol: UpstreamProtocol) -> None:
    if not protocol.outcome.called:
        protocol.outcome.errback(
            UpstreamUnavailable(f"The mail server {protocol.target.address} did not answer in time")
        )
    protocol.stream.abortConnection()


def _connect_reason(e: net_error.ConnectError) -> str:
    if isinstance(e, net_error.ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, (net_error.TimeoutError, net_error.TCPTimedOutError)):
        return "timed out"
    if isinstance(e, net_error.DNSLookupError):
        return "the host name could not be resolved"
    if isinstance(e, net_error.NoRouteError):
        return "no route to the host"
    if isinstance(e, net_error.ConnectBindError) and e.osError in (errno.EMFILE, errno.ENFILE):
        return "the proxy has no file descriptors left (see its log)"
    return "the connection was reset or dropped while connecting"

