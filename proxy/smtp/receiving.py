"""The SMTP session after login when the proxy takes the message itself (a Graph listener), sans I/O.

Beside the pre-login core (proxy.smtp.device) and with its words (proxy.smtp.replies, the same
EHLO keywords), this core serves mail transactions: MAIL FROM (SIZE=, BODY=), several RCPT TO,
DATA with dot-unstuffing or BDAT chunks (CHUNKING), RSET, NOOP, QUIT, VRFY, HELP, EHLO/HELO again,
several messages per session, PIPELINING (answers to a batch of commands leave as one write).

The message goes into a spool as it arrives (proxy.spool: memory, then a private temporary file),
so memory stays bounded whatever its size. A message over the size limit is refused with
`552 5.3.4`: before DATA when SIZE= says so, else once all of it has been read. When a message is
complete the core returns `Deliver` and reads nothing more until `delivered` gives the answer the
mail service's outcome calls for, like the pre-login core does with a Login.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from ..actions import Close, Send
from ..lines import LineBuffer, LineTooLong
from ..prelogin import joined
from ..spool import MessageSpool
from ..text import one_line
from .device import AUTH_EXTENSIONS, ehlo_extensions
from .replies import reply
from .transfer import (
    DotDecoder,
    EnvelopeError,
    bdat_arguments,
    mail_arguments,
    rcpt_arguments,
    too_large,
)

MAX_RECIPIENTS = 500  # Exchange Online's limit per message
FIXED_ANSWERS = {
    "NOOP": "250 2.0.0 OK",
    "VRFY": "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery",
    "HELP": "214 2.0.0 Send with MAIL FROM, RCPT TO and DATA (or BDAT)",
    "AUTH": "503 5.5.1 Already authenticated",
    "STARTTLS": "503 5.5.1 STARTTLS is only possible before AUTH",
}


@dataclass(frozen=True, eq=False)
class Deliver:
    """A whole message is in `message`: send it, then call `delivered` with the answer. The
    spool stays the core's: it is closed when the answer comes (or on `close`)."""

    sender: str
    recipients: tuple[str, ...]
    message: MessageSpool = field(repr=False)


ReceivingAction = Send | Close | Deliver


class ReceivingPhase(Enum):
    COMMANDS = "commands"  # reading commands
    MESSAGE = "message"  # reading DATA's content or a BDAT chunk
    DELIVERING = "delivering"  # a Deliver is out: input is only kept until `delivered`
    CLOSED = "closed"  # a Close is out: input is ignored


class SmtpReceiver:
    """Serves mail transactions for a client that has logged in."""

    def __init__(
        self,
        new_spool: Callable[[], MessageSpool],
        max_message_size: int,
        *,
        hostname: str = "xoauth2-proxy",
        max_line: int = 4096,
        max_errors: int = 20,
    ) -> None:
        """`new_spool` makes the spool for one message, its limit `max_message_size`."""
        self._new_spool = new_spool
        self.max_message_size = max_message_size
        self.hostname = one_line(hostname) or "xoauth2-proxy"
        self.max_errors = max_errors
        self._lines = LineBuffer(max_line)
        self._phase = ReceivingPhase.COMMANDS
        self._errors = 0
        self._sender: str | None = None
        self._recipients: list[str] = []
        self._spool: MessageSpool | None = None
        self._dots: DotDecoder | None = None  # reading DATA when set, else a BDAT chunk
        self._chunk_left = 0  # bytes of the current BDAT chunk still to come
        self._chunk_last = False
        self._chunk_refusal: str | None = None  # the chunk is read and dropped; then this reply
        self._chunked = False  # the transaction uses BDAT: DATA may not follow
        self._verbs: dict[str, Callable[[bytes], list[ReceivingAction]]] = {
            **{verb: self._fixed(answer) for verb, answer in FIXED_ANSWERS.items()},
            "EHLO": self._ehlo, "HELO": self._helo, "MAIL": self._mail, "RCPT": self._rcpt,
            "DATA": self._data, "BDAT": self._bdat, "RSET": self._rset, "QUIT": self._quit,
        }

    @property
    def phase(self) -> ReceivingPhase:
        return self._phase

    # -- the interface the glue drives --

    def receive_data(self, data: bytes) -> list[ReceivingAction]:
        """Bytes from the client (the first call may carry what the pre-login core left)."""
        if self._phase is ReceivingPhase.CLOSED:
            return []
        self._lines.feed(data)
        return self._read()

    def delivered(self, code: str, text: str) -> list[ReceivingAction]:
        """The answer to the message of the last Deliver, e.g. ("250", "2.0.0 OK"); then what
        the client pipelined meanwhile is read."""
        if self._phase is not ReceivingPhase.DELIVERING:
            raise RuntimeError(f"delivered called while {self._phase.value}: nothing is out")
        self._phase = ReceivingPhase.COMMANDS
        self._reset()
        # Not counted towards max_errors: a refusal by the mail service is not the client's error.
        return joined([Send(reply(code, text)), *self._read()])

    def close(self) -> None:
        """The connection is gone: let go of any message (its temporary file is removed). Not
        while a Deliver is out: its sender is still reading the spool."""
        self._phase = ReceivingPhase.CLOSED
        self._reset()

    # -- reading --

    def _read(self) -> list[ReceivingAction]:
        actions: list[ReceivingAction] = []
        while self._phase in (ReceivingPhase.COMMANDS, ReceivingPhase.MESSAGE):
            step = self._message() if self._phase is ReceivingPhase.MESSAGE else self._command()
            if step is None:
                break
            actions += step
        return joined(actions)

    def _command(self) -> list[ReceivingAction] | None:
        try:
            line = self._lines.next_line()
        except LineTooLong:
            return self._error("500 5.5.2 Line too long")
        if line is None:
            return None
        verb, _, argument = line.strip().partition(b" ")
        handler = self._verbs.get(verb.decode("latin-1").upper())
        if handler is None:
            return self._error("500 5.5.2 Command not recognised")
        return handler(argument.strip())

    def _message(self) -> list[ReceivingAction] | None:
        """Message bytes from the buffer into the spool; None until there are more."""
        if self._dots is not None:
            chunk = self._lines.take_unparsed()
            if not chunk:
                return None
            content, after = self._dots.feed(chunk)
            self._store(content)
            if after is None:
                return None
            self._lines.feed(after)
            self._dots = None
            return self._end_of_message()
        if self._chunk_left:
            content = self._lines.next_bytes(min(self._chunk_left, len(self._lines))) or b""
            if not content:
                return None
            self._chunk_left -= len(content)
            if self._chunk_refusal is None:
                self._store(content)
            if self._chunk_left:
                return None
        return self._end_of_chunk()

    def _store(self, content: bytes) -> None:
        if content and self._spool is not None:
            self._spool.write(content)

    def _end_of_chunk(self) -> list[ReceivingAction]:
        self._phase = ReceivingPhase.COMMANDS
        if self._chunk_refusal is not None:
            refusal, self._chunk_refusal = self._chunk_refusal, None
            return self._error(refusal)
        if self._chunk_last:
            return self._end_of_message()
        assert self._spool is not None
        return self._reply(f"250 2.0.0 {self._spool.size} octets received")

    def _end_of_message(self) -> list[ReceivingAction]:
        assert self._spool is not None and self._sender is not None
        if self._spool.over_limit:
            self._reset()
            self._phase = ReceivingPhase.COMMANDS
            return self._error(too_large(self.max_message_size))
        self._phase = ReceivingPhase.DELIVERING
        return [Deliver(self._sender, tuple(self._recipients), self._spool)]

    # -- commands --

    def _fixed(self, answer: str) -> Callable[[bytes], list[ReceivingAction]]:
        return lambda argument: self._reply(answer)

    def _ehlo(self, argument: bytes) -> list[ReceivingAction]:
        if not argument:
            return self._error("501 5.5.4 Syntax: EHLO hostname")
        self._reset()  # RFC 5321 4.1.4: EHLO resets like RSET
        offered = ehlo_extensions(self.max_message_size) + AUTH_EXTENSIONS
        return [Send(reply("250", self.hostname, *offered))]

    def _helo(self, argument: bytes) -> list[ReceivingAction]:
        if not argument:
            return self._error("501 5.5.4 Syntax: HELO hostname")
        self._reset()
        return self._reply(f"250 {self.hostname}")

    def _mail(self, argument: bytes) -> list[ReceivingAction]:
        if self._sender is not None:
            return self._error("503 5.5.1 Sender already specified; send RSET first")
        try:
            mail = mail_arguments(argument, self.max_message_size)
        except EnvelopeError as e:
            return self._error(e.reply)
        self._sender = mail.sender
        return self._reply("250 2.1.0 Sender OK")

    def _rcpt(self, argument: bytes) -> list[ReceivingAction]:
        if self._sender is None:
            return self._error("503 5.5.1 Need MAIL FROM first")
        if len(self._recipients) >= MAX_RECIPIENTS:
            return self._error(f"452 4.5.3 Too many recipients (at most {MAX_RECIPIENTS})")
        try:
            self._recipients.append(rcpt_arguments(argument))
        except EnvelopeError as e:
            return self._error(e.reply)
        return self._reply("250 2.1.5 Recipient OK")

    def _data(self, argument: bytes) -> list[ReceivingAction]:
        refusal = self._transaction_refusal()
        if argument:
            refusal = "501 5.5.4 Syntax: DATA (no argument)"
        elif refusal is None and self._chunked:
            refusal = "503 5.5.1 DATA cannot follow BDAT in one message; send RSET first"
        if refusal is not None:
            return self._error(refusal)
        self._spool = self._new_spool()
        self._dots = DotDecoder()
        self._phase = ReceivingPhase.MESSAGE
        return self._reply("354 Start mail input; end with <CRLF>.<CRLF>")

    def _bdat(self, argument: bytes) -> list[ReceivingAction]:
        parsed = bdat_arguments(argument)
        if parsed is None:  # the chunk's size is unknown: its bytes will read as commands
            return self._error("501 5.5.4 Syntax: BDAT size [LAST]")
        self._chunk_left, self._chunk_last = parsed
        self._phase = ReceivingPhase.MESSAGE
        # RFC 3030 2: a refused BDAT's chunk is read all the same, then refused.
        self._chunk_refusal = self._transaction_refusal()
        if self._chunk_refusal is None:
            self._chunked = True
            if self._spool is None:
                self._spool = self._new_spool()
        return []

    def _rset(self, argument: bytes) -> list[ReceivingAction]:
        self._reset()
        return self._reply("250 2.0.0 OK")

    def _quit(self, argument: bytes) -> list[ReceivingAction]:
        return [*self._reply("221 2.0.0 Bye"), *self._close()]

    # -- words and state --

    def _transaction_refusal(self) -> str | None:
        if self._sender is None:
            return "503 5.5.1 Need MAIL FROM first"
        if not self._recipients:
            return "503 5.5.1 Need RCPT TO first"
        return None

    def _reply(self, line: str) -> list[ReceivingAction]:
        code, _, text = line.partition(" ")
        return [Send(reply(code, text))]

    def _error(self, line: str) -> list[ReceivingAction]:
        """An error reply, counted: the one that reaches max_errors closes the connection."""
        self._errors += 1
        if self._errors < self.max_errors:
            return self._reply(line)
        closing = reply("421", "4.7.0 Too many errors, closing connection")
        return [*self._reply(line), Send(closing), *self._close()]

    def _close(self) -> list[ReceivingAction]:
        self.close()
        self._lines.take_unparsed()
        return [Close()]

    def _reset(self) -> None:
        """Forget the mail transaction (RSET, EHLO, after a delivery or a refusal)."""
        if self._spool is not None:
            self._spool.close()
        self._spool, self._dots = None, None
        self._sender, self._recipients, self._chunked = None, [], False
