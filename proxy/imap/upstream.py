"""Signing in to the upstream IMAP server with AUTHENTICATE XOAUTH2, sans I/O.

Office 365 greets without capabilities, so they are asked for; SASL-IR is used when offered
(one round trip) and the two-step form otherwise. A failure challenge (`+ <base64 JSON>`, sent by
Dovecot and Gmail, not by Microsoft) is answered with an empty line as RFC 7628 requires.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..actions import Close, LoggedIn, LoginRefused, Send, UpstreamAction
from ..errors import ProxyError, Throttled, UpstreamRejected, UpstreamUnavailable
from ..lines import LineBuffer, LineTooLong
from ..sasl import without_credentials, xoauth2

CAPABILITY_CODE = re.compile(r"^\[CAPABILITY ([^\]]*)\]", re.IGNORECASE)
STATUS = re.compile(r"^(\S+) (OK|NO|BAD|BYE|PREAUTH)\b ?(.*)$", re.IGNORECASE)
TEMPORARY_CODES = ("[UNAVAILABLE]", "[SERVERBUG]", "[INUSE]", "[LIMIT]")


@dataclass
class _Step:
    tag: str
    purpose: str  # "capability" | "authenticate" | "capability-after"


class ImapUpstreamLogin:
    def __init__(self, mailbox: str, access_token: str) -> None:
        self._mailbox = mailbox
        self._token = access_token
        self._response = xoauth2(mailbox, access_token)
        self._lines = LineBuffer(max_line=65536)
        self._greeted = False
        self._capabilities: tuple[str, ...] = ()
        self._step: _Step | None = None
        self._tags = 0
        self._token_sent = False
        self._finished = False

    def receive_data(self, data: bytes) -> list[UpstreamAction]:
        self._lines.feed(data)
        actions: list[UpstreamAction] = []
        while not self._finished:
            try:
                raw = self._lines.next_line()
            except LineTooLong:
                return actions + self._refuse(UpstreamUnavailable("The mail server sent an overlong line"))
            if raw is None:
                break
            actions += self._line(raw.decode("utf-8", "replace"))
        return actions

    def take_unparsed(self) -> bytes:
        return self._lines.take_unparsed()

    def _line(self, line: str) -> list[UpstreamAction]:
        if not self._greeted:
            return self._greeting(line)
        if line.startswith("+"):
            return self._continuation()
        match = STATUS.match(line)
        if line.upper().startswith("* CAPABILITY "):
            self._capabilities = tuple(line[len("* CAPABILITY ") :].split())
            return []
        if match is None or self._step is None:
            return []
        tag, status, text = match.group(1), match.group(2).upper(), match.group(3)
        if tag == "*":
            if status == "BYE":
                return self._refuse(UpstreamUnavailable(f"The mail server closed the session: {self._clean(text)}"))
            return []
        if tag != self._step.tag:
            return []
        self._capture_code(text)
        if status == "OK":
            return self._step_done()
        return self._refuse(_classify_failure(self._step.purpose, self._clean(text)))

    def _greeting(self, line: str) -> list[UpstreamAction]:
        match = STATUS.match(line)
        if match is None or match.group(1) != "*":
            return self._refuse(UpstreamUnavailable("The mail server did not greet as an IMAP server"))
        status, text = match.group(2).upper(), match.group(3)
        if status != "OK":
            return self._refuse(UpstreamUnavailable(f"The mail server is not available: {self._clean(text)}"))
        self._greeted = True
        self._capture_code(text)
        if self._capabilities:
            return self._authenticate()
        return self._command("capability", "CAPABILITY")

    def _capture_code(self, text: str) -> None:
        match = CAPABILITY_CODE.match(text)
        if match:
            self._capabilities = tuple(match.group(1).split())

    def _step_done(self) -> list[UpstreamAction]:
        assert self._step is not None
        if self._step.purpose == "capability":
            return self._authenticate()
        if self._step.purpose == "authenticate" and not self._capabilities:
            # Office 365 says only "OK AUTHENTICATE completed."; the client is owed the
            # post-login capabilities in its OK answer, so ask for them.
            return self._command("capability-after", "CAPABILITY")
        self._finished = True
        return [LoggedIn(self._capabilities)]

    def _authenticate(self) -> list[UpstreamAction]:
        if "AUTH=XOAUTH2" not in (c.upper() for c in self._capabilities):
            return self._refuse(UpstreamUnavailable("The mail server does not offer AUTH=XOAUTH2"))
        sasl_ir = any(c.upper() == "SASL-IR" for c in self._capabilities)
        self._capabilities = ()  # they change with login; only what comes after counts now
        if sasl_ir:
            self._token_sent = True
            return self._command("authenticate", "AUTHENTICATE XOAUTH2 ", self._response)
        return self._command("authenticate", "AUTHENTICATE XOAUTH2")

    def _continuation(self) -> list[UpstreamAction]:
        if self._step is None or self._step.purpose != "authenticate":
            return self._refuse(UpstreamUnavailable("The mail server sent an unexpected continuation"))
        if self._token_sent:
            return [Send(b"\r\n")]  # a failure challenge: answer empty, the NO follows
        self._token_sent = True
        return [Send(self._response + b"\r\n")]

    def _command(self, purpose: str, text: str, payload: bytes = b"") -> list[UpstreamAction]:
        self._tags += 1
        self._step = _Step(f"X{self._tags}", purpose)
        return [Send(f"{self._step.tag} {text}".encode() + payload + b"\r\n")]

    def _clean(self, text: str) -> str:
        """Server text for a message: no credentials (a server may echo what it was sent),
        one line, bounded."""
        return _one_line(without_credentials(text, self._token, self._response))

    def _refuse(self, error: ProxyError) -> list[UpstreamAction]:
        self._finished = True
        return [LoginRefused(error), Close()]


def _classify_failure(purpose: str, clean: str) -> ProxyError:
    """The error for a tagged NO/BAD; `clean` is the server's text, already made safe."""
    if purpose != "authenticate":
        return UpstreamUnavailable(f"The mail server refused CAPABILITY: {clean}")
    if "throttled" in clean.lower():
        return Throttled(f"Office 365 is throttling this mailbox, try again later: {clean}")
    if clean.upper().startswith(TEMPORARY_CODES):
        return UpstreamUnavailable(f"The mail server is temporarily unavailable: {clean}")
    if "authenticated but not connected" in clean.lower():
        return UpstreamRejected(
            "Office 365 accepted the token but not for this mailbox: check the account's mailbox "
            "and its permissions (Add-MailboxPermission for app-only access)"
        )
    return UpstreamRejected(f"The mail server refused the access token ({clean})")


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]
