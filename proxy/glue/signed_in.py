"""What the device side gets once a login has been accepted upstream: one signed-in object.

The front hands it the rest of the client's stream and needs nothing else from it, so whatever
serves the session after login (the relay to a TCP upstream; a local receiving core that sends
through Microsoft Graph) fits behind the same small interface.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from ..actions import LoggedIn
from ..tokens.broker import Grant
from .transport import StreamTransport

# Called once when the session is over: (bytes from the client, bytes to the client).
SessionEnded = Callable[[int, int], None]


class ClientReader(Protocol):
    """What takes over the client's bytes and closes after login."""

    def from_client(self, data: bytes) -> None: ...

    def client_read_closed(self) -> None:
        """The client half-closed: it sends no more but may still read the answers it is owed."""

    def client_lost(self) -> None:
        """The client's connection is gone."""

    def relayed(self) -> tuple[int, int]:
        """(bytes from the client, bytes to the client) so far, for the metrics."""


class SignedIn(Protocol):
    """A login the upstream accepted, waiting for the client's stream."""

    @property
    def logged_in(self) -> LoggedIn:
        """What the upstream stated (capabilities), for the front session's answer."""

    @property
    def peer(self) -> str:
        """Where the session goes, for the log (e.g. "outlook.office365.com:993")."""

    def take_client(
        self, client: StreamTransport, unparsed: bytes, on_end: SessionEnded
    ) -> ClientReader:
        """From now on serve `client`: `unparsed` (what the front session received but did not
        consume) first, then whatever the returned reader is given. Flow control and timeouts
        are the signed-in side's; `on_end` is called once when the session is over."""

    def close(self) -> None:
        """Let go unused (the client left during login)."""


# Signs in upstream with a grant (mailbox, access token, and what renews it); raises ProxyError.
SignIn = Callable[[Grant], Awaitable[SignedIn]]
