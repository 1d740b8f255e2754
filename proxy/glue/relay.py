"""The relay: two connections joined after login, bytes both ways untouched, with flow control.

Each transport is registered as the producer of the other, so a client that stops reading stops
the reads from the upstream (and the reverse) instead of buffering a whole mailbox in memory.
"""

from __future__ import annotations

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from .signed_in import SessionEnded
from .transport import StreamTransport

# Office 365 ends idle IMAP sessions after 30 minutes; the proxy must never be the first to.
IDLE_TIMEOUT = 31 * 60 + 60
# After one side stops sending (or goes away: a FIN looks the same), the other may go on
# delivering what it owes as long as it is never silent this long.
DRAIN_TIMEOUT = 5.0


class Relay:
    """Reads the client's bytes (a ClientReader) and the upstream's (an UpstreamReader) and
    passes each to the other side, counting them."""

    def __init__(
        self,
        client: StreamTransport,
        clock: IReactorTime,
        on_end: SessionEnded,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.client = client
        self.upstream: StreamTransport  # set by start()
        self.clock = clock
        self.to_upstream = 0  # bytes
        self.to_client = 0
        self._on_end: SessionEnded | None = on_end
        self._idle_timeout = idle_timeout
        self._last_activity = clock.seconds()
        self._timer: IDelayedCall | None = None
        self._drain_timer: IDelayedCall | None = None

    def start(self, upstream: StreamTransport, pending_to_upstream: bytes,
              pending_to_client: bytes) -> None:
        """Begin relaying; what either side sent ahead of the relay is delivered first."""
        self.upstream = upstream
        if pending_to_client:
            self.from_upstream(pending_to_client)
        if pending_to_upstream:
            self.from_client(pending_to_upstream)
        self.client.registerProducer(self.upstream, True)
        self.upstream.registerProducer(self.client, True)
        self._timer = self.clock.callLater(self._idle_timeout, self._check_idle)

    def from_client(self, data: bytes) -> None:
        self.to_upstream += len(data)
        self._last_activity = self.clock.seconds()
        self.upstream.write(data)

    def from_upstream(self, data: bytes) -> None:
        self.to_client += len(data)
        self._last_activity = self.clock.seconds()
        self.client.write(data)

    def relayed(self) -> tuple[int, int]:
        return self.to_upstream, self.to_client

    def client_read_closed(self) -> None:
        """The client half-closed: let the upstream finish its answers (to LOGOUT, say)."""
        self._start_draining()

    def upstream_read_closed(self) -> None:
        self._start_draining()

    def client_lost(self) -> None:
        self._end(self.upstream)

    def upstream_lost(self) -> None:
        self._end(self.client)

    def _start_draining(self) -> None:
        # The half-close is not passed on: over TLS it becomes close_notify, on which mail
        # servers hang up without answering what they were sent (seen with Dovecot). The mail
        # protocols end with LOGOUT/QUIT anyway; the other side just gets a bounded time to
        # deliver what it still owes.
        if self._drain_timer is None:
            self._drain_timer = self.clock.callLater(DRAIN_TIMEOUT, self._check_drained)

    def _check_drained(self) -> None:
        quiet_for = self.clock.seconds() - self._last_activity
        if quiet_for >= DRAIN_TIMEOUT:
            self._drain_timer = None
            self._close_both()
        else:
            self._drain_timer = self.clock.callLater(DRAIN_TIMEOUT - quiet_for, self._check_drained)

    def _check_idle(self) -> None:
        idle_for = self.clock.seconds() - self._last_activity
        if idle_for >= self._idle_timeout:
            self._timer = None
            self._close_both()
        else:
            self._timer = self.clock.callLater(self._idle_timeout - idle_for, self._check_idle)

    def _close_both(self) -> None:
        self.client.loseConnection()
        self.upstream.loseConnection()

    def _end(self, other: StreamTransport) -> None:
        """One side is gone: flush and close the other, report once."""
        other.loseConnection()
        for timer in (self._timer, self._drain_timer):
            if timer is not None and timer.active():
                timer.cancel()
        if self._on_end is not None:
            on_end, self._on_end = self._on_end, None
            on_end(self.to_upstream, self.to_client)
