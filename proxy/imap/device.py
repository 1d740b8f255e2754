"""The IMAP conversation with a device before login, sans I/O (RFC 3501, 4959 SASL-IR, 7888).

It answers CAPABILITY, NOOP, ID and LOGOUT itself, takes the password from LOGIN or from
AUTHENTICATE PLAIN / LOGIN, and then asks the glue to sign in upstream (`Login`). Nothing it does
needs the upstream before that: a wrong password never opens a connection to Office 365. The
shape (phases, SASL, limits, STARTTLS) is proxy.prelogin's; this module adds the verbs and words.
"""

from __future__ import annotations

from ..actions import FrontAction, LoggedIn, Send
from ..errors import FailureKind, ProxyError
from ..prelogin import Actions, PreLoginSession
from ..sasl import MECHANISMS, decode_text
from ..text import one_line
from .wire import (
    Argument,
    Command,
    CommandReader,
    ContinuationNeeded,
    ParseError,
    Rejected,
    parse_command,
    quote,
)

BASE_CAPABILITIES = "IMAP4rev1 SASL-IR LITERAL+ ID"
LOGIN_CAPABILITIES = "AUTH=PLAIN AUTH=LOGIN"
# Upstream capabilities a client must not see: it authenticates with the proxy, not with these.
HIDDEN_CAPABILITY_PREFIXES = ("AUTH=", "LOGINDISABLED", "SASL-IR", "STARTTLS")
# INTERFACE.md, "What devices are told".
FAILURE_CODES = {
    FailureKind.CREDENTIALS: "[AUTHENTICATIONFAILED]",
    FailureKind.TEMPORARY: "[UNAVAILABLE]",
}
# Twenty BAD answers are borne; the twenty-first error closes the connection.
MAX_ERRORS = 21
# Wrong passwords on one connection before it is closed.
MAX_FAILED_LOGINS = 3
ONLY_AFTER_LOGIN = frozenset(
    ["SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE", "LIST", "LSUB", "STATUS", "APPEND", "CHECK", "CLOSE", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY", "MOVE", "UID", "IDLE", "ENABLE", "NAMESPACE", "GETQUOTA", "GETQUOTAROOT", "UNSELECT", "GETACL", "MYRIGHTS"]
)


class ImapSession(PreLoginSession[Command]):
    def __init__(
        self,
        *,
        max_line: int = 8192,
        max_literal: int = 65536,
        starttls: bool = False,
        tls_active: bool = False,
        login_requires_tls: bool = False,
    ) -> None:
        """`login_requires_tls` refuses logins until TLS is on (RFC 3501 LOGINDISABLED)."""
        self._reader = CommandReader(max_line=max_line, max_literal=max_literal)
        super().__init__(
            self._reader, starttls=starttls, tls_active=tls_active,
            login_requires_tls=login_requires_tls, max_errors=MAX_ERRORS,
            max_failed_logins=MAX_FAILED_LOGINS,
        )
        self._tag = ""  # of the LOGIN or AUTHENTICATE in progress: its answer carries it
        self._command = ""
        self._verbs = {
            "CAPABILITY": self._capability, "NOOP": self._noop, "LOGOUT": self._logout,
            "ID": self._id, "STARTTLS": self._start_tls, "LOGIN": self._login_command,
            "AUTHENTICATE": self._authenticate_command,
        }

    # -- reading commands --

    def _next_command(self) -> Actions | None:
        event = self._reader.next_event()
        if event is None:
            return None
        if isinstance(event, ContinuationNeeded):
            return [_send("+ Ready for literal data")]
        if isinstance(event, Rejected):
            if event.fatal:
                return [_send(f"* BYE {event.text}"), *self._close(event.text.lower())]
            return self._bad(event.tag, event.text, note=event.text.lower())
        try:
            command = parse_command(event)
        except ParseError as e:
            return self._bad(event.tag, str(e))
        return self._dispatch(command.name, command)

    def _unknown(self, verb: str, command: Command) -> Actions:
        if verb in ONLY_AFTER_LOGIN:
            return self._bad(command.tag, f"{verb} is only valid after login")
        return self._bad(command.tag, f"Unknown command {verb[:30]}")

    # -- commands valid before login --

    def _capability(self, command: Command) -> Actions:
        return [_send(f"* CAPABILITY {self._capabilities()}"), _done(command)]

    def _noop(self, command: Command) -> Actions:
        return [_done(command)]

    def _logout(self, command: Command) -> Actions:
        return [_send("* BYE Logging out"), _done(command), *self._close()]

    def _id(self, command: Command) -> Actions:
        answer = b"* ID (" + quote("name") + b" " + quote("xoauth2-proxy") + b")\r\n"
        return [Send(answer), _done(command)]

    def _start_tls(self, command: Command) -> Actions:
        if not self._starttls:
            return self._bad(command.tag, "STARTTLS is not enabled on this listener")
        if self._tls_active:
            return self._bad(command.tag, "TLS is already active")
        return self._begin_tls(_send(f"{command.tag} OK Begin TLS negotiation now"))

    def _login_command(self, command: Command) -> Actions:
        if self._needs_tls:
            return self._privacy_required(command.tag)
        if len(command.args) != 2 or not all(isinstance(a, bytes) for a in command.args):
            return self._bad(command.tag, "LOGIN takes a user name and a password")
        self._tag, self._command = command.tag, "LOGIN"
        username, password = (_text(a) for a in command.args)
        return self._login(username, password)

    def _authenticate_command(self, command: Command) -> Actions:
        if self._needs_tls:
            return self._privacy_required(command.tag)
        args = command.args
        if not 1 <= len(args) <= 2 or not all(isinstance(a, bytes) for a in args):
            return self._bad(command.tag, "AUTHENTICATE takes a mechanism and an optional response")
        mechanism = _text(args[0]).upper()
        if mechanism not in MECHANISMS:
            unsupported = "NO Unsupported authentication mechanism; use PLAIN or LOGIN"
            return [_send(f"{command.tag} {unsupported}")]
        self._tag, self._command = command.tag, "AUTHENTICATE"
        initial = args[1] if len(args) == 2 else None
        assert initial is None or isinstance(initial, bytes)
        return self._authenticate(mechanism, initial)

    # -- words --

    def _greeting(self) -> Actions:
        return [_send(f"* OK [CAPABILITY {self._capabilities()}] xoauth2-proxy ready")]

    def _capabilities(self) -> str:
        words = [BASE_CAPABILITIES]
        if self._offers_starttls:
            words.append("STARTTLS")
        words.append("LOGINDISABLED" if self._needs_tls else LOGIN_CAPABILITIES)
        return " ".join(words)

    def _privacy_required(self, tag: str) -> Actions:
        # Before any prompt, so no password is sent in the clear; and not a credentials answer.
        return [_send(f"{tag} NO [PRIVACYREQUIRED] Use STARTTLS before logging in")]

    def _bad(self, tag: str, text: str, note: str = "") -> Actions:
        return self._error(_send(f"{tag or '*'} BAD {text}", note))

    def _too_many_errors(self, answer: Send) -> Actions:
        return [_send("* BYE Too many invalid commands"), *self._close("too many invalid commands")]

    def _line_too_long(self) -> Actions:
        return [_send("* BYE Line too long"), *self._close("line too long during AUTHENTICATE")]

    def _challenge(self, data: bytes) -> Send:
        return Send(b"+ " + data + b"\r\n")

    def _sasl_cancelled(self) -> Actions:
        return self._bad(self._tag, "AUTHENTICATE cancelled")

    def _sasl_invalid(self, text: str) -> Actions:
        return self._bad(self._tag, text)

    def _logged_in(self, upstream: LoggedIn) -> Actions:
        hidden = HIDDEN_CAPABILITY_PREFIXES
        visible = [c for c in upstream.capabilities if not c.upper().startswith(hidden)]
        code = f"[CAPABILITY {' '.join(visible)}] " if visible else ""
        return [_send(f"{self._tag} OK {code}{self._command} completed")]

    def _login_failure(self, error: ProxyError) -> Actions:
        code = FAILURE_CODES[error.kind]
        return [_send(f"{self._tag} NO {code} {one_line(error.message)}")]

    def _too_many_failed_logins(self) -> Actions:
        return [_send("* BYE Too many failed logins"), *self._close("too many failed logins")]


def _send(line: str, note: str = "") -> Send:
    return Send(line.encode("utf-8") + b"\r\n", note)


def _done(command: Command) -> FrontAction:
    return _send(f"{command.tag} OK {command.name} completed")


def _text(argument: Argument) -> str:
    assert isinstance(argument, bytes)
    return decode_text(argument)
