"""Who may use the admin page, sans I/O: the token (from `?token=` or `Authorization: Bearer`),
the session cookie it is exchanged for, and the CSRF token of each session's forms.

A session is a random identifier in a cookie (HttpOnly, SameSite=Strict, Path=/); the server
keeps only its SHA-256, so neither a lookup nor a memory dump gives a usable cookie. Secrets are
compared in constant time. Sessions end after SESSION_IDLE seconds unused; at most MAX_SESSIONS
are kept (the least recently used goes first).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

SESSION_IDLE = 12 * 3600.0
MAX_SESSIONS = 64
MAX_TOKEN = 512
# What token_urlsafe produces, and what a token file may reasonably hold.
TOKEN_CHARACTERS = re.compile(r"[A-Za-z0-9._~+/=-]{1,512}")
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{43}")  # token_urlsafe(32)


def same_secret(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header, or None (absent or another scheme
    or malformed)."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not TOKEN_CHARACTERS.fullmatch(token):
        return None
    return token


def cookie_value(header: str | None, name: str) -> str | None:
    """The value of the cookie `name` in a Cookie header, or None when it is absent, given
    twice (which one would be ours?) or not a session identifier."""
    if not header:
        return None
    found = [value.strip() for key, _, value in
             (part.strip().partition("=") for part in header.split(";")) if key == name]
    if len(found) != 1 or not SESSION_ID.fullmatch(found[0]):
        return None
    return found[0]


def cookie_name(port: int) -> str:
    """Browsers share cookies across ports: each admin page's cookie is its own."""
    return f"xoauth2-proxy-{port}"


def session_cookie(name: str, session_id: str) -> str:
    """The Set-Cookie value; no Max-Age, so it ends with the browser session."""
    return f"{name}={session_id}; Path=/; HttpOnly; SameSite=Strict"


@dataclass(frozen=True)
class Notice:
    ok: bool
    text: str


@dataclass
class AdminSession:
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    last_seen: float = 0.0
    notices: list[Notice] = field(default_factory=list)

    def csrf_matches(self, given: str | None) -> bool:
        return given is not None and same_secret(given, self.csrf)

    def take_notices(self) -> list[Notice]:
        notices, self.notices = self.notices, []
        return notices


class AdminSessions:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._by_digest: dict[bytes, AdminSession] = {}

    def create(self) -> tuple[str, AdminSession]:
        """A new session and the identifier for its cookie."""
        session_id = secrets.token_urlsafe(32)
        session = AdminSession(last_seen=self._clock())
        self._by_digest[_digest(session_id)] = session
        while len(self._by_digest) > MAX_SESSIONS:
            oldest = min(self._by_digest, key=lambda d: self._by_digest[d].last_seen)
            del self._by_digest[oldest]
        return session_id, session

    def find(self, session_id: str | None) -> AdminSession | None:
        if session_id is None:
            return None
        digest = _digest(session_id)
        session = self._by_digest.get(digest)
        now = self._clock()
        if session is None or now - session.last_seen > SESSION_IDLE:
            self._by_digest.pop(digest, None)
            return None
        session.last_seen = now
        return session

    def __len__(self) -> int:
        return len(self._by_digest)


def _digest(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()
