"""A Graph listener after login: the device's stream goes to a local receiving core
(proxy.smtp.receiving), and each message it completes is sent through Microsoft Graph.

Flow control: while a message is being sent the client is not read (its next commands wait in
the kernel); the device gets its answer only once Graph's outcome is known. The message's spool
is closed when the answer is given, when the session ends, and when the client goes away
mid-DATA (the temporary file goes with it); a client gone while Graph is still reading the spool
is let go only once Graph is done with it.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..actions import Close, LoggedIn, Send
from ..config import ListenerConfig
from ..graph import Envelope, Outcome, Sent, Temporary, describe
from ..smtp import SmtpSession
from ..smtp.outcomes import delivery_reply
from ..smtp.receiving import Deliver, ReceivingAction, SmtpReceiver
from ..smtp.replies import reply
from ..spool import MessageSpool
from ..tokens.blocking import RunBlocking
from ..tokens.broker import Grant, TokenBroker
from .graph_sender import GraphSender
from .signed_in import SessionEnded, SignedIn, SignIn
from .transport import StreamTransport

log = Logger(namespace="xoauth2-proxy")

# RFC 5321 4.5.3.2: a server waits at least 5 minutes for a command, 10 for a DATA block.
IDLE_TIMEOUT = 600.0


class GraphSession:
    """Serves the client's mail transactions (a ClientReader) and sends what it receives."""

    def __init__(self, client: StreamTransport, core: SmtpReceiver, sender: GraphSender,
                 grant: Grant, clock: IReactorTime, on_end: SessionEnded,
                 idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.client = client
        self.core = core
        self.sender = sender
        self.grant = grant
        self.clock = clock
        self.from_client_bytes = 0
        self.to_client_bytes = 0
        self._on_end: SessionEnded | None = on_end
        self._sending = False
        self._gone = False  # the client's connection is lost
        self._read_closed = False  # the client sends no more
        self._idle_timeout = idle_timeout
        self._last_activity = clock.seconds()
        self._timer: IDelayedCall | None = clock.callLater(idle_timeout, self._check_idle)

    def start(self, unparsed: bytes) -> None:
        if unparsed:
            self.from_client(unparsed)

    # -- ClientReader --

    def from_client(self, data: bytes) -> None:
        self.from_client_bytes += len(data)
        self._last_activity = self.clock.seconds()
        if self._sending:  # read before the pause took effect (the front resumes at handover)
            self.client.pauseProducing()
        self._perform(self.core.receive_data(data))

    def relayed(self) -> tuple[int, int]:
        return self.from_client_bytes, self.to_client_bytes

    def client_read_closed(self) -> None:
        self._read_closed = True
        if not self._sending:
            self.client.loseConnection()

    def client_lost(self) -> None:
        self._gone = True
        if not self._sending:
            self._end()

    # -- carrying out the core's actions --

    def _perform(self, actions: list[ReceivingAction]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self.to_client_bytes += len(action.data)
                self.client.write(action.data)
            elif isinstance(action, Close):
                self.client.loseConnection()
            elif isinstance(action, Deliver):
                self._deliver(action)

    def _deliver(self, action: Deliver) -> None:
        self._sending = True
        self.client.pauseProducing()
        started = time.monotonic()
        envelope = Envelope(action.sender, action.recipients)
        d = defer.Deferred.fromCoroutine(self.sender.send(self.grant, action.message, envelope))
        d.addErrback(self._unexpected)
        d.addCallback(self._delivered, action.message.size, started)

    def _unexpected(self, failure: Failure) -> tuple[Outcome, Grant]:
        log.failure("{user}: unexpected error while sending through Microsoft Graph", failure,
                    user=self.grant.username, account=self.grant.username,
                    event="graph_delivery_error")
        return Temporary("internal error in the proxy; see its log"), self.grant

    def _delivered(self, result: tuple[Outcome, Grant], size: int, started: float) -> None:
        outcome, self.grant = result
        self._sending = False
        log.info("{user}: a message of {size} bytes: {outcome} ({ms:.0f} ms)",
                 user=self.grant.username, size=size, outcome=describe(outcome),
                 ms=(time.monotonic() - started) * 1000, account=self.grant.username,
                 event="graph_delivery", reason=None if isinstance(outcome, Sent) else
                 describe(outcome))
        if self._gone:
            self._end()
            return
        self.client.resumeProducing()
        self._perform(self.core.delivered(*delivery_reply(outcome)))
        if self._read_closed:
            self.client.loseConnection()

    # -- the end --

    def _check_idle(self) -> None:
        idle_for = self.clock.seconds() - self._last_activity
        if self._sending or idle_for < self._idle_timeout:
            wait = self._idle_timeout - idle_for if not self._sending else self._idle_timeout
            self._timer = self.clock.callLater(max(wait, 1.0), self._check_idle)
            return
        self._timer = None
        self.client.write(reply("421", "4.4.2 Idle for too long, closing connection"))
        self.client.loseConnection()

    def _end(self) -> None:
        self.core.close()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if self._on_end is not None:
            on_end, self._on_end = self._on_end, None
            on_end(self.from_client_bytes, self.to_client_bytes)


@dataclass(frozen=True, eq=False)
class GraphSignedIn:
    """A SignedIn for a Graph listener: no upstream connection, a grant to send with."""

    grant: Grant
    sender: GraphSender
    max_message_size: int
    clock: IReactorTime
    logged_in: LoggedIn = field(default_factory=LoggedIn)

    @property
    def peer(self) -> str:
        return f"Microsoft Graph ({urlsplit(self.sender.client.base).netloc})"

    def take_client(self, client: StreamTransport, unparsed: bytes,
                    on_end: SessionEnded) -> GraphSession:
        limit = self.max_message_size
        core = SmtpReceiver(lambda: MessageSpool(limit), limit)
        session = GraphSession(client, core, self.sender, self.grant, self.clock, on_end)
        session.start(unparsed)
        return session

    def close(self) -> None:
        """Nothing to let go: no connection was made."""


def graph_front(listener: ListenerConfig) -> functools.partial[SmtpSession]:
    """The pre-login session of a Graph listener: its EHLO offers the listener's SIZE."""
    return functools.partial(SmtpSession, max_message_size=listener.max_message_size)


def graph_sign_in(clock: IReactorTime, listener: ListenerConfig, broker: TokenBroker,
                  run_blocking: RunBlocking) -> SignIn:
    """For the gateway: a login to a Graph listener needs nothing beyond its Graph token."""
    ca = str(listener.upstream_ca) if listener.upstream_ca is not None else None
    sender = GraphSender.for_url(listener.graph_url, ca, broker, run_blocking)

    async def sign_in(grant: Grant) -> SignedIn:
        return GraphSignedIn(grant, sender, listener.max_message_size, clock)

    return sign_in
