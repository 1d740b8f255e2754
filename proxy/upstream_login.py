"""The shape every upstream sign-in core shares (IMAP, POP3, SMTP), sans I/O.

A core reads the server's lines only while SIGNING_IN, and ends with exactly one outcome, always
its last action: LoggedIn (what the server sends after it stays buffered for the client, see
`take_unparsed`) or, after the Close of the connection, LoginRefused (what the server still
holds or sends is dropped). Server text quoted in an error goes through `_quote`, which blanks
the credentials out (a server may echo what it was sent), makes it one line and bounds it.
A protocol adds `_advance` (read and answer what the server said) and the error for what it
cannot read (a line over max_line, or one not of its protocol).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from .actions import Close, LoggedIn, LoginRefused, Send, SignInPhase, UpstreamAction
from .errors import ProxyError
from .lines import LineBuffer, LineTooLong
from .sasl import without_credentials, xoauth2
from .text import one_line

# How much of the server's own text goes into an error message.
QUOTE_LIMIT = 200


class UpstreamLoginBase(ABC):
    """An UpstreamLogin from the server's greeting to the outcome."""

    def __init__(self, mailbox: str, access_token: str, *, max_line: int) -> None:
        self.mailbox = mailbox
        self._token = access_token
        self._response = xoauth2(mailbox, access_token)  # base64, sent once
        self._lines = LineBuffer(max_line)
        self._phase = SignInPhase.SIGNING_IN

    @property
    def phase(self) -> SignInPhase:
        return self._phase

    def __repr__(self) -> str:  # say it: no token in here
        return f"{type(self).__name__}(mailbox={self.mailbox!r}, phase={self._phase.value!r})"

    # -- UpstreamLogin --

    def receive_data(self, data: bytes) -> list[UpstreamAction]:
        if self._phase is SignInPhase.REFUSED:
            return []
        self._lines.feed(data)  # after LOGGED_IN these bytes belong to the client
        actions: list[UpstreamAction] = []
        while self._phase is SignInPhase.SIGNING_IN:
            try:
                step = self._advance()
            except LineTooLong:
                step = self._refuse(self._unreadable())
            if step is None:
                break
            actions += step
        return actions

    def take_unparsed(self) -> bytes:
        return self._lines.take_unparsed()

    # -- outcomes --

    def _logged_in(self, capabilities: tuple[str, ...] = ()) -> list[UpstreamAction]:
        self._phase = SignInPhase.LOGGED_IN
        return [LoggedIn(capabilities)]

    def _refuse(self, error: ProxyError, farewell: bytes = b"") -> list[UpstreamAction]:
        """Close the connection (after `farewell`, when the server can still take it) and
        report `error`."""
        self._phase = SignInPhase.REFUSED
        self._lines.take_unparsed()
        goodbye: list[UpstreamAction] = [Send(farewell)] if farewell else []
        return [*goodbye, Close(), LoginRefused(error)]

    def _quote(self, text: str) -> str:
        """Server text for an error message: never the credentials, one line, bounded."""
        return one_line(without_credentials(text, self._token, self._response), QUOTE_LIMIT)

    # -- what each protocol adds --

    @abstractmethod
    def _advance(self) -> list[UpstreamAction] | None:
        """Read and answer the server's next line or reply; None until it is complete."""

    @abstractmethod
    def _unreadable(self) -> ProxyError:
        """The error for a line it cannot read: over max_line, or not of its protocol."""
