"""The POP3 conversation with a device before login, sans I/O: the AUTHORIZATION state.

Handles CAPA, USER/PASS, AUTH PLAIN/LOGIN (RFC 5034), optional STLS (RFC 2595) and QUIT; every
other command is refused without echoing the client's input, so a password typed in the wrong
place never comes back in an answer. The shape (phases, SASL, limits, STARTTLS) is
proxy.prelogin's; this module adds the verbs and words.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..actions import LoggedIn, Send
from ..errors import FailureKind, ProxyError
from ..lines import LineBuffer
from ..prelogin import Actions, PreLoginSession
from ..sasl import MECHANISMS, decode_text
from ..text import clip, one_line

GREETING = "xoauth2-proxy POP3 ready"
# RFC 1939: a response line is at most 512 octets including CRLF.
MAX_RESPONSE = 512
# Commands of the TRANSACTION state: a client sending them is confused about its login, so the
# answer says "log in first" rather than "unknown command".
TRANSACTION_COMMANDS = frozenset(
    {"STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL", "LAST"}
)
# RFC 3206 response codes by kind of failure (INTERFACE.md, "What devices are told").
FAILURE_CODES = {FailureKind.CREDENTIALS: "[AUTH]", FailureKind.TEMPORARY: "[SYS/TEMP]"}


class Pop3Session(PreLoginSession[bytes]):
    """One client connection's POP3 conversation up to the relay (implements FrontSession)."""

    # Temporary failures count too: a client that cannot log in three times is sent away.
    FAILED_LOGIN_KINDS = frozenset(FailureKind)

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
        """`max_errors` refused commands, or `max_login_failures` failed logins, end the
        connection. `upstream_capabilities` are advertised before login for clients that ask
        CAPA only once; O365 and Dovecot both support TOP and UIDL."""
        super().__init__(
            LineBuffer(max_line), starttls=starttls, tls_active=tls_active,
            login_requires_tls=login_requires_tls, max_errors=max_errors,
            max_failed_logins=max_login_failures,
        )
        self._upstream_capabilities = tuple(upstream_capabilities)
        self._username: str | None = None  # from USER, until PASS
        self._verbs = {
            "CAPA": self._capa, "QUIT": self._quit, "STLS": self._stls, "USER": self._user,
            "PASS": self._pass, "AUTH": self._auth, "APOP": self._apop,
        }

    # -- reading commands --

    def _next_command(self) -> Actions | None:
        line = self._lines.next_line()
        if line is None:
            return None
        verb, _, argument = line.partition(b" ")
        return self._dispatch(verb.decode("latin-1").upper(), argument)

    def _unknown(self, verb: str, argument: bytes) -> Actions:
        if verb in TRANSACTION_COMMANDS:
            return self._refuse("Not logged in: send USER and PASS (or AUTH) first.")
        return self._refuse("Unknown command.")

    # -- commands --

    def _capa(self, argument: bytes) -> Actions:
        lines = ["+OK Capability list follows"]
        if self._offers_starttls:
            lines.append("STLS")
        if not self._needs_tls:
            lines += ["USER", "SASL " + " ".join(MECHANISMS)]
        lines += ["RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", *self._upstream_capabilities]
        return [_multiline([*lines, "IMPLEMENTATION xoauth2-proxy"])]

    def _quit(self, argument: bytes) -> Actions:
        return [_answer("+OK", "xoauth2-proxy signing off."), *self._close()]

    def _stls(self, argument: bytes) -> Actions:
        if not self._starttls:
            return self._refuse("STLS is not available.")
        if self._tls_active:
            return self._refuse("TLS is already active.")
        return self._begin_tls(_answer("+OK", "Begin TLS negotiation."))

    def _user(self, argument: bytes) -> Actions:
        if self._needs_tls:
            return self._tls_first()
        name = decode_text(argument.strip())
        if not name:
            return self._refuse("USER needs a user name.")
        self._username = name
        return [_answer("+OK", "Send PASS.")]

    def _pass(self, argument: bytes) -> Actions:
        if self._needs_tls:
            return self._tls_first()
        if self._username is None:
            return self._refuse("Send USER first.")
        username, self._username = self._username, None
        # RFC 1939: PASS has one argument, so spaces belong to the password.
        return self._login(username, decode_text(argument))

    def _auth(self, argument: bytes) -> Actions:
        words = argument.split()
        if words and self._needs_tls:  # the list of mechanisms is no secret
            return self._tls_first()
        self._username = None  # AUTH starts afresh
        if not words:
            return [_multiline(["+OK Supported mechanisms follow", *MECHANISMS])]
        mechanism = words[0].decode("latin-1").upper()
        if mechanism not in MECHANISMS:
            return self._refuse("Unsupported authentication mechanism; use PLAIN or LOGIN.")
        if len(words) > 2:
            return self._refuse("Syntax error: AUTH mechanism [initial-response].")
        return self._authenticate(mechanism, words[1] if len(words) == 2 else None)

    def _apop(self, argument: bytes) -> Actions:
        return self._refuse("APOP is not supported; use USER/PASS.")

    # -- words --

    def _greeting(self) -> Actions:
        return [_answer("+OK", GREETING)]

    def _tls_first(self) -> Actions:
        return self._refuse("Login is only accepted over TLS: send STLS first.")

    def _refuse(self, text: str, note: str = "") -> Actions:
        """A -ERR answer that counts towards max_errors; `note` is logged for the administrator."""
        return self._error(_answer("-ERR", text, note))

    def _too_many_errors(self, answer: Send) -> Actions:
        farewell = _answer("-ERR", "Too many errors; closing connection.")
        return [farewell, *self._close("too many errors")]

    def _line_too_long(self) -> Actions:
        return self._refuse("Line too long.", note="line too long")

    def _challenge(self, data: bytes) -> Send:
        return Send(b"+ " + data + b"\r\n")

    def _sasl_cancelled(self) -> Actions:
        return self._refuse("Authentication cancelled.")

    def _sasl_invalid(self, text: str) -> Actions:
        return self._refuse(f"{text}.")

    def _logged_in(self, upstream: LoggedIn) -> Actions:
        return [_answer("+OK", "Logged in.")]

    def _login_failure(self, error: ProxyError) -> Actions:
        return [_answer("-ERR", f"{FAILURE_CODES[error.kind]} {error.message}")]

    def _forget_before_tls(self) -> None:
        self._username = None


def _answer(status: str, text: str, note: str = "") -> Send:
    line = f"{status} {one_line(text, MAX_RESPONSE)}".encode()
    return Send(clip(line, MAX_RESPONSE - 2) + b"\r\n", note)


def _multiline(lines: list[str]) -> Send:
    """A multi-line answer of our own making (RFC 1939 3: ends with a line holding a dot)."""
    return Send("".join(f"{line}\r\n" for line in [*lines, "."]).encode())
