"""Fuzz targets for the admin page's parsers of outside input, run by tests/fuzz.py.

Form bodies and query strings, the session cookie and the bearer token: each parser either
refuses with FormError (or finds nothing) or returns what the input holds: bounded fields
without NUL, a session identifier or token that appears in the input and has the expected
shape; never an exception of another kind.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from proxy.web.auth import SESSION_ID, TOKEN_CHARACTERS, bearer_token, cookie_value
from proxy.web.forms import MAX_FIELDS, MAX_VALUE, FormError, parse_form, parse_query
from tests.fuzz import MAX_LEN, ByteReader, require

FORM_PIECES = (b"=", b"&", b"%", b"%00", b"%C3%A4", b"%FF", b"+", b";", b"csrf", b"token",
               b"account", b"a%40b", b"password")
COOKIE = "xoauth2-proxy-8025"


SAFE = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"


def _mixed(reader: ByteReader, pieces: Sequence[bytes]) -> bytes:
    """Pieces of the syntax, plain words and raw bytes, so the parsers see near misses."""
    out = bytearray()
    while not reader.exhausted and len(out) < MAX_LEN:
        kind = reader.below(4)
        if kind < 2:
            out += reader.choice(pieces)
        elif kind == 2:
            out += bytes(SAFE[c % len(SAFE)] for c in reader.raw(16))
        else:
            out += reader.raw(8)
    return bytes(out)


def run_admin_form(data: bytes) -> dict[str, str] | None:
    reader = ByteReader(data)
    urlencoded = reader.flag()
    as_body = reader.flag()
    body = _mixed(reader, FORM_PIECES)
    try:
        fields = (parse_form(body, "application/x-www-form-urlencoded" if urlencoded else "text/plain")
                  if as_body else parse_query(b"/?" + body))
    except FormError:
        return None
    require(urlencoded or not as_body or not body, "a body of another media type was taken as a form")
    require(len(fields) <= MAX_FIELDS, "too many fields", len(fields))
    for name, value in fields.items():
        require(isinstance(name, str) and isinstance(value, str), "not text", name, value)
        require("\0" not in name + value and len(value) <= MAX_VALUE, "NUL or too long", name)
    return fields


def _word(reader: ByteReader, most: int) -> bytes:
    return bytes(SAFE[c % len(SAFE)] for c in reader.raw(most))


def run_admin_cookie(data: bytes) -> str | None:
    reader = ByteReader(data)
    parts = []
    while not reader.exhausted and len(parts) < 8:
        kind = reader.below(5)
        if kind == 0:
            parts.append(COOKIE.encode() + b"=" + _word(reader, 48))
        elif kind == 1:
            parts.append(COOKIE.encode() + b"=" + b"A" * 43)
        elif kind == 2:
            parts.append(_word(reader, 8) + b"=" + _word(reader, 8))
        else:
            parts.append(reader.raw(12))
    header = reader.choice((b"; ", b";", b" ; ")).join(parts).decode("latin-1")
    found = cookie_value(header, COOKIE)
    require(found is None or (SESSION_ID.fullmatch(found) is not None and found in header),
            "a cookie value that is not a session identifier from the header", found)
    return found


def run_admin_token(data: bytes) -> str | None:
    reader = ByteReader(data)
    scheme = reader.choice((b"Bearer", b"bearer", b"BEARER", b"Basic", b""))
    spaces = reader.choice((b" ", b"  ", b"\t", b""))
    token = _word(reader, 40) if reader.flag() else reader.raw(40)
    header = (scheme + spaces + token + reader.raw(4)).decode("latin-1")
    found = bearer_token(header)
    require(found is None or (TOKEN_CHARACTERS.fullmatch(found) is not None and found in header),
            "a token that is not one from the header", found)
    return found


def targets() -> dict[str, Callable[[bytes], object]]:
    return {"admin-form": run_admin_form, "admin-cookie": run_admin_cookie,
            "admin-token": run_admin_token}
