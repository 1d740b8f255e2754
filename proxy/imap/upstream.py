"""Signing in to the upstream IMAP server with AUTHENTICATE XOAUTH2, sans I/O.

Office 365 greets without capabilities, so they are asked for; SASL-IR is used when offered
(one round trip) and the two-step form otherwise. A failure challenge (`+ <base64 JSON>`, sent by
Dovecot and Gmail, not by Microsoft) is answered with an empty line as RFC 7628 requires.
The shape (phase, outcome, quoting) is proxy.upstream_login's.
"""

from __future__ import annotations

import re
from enum import Enum

from ..actions import Send, UpstreamAction
from ..errors import ProxyError, Throttled, UpstreamRejected, UpstreamUnavailable
from ..upstream_login import UpstreamLoginBase

CAPABILITY_CODE = re.compile(r"^\[CAPABILITY ([^\]]*)\]", re.IGNORECASE)
STATUS = re.compile(r"^(\S+) (OK|NO|BAD|BYE|PREAUTH)\b ?(.*)$", re.IGNORECASE)
TEMPORARY_CODES = ("[UNAVAILABLE]", "[SERVERBUG]", "[INUSE]", "[LIMIT]")


class _Step(Enum):
    """What the core waits for."""

    GREETING = "the greeting"
    CAPABILITY = "CAPABILITY"
    AUTHENTICATE = "AUTHENTICATE"
    CAPABILITY_AFTER = "CAPABILITY after login"


class ImapUpstreamLogin(UpstreamLoginBase):
    def __init__(self, mailbox: str, access_token: str) -> None:
        super().__init__(mailbox, access_token, max_line=65536)
        self._step = _Step.GREETING
        self._tag = ""  # of the command in progress
        self._tags = 0
        self._capabilities: tuple[str, ...] = ()
        self._token_sent = False

    def _advance(self) -> list[UpstreamAction] | None:
        raw = self._lines.next_line()
        return None if raw is None else self._line(raw.decode("utf-8", "replace"))

    def _unreadable(self) -> ProxyError:
        return UpstreamUnavailable("The mail server sent an overlong line")

    def _line(self, line: str) -> list[UpstreamAction]:
        if self._step is _Step.GREETING:
            return self._greeting(line)
        if line.startswith("+"):
            return self._continuation()
        if line.upper().startswith("* CAPABILITY "):
            self._capabilities = tuple(line[len("* CAPABILITY ") :].split())
            return []
        match = STATUS.match(line)
        if match is None:
            return []
        tag, status, text = match.group(1), match.group(2).upper(), match.group(3)
        if tag == "*":
            if status == "BYE":
                return self._refuse(UpstreamUnavailable(f"The mail server closed the session: {self._quote(text)}"))
            return []
        if tag != self._tag:
            return []
        self._capture_code(text)
        if status == "OK":
            return self._step_done()
        return self._refuse(self._failure(self._quote(text)))

    def _greeting(self, line: str) -> list[UpstreamAction]:
        match = STATUS.match(line)
        if match is None or match.group(1) != "*":
            return self._refuse(UpstreamUnavailable("The mail server did not greet as an IMAP server"))
        status, text = match.group(2).upper(), match.group(3)
        if status != "OK":
            return self._refuse(UpstreamUnavailable(f"The mail server is not available: {self._quote(text)}"))
        self._capture_code(text)
        if self._capabilities:
            return self._authenticate()
        return self._command(_Step.CAPABILITY, "CAPABILITY")

    def _capture_code(self, text: str) -> None:
        match = CAPABILITY_CODE.match(text)
        if match:
            self._capabilities = tuple(match.group(1).split())

    def _step_done(self) -> list[UpstreamAction]:
        if self._step is _Step.CAPABILITY:
            return self._authenticate()
        if self._step is _Step.AUTHENTICATE and not self._capabilities:
            # Office 365 says only "OK AUTHENTICATE completed."; the client is owed the
            # post-login capabilities in its OK answer, so ask for them.
            return self._command(_Step.CAPABILITY_AFTER, "CAPABILITY")
        return self._logged_in(self._capabilities)

    def _authenticate(self) -> list[UpstreamAction]:
        if "AUTH=XOAUTH2" not in (c.upper() for c in self._capabilities):
            return self._refuse(UpstreamUnavailable("The mail server does not offer AUTH=XOAUTH2"))
        sasl_ir = any(c.upper() == "SASL-IR" for c in self._capabilities)
        self._capabilities = ()  # they change with login; only what comes after counts now
        if sasl_ir:
            self._token_sent = True
            return self._command(_Step.AUTHENTICATE, "AUTHENTICATE XOAUTH2 ", self._response)
        return self._command(_Step.AUTHENTICATE, "AUTHENTICATE XOAUTH2")

    def _continuation(self) -> list[UpstreamAction]:
        if self._step is not _Step.AUTHENTICATE:
            return self._refuse(UpstreamUnavailable("The mail server sent an unexpected continuation"))
        if self._token_sent:
            return [Send(b"\r\n")]  # a failure challenge: answer empty, the NO follows
        self._token_sent = True
        return [Send(self._response + b"\r\n")]

    def _command(self, step: _Step, text: str, payload: bytes = b"") -> list[UpstreamAction]:
        self._tags += 1
        self._step, self._tag = step, f"X{self._tags}"
        return [Send(f"{self._tag} {text}".encode() + payload + b"\r\n")]

    def _failure(self, quoted: str) -> ProxyError:
        """The error for a tagged NO/BAD; `quoted` is the server's text, already made safe."""
        if self._step is not _Step.AUTHENTICATE:
            return UpstreamUnavailable(f"The mail server refused CAPABILITY: {quoted}")
        if "throttled" in quoted.lower():
            return Throttled(f"Office 365 is throttling this mailbox, try again later: {quoted}")
        if quoted.upper().startswith(TEMPORARY_CODES):
            return UpstreamUnavailable(f"The mail server is temporarily unavailable: {quoted}")
        if "authenticated but not connected" in quoted.lower():
            return UpstreamRejected(
                "Office 365 accepted the token but not for this mailbox: check the account's mailbox "
                "and its permissions (Add-MailboxPermission for app-only access)"
            )
        return UpstreamRejected(f"The mail server refused the access token ({quoted})")
