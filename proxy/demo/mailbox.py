"""The demo mail servers' shared state: one in-memory mailbox, and the XOAUTH2 check.

For `xoauth2-proxy demo` only, like the servers that use it (see proxy.demo.imap_server,
pop3_server and smtp_server): they stand in for Office 365 so the proxy can be tried without a
Microsoft account. A login is accepted exactly when its XOAUTH2 string names the demo mailbox
and carries a bearer token the demo authority issued and that has not expired.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import formatdate, make_msgid

WELCOME = "Welcome to the xoauth2-proxy demo"
_SEED = (
    (WELCOME,
     "You are reading this through xoauth2-proxy. Your mail program logged in with a plain\n"
     "user name and password; the proxy checked that password, took the access token it\n"
     "stored at `account add`, and signed in to this demo server with SASL XOAUTH2.\n"),
    ("How a real setup differs",
     "With Microsoft 365 the token comes from Entra ID (login.microsoftonline.com) and the\n"
     "mail server is outlook.office365.com or smtp.office365.com. Here both are small\n"
     "stand-ins running on 127.0.0.1 inside the demo process.\n"),
    ("Try sending one",
     "Mail sent through the demo's SMTP listener to this address lands in this inbox.\n"),
)


@dataclass
class Message:
    uid: int
    data: bytes  # RFC 5322, CRLF line ends
    internal_date: float
    flags: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Submission:
    """What the SMTP server accepted: the envelope and the message as sent."""

    mail_from: str
    recipients: tuple[str, ...]
    data: bytes
    through_graph: bool = False  # by the demo Graph's sendMail, not the demo SMTP server


@dataclass
class DemoMailbox:
    address: str
    token_valid: Callable[[str], bool]  # the demo authority's check
    messages: list[Message] = field(default_factory=list)
    submissions: list[Submission] = field(default_factory=list)

    def __post_init__(self) -> None:
        for subject, body in _SEED:
            self._add(_message(self.address, "xoauth2-proxy demo <noreply@example.com>",
                               subject, body))

    def accepts(self, initial_response: bytes) -> bool:
        """True for a base64 XOAUTH2 response naming this mailbox with a valid token."""
        parsed = parse_xoauth2(initial_response)
        if parsed is None:
            return False
        user, token = parsed
        return user.lower() == self.address.lower() and self.token_valid(token)

    def submit(self, mail_from: str, recipients: tuple[str, ...], data: bytes,
               through_graph: bool = False) -> None:
        self.submissions.append(Submission(mail_from, recipients, data, through_graph))
        if any(r.lower() == self.address.lower() for r in recipients):
            self._add(data)  # a message to the demo address is delivered to its inbox

    def _add(self, data: bytes) -> None:
        uid = self.messages[-1].uid + 1 if self.messages else 1
        self.messages.append(Message(uid, data, time.time()))


def parse_xoauth2(initial_response: bytes) -> tuple[str, str] | None:
    """(user, token) from `base64("user=U\\x01auth=Bearer T\\x01\\x01")`, None if malformed."""
    try:
        text = base64.b64decode(initial_response.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    fields = dict(part.split("=", 1) for part in text.split("\x01") if "=" in part)
    user, auth = fields.get("user"), fields.get("auth", "")
    if not user or not auth.startswith("Bearer "):
        return None
    return user, auth[len("Bearer "):]


def _message(to: str, sender: str, subject: str, body: str) -> bytes:
    headers = (
        f"From: {sender}\nTo: {to}\nSubject: {subject}\nDate: {formatdate(localtime=True)}\n"
        f"Message-ID: {make_msgid(domain='example.com')}\nMIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 7bit\n\n"
    )
    return (headers + body).replace("\n", "\r\n").encode()


def imap_date(when: float) -> str:
    """INTERNALDATE form, 17-Jul-1996 02:44:25 -0700, with English month names whatever the
    locale."""
    local = datetime.fromtimestamp(when).astimezone()
    return f"{local.day:02d}-{_MONTHS[local.month - 1]}-{local:%Y %H:%M:%S %z}"


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
