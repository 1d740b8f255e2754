"""The SMTP submission front: the pre-login conversation with a legacy client, sans-I/O.

The client (often a printer that scans to e-mail) greets, authenticates with AUTH LOGIN or
AUTH PLAIN, and from the moment the upstream accepts our XOAUTH2 login the glue splices the two
connections. Until then this class answers every command itself, one reply per line, and never
lets a mail transaction start.
"""

from __future__ import annotations

import enum

from .. import sasl
from ..actions import Close, FrontAction, LoggedIn, Login, Relay, Send, StartTLS
from ..errors import FailureKind, ProxyError, WrongPassword
from ..lines import LineBuffer, LineTooLong

# Office 365's own limit as its EHLO states it; an upstream with a lower limit refuses a bigger
# message itself (552), and that answer reaches the client untouched.
DEFAULT_MAX_MESSAGE_SIZE = 157_286_400


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
    STARTTLS and AUTH are added per connection (see SmtpSession._extensions).
    """
    return (
        "PIPELINING",
        f"SIZE {max_message_size}",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
    )


# Listed twice: `AUTH=PLAIN LOGIN` is the pre-RFC 2554 form that some old clients and printers
# look for instead of `AUTH PLAIN LOGIN`.
AUTH_EXTENSIONS = ("AUTH PLAIN LOGIN", "AUTH=PLAIN LOGIN")


class _Phase(enum.Enum):
    COMMANDS = "commands"
    AUTH_PLAIN = "auth plain: waiting for the response"
    AUTH_LOGIN_USERNAME = "auth login: waiting for the user name"
    AUTH_LOGIN_PASSWORD = "auth login: waiting for the password"
    WAITING_FOR_LOGIN = "waiting for login_succeeded / login_failed"
    RELAYING = "relaying"
    CLOSED = "closed"


# Phases in which buffered lines are read and answered.
_READING = frozenset(
    {_Phase.COMMANDS, _Phase.AUTH_PLAIN, _Phase.AUTH_LOGIN_USERNAME, _Phase.AUTH_LOGIN_PASSWORD}
)

# Commands that would start or belong to a mail transaction; all need a login first.
_TRANSACTION_COMMANDS = frozenset({"MAIL", "RCPT", "DATA", "BDAT"})

# RFC 5321 allows 512 octets per reply line; leave room for the code and a user name.
_MAX_MESSAGE_TEXT = 400


def one_line(text: str) -> str:
    """`text` made safe for one reply line: no CR/LF or other controls, ASCII, bounded."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text)
    cleaned = " ".join(cleaned.split())
    cleaned = cleaned.encode("ascii", "replace").decode("ascii")
    return cleaned[:_MAX_MESSAGE_TEXT]


class SmtpSession:
    """FrontSession for SMTP submission (see proxy.actions.FrontSession)."""

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
        """`starttls` offers STARTTLS (the glue starts TLS on `StartTLS`); `tls_active` says the
        connection is TLS already (implicit TLS); `login_requires_tls` refuses AUTH until TLS
        is on (RFC 3207) and leaves AUTH out of EHLO until then."""
        self.hostname = one_line(hostname) or "xoauth2-proxy"
        self._starttls = starttls
        self._tls_active = tls_active
        self._login_requires_tls = login_requires_tls
        self.max_errors = max_errors
        self.extensions = ehlo_extensions(max_message_size)
        self._lines = LineBuffer(max_line)
        self._phase = _Phase.COMMANDS
        self._greeted = False  # HELO or EHLO seen: AUTH is allowed from then on
        self._username = ""  # AUTH LOGIN: the user name, while the password is awaited
        self._errors = 0
        self._actions: list[FrontAction] = []

    # -- FrontSession --

    def start(self) -> list[FrontAction]:
        self._reply(f"220 {self.hostname} ESMTP xoauth2-proxy ready")
        return self._take_actions()

    def receive_data(self, data: bytes) -> list[FrontAction]:
        if self._phase is _Phase.CLOSED:
            return []
        # While waiting for the login outcome (and, should the glue still call us, while
        # relaying) bytes are only kept: pipelined commands after AUTH belong to whoever
        # handles them next (this session after a failure, the upstream after success).
        self._lines.feed(data)
        return self._process()

    def login_succeeded(self, upstream: LoggedIn) -> list[FrontAction]:
        # The client already chose its extensions from our EHLO; the upstream's list cannot
        # change that any more, which is why ehlo_extensions() offers only safe ones.
        self._require_waiting("login_succeeded")
        self._reply("235 2.7.0 Authentication successful")
        self._actions.append(Relay())
        self._phase = _Phase.RELAYING
        return self._take_actions()

    def login_failed(self, error: ProxyError) -> list[FrontAction]:
        self._require_waiting("login_failed")
        self._phase = _Phase.COMMANDS
        # Devices act on the difference (INTERFACE.md): 535 makes many forget the password.
        if error.kind is FailureKind.CREDENTIALS:
            self._reply(f"535 5.7.8 {one_line(error.message)}")
        else:
            self._reply(f"454 4.7.0 {one_line(error.message)}")
        return self._process()

    def take_unparsed(self) -> bytes:
        return self._lines.take_unparsed()

    # -- reading --

    def _process(self) -> list[FrontAction]:
        while self._phase in _READING:
            try:
                line = self._lines.next_line()
            except LineTooLong:
                self._phase = _Phase.COMMANDS  # an overlong SASL response ends the exchange too
                self._username = ""
                self._reply("500 5.5.2 Line too long", note="line too long")
                continue
            if line is None:
                break
            if self._phase is _Phase.COMMANDS:
                self._command(line)
            else:
                self._sasl_response(line)
        return self._take_actions()

    def _command(self, line: bytes) -> None:
        verb, _, rest = line.strip().partition(b" ")
        name = verb.decode("latin-1").upper()
        argument = rest.strip()
        if name == "EHLO":
            self._hello(argument, extended=True)
        elif name == "HELO":
            self._hello(argument, extended=False)
        elif name == "AUTH":
            self._auth(argument)
        elif name in _TRANSACTION_COMMANDS:
            self._reply("530 5.7.0 Authentication required")
        elif name in ("RSET", "NOOP"):
            self._reply("250 2.0.0 OK")
        elif name == "QUIT":
            self._reply("221 2.0.0 Bye")
            self._close()
        elif name == "STARTTLS":
            self._start_tls()
        elif name == "VRFY":
            # RFC 5321 3.5.3: 252 says "cannot verify, but will try delivery", without
            # revealing which addresses exist.
            self._reply("252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery")
        elif name == "HELP":
            self._reply("214 2.0.0 Log in with AUTH PLAIN or AUTH LOGIN, then send as usual")
        else:
            self._reply("500 5.5.2 Command not recognised")

    def _hello(self, argument: bytes, *, extended: bool) -> None:
        if not argument:
            self._reply(f"501 5.5.4 Syntax: {'EHLO' if extended else 'HELO'} hostname")
            return
        self._greeted = True
        if extended:
            self._reply_lines("250", (self.hostname, *self._extensions()))
        else:
            self._reply(f"250 {self.hostname}")

    def _auth(self, argument: bytes) -> None:
        # Postfix, Exim, Sendmail and Exchange all refuse AUTH before HELO/EHLO (only Dovecot
        # lets it pass): AUTH is an ESMTP extension a client can only know of from EHLO, so a
        # device that skips the greeting never worked against the server it was set up for.
        if not self._greeted:
            self._reply("503 5.5.1 Send EHLO or HELO first")
            return
        if self._needs_tls():
            self._reply("530 5.7.0 Must issue a STARTTLS command first")
            return
        words = argument.split()
        if not 1 <= len(words) <= 2:
            self._reply("501 5.5.4 Syntax: AUTH mechanism [initial-response]")
            return
        mechanism = words[0].decode("latin-1").upper()
        initial: bytes | None = words[1] if len(words) == 2 else None
        if initial == b"=":  # RFC 4954: "=" is an empty initial response
            initial = b""
        if mechanism == "PLAIN":
            self._phase = _Phase.AUTH_PLAIN
        elif mechanism == "LOGIN":
            self._phase = _Phase.AUTH_LOGIN_USERNAME
        else:
            self._reply("504 5.5.4 Unrecognised authentication mechanism; use PLAIN or LOGIN")
            return
        if initial is not None:
            self._sasl_response(initial)
        elif self._phase is _Phase.AUTH_PLAIN:
            self._reply("334 ")
        else:
            self._reply(f"334 {sasl.LOGIN_USERNAME_PROMPT.decode()}")

    def _extensions(self) -> tuple[str, ...]:
        offered = self.extensions
        if self._starttls and not self._tls_active:
            offered += ("STARTTLS",)
        if not self._needs_tls():
            offered += AUTH_EXTENSIONS
        return offered

    def _needs_tls(self) -> bool:
        return self._login_requires_tls and not self._tls_active

    def _start_tls(self) -> None:
        if not self._starttls:
            self._reply("502 5.5.1 STARTTLS is not available on this port")
            return
        if self._tls_active:
            self._reply("503 5.5.1 TLS is already active")
            return
        # RFC 3207 4.2: forget everything from before TLS, the greeting included, and obey
        # nothing the client pipelined after STARTTLS in plaintext (command injection).
        self._reply("220 2.0.0 Ready to start TLS")
        self._lines.take_unparsed()
        self._tls_active = True
        self._greeted = False
        self._actions.append(StartTLS())

    def _sasl_response(self, line: bytes) -> None:
        if line.strip() == b"*":
            self._phase = _Phase.COMMANDS
            self._reply("501 5.7.0 Authentication cancelled")
            return
        try:
            if self._phase is _Phase.AUTH_PLAIN:
                self._login(*sasl.parse_plain(line))
            elif self._phase is _Phase.AUTH_LOGIN_USERNAME:
                self._username = sasl.parse_login_field(line)
                self._phase = _Phase.AUTH_LOGIN_PASSWORD
                self._reply(f"334 {sasl.LOGIN_PASSWORD_PROMPT.decode()}")
            else:
                self._login(self._username, sasl.parse_login_field(line))
        except sasl.SaslError as error:
            # The messages of SaslError never carry the decoded data, so no password leaks.
            self._phase = _Phase.COMMANDS
            self._username = ""
            self._reply(f"501 5.5.2 {one_line(error.message)}")

    def _login(self, username: str, password: str) -> None:
        self._username = ""
        if not username or not password:  # no account has either empty: no key derivation
            self._phase = _Phase.COMMANDS
            self._reply(f"535 5.7.8 {WrongPassword().message}")
            return
        self._phase = _Phase.WAITING_FOR_LOGIN
        self._actions.append(Login(username, password))

    # -- writing --

    def _reply(self, line: str, note: str = "") -> None:
        self._reply_lines(line[:3], (line[4:],), note)

    def _reply_lines(self, code: str, texts: tuple[str, ...], note: str = "") -> None:
        """`note`, if any, is logged for the administrator with the peer's address."""
        last = len(texts) - 1
        data = b"".join(
            f"{code}{' ' if i == last else '-'}{text}\r\n".encode("ascii", "replace")
            for i, text in enumerate(texts)
        )
        previous = self._actions[-1] if self._actions else None
        if isinstance(previous, Send):  # one write per batch of pipelined replies
            self._actions.pop()
            data = previous.data + data
            note = "; ".join(n for n in (previous.note, note) if n)
        self._actions.append(Send(data, note))
        if code[0] in "45":
            self._count_error()

    def _count_error(self) -> None:
        # Like Postfix's smtpd_hard_error_limit: a client that keeps failing (a password
        # guesser, or something that is not an SMTP client at all) is sent away.
        self._errors += 1
        if self._errors >= self.max_errors and self._phase is not _Phase.CLOSED:
            self._phase = _Phase.CLOSED  # before the reply: the 421 must not count again
            self._reply("421 4.7.0 Too many errors, closing connection")
            self._close("too many errors")

    def _close(self, reason: str = "") -> None:
        self._phase = _Phase.CLOSED
        self._lines.take_unparsed()  # whatever the client pipelined after this is dropped
        self._actions.append(Close(reason))

    def _take_actions(self) -> list[FrontAction]:
        actions, self._actions = self._actions, []
        return actions

    def _require_waiting(self, method: str) -> None:
        if self._phase is not _Phase.WAITING_FOR_LOGIN:
            raise RuntimeError(f"{method} called while {self._phase.value}")
