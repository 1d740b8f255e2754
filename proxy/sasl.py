"""SASL, sans I/O: XOAUTH2 for the upstream, and the PLAIN / LOGIN exchange with devices.

`SaslExchange` is the device side's one dialogue for AUTHENTICATE (IMAP), AUTH (POP3) and AUTH
(SMTP): a response in, a step out (a challenge to send, the credentials, a cancel, or why the
response is unusable). Each protocol only words the steps in its own syntax (`+ ` or `334 `) and
answers. The rules are the RFCs' (4616 PLAIN; 4959, 5034 and 4954 for the initial response and
the cancel): `=` stands for an empty response only as the initial response, `*` cancels only as
the answer to a challenge, and a response over MAX_RESPONSE bytes is refused unread.

An empty user name or password is not refused here: the exchange hands it over as credentials,
and the session answers it as it answers a wrong password (proxy.prelogin). An empty user name
in the LOGIN mechanism ends the exchange at once, without asking for a password.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from .errors import ProxyError

MECHANISMS = ("PLAIN", "LOGIN")
# Base64 bytes in one response: a user name and a password need a fraction of this.
MAX_RESPONSE = 8192
# The LOGIN mechanism's prompts, as every client expects them.
LOGIN_USERNAME_PROMPT = base64.b64encode(b"Username:")
LOGIN_PASSWORD_PROMPT = base64.b64encode(b"Password:")


class SaslError(ProxyError):
    """The client's SASL data could not be decoded."""


def xoauth2(mailbox: str, access_token: str) -> bytes:
    """The base64 XOAUTH2 initial response for `mailbox` (the shared mailbox, if one)."""
    raw = f"user={mailbox}\x01auth=Bearer {access_token}\x01\x01".encode()
    return base64.b64encode(raw)


def without_credentials(text: str, access_token: str, response: bytes) -> str:
    """`text` with the access token and its XOAUTH2 response blanked out: a server may echo what
    it was sent, and its text goes into errors, logs and answers to devices."""
    for secret in (response.decode(), access_token):
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


def b64decode(data: bytes) -> bytes:
    """Strict base64: rejects characters outside the alphabet instead of skipping them."""
    try:
        return base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SaslError("Invalid base64 data") from None


def decode_text(data: bytes) -> str:
    """A SASL field as text: UTF-8, and a stray legacy byte does not end the login."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def parse_plain(response: bytes) -> tuple[str, str]:
    """Decode a base64 PLAIN response (RFC 4616) into (user name, password); either may be empty.

    A client may name an authorisation identity; it must be empty or equal the user name,
    because the proxy cannot act as somebody else.
    """
    parts = b64decode(response).split(b"\x00")
    if len(parts) != 3:
        raise SaslError("Invalid PLAIN response")
    authzid, authcid, password = (decode_text(p) for p in parts)
    if authzid and authzid.lower() != authcid.lower():
        raise SaslError("Authorisation identity must be empty or equal the user name")
    return authcid, password


def parse_login_field(response: bytes) -> str:
    """Decode one base64 answer of the LOGIN mechanism (user name or password)."""
    return decode_text(b64decode(response))


@dataclass(frozen=True)
class Challenge:
    """Send this base64 challenge (empty for PLAIN) and pass the client's next line to
    `SaslExchange.receive`."""

    data: bytes


@dataclass(frozen=True)
class Credentials:
    """The exchange is over: what the client gave (either may be empty)."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Cancelled:
    """The exchange is over: the client answered a challenge with `*`."""


@dataclass(frozen=True)
class Invalid:
    """The exchange is over: the response was unusable; `text` says why without quoting it."""

    text: str


SaslStep = Challenge | Credentials | Cancelled | Invalid


class SaslExchange:
    """One PLAIN or LOGIN exchange with a device, from the AUTH command to the credentials."""

    def __init__(self, mechanism: str) -> None:
        if mechanism not in MECHANISMS:
            raise ValueError(f"unsupported SASL mechanism {mechanism!r}")
        self.mechanism = mechanism
        self._username: str | None = None  # LOGIN, once the user name is known

    def start(self, initial: bytes | None) -> SaslStep:
        """The first step, given the initial response that came with the command, if any."""
        if initial is None:
            return Challenge(LOGIN_USERNAME_PROMPT if self.mechanism == "LOGIN" else b"")
        return self._response(b"" if initial == b"=" else initial)

    def receive(self, line: bytes) -> SaslStep:
        """The next step, given the client's answer to the last challenge."""
        if line.strip() == b"*":
            return Cancelled()
        return self._response(line)

    def _response(self, response: bytes) -> SaslStep:
        if len(response) > MAX_RESPONSE:
            return Invalid("SASL response too long")
        try:
            if self.mechanism == "PLAIN":
                return Credentials(*parse_plain(response))
            text = parse_login_field(response)
        except SaslError as e:  # its messages never carry the decoded data
            return Invalid(e.message)
        if self._username is not None:
            return Credentials(self._username, text)
        if not text:  # no account has an empty name: asking for its password serves nothing
            return Credentials("", "")
        self._username = text
        return Challenge(LOGIN_PASSWORD_PROMPT)
