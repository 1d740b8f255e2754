"""The POP3 sign-in to the upstream server with SASL XOAUTH2, sans-I/O.

Always the two-step form (`AUTH XOAUTH2`, `+`, base64 line): Microsoft's POP3 service documents
only that one, and Dovecot accepts it too. On failure Dovecot first sends a `+ <base64 JSON>`
challenge (RFC 7628 error report) that must be answered with an empty line before the `-ERR`.
"""

from __future__ import annotations

from enum import Enum, auto

from ..actions import LoggedIn, LoginRefused, Send, UpstreamAction
from ..errors import ProxyError, Throttled, UpstreamRejected, UpstreamUnavailable
from ..lines import LineBuffer, LineTooLong
from ..sasl import without_credentials, xoauth2
from .session import single_line

# How much of the server's own text goes into an error message.
SERVER_TEXT_LIMIT = 200
# RFC 2449 / RFC 3206 response codes that say "not your credentials, try later".
TEMPORARY_CODES = ("[SYS/TEMP]", "[SYS/PERM]", "[IN-USE]")
THROTTLED_CODES = ("[LOGIN-DELAY]",)


class _State(Enum):
    GREETING = auto()
    AUTH_SENT = auto()  # sent AUTH XOAUTH2, waiting for "+"
    RESPONSE_SENT = auto()  # sent the base64 XOAUTH2 line, waiting for the verdict
    ERROR_REPORT_ANSWERED = auto()  # answered Dovecot's JSON challenge, waiting for -ERR
    LOGGED_IN = auto()  # what follows belongs to the client
    REFUSED = auto()  # what follows is dropped


class Pop3UpstreamLogin:
    """Signs in to one POP3 server connection from its greeting on (implements UpstreamLogin).

    Emits exactly one `LoggedIn` or `LoginRefused` and then nothing more; after a refusal the
    glue should drop the connection.
    """

    def __init__(self, mailbox: str, access_token: str, *, max_line: int = 8192) -> None:
        self._access_token = access_token
        self._response = xoauth2(mailbox, access_token)
        self._lines = LineBuffer(max_line)
        self._max_line = max_line
        self._state = _State.GREETING

    def receive_data(self, data: bytes) -> list[UpstreamAction]:
        if self._state is _State.REFUSED:
            return []
        self._lines.feed(data)
        actions: list[UpstreamAction] = []
        while self._state not in (_State.LOGGED_IN, _State.REFUSED):
            try:
                line = self._lines.next_line()
            except LineTooLong:
                too_long = (
                    f"The mail server sent a line longer than {self._max_line} bytes; "
                    "it does not seem to be a POP3 server"
                )
                actions.append(self._refused(UpstreamUnavailable(too_long)))
                break
            if line is None:
                break
            actions += self._handle(line)
        return actions

    def take_unparsed(self) -> bytes:
        return self._lines.take_unparsed()

    def _handle(self, line: bytes) -> list[UpstreamAction]:
        status, state = _status(line), self._state
        if state is _State.GREETING and status == "+OK":
            self._state = _State.AUTH_SENT
            return [Send(b"AUTH XOAUTH2\r\n")]
        if state is _State.GREETING and status == "-ERR":
            refusal = (
                f"The mail server refused the connection ({self._text(line)}); try again later"
            )
            return [self._refused(UpstreamUnavailable(refusal))]
        if state is _State.AUTH_SENT and status == "+":
            self._state = _State.RESPONSE_SENT
            return [Send(self._response + b"\r\n")]
        if state is _State.RESPONSE_SENT and status == "+OK":
            self._state = _State.LOGGED_IN
            return [LoggedIn()]
        if state is _State.RESPONSE_SENT and status == "+":
            # An RFC 7628 error report: the verdict (-ERR) only comes after an empty answer.
            self._state = _State.ERROR_REPORT_ANSWERED
            return [Send(b"\r\n")]
        if state is not _State.GREETING and status == "-ERR":
            return [self._refused(self._classify(line))]
        unexpected = f"The mail server answered something unexpected ({self._text(line)})"
        return [self._refused(UpstreamUnavailable(unexpected))]

    def _classify(self, line: bytes) -> ProxyError:
        """A -ERR to the login, as the error the device should be told about (always temporary:
        the device's password was right, the upstream refused or failed)."""
        text = self._text(line)
        upper = text.upper()
        if "THROTTL" in upper or any(code in upper for code in THROTTLED_CODES):
            return Throttled(f"The mail server is throttling sign-ins ({text}); try again later")
        if any(code in upper for code in TEMPORARY_CODES):
            return UpstreamUnavailable(
                f"The mail server is temporarily unavailable ({text}); try again later"
            )
        return UpstreamRejected(
            f"The mail server refused the access token ({text}); "
            "the administrator should run: xoauth2-proxy account check"
        )

    def _refused(self, error: ProxyError) -> LoginRefused:
        self._state = _State.REFUSED
        self._lines.take_unparsed()
        return LoginRefused(error)

    def _text(self, line: bytes) -> str:
        """The server's line as safe text for an error message: one line, bounded, and never the
        credentials (a server that echoes what it got must not leak them into logs)."""
        text = line.decode("utf-8", "replace")
        status = _status(line)
        if status in ("+OK", "-ERR"):
            text = text[len(status) :].strip() or status
        text = without_credentials(text, self._access_token, self._response)
        return single_line(text, SERVER_TEXT_LIMIT) or "empty line"


def _status(line: bytes) -> str:
    """The status indicator that starts a POP3 server line: "+OK", "-ERR", "+" or ""."""
    word = line.split(b" ", 1)[0].upper()
    if word in (b"+OK", b"-ERR", b"+"):
        return word.decode()
    return ""
