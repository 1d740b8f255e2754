"""Fuzz targets for the SMTP receiving core (proxy.smtp.receiving), run by tests/fuzz.py.

`run_receiving`: a well-behaved client's pipelined transactions (DATA with lines that need
dot-stuffing, BDAT chunks holding CRLF.CRLF, messages over the limit, refused recipients), sent
in random pieces with the delivery outcomes given at random moments. Each run checks:
  - every Send is whole CRLF lines of at most 512 bytes; nothing follows a Close; a Deliver is
    the last action of its batch, and while it is out the core answers nothing;
  - no delivery without a complete message: exactly the messages the client finished, within the
    limit and with a recipient, are delivered, with their envelopes;
  - the delivered bytes equal the unstuffed DATA, or the BDAT chunks concatenated.
`run_receiving_noise`: random commands, fragments and bytes; the same rules for what is said,
and every delivered message within the limit.
"""

from __future__ import annotations

import time
import typing
from dataclasses import dataclass, field

from proxy.actions import Close, Send
from proxy.smtp.receiving import Deliver, ReceivingAction, ReceivingPhase, SmtpReceiver
from proxy.spool import MessageSpool
from tests.fuzz import FRAGMENTS, SLOW_INPUT, ByteReader, check_lines, require

LINE_PIECES = (b".", b"..", b".x", b"", b"text", b"\r", b" .", b"...", b"x.", b"\x00\xff", b"\t.")
SENDERS = (b"<scanner@contoso.example>", b"<>", b"scanner@contoso.example")
OUTCOMES = (("250", "2.0.0 OK"), ("451", "4.4.5 throttled"), ("550", "5.7.1 no permission"))
NOISE_LINES = (
    b"EHLO p\r\n", b"HELO p\r\n", b"MAIL FROM:<a@b.c>\r\n", b"MAIL FROM:<a@b.c> SIZE=99999\r\n",
    b"RCPT TO:<b@c.d>\r\n", b"RCPT TO:<bad>\r\n", b"DATA\r\n", b".\r\n", b"..\r\n", b"BDAT 3\r\n",
    b"BDAT 0 LAST\r\n", b"BDAT 5 LAST\r\n", b"BDAT x\r\n", b"RSET\r\n", b"NOOP\r\n", b"QUIT\r\n",
    b"AUTH PLAIN x\r\n", b"STARTTLS\r\n", b"\r\n", b"line\r\n",
)


@dataclass(frozen=True)
class Delivered:
    sender: str
    recipients: tuple[str, ...]
    content: bytes


@dataclass
class ReceivingRun:
    """Drives one receiver and checks every answer; deliveries wait for `answer`."""

    limit: int
    core: SmtpReceiver = field(init=False)
    said: list[bytes] = field(default_factory=list)
    delivered: list[Delivered] = field(default_factory=list)
    closed: bool = False

    def __post_init__(self) -> None:
        self.core = SmtpReceiver(lambda: MessageSpool(self.limit, in_memory=128), self.limit,
                                 max_errors=50)

    @property
    def delivering(self) -> bool:
        return self.core.phase is ReceivingPhase.DELIVERING

    def feed(self, data: bytes) -> None:
        waiting = self.delivering
        actions = self.core.receive_data(data)
        require(not (waiting or self.closed) or actions == [], "answered while waiting or closed",
                actions)
        self._check(actions)

    def answer(self, outcome: tuple[str, str]) -> None:
        self._check(self.core.delivered(*outcome))

    def _check(self, actions: list[ReceivingAction]) -> None:
        for i, action in enumerate(actions):
            last = i == len(actions) - 1
            require(not self.closed, "an action after Close", actions)
            if isinstance(action, Send):
                self.said += check_lines(action.data, 512)
            elif isinstance(action, Close):
                require(last, "actions after Close", actions)
                self.closed = True
            else:
                require(isinstance(action, Deliver) and last, "Deliver out of place", actions)
                assert isinstance(action, Deliver)
                content = action.message.reader().read()
                require(len(content) <= self.limit, "a delivered message over the limit")
                self.delivered.append(Delivered(action.sender, action.recipients, content))
        phase = self.core.phase
        require((phase is ReceivingPhase.CLOSED) == self.closed, "phase disagrees with Close")


def _content_lines(reader: ByteReader) -> list[bytes]:
    return [reader.choice(LINE_PIECES) + (reader.raw(6).replace(b"\n", b"") if reader.flag()
                                          else b"") for _ in range(reader.below(8))]


def run_receiving(data: bytes) -> ReceivingRun:
    """A well-behaved client's transactions; see the module docstring."""
    started = time.perf_counter()
    reader = ByteReader(data)
    run = ReceivingRun(limit=(60, 400, 4000)[reader.below(3)])
    expected: list[Delivered] = []

    def send(stream: bytes) -> None:
        for piece in reader.pieces(stream):
            run.feed(piece)
            while run.delivering and reader.flag():
                run.answer(OUTCOMES[reader.below(len(OUTCOMES))])

    for _ in range(1 + reader.below(4)):
        while run.delivering:
            run.answer(OUTCOMES[reader.below(len(OUTCOMES))])
        if run.closed:
            break
        sender = reader.choice(SENDERS)
        recipients = [b"r%d@contoso.example" % n for n in range(reader.below(3))]
        bad = reader.flag()
        size = b" SIZE=%d" % reader.below(5000) if reader.flag() else b""
        envelope = b"RSET\r\nMAIL FROM:" + sender + size + b"\r\n" + b"".join(
            b"RCPT TO:<" + r + b">\r\n" for r in recipients) + (b"RCPT TO:<x>\r\n" if bad else b"")
        accepted = bool(recipients) and (not size or int(size[6:]) <= run.limit)
        if reader.flag():  # DATA, pipelined with the envelope; the content only after 354
            send(envelope + b"DATA\r\n")
            lines = _content_lines(reader)
            if not (run.said and run.said[-1].startswith(b"354")):
                require(not accepted, "DATA refused for a good transaction", run.said[-3:])
                continue
            content = b"".join(line + b"\r\n" for line in lines)
            stuffed = b"".join((b"." if line.startswith(b".") else b"") + line + b"\r\n"
                               for line in lines)
            send(stuffed + b".\r\n")
        else:  # BDAT chunks, sent whatever the envelope's answers
            chunks = [reader.raw(40) + (b"\r\n.\r\n" if reader.flag() else b"")
                      for _ in range(1 + reader.below(3))]
            content = b"".join(chunks)
            send(envelope + b"".join(b"BDAT %d%s\r\n" % (len(c), b" LAST" * (i == len(chunks) - 1))
                                     + c for i, c in enumerate(chunks)))
        if accepted and len(content) <= run.limit:
            expected.append(Delivered(sender.strip(b"<>").decode(),
                                      tuple(r.decode() for r in recipients), content))
        elif accepted:
            require(any(line.startswith(b"552 5.3.4") for line in run.said[-2:]),
                    "an oversized message not refused with 552", run.said[-2:])
    if reader.flag() and not run.delivering and not run.closed:
        send(b"QUIT\r\n")
    while run.delivering:
        run.answer(OUTCOMES[0])
    require(run.delivered == expected, "delivered", run.delivered, expected)
    require(time.perf_counter() - started < SLOW_INPUT, "slow input")
    return run


def run_receiving_noise(data: bytes) -> ReceivingRun:
    """Random commands, fragments and bytes; see the module docstring."""
    started = time.perf_counter()
    reader = ByteReader(data)
    run = ReceivingRun(limit=(8, 200)[reader.below(2)])
    pending = bytearray()
    for _ in range(64):
        if reader.exhausted or run.closed:
            break
        op = reader.below(6)
        if op <= 1:
            pending += reader.choice(NOISE_LINES)
        elif op == 2:
            pending += reader.raw(24)
        elif op == 3:
            fragment = reader.choice(FRAGMENTS)
            pending += b"A" * (64 * reader.below(100)) if fragment == b"\t" else fragment
        elif op == 4 and run.delivering:
            run.answer(OUTCOMES[reader.below(len(OUTCOMES))])
        else:
            for piece in reader.pieces(bytes(pending)):
                run.feed(piece)
            pending.clear()
    for piece in reader.pieces(bytes(pending)):
        run.feed(piece)
    while run.delivering:
        run.answer(OUTCOMES[0])
    require(time.perf_counter() - started < SLOW_INPUT, "slow input")
    return run


def targets() -> dict[str, typing.Callable[[bytes], object]]:
    return {"smtp-receiving": run_receiving, "smtp-receiving-noise": run_receiving_noise}
