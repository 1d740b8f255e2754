"""SASL encodings, pure functions: XOAUTH2 for the upstream, PLAIN and LOGIN from clients."""

from __future__ import annotations

import base64
import binascii

from .errors import ProxyError


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


def b64encode_text(text: str) -> bytes:
    return base64.b64encode(text.encode())


def decode_text(data: bytes) -> str:
    """A SASL field as text: UTF-8, and a stray legacy byte does not end the login."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def parse_plain(response: bytes) -> tuple[str, str]:
    """Decode a base64 PLAIN response (RFC 4616) into (user name, password).

    A client may name an authorisation identity; it must be empty or equal the user name,
    because the proxy cannot act as somebody else.
    """
    parts = b64decode(response).split(b"\x00")
    if len(parts) != 3 or not parts[1]:
        raise SaslError("Invalid PLAIN response")
    authzid, authcid, password = (decode_text(p) for p in parts)
    if authzid and authzid.lower() != authcid.lower():
        raise SaslError("Authorisation identity must be empty or equal the user name")
    return authcid, password


def parse_login_field(response: bytes) -> str:
    """Decode one base64 answer of the LOGIN mechanism (user name or password)."""
    return decode_text(b64decode(response))


# The LOGIN mechanism's prompts, as every client expects them.
LOGIN_USERNAME_PROMPT = base64.b64encode(b"Username:")
LOGIN_PASSWORD_PROMPT = base64.b64encode(b"Password:")
