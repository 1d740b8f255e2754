"""Which sans-I/O cores serve each configured protocol, and how a full listener turns a client
away in that protocol's words."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .actions import FrontSession, UpstreamLogin
from .imap.device import ImapSession
from .imap.upstream import ImapUpstreamLogin
from .pop3.device import Pop3Session
from .pop3.upstream import Pop3UpstreamLogin
from .smtp.device import SmtpSession
from .smtp.upstream import SmtpUpstreamLogin


@dataclass(frozen=True)
class ProtocolCores:
    make_session: Callable[..., FrontSession]  # keywords: starttls, tls_active, login_requires_tls
    make_login: Callable[[str, str], UpstreamLogin]  # (mailbox, access token)
    busy: bytes  # the greeting that turns a client away when the session limits are reached


IMAP_BUSY = b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n"
POP3_BUSY = b"-ERR [SYS/TEMP] Too many connections, try again later\r\n"
SMTP_BUSY = b"421 4.7.0 Too many connections, try again later\r\n"
BUSY = {"imap": IMAP_BUSY, "pop3": POP3_BUSY, "smtp": SMTP_BUSY}


def cores_for(protocol: str, upstream_implicit_tls: bool) -> ProtocolCores:
    """`upstream_implicit_tls`: the upstream is tls:HOST:PORT rather than tcp:HOST:PORT."""
    if protocol == "imap":
        return ProtocolCores(ImapSession, ImapUpstreamLogin, IMAP_BUSY)
    if protocol == "pop3":
        return ProtocolCores(Pop3Session, Pop3UpstreamLogin, POP3_BUSY)
    if protocol == "smtp":
        # A plain tcp: upstream means STARTTLS first, always; tls: is implicit TLS (port 465).
        def make_smtp_login(mailbox: str, token: str) -> UpstreamLogin:
            return SmtpUpstreamLogin(mailbox, token, starttls=not upstream_implicit_tls)

        return ProtocolCores(SmtpSession, make_smtp_login, SMTP_BUSY)
    raise ValueError(f"no cores for protocol {protocol!r}")
