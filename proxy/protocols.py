"""Which sans-I/O cores serve each configured protocol."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .actions import FrontSession, UpstreamLogin
from .config import ListenerConfig
from .imap.device import ImapSession
from .imap.upstream import ImapUpstreamLogin
from .pop3.device import Pop3Session
from .pop3.upstream import Pop3UpstreamLogin
from .smtp.device import SmtpSession
from .smtp.upstream import SmtpUpstreamLogin
from .upstream import UpstreamTarget


@dataclass(frozen=True)
class Probe:
    """A harmless command for `account check`, and how to read its answer."""

    name: str
    command: bytes
    goodbye: bytes
    success: str  # prefix of the answer line meaning success
    failure: tuple[str, ...]  # prefixes meaning failure

    def verdict(self, line: str) -> bool | None:
        """True on success, False on failure, None for a line that decides nothing."""
        if line.startswith(self.success):
            return True
        if line.startswith(self.failure):
            return False
        return None


@dataclass(frozen=True)
class ProtocolCores:
    make_session: Callable[..., FrontSession]  # keywords: starttls, tls_active, login_requires_tls
    make_login: Callable[[str, str], UpstreamLogin]  # (mailbox, access token)
    probe: Probe
    busy: bytes  # the greeting that turns a client away when the session limits are reached


IMAP_PROBE = Probe('LIST "" INBOX', b'C1 LIST "" INBOX\r\n', b"C2 LOGOUT\r\n", "C1 OK", ("C1 ", "* BYE"))
POP3_PROBE = Probe("STAT", b"STAT\r\n", b"QUIT\r\n", "+OK", ("-ERR",))
IMAP_BUSY = b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n"
POP3_BUSY = b"-ERR [SYS/TEMP] Too many connections, try again later\r\n"
SMTP_BUSY = b"421 4.7.0 Too many connections, try again later\r\n"
SMTP_PROBE = Probe("NOOP", b"NOOP\r\n", b"QUIT\r\n", "250", ("4", "5"))


def cores_for(listener: ListenerConfig, target: UpstreamTarget) -> ProtocolCores:
    if listener.protocol == "imap":
        return ProtocolCores(ImapSession, ImapUpstreamLogin, IMAP_PROBE, IMAP_BUSY)
    if listener.protocol == "pop3":
        return ProtocolCores(Pop3Session, Pop3UpstreamLogin, POP3_PROBE, POP3_BUSY)
    if listener.protocol == "smtp":
        # A plain tcp: upstream means STARTTLS first, always; tls: is implicit TLS (port 465).
        def make_smtp_login(mailbox: str, token: str) -> UpstreamLogin:
            return SmtpUpstreamLogin(mailbox, token, starttls=not target.implicit_tls)

        return ProtocolCores(SmtpSession, make_smtp_login, SMTP_PROBE, SMTP_BUSY)
    raise ValueError(f"no cores for protocol {listener.protocol!r}")
