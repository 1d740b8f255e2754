"""The device side: a client's connection runs a sans-I/O front session, logs in through the
gateway when the session asks, then hands the rest of its stream to the signed-in upstream."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IOpenSSLServerConnectionCreator,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..actions import Close, FrontAction, FrontSession, Login, Relay, Send, StartTLS
from ..config import Limits, ListenerConfig, Network
from ..errors import ProxyError, TemporaryFailure
from ..metrics import ProxyMetrics
from . import descriptors
from .gateway import Gateway
from .sessions import OpenSessions
from .signed_in import ClientReader, SignedIn
from .tcp_options import send_without_delay
from .transport import StreamProtocol

log = Logger(namespace="xoauth2-proxy")


@implementer(IHalfCloseableProtocol)  # a client that shuts down its sending side still gets
class FrontProtocol(StreamProtocol):  # the answers it is owed
    def __init__(
        self, session: FrontSession, factory: FrontFactory, source: str, label: str, peer: str
    ) -> None:
        self.session = session
        self.factory = factory
        self.gateway = factory.gateway
        self.clock = factory.clock
        self.source = source  # the client's address, for throttling
        self.label = label  # "imap 127.0.0.1:51234", for the log
        self.peer = peer  # "127.0.0.1:51234"
        self.username: str | None = None
        self.signed_in: SignedIn | None = None
        self.reader: ClientReader | None = None  # takes the client's stream after login
        self.closed = False
        self.relay_ended = False
        self.refused = False  # out of file descriptors: told to come back later
        self._started = self.clock.seconds()
        self._pending_login: defer.Deferred[SignedIn] | None = None
        self._timeout: IDelayedCall | None = None

    def connectionMade(self) -> None:
        send_without_delay(self.transport)
        if not descriptors.BUDGET.has_room(self.transport):
            self.closed = self.refused = True  # logged once by the budget, not per connection
            self.stream.write(self.factory.busy_answer)
            self.stream.loseConnection()
            return
        # Counted here, not when the protocol is built: a device turned away for want of
        # descriptors got no session.
        self.factory.metrics.session_opened(self.factory.listener.name)
        log.info("{label} connected", **self._about("connected"))
        # A device that connects and never logs in must not hold a connection slot for ever.
        self._timeout = self.clock.callLater(
            self.factory.limits.pre_login_seconds, self._pre_login_timeout
        )
        self._perform(self.session.start())

    def dataReceived(self, data: bytes) -> None:
        if self.reader is not None:
            self.reader.from_client(data)
        elif not self.closed:
            self._perform(self.session.receive_data(data))

    def readConnectionLost(self) -> None:
        if self.reader is not None:
            self.reader.client_read_closed()
        else:
            self.stream.loseConnection()

    def writeConnectionLost(self) -> None:
        """Our side was half-closed (relaying the upstream's end); nothing more to do."""

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed = True
        self.factory.sessions.closed(self.source, self)
        self._cancel_timeout()
        if self.reader is not None:
            self.reader.client_lost()
        elif not self.refused:
            log.info("{label} closed before login ({seconds:.1f} s)",
                     seconds=self.clock.seconds() - self._started, **self._about("closed"))

    # -- carrying out the session's actions --

    def _perform(self, actions: list[FrontAction]) -> None:
        for action in actions:
            if isinstance(action, Send):
                if action.note:
                    log.warn("{label} {note}", note=action.note,
                             **self._about("note", reason=action.note))
                self.stream.write(action.data)
            elif isinstance(action, Close):
                if action.reason:
                    log.warn("{label} closing: {reason}", **self._about("closing", reason=action.reason))
                self.stream.loseConnection()
                return
            elif isinstance(action, Login):
                self._login(action)
            elif isinstance(action, Relay):
                self._relay()
            elif isinstance(action, StartTLS):
                assert self.factory.server_tls is not None, "STARTTLS offered without a certificate"
                self.stream.startTLS(self.factory.server_tls)

    def _login(self, action: Login) -> None:
        # Read nothing more from the client until the outcome is known; pipelined commands
        # wait in the kernel and in the session's buffer.
        self.stream.pauseProducing()
        self.username = action.username
        started = self.clock.seconds()
        d = defer.Deferred.fromCoroutine(
            self.gateway.login(action.username, action.password, self.source)
        )
        self._pending_login = d
        d.addCallbacks(self._login_succeeded, self._login_failed, callbackArgs=(started,))

    def _login_succeeded(self, signed_in: SignedIn, started: float) -> None:
        self._pending_login = None
        self.factory.metrics.login(self.factory.listener.name, self.username or "", self.source,
                                   None)
        if self.closed:
            signed_in.close()  # the client left while we signed in
            return
        self.signed_in = signed_in
        log.info(
            "{label} {user} logged in upstream {upstream} ({ms:.0f} ms)",
            user=self.username, upstream=signed_in.peer,
            ms=(self.clock.seconds() - started) * 1000, **self._about("login"),
        )
        self._perform(self.session.login_succeeded(signed_in.logged_in))

    def _login_failed(self, failure: Failure) -> None:
        self._pending_login = None
        error = failure.value
        if not isinstance(error, ProxyError):
            log.failure("{label} unexpected error during login", failure,
                        **self._about("login_error"))
            error = TemporaryFailure("Internal error in the proxy; see its log")
        self.factory.metrics.login(self.factory.listener.name, self.username or "", self.source,
                                   error)
        log.info(
            "{label} {user} login failed ({kind}): {message}",
            user=self.username, kind=error.kind.value, message=error.message,
            **self._about("login_failed", reason=error.message),
        )
        if self.closed:
            return
        self.stream.resumeProducing()
        self._perform(self.session.login_failed(error))

    def _relay(self) -> None:
        assert self.signed_in is not None
        self._cancel_timeout()
        self.reader = self.signed_in.take_client(
            self.stream, self.session.take_unparsed(), self._session_ended
        )
        if not self.relay_ended:  # it can end at once, when the upstream left during login
            self.factory.metrics.session_relaying(self.factory.listener.name, self.reader)
        self.stream.resumeProducing()

    def _session_ended(self, to_upstream: int, to_client: int) -> None:
        self.relay_ended = True
        self.factory.metrics.session_ended(self.factory.listener.name, self.reader, to_upstream,
                                           to_client)
        log.info(
            "{label} {user} closed: {up} bytes to upstream, {down} bytes to client, {seconds:.1f} s",
            user=self.username, up=to_upstream, down=to_client,
            seconds=self.clock.seconds() - self._started, **self._about("closed"),
        )

    def _about(self, event: str, reason: str | None = None) -> dict[str, Any]:
        """The fields every line about this session carries (the JSON log's keys)."""
        return {"label": self.label, "listener": self.factory.listener.name, "peer": self.peer,
                "account": self.username, "event": event, "reason": reason}

    def close_now(self) -> None:
        """The proxy is stopping and its grace period is over: end the session (and so its
        upstream connection). A FIN, not a reset: the device sees an orderly close, and the
        process exits right after, so a client that stopped reading cannot hold it open."""
        self.stream.loseConnection()

    def _pre_login_timeout(self) -> None:
        self._timeout = None
        if self.reader is not None:
            return
        if self._pending_login is not None:
            # Signing in upstream has its own timeout; if it fails, the client must not be
            # left without one.
            self._timeout = self.clock.callLater(
                self.factory.limits.pre_login_seconds, self._pre_login_timeout
            )
            return
        log.info("{label} no login within {s} s, closing", s=self.factory.limits.pre_login_seconds,
                 **self._about("login_timeout"))
        self.stream.loseConnection()

    def _cancel_timeout(self) -> None:
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None


class _Busy(Protocol):
    """Tells a client over the session limits to come back later, in its protocol's words."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.answer)
        self.transport.loseConnection()


class FrontFactory(Factory):
    """Builds a front per accepted connection, for peers the listener allows, within the
    session limits (counted in `sessions`, which a reloaded listener's new factory shares)."""

    noisy = False  # Twisted's "Starting factory <...>" lines say nothing to an administrator

    def __init__(
        self,
        listener: ListenerConfig,
        make_session: Callable[..., FrontSession],
        gateway: Gateway,
        clock: IReactorTime,
        limits: Limits,
        busy_answer: bytes,
        server_tls: IOpenSSLServerConnectionCreator | None = None,
        sessions: OpenSessions | None = None,
        metrics: ProxyMetrics | None = None,
    ) -> None:
        self.listener = listener
        self.make_session = make_session
        self.gateway = gateway
        self.clock = clock
        self.limits = limits
        self.busy_answer = busy_answer
        self.server_tls = server_tls  # for STARTTLS
        self.sessions = sessions if sessions is not None else OpenSessions()
        self.metrics = metrics or ProxyMetrics()

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        host = getattr(addr, "host", None)
        if host is not None and not address_within(host, self.listener.allow_from):
            log.warn("{protocol} refused connection from {host}: not in allow_from",
                     protocol=self.listener.protocol, host=host, listener=self.listener.name,
                     peer=host, event="refused", reason="not in allow_from")
            return None  # Twisted closes the connection before anything is sent
        source = host or "local"
        if (
            len(self.sessions) >= self.limits.max_sessions
            or self.sessions.count(source) >= self.limits.max_sessions_per_address
        ):
            log.warn("{protocol} refused connection from {source}: session limit reached "
                     "({count} open from it, {total} in all)", protocol=self.listener.protocol,
                     source=source, count=self.sessions.count(source), total=len(self.sessions),
                     listener=self.listener.name, peer=source, event="busy",
                     reason="session limit reached")
            return _Busy(self.busy_answer)
        peer = f"{host}:{getattr(addr, 'port', '')}"
        label = f"{self.listener.protocol} {peer}"
        tls = self.listener.tls
        session = self.make_session(
            starttls=tls == "starttls",
            tls_active=tls == "implicit",
            # Plaintext passwords may not cross a network: on STARTTLS listeners, peers other
            # than this machine must start TLS before they log in.
            login_requires_tls=tls == "starttls" and not _is_loopback(host),
        )
        protocol = FrontProtocol(session, self, source, label, peer)
        self.sessions.opened(source, protocol)
        return protocol


def address_within(host: str | None, networks: tuple[Network, ...]) -> bool:
    """Whether `host` (an IP address, IPv4-mapped or scoped forms too) is in one of `networks`."""
    address = _address(host)
    return address is not None and any(address in network for network in networks)


@functools.lru_cache(maxsize=4096)  # parsed at every connection, twice; devices reconnect
def _address(host: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address((host or "").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_loopback(host: str | None) -> bool:
    address = _address(host)
    return address is not None and address.is_loopback
