"""The POP3 sign-in to the upstream server with SASL XOAUTH2, sans I/O.

Always the two-step form (`AUTH XOAUTH2`, `+`, base64 line): Microsoft's POP3 service documents
only that one, and Dovecot accepts it too. On failure Dovecot first sends a `+ <base64 JSON>`
challenge (RFC 7628 error report) that must be answered with an empty line before the `-ERR`.
The shape (phase, outcome, quoting) is proxy.upstream_login's.
"""

from __future__ import annotations

from enum import Enum

from ..actions import Send, UpstreamAction
from ..errors import ProxyError, Throttled, UpstreamRejected, UpstreamUnavailable
from ..upstream_login import UpstreamLoginBase

# RFC 2449 / RFC 3206 response codes that say "not your credentials, try later".
TEMPORARY_CODES = ("[SYS/TEMP]", "[SYS/PERM]", "[IN-USE]")
THROTTLED_CODES = ("[LOGIN-DELAY]",)


class _Step(Enum):
    """What the core waits for."""

    GREETING = "the greeting"
    CONTINUATION = "the + after AUTH XOAUTH2"
    VERDICT = "the verdict on the XOAUTH2 response"
    VERDICT_AFTER_REPORT = "the -ERR after the error report"


class Pop3UpstreamLogin(UpstreamLoginBase):
    """Signs in to one POP3 server connection from its greeting on (implements UpstreamLogin)."""

    def __init__(self, mailbox: str, access_token: str, *, max_line: int = 8192) -> None:
        super().__init__(mailbox, access_token, max_line=max_line)
        self._max_line = max_line
        self._step = _Step.GREETING

    def _advance(self) -> list[UpstreamAction] | None:
        line = self._lines.next_line()
        return None if line is None else self._handle(line)

    def _unreadable(self) -> ProxyError:
        return UpstreamUnavailable(
            f"The mail server sent a line longer than {self._max_line} bytes; "
            "it does not seem to be a POP3 server"
        )

    def _handle(self, line: bytes) -> list[UpstreamAction]:
        status, step = _status(line), self._step
        if step is _Step.GREETING and status == "+OK":
            self._step = _Step.CONTINUATION
            return [Send(b"AUTH XOAUTH2\r\n")]
        if step is _Step.GREETING and status == "-ERR":
            refusal = f"The mail server refused the connection ({self._text(line)}); try again later"
            return self._refuse(UpstreamUnavailable(refusal))
        if step is _Step.CONTINUATION and status == "+":
            self._step = _Step.VERDICT
            return [Send(self._response + b"\r\n")]
        if step is _Step.VERDICT and status == "+OK":
            return self._logged_in()
        if step is _Step.VERDICT and status == "+":
            # An RFC 7628 error report: the verdict (-ERR) only comes after an empty answer.
            self._step = _Step.VERDICT_AFTER_REPORT
            return [Send(b"\r\n")]
        if step is not _Step.GREETING and status == "-ERR":
            return self._refuse(self._classify(line))
        unexpected = f"The mail server answered something unexpected ({self._text(line)})"
        return self._refuse(UpstreamUnavailable(unexpected))

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

    def _text(self, line: bytes) -> str:
        """The server's line without its status, quoted (proxy.upstream_login)."""
        text = line.decode("utf-8", "replace")
        status = _status(line)
        if status in ("+OK", "-ERR"):
            text = text[len(status) :].strip() or status
        return self._quote(text) or "empty line"


def _status(line: bytes) -> str:
    """The status indicator that starts a POP3 server line: "+OK", "-ERR", "+" or ""."""
    word = line.split(b" ", 1)[0].upper()
    if word in (b"+OK", b"-ERR", b"+"):
        return word.decode()
    return ""
