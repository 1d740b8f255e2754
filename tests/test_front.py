"""The Twisted glue around the sans-I/O cores: pausing, splicing, flow control, timeouts."""

from __future__ import annotations

from ipaddress import ip_network
from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from proxy.actions import LoggedIn
from proxy.config import Limits, ListenerConfig
from proxy.errors import UpstreamUnavailable, WrongPassword
from proxy.glue.front import FrontFactory, FrontProtocol
from proxy.glue.relay import DRAIN_TIMEOUT, IDLE_TIMEOUT
from proxy.glue.signed_in import SignedIn
from proxy.glue.upstream_connection import SignedInUpstream, UpstreamProtocol, UpstreamTarget
from proxy.imap.device import ImapSession
from proxy.imap.upstream import ImapUpstreamLogin
from proxy.protocols import IMAP_BUSY

TARGET = UpstreamTarget("upstream.example", 993, True)
NO_CAPABILITIES = LoggedIn()


class ScriptedGateway:
    """Hands out a login Deferred per attempt, which the test fires."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, defer.Deferred[Any]]] = []

    async def login(self, username: str, password: str, source: str) -> SignedIn:
        d: defer.Deferred[Any] = defer.Deferred()
        self.attempts.append((username, d))
        result: SignedIn = await d
        return result


def connected_upstream(
    clock: MemoryReactorClock, leftover: bytes = b"", logged_in: LoggedIn = NO_CAPABILITIES
) -> tuple[SignedInUpstream, UpstreamProtocol, StringTransport]:
    """A signed-in upstream over a StringTransport, as connect_upstream returns it."""
    core = ImapUpstreamLogin("alice@example.com", "token")
    core.take_unparsed = lambda: leftover  # type: ignore[method-assign]
    upstream = UpstreamProtocol(core, TARGET)
    transport = StringTransport()
    upstream.makeConnection(transport)
    upstream.outcome.callback(logged_in)
    return SignedInUpstream(upstream, logged_in, clock), upstream, transport


DEFAULT_LIMITS = Limits()
LOOPBACK_LISTENER = ListenerConfig("imap", "tcp:1143:interface=127.0.0.1", "tls:x:993")
LAN_LISTENER = ListenerConfig("imap", "tcp:1143:interface=0.0.0.0", "tls:x:993", allow_plaintext=True)


def factory(
    listener: ListenerConfig = LOOPBACK_LISTENER, limits: Limits = DEFAULT_LIMITS
) -> tuple[FrontFactory, ScriptedGateway, MemoryReactorClock]:
    gateway = ScriptedGateway()
    clock = MemoryReactorClock()
    built = FrontFactory(listener, ImapSession, gateway, clock, limits, IMAP_BUSY)  # type: ignore[arg-type]
    return built, gateway, clock


def connect(built: FrontFactory, host: str = "127.0.0.1", port: int = 5000) -> tuple[Any, StringTransport]:
    protocol = built.buildProtocol(IPv4Address("TCP", host, port))
    transport = StringTransport()
    if protocol is not None:
        protocol.makeConnection(transport)
    return protocol, transport


def front() -> tuple[FrontProtocol, StringTransport, ScriptedGateway, MemoryReactorClock]:
    built, gateway, clock = factory()
    protocol, transport = connect(built)
    assert isinstance(protocol, FrontProtocol)
    return protocol, transport, gateway, clock


def test_greeting_is_sent_on_connect() -> None:
    """The client gets the IMAP greeting as soon as it connects."""
    _, transport, _, _ = front()
    assert transport.value().startswith(b"* OK [CAPABILITY ")


def test_login_pauses_the_client_until_the_outcome_is_known() -> None:
    """While the password is checked and the upstream signs in, nothing more is read."""
    protocol, transport, gateway, _ = front()
    protocol.dataReceived(b"a1 LOGIN alice secret\r\n")
    assert transport.producerState == "paused"
    assert [name for name, _ in gateway.attempts] == ["alice"]


def test_success_relays_with_pipelined_bytes_first_and_flow_control() -> None:
    """After login the OK goes out, pipelined commands reach the upstream first, both
    transports produce for each other, and the client is read again."""
    protocol, transport, gateway, clock = front()
    protocol.dataReceived(b"a1 LOGIN alice secret\r\na2 SELECT INBOX\r\n")
    signed_in, upstream, upstream_transport = connected_upstream(
        clock, leftover=b"* 1 EXISTS\r\n", logged_in=LoggedIn(("IMAP4rev1", "IDLE"))
    )
    transport.clear()
    gateway.attempts[0][1].callback(signed_in)
    assert transport.value() == b"a1 OK [CAPABILITY IMAP4rev1 IDLE] LOGIN completed\r\n* 1 EXISTS\r\n"
    assert upstream_transport.value() == b"a2 SELECT INBOX\r\n"
    assert transport.producer is upstream_transport
    assert upstream_transport.producer is transport
    assert transport.producerState == "producing"
    protocol.dataReceived(b"a3 NOOP\r\n")
    upstream.dataReceived(b"a3 OK done\r\n")
    assert upstream_transport.value().endswith(b"a3 NOOP\r\n")
    assert transport.value().endswith(b"a3 OK done\r\n")


def test_wrong_password_answers_and_resumes_reading() -> None:
    """A wrong password is answered NO [AUTHENTICATIONFAILED] and the client may try again."""
    protocol, transport, gateway, _ = front()
    protocol.dataReceived(b"a1 LOGIN alice wrong\r\n")
    transport.clear()
    gateway.attempts[0][1].errback(WrongPassword())
    assert transport.value().startswith(b"a1 NO [AUTHENTICATIONFAILED]")
    assert transport.producerState == "producing"


def test_temporary_failure_is_unavailable_not_a_password_failure() -> None:
    """An unreachable upstream is answered NO [UNAVAILABLE] with the reason."""
    protocol, transport, gateway, _ = front()
    protocol.dataReceived(b"a1 LOGIN alice secret\r\n")
    transport.clear()
    gateway.attempts[0][1].errback(UpstreamUnavailable("The mail server did not answer in time"))
    assert transport.value() == b"a1 NO [UNAVAILABLE] The mail server did not answer in time\r\n"


def test_unexpected_error_is_temporary_and_logged_not_raised() -> None:
    """A bug in the login path becomes NO [UNAVAILABLE], never a crash or a password failure;
    it is logged once, and the login's Deferred ends handled (no "Unhandled error" later)."""
    logged: list[tuple[str, type]] = []

    def observe(event: dict[str, Any]) -> None:
        if "log_failure" in event:
            logged.append((event["log_format"], event["log_failure"].type))

    globalLogPublisher.addObserver(observe)
    try:
        protocol, transport, gateway, _ = front()
        protocol.dataReceived(b"a1 LOGIN alice secret\r\n")
        login = protocol._pending_login
        assert login is not None
        transport.clear()
        gateway.attempts[0][1].errback(RuntimeError("boom"))
    finally:
        globalLogPublisher.removeObserver(observe)
    assert transport.value().startswith(b"a1 NO [UNAVAILABLE]")
    assert b"boom" not in transport.value()
    assert logged == [("{label} unexpected error during login", RuntimeError)]
    outcome: list[object] = []
    login.addBoth(outcome.append)
    assert outcome == [None]


def test_client_gone_during_login_closes_the_new_upstream() -> None:
    """If the client disconnects while the upstream signs in, that upstream is closed."""
    protocol, transport, gateway, clock = front()
    protocol.dataReceived(b"a1 LOGIN alice secret\r\n")
    protocol.connectionLost(Failure(ConnectionDone()))
    signed_in, _, upstream_transport = connected_upstream(clock)
    gateway.attempts[0][1].callback(signed_in)
    assert upstream_transport.disconnecting


def test_upstream_closing_closes_the_client() -> None:
    """When the upstream goes, the client is disconnected after what was sent is flushed."""
    protocol, transport, gateway, clock = front()
    protocol.dataReceived(b"a1 LOGIN alice secret\r\n")
    signed_in, upstream, _ = connected_upstream(clock)
    gateway.attempts[0][1].callback(signed_in)
    upstream.connectionLost(Failure(ConnectionDone()))
    assert transport.disconnecting


def test_idle_relay_is_closed_only_after_the_idle_timeout() -> None:
    """A silent relayed session survives 31 minutes (IMAP IDLE) and is closed after the timeout."""
    protocol, transport, gateway, clock = front()
    protocol.dataReceived(b"a1 LOGIN alice secret\r\n")
    signed_in, upstream, upstream_transport = connected_upstream(clock)
    gateway.attempts[0][1].callback(signed_in)
    clock.advance(31 * 60)
    assert not transport.disconnecting
    protocol.dataReceived(b"a2 NOOP\r\n")  # activity postpones the timeout
    clock.advance(IDLE_TIMEOUT - 1)
    assert not transport.disconnecting
    clock.advance(IDLE_TIMEOUT)
    assert transport.disconnecting and upstream_transport.disconnecting


def test_client_half_close_leaves_the_upstream_time_to_answer() -> None:
    """A client that stops sending is not cut off from the answers still coming; both sides
    are closed once the far side has been silent for the drain time."""
    protocol, transport, gateway, clock = front()
    protocol.dataReceived(b"a1 LOGIN alice secret\r\n")
    signed_in, upstream, upstream_transport = connected_upstream(clock)
    gateway.attempts[0][1].callback(signed_in)
    protocol.dataReceived(b"a2 LOGOUT\r\n")
    protocol.readConnectionLost()
    clock.advance(DRAIN_TIMEOUT - 1)
    upstream.dataReceived(b"* BYE\r\n")  # still answering: the drain goes on
    clock.advance(DRAIN_TIMEOUT - 1)
    upstream.dataReceived(b"a2 OK LOGOUT completed\r\n")
    assert transport.value().endswith(b"* BYE\r\na2 OK LOGOUT completed\r\n")
    assert not upstream_transport.disconnecting and not transport.disconnecting
    clock.advance(DRAIN_TIMEOUT)
    assert upstream_transport.disconnecting and transport.disconnecting


def test_no_login_within_the_pre_login_timeout_closes() -> None:
    """A connection that never logs in is closed after the pre-login timeout."""
    _, transport, _, clock = front()
    clock.advance(Limits().pre_login_seconds - 1)
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting


def test_pre_login_timeout_still_applies_after_a_slow_failed_login() -> None:
    """A login still pending when the pre-login time runs out does not cancel the timeout:
    if it fails, the connection is closed a period later."""
    protocol, transport, gateway, clock = front()
    protocol.dataReceived(b"a1 LOGIN alice wrong\r\n")
    clock.advance(Limits().pre_login_seconds)
    assert not transport.disconnecting  # the login is still being checked
    gateway.attempts[0][1].errback(WrongPassword())
    clock.advance(Limits().pre_login_seconds)
    assert transport.disconnecting


def test_peers_outside_allow_from_are_refused_before_the_greeting() -> None:
    """Only loopback peers get a protocol by default; others are closed before any byte."""
    built, _, _ = factory(LAN_LISTENER)
    assert built.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5000)) is not None
    assert built.buildProtocol(IPv4Address("TCP", "192.168.1.20", 5000)) is None


def test_session_limits_per_address_and_per_listener() -> None:
    """Past the limits a client is told, in its protocol, to come back later; a closed
    session frees its slot."""
    built, _, _ = factory(limits=Limits(max_sessions=3, max_sessions_per_address=2))
    first, _ = connect(built)
    connect(built)
    busy, transport = connect(built)
    assert not isinstance(busy, FrontProtocol)
    assert transport.value() == IMAP_BUSY and transport.disconnecting
    first.connectionLost(Failure(ConnectionDone()))
    again, _ = connect(built)
    assert isinstance(again, FrontProtocol)
    other, _ = connect(built, "127.0.0.2")
    assert isinstance(other, FrontProtocol)  # a third address: the listener total is 3
    _, transport = connect(built, "127.0.0.3")
    assert transport.value() == IMAP_BUSY


def test_starttls_listener_requires_tls_before_login_from_the_network_only() -> None:
    """On a STARTTLS listener a LAN peer sees LOGINDISABLED until TLS; this machine does not."""
    listener = ListenerConfig("imap", "tcp:1143:interface=0.0.0.0", "tls:x:993", tls="starttls",
                              allow_from=(ip_network("0.0.0.0/0"),))
    built, _, _ = factory(listener)
    _, local = connect(built, "127.0.0.1")
    _, lan = connect(built, "192.168.1.20")
    assert b"STARTTLS" in local.value() and b"LOGINDISABLED" not in local.value()
    assert b"STARTTLS" in lan.value() and b"LOGINDISABLED" in lan.value()


def test_a_device_turned_away_for_want_of_descriptors_is_not_counted_as_a_session(
    monkeypatch: Any,
) -> None:
    """Out of open files, the device gets the busy answer and the sessions counter stays put;
    with room again the next device counts."""
    from proxy.glue import descriptors
    from proxy.metrics import ProxyMetrics

    metrics = ProxyMetrics()
    gateway, clock = ScriptedGateway(), MemoryReactorClock()
    built = FrontFactory(LOOPBACK_LISTENER, ImapSession, gateway, clock, DEFAULT_LIMITS,  # type: ignore[arg-type]
                         IMAP_BUSY, metrics=metrics)
    budget = descriptors.DescriptorBudget()
    budget.enabled = True
    monkeypatch.setattr(descriptors, "BUDGET", budget)
    monkeypatch.setattr(descriptors, "_soft_limit", lambda: 100)

    def accepted() -> float | None:
        return metrics.registry.get_sample_value("xoauth2_proxy_sessions_total",
                                                 {"listener": LOOPBACK_LISTENER.name})

    class Numbered(StringTransport):
        def __init__(self, number: int) -> None:
            super().__init__()
            self.number = number

        def fileno(self) -> int:
            return self.number

    turned_away = built.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5000))
    assert turned_away is not None
    crowded = Numbered(99)
    turned_away.makeConnection(crowded)
    assert crowded.value() == IMAP_BUSY and accepted() in (None, 0.0)
    served = built.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5001))
    assert served is not None
    roomy = Numbered(10)
    served.makeConnection(roomy)
    assert roomy.value().startswith(b"* OK") and accepted() == 1.0
