"""The POP3 front, sans-I/O: the AUTHORIZATION state a legacy client sees before the relay.

Handles CAPA, USER/PASS, AUTH PLAIN/LOGIN (RFC 5034), optional STLS (RFC 2595) and QUIT; every
other command is refused without echoing the client's input, so a password typed in the wrong
place never comes back in an answer. Once a password is known it asks for a `Login` and reads
nothing more until told the outcome; what the client pipelined meanwhile stays buffered for the
relay (after success) or for the next attempt (after failure).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum, auto

from ..actions import Close, FrontAction, LoggedIn, Login, Relay, Send, StartTLS
from ..errors import FailureKind, ProxyError
from ..lines import LineBuffer, LineTooLong
from ..sasl import (
    LOGIN_PASSWORD_PROMPT,
    LOGIN_USERNAME_PROMPT,
    SaslError,
    decode_text,
    parse_login_field,
    parse_plain,
)

GREETING = "xoauth2-proxy POP3 ready"
MECHANISMS = ("PLAIN", "LOGIN")
# RFC 1939: a response line is at most 512 octets including CRLF.
MAX_RESPONSE = 512
# Commands of the TRANSACTION state: a client sending them is confused about its login, so the
# answer says "log in first" rather than "unknown command".
TRANSACTION_COMMANDS = frozenset(
    {b"STAT", b"LIST", b"RETR", b"DELE", b"NOOP", b"RSET", b"TOP", b"UIDL", b"LAST"}
)
# RFC 3206 response codes by kind of failure (INTERFACE.md, "What devices are told").
FAILURE_CODES = {FailureKind.CREDENTIALS: "[AUTH]", FailureKind.TEMPORARY: "[SYS/TEMP]"}


def single_line(text: str, limit: int = 400) -> str:
    """`text` made safe for one protocol line: control characters become spaces, and it is cut to
    `limit` characters (a CR or LF inside an answer would let the text forge protocol lines)."""
    cleaned = "".join(" " if ord(c) < 0x20 or ord(c) == 0x7F else c for c in text).strip()
    if len(cleaned) > limit:
        cleaned = cleaned[: max(limit - 3, 0)].rstrip() + "..."
    return cleaned


class _State(Enum):
    AUTHORIZATION = auto()
    SASL_PLAIN = auto()  # sent "+ ", waiting for the PLAIN response
    SASL_LOGIN_USERNAME = auto()
    SASL_LOGIN_PASSWORD = auto()
    LOGIN_PENDING = auto()  # emitted Login, waiting for login_succeeded / login_failed
    RELAYING = auto()
    CLOSED = auto()


_READING = {
    _State.AUTHORIZATION,
    _State.SASL_PLAIN,
    _State.SASL_LOGIN_USERNAME,
    _State.SASL_LOGIN_PASSWORD,
}


class Pop3Session:
    """One client connection's POP3 conversation up to the relay (implements FrontSession)."""

    def __init__(
        self,
        *,
        max_line: int = 8192,
        max_errors: int = 20,
        max_login_failures: int = 3,
        starttls: bool = False,
        tls_active: bool = False,
        login_requires_tls: bool = False,
        upstream_capabilities: Sequence[str] = ("TOP", "UIDL"),
    ) -> None:
        """`max_errors` refused commands, or `max_login_failures` failed logins, end the connection.
        `starttls` offers STLS (the glue starts TLS on `StartTLS`); `tls_active` says the connection is
        TLS already (implicit TLS); `login_requires_tls` refuses logins until TLS is on.
        `upstream_capabilities` are advertised before login for clients that ask CAPA only once;
        O365 and Dovecot both support TOP and UIDL."""
        self._lines = LineBuffer(max_line)
        self._max_errors = max_errors
        self._max_login_failures = max_login_failures
        self._starttls = starttls
        self._tls_active = tls_active
        self._login_requires_tls = login_requires_tls
        self._upstream_capabilities = tuple(upstream_capabilities)
        self._state = _State.AUTHORIZATION
        self._errors = 0
        self._login_failures = 0
        self._username: str | None = None  # from USER, or the first step of AUTH LOGIN

    # -- FrontSession --

    def start(self) -> list[FrontAction]:
        return [_ok(GREETING)]

    def receive_data(self, data: bytes) -> list[FrontAction]:
        if self._state is _State.CLOSED:
            return []
        self._lines.feed(data)
        return self._process()

    def login_succeeded(self, upstream: LoggedIn) -> list[FrontAction]:
        self._expect_login_pending()
        self._state = _State.RELAYING
        return [_ok("Logged in."), Relay()]

    def login_failed(self, error: ProxyError) -> list[FrontAction]:
        self._expect_login_pending()
        code = FAILURE_CODES[error.kind]
        answer = _err(f"{code} {error.message}")
        self._login_failures += 1
        if self._login_failures >= self._max_login_failures:
            return [answer, *self._close("too many failed logins")]
        # RFC 1939: after a failed login the client may try again; its pipelined commands wait.
        self._state = _State.AUTHORIZATION
        return [answer, *self._process()]

    def take_unparsed(self) -> bytes:
        return self._lines.take_unparsed()

    # -- reading commands --

    def _process(self) -> list[FrontAction]:
        actions: list[FrontAction] = []
        while self._state in _READING:
            try:
                line = self._lines.next_line()
            except LineTooLong:
                self._state = _State.AUTHORIZATION  # an overlong SASL answer ends the exchange
                actions += self._refuse("Line too long.", note="line too long")
                continue
            if line is None:
                break
            actions += self._handle(line)
        return actions

    def _handle(self, line: bytes) -> list[FrontAction]:
        if self._state is _State.AUTHORIZATION:
            return self._command(line)
        if line.strip() == b"*":
            self._state = _State.AUTHORIZATION
            return self._refuse("Authentication cancelled.")
        try:
            if self._state is _State.SASL_PLAIN:
                self._state = _State.AUTHORIZATION
                return self._login(*parse_plain(line))
            if self._state is _State.SASL_LOGIN_USERNAME:
                return self._login_username(parse_login_field(line))
            self._state = _State.AUTHORIZATION
            return self._login(self._username or "", parse_login_field(line))
        except SaslError as e:
            self._state = _State.AUTHORIZATION
            return self._refuse(f"{e.message}.")

    def _command(self, line: bytes) -> list[FrontAction]:
        verb, _, argument = line.partition(b" ")
        verb = verb.upper()
        if verb == b"CAPA":
            return [self._capabilities()]
        if verb == b"QUIT":
            return [_ok("xoauth2-proxy signing off."), *self._close()]
        if verb == b"STLS":
            return self._start_tls()
        if verb in (b"USER", b"PASS", b"AUTH") and self._needs_tls():
            if verb == b"AUTH" and not argument.strip():
                return [self._mechanism_list()]
            return self._refuse("Login is only accepted over TLS: send STLS first.")
        if verb == b"USER":
            return self._user(argument)
        if verb == b"PASS":
            return self._pass(argument)
        if verb == b"AUTH":
            return self._auth(argument.split())
        if verb == b"APOP":
            return self._refuse("APOP is not supported; use USER/PASS.")
        if verb in TRANSACTION_COMMANDS:
            return self._refuse("Not logged in: send USER and PASS (or AUTH) first.")
        return self._refuse("Unknown command.")

    def _user(self, argument: bytes) -> list[FrontAction]:
        name = decode_text(argument.strip())
        if not name:
            return self._refuse("USER needs a user name.")
        self._username = name
        return [_ok("Send PASS.")]

    def _pass(self, argument: bytes) -> list[FrontAction]:
        if self._username is None:
            return self._refuse("Send USER first.")
        # RFC 1939: PASS has one argument, so spaces belong to the password.
        return self._login(self._username, decode_text(argument))

    def _auth(self, words: list[bytes]) -> list[FrontAction]:
        self._username = None
        if not words:
            return [self._mechanism_list()]
        # RFC 5034: "=" stands for an empty initial response.
        mechanism, initial = words[0].upper(), [b"" if w == b"=" else w for w in words[1:]]
        if mechanism.decode("latin-1") not in MECHANISMS:
            return self._refuse("Unsupported authentication mechanism; use PLAIN or LOGIN.")
        if len(initial) > 1:
            return self._refuse("Syntax error: AUTH mechanism [initial-response].")
        try:
            if mechanism == b"PLAIN":
                if initial:
                    return self._login(*parse_plain(initial[0]))
                self._state = _State.SASL_PLAIN
                return [Send(b"+ \r\n")]
            if initial:  # the user name, as some clients send it (RFC 5034 initial response)
                return self._login_username(parse_login_field(initial[0]))
        except SaslError as e:
            return self._refuse(f"{e.message}.")
        self._state = _State.SASL_LOGIN_USERNAME
        return [Send(b"+ " + LOGIN_USERNAME_PROMPT + b"\r\n")]

    def _login_username(self, name: str) -> list[FrontAction]:
        if not name:
            self._state = _State.AUTHORIZATION
            return self._refuse("Empty user name.")
        self._username = name
        self._state = _State.SASL_LOGIN_PASSWORD
        return [Send(b"+ " + LOGIN_PASSWORD_PROMPT + b"\r\n")]

    def _login(self, username: str, password: str) -> list[FrontAction]:
        self._username = None
        if not username or not password:
            return self._refuse("User name and password must not be empty.")
        self._state = _State.LOGIN_PENDING
        return [Login(username, password)]

    def _start_tls(self) -> list[FrontAction]:
        if not self._starttls:
            return self._refuse("STLS is not available.")
        if self._tls_active:
            return self._refuse("TLS is already active.")
        # RFC 2595: anything the client sent after STLS in plaintext must not be obeyed
        # (command injection), and nothing learned before TLS carries over.
        self._lines.take_unparsed()
        self._tls_active = True
        self._username = None
        return [_ok("Begin TLS negotiation."), StartTLS()]

    # -- answers --

    def _needs_tls(self) -> bool:
        return self._login_requires_tls and not self._tls_active

    def _capabilities(self) -> Send:
        lines = ["+OK Capability list follows"]
        if self._starttls and not self._tls_active:
            lines.append("STLS")
        if not self._needs_tls():
            lines += ["USER", "SASL " + " ".join(MECHANISMS)]
        lines += ["RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", *self._upstream_capabilities]
        lines += ["IMPLEMENTATION xoauth2-proxy", "."]
        return Send("".join(f"{line}\r\n" for line in lines).encode())

    def _mechanism_list(self) -> Send:
        lines = ["+OK Supported mechanisms follow", *MECHANISMS, "."]
        return Send("".join(f"{line}\r\n" for line in lines).encode())

    def _refuse(self, text: str, note: str = "") -> list[FrontAction]:
        """A -ERR answer that counts towards `max_errors`; the last one closes the connection.
        `note`, if any, is logged for the administrator."""
        self._errors += 1
        if self._errors >= self._max_errors:
            return [_err("Too many errors; closing connection."), *self._close("too many errors")]
        return [Send(_err(text).data, note)]

    def _close(self, reason: str = "") -> list[FrontAction]:
        self._state = _State.CLOSED
        self._lines.take_unparsed()  # nothing after the closing answer is obeyed or relayed
        return [Close(reason)]

    def _expect_login_pending(self) -> None:
        if self._state is not _State.LOGIN_PENDING:
            raise RuntimeError(f"no login is pending (state {self._state.name})")


def _ok(text: str) -> Send:
    return _answer("+OK", text)


def _err(text: str) -> Send:
    return _answer("-ERR", text)


def _answer(status: str, text: str) -> Send:
    line = f"{status} {single_line(text, MAX_RESPONSE)}".encode()
    if len(line) > MAX_RESPONSE - 2:  # cut bytes (multi-byte text), dropping a split character
        line = line[: MAX_RESPONSE - 5].decode("utf-8", "ignore").rstrip().encode() + b"..."
    return Send(line + b"\r\n")
