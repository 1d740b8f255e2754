"""The shape every device-side session shares (IMAP, POP3, SMTP), sans I/O.

A device connects, says a few commands, gives a user name and a password, and from the moment the
upstream accepts our XOAUTH2 login its bytes are relayed. `PreLoginSession` is that conversation
once; a protocol adds its verbs (a table from verb to handler) and its words (the methods at the
end). What it decides for all three:

- reading: lines from a capped buffer, one command or SASL response at a time, only while the
  phase is READING; while LOGGING_IN or RELAYING input is only kept (`take_unparsed`), once
  CLOSED it is ignored;
- SASL: one PLAIN / LOGIN exchange (proxy.sasl), whose steps the protocol only words;
- empty credentials, the one rule: an empty user name or password is answered exactly as a
  wrong password, counts as a failed login, and never becomes a Login (no key derivation is
  spent on it);
- the login handshake: a Login is the last action, and nothing more is read until
  `login_succeeded` (which ends with Relay) or `login_failed` (which reads on);
- limits: the error answer that reaches `max_errors`, or the failed login that reaches
  `max_failed_logins`, closes the connection, in the protocol's words;
- STARTTLS: what was pipelined after the command in plaintext is dropped, never obeyed, and the
  protocol forgets what it learnt before TLS (RFC 2595, 3207, 3501);
- one write per batch: adjacent Sends leave as one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from typing import ClassVar, Generic, Protocol, TypeVar, cast

from .actions import Close, FrontAction, LoggedIn, Login, Phase, Relay, Send, StartTLS
from .errors import FailureKind, ProxyError, WrongPassword
from .lines import LineTooLong
from .sasl import Cancelled, Challenge, Credentials, SaslExchange, SaslStep

CommandT = TypeVar("CommandT")
ActionT = TypeVar("ActionT")
Actions = list[FrontAction]


class LineSource(Protocol):
    """What a session reads from: proxy.lines.LineBuffer, or IMAP's CommandReader."""

    def feed(self, data: bytes) -> None: ...

    def next_line(self) -> bytes | None: ...

    def take_unparsed(self) -> bytes: ...


class PreLoginSession(ABC, Generic[CommandT]):
    """A FrontSession up to the relay; `CommandT` is what the protocol's handlers take."""

    # Login failures of these kinds count towards max_failed_logins.
    FAILED_LOGIN_KINDS: ClassVar[frozenset[FailureKind]] = frozenset({FailureKind.CREDENTIALS})

    def __init__(
        self,
        lines: LineSource,
        *,
        starttls: bool,
        tls_active: bool,
        login_requires_tls: bool,
        max_errors: int,
        max_failed_logins: int = 3,
    ) -> None:
        """`starttls` offers STARTTLS (the glue starts TLS on `StartTLS`); `tls_active` says the
        connection is TLS already (implicit TLS); `login_requires_tls` refuses logins until TLS
        is on."""
        self._lines = lines
        self._phase = Phase.READING
        self._sasl: SaslExchange | None = None
        self._starttls = starttls
        self._tls_active = tls_active
        self._login_requires_tls = login_requires_tls
        self.max_errors = max_errors
        self.max_failed_logins = max_failed_logins
        self._errors = 0
        self._failed_logins = 0
        self._verbs: Mapping[str, Callable[[CommandT], Actions]] = {}

    @property
    def phase(self) -> Phase:
        return self._phase

    # -- FrontSession --

    def start(self) -> Actions:
        return joined(self._greeting())

    def receive_data(self, data: bytes) -> Actions:
        if self._phase is Phase.CLOSED:
            return []
        self._lines.feed(data)
        return joined(self._read())

    def login_succeeded(self, upstream: LoggedIn) -> Actions:
        self._expect_login("login_succeeded")
        self._phase = Phase.RELAYING
        return joined([*self._logged_in(upstream), Relay()])

    def login_failed(self, error: ProxyError) -> Actions:
        self._expect_login("login_failed")
        self._phase = Phase.READING
        # The client may try again; what it pipelined meanwhile is read now.
        return joined([*self._refused(error), *self._read()])

    def take_unparsed(self) -> bytes:
        return self._lines.take_unparsed()

    # -- reading --

    def _read(self) -> Actions:
        actions: Actions = []
        while self._phase is Phase.READING:
            try:
                step = self._next_sasl_response() if self._sasl else self._next_command()
            except LineTooLong:
                self._sasl = None  # an overlong response ends the exchange
                step = self._line_too_long()
            if step is None:
                break
            actions += step
        return actions

    def _next_sasl_response(self) -> Actions | None:
        assert self._sasl is not None
        line = self._lines.next_line()
        return None if line is None else self._sasl_step(self._sasl.receive(line))

    def _dispatch(self, verb: str, command: CommandT) -> Actions:
        handler = self._verbs.get(verb)
        return handler(command) if handler is not None else self._unknown(verb, command)

    # -- logging in --

    def _authenticate(self, mechanism: str, initial: bytes | None) -> Actions:
        """Start a SASL exchange; the protocol has checked that it offers `mechanism`."""
        self._sasl = SaslExchange(mechanism)
        return self._sasl_step(self._sasl.start(initial))

    def _sasl_step(self, step: SaslStep) -> Actions:
        if isinstance(step, Challenge):
            return [self._challenge(step.data)]
        self._sasl = None
        if isinstance(step, Credentials):
            return self._login(step.username, step.password)
        if isinstance(step, Cancelled):
            return self._sasl_cancelled()
        return self._sasl_invalid(step.text)

    def _login(self, username: str, password: str) -> Actions:
        if not username or not password:  # the one rule for empty credentials (see above)
            return self._refused(WrongPassword())
        self._phase = Phase.LOGGING_IN
        return [Login(username, password)]

    def _refused(self, error: ProxyError) -> Actions:
        answer = self._login_failure(error)
        if error.kind not in self.FAILED_LOGIN_KINDS or self._phase is Phase.CLOSED:
            return answer
        # A guesser must reconnect, which the per-address throttling sees.
        self._failed_logins += 1
        if self._failed_logins < self.max_failed_logins:
            return answer
        return [*answer, *self._too_many_failed_logins()]

    def _expect_login(self, method: str) -> None:
        if self._phase is not Phase.LOGGING_IN:
            raise RuntimeError(f"{method} called while {self._phase.value}: no login is pending")

    # -- limits, TLS, closing --

    def _error(self, answer: Send) -> Actions:
        """An error answer, counted: the one that reaches max_errors closes the connection."""
        self._errors += 1
        if self._errors < self.max_errors:
            return [answer]
        return self._too_many_errors(answer)

    @property
    def _needs_tls(self) -> bool:
        return self._login_requires_tls and not self._tls_active

    @property
    def _offers_starttls(self) -> bool:
        return self._starttls and not self._tls_active

    def _begin_tls(self, answer: Send) -> Actions:
        # Obey nothing the client pipelined after the command in plaintext (command injection).
        self._lines.take_unparsed()
        self._tls_active = True
        self._forget_before_tls()
        return [answer, StartTLS()]

    def _close(self, reason: str = "") -> Actions:
        self._phase = Phase.CLOSED
        self._lines.take_unparsed()  # nothing after the closing answer is obeyed or relayed
        return [Close(reason)]

    # -- what each protocol adds: its commands and its words --

    @abstractmethod
    def _greeting(self) -> Actions: ...

    @abstractmethod
    def _next_command(self) -> Actions | None:
        """Read and answer one command; None until one is complete."""

    @abstractmethod
    def _unknown(self, verb: str, command: CommandT) -> Actions:
        """The answer to a verb that has no handler."""

    @abstractmethod
    def _line_too_long(self) -> Actions: ...

    @abstractmethod
    def _challenge(self, data: bytes) -> Send: ...

    @abstractmethod
    def _sasl_cancelled(self) -> Actions: ...

    @abstractmethod
    def _sasl_invalid(self, text: str) -> Actions: ...

    @abstractmethod
    def _logged_in(self, upstream: LoggedIn) -> Actions:
        """The success answer (Relay follows)."""

    @abstractmethod
    def _login_failure(self, error: ProxyError) -> Actions:
        """The answer its protocol uses for `error.kind` (INTERFACE.md, "What devices are told")."""

    @abstractmethod
    def _too_many_errors(self, answer: Send) -> Actions:
        """What ends the connection when `answer` is the error that reaches max_errors."""

    def _too_many_failed_logins(self) -> Actions:
        return self._close("too many failed logins")

    def _forget_before_tls(self) -> None:
        """Drop what the client said before TLS (RFC 3207 4.2 and its kin)."""


def joined(actions: Iterable[ActionT]) -> list[ActionT]:
    """Adjacent Sends as one (one write per batch of pipelined answers); their notes joined."""
    result: list[ActionT] = []
    for action in actions:
        previous = result[-1] if result else None
        if isinstance(action, Send) and isinstance(previous, Send):
            note = "; ".join(n for n in (previous.note, action.note) if n)
            result[-1] = cast(ActionT, Send(previous.data + action.data, note))
        else:
            result.append(action)
    return result
