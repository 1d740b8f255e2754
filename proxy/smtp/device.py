"""The SMTP submission conversation with a device before login, sans I/O.

The client (often a printer that scans to e-mail) greets, authenticates with AUTH LOGIN or
AUTH PLAIN, and from the moment the upstream accepts our XOAUTH2 login the glue relays between the two
connections. Until then this session answers every command itself and never lets a mail
transaction start. The shape (phases, SASL, limits, STARTTLS) is proxy.prelogin's; this module
adds the verbs and words, its replies made by proxy.smtp.replies.
"""

from __future__ import annotations

from collections.abc import Callable

from ..actions import LoggedIn, Send
from ..errors import FailureKind, ProxyError
from ..lines import LineBuffer
from ..prelogin import Actions, PreLoginSession
from ..sasl import MECHANISMS
from ..text import one_line
from .replies import reply

# Office 365's own limit as its EHLO states it; an upstream with a lower limit refuses a bigger
# message itself (552), and that answer reaches the client untouched.
DEFAULT_MAX_MESSAGE_SIZE = 157_286_400
# Listed twice: `AUTH=PLAIN LOGIN` is the pre-RFC 2554 form that some old clients and printers
# look for instead of `AUTH PLAIN LOGIN`.
AUTH_EXTENSIONS = ("AUTH PLAIN LOGIN", "AUTH=PLAIN LOGIN")
UNSUPPORTED = "Unrecognised authentication mechanism; use PLAIN or LOGIN"
# Answers that never change. MAIL, RCPT, DATA and BDAT would start or belong to a mail
# transaction; all need a login first. VRFY: RFC 5321 3.5.3's 252 says "cannot verify, but will
# try delivery", without revealing which addresses exist.
FIXED_ANSWERS = {
    **dict.fromkeys(("MAIL", "RCPT", "DATA", "BDAT"), "530 5.7.0 Authentication required"),
    **dict.fromkeys(("RSET", "NOOP"), "250 2.0.0 OK"),
    "VRFY": "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery",
    "HELP": "214 2.0.0 Log in with AUTH PLAIN or AUTH LOGIN, then send as usual",
}


def ehlo_extensions(max_message_size: int) -> tuple[str, ...]:
    """The EHLO keywords offered before login.

    After login the relay is transparent, so the client goes on using whatever it saw here
    against the real upstream. Only extensions that both Office 365 (after STARTTLS) and
    Dovecot 2.3's submission service (the upstream of the integration tests) support without
    conditions are offered:
    - PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES, CHUNKING: both support them.
    - DSN and BINARYMIME: Office 365 yes; Dovecot only when its relay MTA does, so no.
    - SMTPUTF8: Office 365 yes; Dovecot 2.3 answers `555 5.5.4 Unsupported parameters`.
    - BURL: Dovecot only.
    STARTTLS and AUTH are added per connection (see SmtpSession._ehlo).
    """
    return ("PIPELINING", f"SIZE {max_message_size}", "8BITMIME", "ENHANCEDSTATUSCODES", "CHUNKING")


class SmtpSession(PreLoginSession[bytes]):
    """FrontSession for SMTP submission (see proxy.actions.FrontSession)."""

    # Not counted apart: a failed login is a 4xx/5xx reply, and every one counts towards
    # max_errors (like Postfix's smtpd_hard_error_limit).
    FAILED_LOGIN_KINDS = frozenset()

    def __init__(
        self,
        *,
        hostname: str = "xoauth2-proxy",
        max_line: int = 4096,
        max_errors: int = 20,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        starttls: bool = False,
        tls_active: bool = False,
        login_requires_tls: bool = False,
    ) -> None:
        """`login_requires_tls` refuses AUTH until TLS is on (RFC 3207) and leaves AUTH out of
        EHLO until then."""
        super().__init__(
            LineBuffer(max_line), starttls=starttls, tls_active=tls_active,
            login_requires_tls=login_requires_tls, max_errors=max_errors,
        )
        self.hostname = one_line(hostname) or "xoauth2-proxy"
        self.extensions = ehlo_extensions(max_message_size)
        self._greeted = False  # HELO or EHLO seen: AUTH is allowed from then on
        self._verbs = {
            **{verb: self._fixed(answer) for verb, answer in FIXED_ANSWERS.items()},
            "EHLO": self._ehlo, "HELO": self._helo, "AUTH": self._auth, "QUIT": self._quit,
            "STARTTLS": self._start_tls,
        }

    # -- reading commands --

    def _next_command(self) -> Actions | None:
        line = self._lines.next_line()
        if line is None:
            return None
        verb, _, argument = line.strip().partition(b" ")
        return self._dispatch(verb.decode("latin-1").upper(), argument.strip())

    def _unknown(self, verb: str, argument: bytes) -> Actions:
        return self._reply("500 5.5.2 Command not recognised")

    # -- commands --

    def _fixed(self, answer: str) -> Callable[[bytes], Actions]:
        return lambda argument: self._reply(answer)

    def _ehlo(self, argument: bytes) -> Actions:
        if not argument:
            return self._reply("501 5.5.4 Syntax: EHLO hostname")
        self._greeted = True
        offered = self.extensions
        if self._offers_starttls:
            offered += ("STARTTLS",)
        if not self._needs_tls:
            offered += AUTH_EXTENSIONS
        return [Send(reply("250", self.hostname, *offered))]

    def _helo(self, argument: bytes) -> Actions:
        if not argument:
            return self._reply("501 5.5.4 Syntax: HELO hostname")
        self._greeted = True
        return self._reply(f"250 {self.hostname}")

    def _auth(self, argument: bytes) -> Actions:
        # Postfix, Exim, Sendmail and Exchange all refuse AUTH before HELO/EHLO (only Dovecot
        # lets it pass): AUTH is an ESMTP extension a client can only know of from EHLO, so a
        # device that skips the greeting never worked against the server it was set up for.
        if not self._greeted:
            return self._reply("503 5.5.1 Send EHLO or HELO first")
        if self._needs_tls:
            return self._reply("530 5.7.0 Must issue a STARTTLS command first")
        words = argument.split()
        if not 1 <= len(words) <= 2:
            return self._reply("501 5.5.4 Syntax: AUTH mechanism [initial-response]")
        mechanism = words[0].decode("latin-1").upper()
        if mechanism not in MECHANISMS:
            return self._reply(f"504 5.5.4 {UNSUPPORTED}")
        return self._authenticate(mechanism, words[1] if len(words) == 2 else None)

    def _quit(self, argument: bytes) -> Actions:
        return [*self._reply("221 2.0.0 Bye"), *self._close()]

    def _start_tls(self, argument: bytes) -> Actions:
        if not self._starttls:
            return self._reply("502 5.5.1 STARTTLS is not available on this port")
        if self._tls_active:
            return self._reply("503 5.5.1 TLS is already active")
        return self._begin_tls(Send(reply("220", "2.0.0 Ready to start TLS")))

    # -- words --

    def _reply(self, line: str, note: str = "") -> Actions:
        """A one-line reply, "CODE text"; 4xx and 5xx ones count towards max_errors."""
        code, _, text = line.partition(" ")
        answer = Send(reply(code, text), note)
        return self._error(answer) if code.startswith(("4", "5")) else [answer]

    def _greeting(self) -> Actions:
        return self._reply(f"220 {self.hostname} ESMTP xoauth2-proxy ready")

    def _too_many_errors(self, answer: Send) -> Actions:
        closing = Send(reply("421", "4.7.0 Too many errors, closing connection"))
        return [answer, closing, *self._close("too many errors")]

    def _line_too_long(self) -> Actions:
        return self._reply("500 5.5.2 Line too long", note="line too long")

    def _challenge(self, data: bytes) -> Send:
        return Send(reply("334", data.decode("ascii")))

    def _sasl_cancelled(self) -> Actions:
        return self._reply("501 5.7.0 Authentication cancelled")

    def _sasl_invalid(self, text: str) -> Actions:
        return self._reply(f"501 5.5.2 {text}")

    def _logged_in(self, upstream: LoggedIn) -> Actions:
        # The client already chose its extensions from our EHLO; the upstream's list cannot
        # change that any more, which is why ehlo_extensions() offers only safe ones.
        return self._reply("235 2.7.0 Authentication successful")

    def _login_failure(self, error: ProxyError) -> Actions:
        # Devices act on the difference (INTERFACE.md): 535 makes many forget the password.
        if error.kind is FailureKind.CREDENTIALS:
            return self._reply(f"535 5.7.8 {error.message}")
        return self._reply(f"454 4.7.0 {error.message}")

    def _forget_before_tls(self) -> None:
        # RFC 3207 4.2: the greeting too must be given again.
        self._greeted = False
