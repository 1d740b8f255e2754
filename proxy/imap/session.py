"""The IMAP conversation before login, sans I/O (RFC 3501, RFC 4959 SASL-IR, RFC 7888 LITERAL+).

It answers CAPABILITY, NOOP, ID and LOGOUT itself, takes the password from LOGIN or from
AUTHENTICATE PLAIN / LOGIN, and then asks the glue to sign in upstream (`Login`). Nothing it does
needs the upstream before that: a wrong password never opens a connection to Office 365.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..actions import Close, FrontAction, LoggedIn, Login, Relay, Send, StartTLS
from ..errors import FailureKind, ProxyError, WrongPassword
from ..lines import LineTooLong
from ..sasl import (
    LOGIN_PASSWORD_PROMPT,
    LOGIN_USERNAME_PROMPT,
    SaslError,
    decode_text,
    parse_login_field,
    parse_plain,
)
from .wire import (
    Argument,
    Command,
    CommandReader,
    ContinuationNeeded,
    ParseError,
    RawCommand,
    Rejected,
    parse_command,
    quote,
)

BASE_CAPABILITIES = "IMAP4rev1 SASL-IR LITERAL+ ID"
LOGIN_CAPABILITIES = "AUTH=PLAIN AUTH=LOGIN"
# Upstream capabilities a client must not see: it authenticates with the proxy, not with these.
HIDDEN_CAPABILITY_PREFIXES = ("AUTH=", "LOGINDISABLED", "SASL-IR", "STARTTLS")
MAX_BAD_COMMANDS = 20
# Wrong passwords on one connection before it is closed (POP3 does the same): a guesser must
# reconnect, which the per-address throttling sees.
MAX_FAILED_LOGINS = 3
ONLY_AFTER_LOGIN = frozenset(
    ["SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE", "LIST", "LSUB", "STATUS", "APPEND", "CHECK", "CLOSE", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY", "MOVE", "UID", "IDLE", "ENABLE", "NAMESPACE", "GETQUOTA", "GETQUOTAROOT", "UNSELECT", "GETACL", "MYRIGHTS"]
)


@dataclass(frozen=True)
class _Commands:
    """Reading tagged commands."""


@dataclass(frozen=True)
class _SaslPlain:
    tag: str


@dataclass(frozen=True)
class _SaslLoginUser:
    tag: str


@dataclass(frozen=True)
class _SaslLoginPassword:
    tag: str
    username: str


@dataclass(frozen=True)
class _LoggingIn:
    tag: str
    command: str


@dataclass(frozen=True)
class _Done:
    """Relaying or closed: this core takes no more input."""


State = _Commands | _SaslPlain | _SaslLoginUser | _SaslLoginPassword | _LoggingIn | _Done


class ImapSession:
    def __init__(
        self,
        *,
        max_line: int = 8192,
        max_literal: int = 65536,
        starttls: bool = False,
        tls_active: bool = False,
        login_requires_tls: bool = False,
    ) -> None:
        """`starttls` offers STARTTLS (the glue starts TLS on `StartTLS`); `tls_active` says the
        connection is TLS already (implicit TLS); `login_requires_tls` refuses logins until
        TLS is on (RFC 3501 LOGINDISABLED)."""
        self._reader = CommandReader(max_line=max_line, max_literal=max_literal)
        self._state: State = _Commands()
        self._bad_commands = 0
        self._failed_logins = 0
        self._starttls = starttls
        self._tls_active = tls_active
        self._login_requires_tls = login_requires_tls

    def start(self) -> list[FrontAction]:
        return [_send(f"* OK [CAPABILITY {self._capabilities()}] xoauth2-proxy ready")]

    def _capabilities(self) -> str:
        words = [BASE_CAPABILITIES]
        if self._starttls and not self._tls_active:
            words.append("STARTTLS")
        words.append("LOGINDISABLED" if self._needs_tls() else LOGIN_CAPABILITIES)
        return " ".join(words)

    def _needs_tls(self) -> bool:
        return self._login_requires_tls and not self._tls_active

    def receive_data(self, data: bytes) -> list[FrontAction]:
        self._reader.feed(data)
        return self._process()

    def take_unparsed(self) -> bytes:
        return self._reader.take_unparsed()

    def login_succeeded(self, upstream: LoggedIn) -> list[FrontAction]:
        assert isinstance(self._state, _LoggingIn)
        tag, command = self._state.tag, self._state.command
        self._state = _Done()
        visible = [c for c in upstream.capabilities if not c.upper().startswith(HIDDEN_CAPABILITY_PREFIXES)]
        code = f"[CAPABILITY {' '.join(visible)}] " if visible else ""
        return [_send(f"{tag} OK {code}{command} completed"), Relay()]

    def login_failed(self, error: ProxyError) -> list[FrontAction]:
        assert isinstance(self._state, _LoggingIn)
        tag = self._state.tag
        self._state = _Commands()
        if error.kind is FailureKind.CREDENTIALS:
            actions = self._wrong_credentials(tag, error.message)
        else:
            actions = [_send(f"{tag} NO [UNAVAILABLE] {_one_line(error.message)}")]
        return actions if isinstance(self._state, _Done) else actions + self._process()

    def _wrong_credentials(self, tag: str, message: str) -> list[FrontAction]:
        answer = _send(f"{tag} NO [AUTHENTICATIONFAILED] {_one_line(message)}")
        self._failed_logins += 1
        if self._failed_logins >= MAX_FAILED_LOGINS:
            self._state = _Done()
            return [answer, _send("* BYE Too many failed logins"), Close("too many failed logins")]
        return [answer]

    # -- input --

    def _process(self) -> list[FrontAction]:
        actions: list[FrontAction] = []
        while isinstance(self._state, (_Commands, _SaslPlain, _SaslLoginUser, _SaslLoginPassword)):
            step = self._step()
            if step is None:
                break
            actions += step
            if any(isinstance(a, Close) for a in step):
                self._state = _Done()
        return actions

    def _step(self) -> list[FrontAction] | None:
        """Handle one command or SASL line; None when more data is needed."""
        state = self._state
        if isinstance(state, _Commands):
            event = self._reader.next_event()
            if event is None:
                return None
            if isinstance(event, ContinuationNeeded):
                return [_send("+ Ready for literal data")]
            if isinstance(event, Rejected):
                return self._rejected(event)
            return self._command(event)
        try:
            line = self._reader.next_line()
        except LineTooLong:
            return [_send("* BYE Line too long"), Close("line too long during AUTHENTICATE")]
        if line is None:
            return None
        return self._sasl_line(state, line)

    def _rejected(self, event: Rejected) -> list[FrontAction]:
        if event.fatal:
            return [_send(f"* BYE {event.text}"), Close(event.text.lower())]
        return self._bad(event.tag, event.text, note=event.text.lower())

    def _command(self, raw: RawCommand) -> list[FrontAction]:
        try:
            command = parse_command(raw)
        except ParseError as e:
            return self._bad(raw.tag, str(e))
        handler = getattr(self, "_do_" + command.name.lower(), None)
        if handler is not None and command.name.isalpha():
            result: list[FrontAction] = handler(command)
            return result
        if command.name in ONLY_AFTER_LOGIN:
            return self._bad(command.tag, f"{command.name} is only valid after login")
        return self._bad(command.tag, f"Unknown command {command.name[:30]}")

    def _bad(self, tag: str, text: str, note: str = "") -> list[FrontAction]:
        self._bad_commands += 1
        if self._bad_commands > MAX_BAD_COMMANDS:
            return [_send("* BYE Too many invalid commands"), Close("too many invalid commands")]
        return [_send(f"{tag or '*'} BAD {text}", note)]

    # -- commands valid before login --

    def _do_capability(self, command: Command) -> list[FrontAction]:
        return [
            _send(f"* CAPABILITY {self._capabilities()}"),
            _send(f"{command.tag} OK CAPABILITY completed"),
        ]

    def _do_noop(self, command: Command) -> list[FrontAction]:
        return [_send(f"{command.tag} OK NOOP completed")]

    def _do_logout(self, command: Command) -> list[FrontAction]:
        return [_send("* BYE Logging out"), _send(f"{command.tag} OK LOGOUT completed"), Close()]

    def _do_id(self, command: Command) -> list[FrontAction]:
        return [
            Send(b"* ID (" + quote("name") + b" " + quote("xoauth2-proxy") + b")\r\n"),
            _send(f"{command.tag} OK ID completed"),
        ]

    def _do_starttls(self, command: Command) -> list[FrontAction]:
        if not self._starttls:
            return self._bad(command.tag, "STARTTLS is not enabled on this listener")
        if self._tls_active:
            return self._bad(command.tag, "TLS is already active")
        # RFC 3501 6.2.1 / RFC 2595: what the client pipelined after STARTTLS in plaintext
        # must not be obeyed (command injection).
        self._reader.take_unparsed()
        self._tls_active = True
        return [_send(f"{command.tag} OK Begin TLS negotiation now"), StartTLS()]

    def _privacy_required(self, tag: str) -> list[FrontAction]:
        # Before any prompt, so no password is sent in the clear; and not a credentials answer.
        return [_send(f"{tag} NO [PRIVACYREQUIRED] Use STARTTLS before logging in")]

    def _do_login(self, command: Command) -> list[FrontAction]:
        if self._needs_tls():
            return self._privacy_required(command.tag)
        if len(command.args) != 2 or not all(isinstance(a, bytes) for a in command.args):
            return self._bad(command.tag, "LOGIN takes a user name and a password")
        username, password = (_text(a) for a in command.args)
        return self._login(command.tag, "LOGIN", username, password)

    def _do_authenticate(self, command: Command) -> list[FrontAction]:
        if self._needs_tls():
            return self._privacy_required(command.tag)
        if not 1 <= len(command.args) <= 2 or not all(isinstance(a, bytes) for a in command.args):
            return self._bad(command.tag, "AUTHENTICATE takes a mechanism and an optional response")
        mechanism = _text(command.args[0]).upper()
        initial = command.args[1] if len(command.args) == 2 else None
        assert initial is None or isinstance(initial, bytes)
        if mechanism == "PLAIN":
            if initial is None:
                self._state = _SaslPlain(command.tag)
                return [_send("+ ")]
            return self._sasl_line(_SaslPlain(command.tag), initial)
        if mechanism == "LOGIN":
            if initial is None:
                self._state = _SaslLoginUser(command.tag)
                return [Send(b"+ " + LOGIN_USERNAME_PROMPT + b"\r\n")]
            return self._sasl_line(_SaslLoginUser(command.tag), initial)
        return [_send(f"{command.tag} NO Unsupported authentication mechanism; use PLAIN or LOGIN")]

    # -- SASL exchanges --

    def _sasl_line(self, state: State, line: bytes) -> list[FrontAction]:
        assert isinstance(state, (_SaslPlain, _SaslLoginUser, _SaslLoginPassword))
        self._state = _Commands()
        if line.strip() == b"*":
            return [_send(f"{state.tag} BAD AUTHENTICATE cancelled")]
        response = b"" if line.strip() == b"=" else line
        try:
            if isinstance(state, _SaslPlain):
                username, password = parse_plain(response)
                return self._login(state.tag, "AUTHENTICATE", username, password)
            if isinstance(state, _SaslLoginUser):
                username = parse_login_field(response)
                if not username:
                    return self._bad(state.tag, "Empty user name")
                self._state = _SaslLoginPassword(state.tag, username)
                return [Send(b"+ " + LOGIN_PASSWORD_PROMPT + b"\r\n")]
            password = parse_login_field(response)
        except SaslError as e:
            return self._bad(state.tag, e.message)
        return self._login(state.tag, "AUTHENTICATE", state.username, password)

    def _login(self, tag: str, command: str, username: str, password: str) -> list[FrontAction]:
        if not username:
            return self._bad(tag, "Empty user name")
        if not password:  # no account has one: answer without spending a key derivation
            return self._wrong_credentials(tag, WrongPassword().message)
        self._state = _LoggingIn(tag, command)
        return [Login(username, password)]


def _send(line: str, note: str = "") -> Send:
    return Send(line.encode("utf-8") + b"\r\n", note)


def _text(argument: Argument) -> str:
    assert isinstance(argument, bytes)
    return decode_text(argument)


def _one_line(text: str) -> str:
    return " ".join(text.split())
