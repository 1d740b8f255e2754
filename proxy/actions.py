"""What the sans-I/O protocol cores ask the Twisted glue to do.

A front session (IMAP, POP3, SMTP: the side the legacy client talks to) and an upstream login
(the side that signs in to Office 365) both take bytes and return a list of these actions; they
never touch a socket, a clock or a thread. `proxy.glue.front` and `proxy.glue.upstream_connection` carry them out.
Each core shows where it is through a read-only `phase` (Phase, SignInPhase).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from .errors import ProxyError


@dataclass(frozen=True)
class Send:
    """Write these bytes to the peer of the core that returned it.

    `note` is for the administrator: when set (an overlong line, say) the glue logs it with the
    peer's address. It takes no part in comparisons.
    """

    data: bytes
    note: str = field(default="", compare=False)


@dataclass(frozen=True)
class Close:
    """Close the connection once everything sent so far is flushed; `reason`, when set, is
    logged with the peer's address (it takes no part in comparisons)."""

    reason: str = field(default="", compare=False)


@dataclass(frozen=True)
class StartTLS:
    """Start TLS on this connection now (the STARTTLS answer has been sent or received)."""


@dataclass(frozen=True)
class Login:
    """The client gave a user name and a password: check them and sign in upstream.

    The front session produces nothing more until it is told the outcome through
    `login_succeeded` or `login_failed`; the glue stops reading from the client meanwhile.
    """

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Relay:
    """From now on relay bytes both ways untouched.

    Always the last action; whatever the core still buffers (`take_unparsed`) goes upstream first.
    """


@dataclass(frozen=True)
class LoggedIn:
    """The upstream accepted XOAUTH2 (always the last action). `capabilities` are what the
    client should be offered (IMAP CAPABILITY atoms, SMTP EHLO keywords, POP3 CAPA lines), as
    the upstream stated them."""

    capabilities: tuple[str, ...] = ()


@dataclass(frozen=True)
class LoginRefused:
    """The upstream refused the login or answered something unusable.

    Always the last action, after the Close of the upstream connection (and a polite goodbye
    where the protocol has one).
    """

    error: ProxyError


FrontAction = Send | Close | StartTLS | Login | Relay
UpstreamAction = Send | Close | StartTLS | LoggedIn | LoginRefused


class Phase(Enum):
    """Where a front session is; it only ever moves forward, bar a failed login."""

    READING = "reading"  # commands and SASL responses are read and answered
    LOGGING_IN = "logging in"  # a Login is out: input is only kept until the outcome
    RELAYING = "relaying"  # the upstream took over: input is only kept for the relay
    CLOSED = "closed"  # a Close is out: input is ignored


class SignInPhase(Enum):
    """Where an upstream login is; its outcome is final."""

    SIGNING_IN = "signing in"
    LOGGED_IN = "logged in"  # LoggedIn is out: what follows belongs to the client
    REFUSED = "refused"  # LoginRefused is out: what follows is dropped


class FrontSession(Protocol):
    """A protocol's pre-login conversation with the legacy client."""

    @property
    def phase(self) -> Phase:
        """Where the conversation is (read-only)."""

    def start(self) -> list[FrontAction]:
        """The greeting."""

    def receive_data(self, data: bytes) -> list[FrontAction]:
        """Bytes from the client."""

    def login_succeeded(self, upstream: LoggedIn) -> list[FrontAction]:
        """The upstream login worked: answer the client; ends with `Relay`."""

    def login_failed(self, error: ProxyError) -> list[FrontAction]:
        """Tell the client, with the answer its protocol uses for `error.kind`."""

    def take_unparsed(self) -> bytes:
        """Bytes received but not consumed (pipelined commands); the relay sends them on."""


class UpstreamLogin(Protocol):
    """A protocol's XOAUTH2 sign-in to the upstream server, from the greeting on."""

    @property
    def phase(self) -> SignInPhase:
        """Where the sign-in is (read-only)."""

    def receive_data(self, data: bytes) -> list[UpstreamAction]:
        """Bytes from the upstream server."""

    def take_unparsed(self) -> bytes:
        """Bytes that came after the login exchange; they belong to the client."""
