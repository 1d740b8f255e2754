"""SmtpReceiver, the SMTP session a Graph listener serves after login: transactions, DATA and
BDAT into a spool, sizes, pipelining and refusals, bytes in and actions out."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.actions import Close, Send
from proxy.smtp.receiving import (
    MAX_RECIPIENTS,
    Deliver,
    ReceivingAction,
    ReceivingPhase,
    SmtpReceiver,
)
from proxy.smtp.transfer import DotDecoder
from proxy.spool import MessageSpool

LIMIT = 10_000
MESSAGE = (b"From: scanner@contoso.com\r\nTo: bob@contoso.com\r\nSubject: scan\r\n\r\n"
           b"first line\r\n.a line that starts with a dot\r\n..two dots\r\n.\r\n")
UNSTUFFED = (b"From: scanner@contoso.com\r\nTo: bob@contoso.com\r\nSubject: scan\r\n\r\n"
             b"first line\r\na line that starts with a dot\r\n.two dots\r\n")
ENVELOPE = b"MAIL FROM:<scanner@contoso.com>\r\nRCPT TO:<bob@contoso.com>\r\n"


@dataclass
class Run:
    """A receiver with in-memory spools; what it said, and the messages it handed over."""

    limit: int = LIMIT
    max_errors: int = 20
    core: SmtpReceiver = field(init=False)
    spools: list[MessageSpool] = field(default_factory=list)
    said: list[bytes] = field(default_factory=list)
    delivered: list[tuple[Deliver, bytes]] = field(default_factory=list)
    closed: bool = False

    def __post_init__(self) -> None:
        self.core = SmtpReceiver(self.spool, self.limit, max_errors=self.max_errors)

    def spool(self) -> MessageSpool:
        self.spools.append(MessageSpool(self.limit, in_memory=64))
        return self.spools[-1]

    def feed(self, *pieces: bytes) -> Run:
        for piece in pieces:
            self.take(self.core.receive_data(piece))
        return self

    def answer(self, code: str = "250", text: str = "2.0.0 OK sent") -> Run:
        self.take(self.core.delivered(code, text))
        return self

    def take(self, actions: list[ReceivingAction]) -> None:
        for i, action in enumerate(actions):
            assert not self.closed, actions
            if isinstance(action, Send):
                assert action.data.endswith(b"\r\n")
                self.said += action.data[:-2].split(b"\r\n")
            elif isinstance(action, Close):
                assert i == len(actions) - 1
                self.closed = True
            else:
                assert isinstance(action, Deliver) and i == len(actions) - 1, actions
                assert self.core.phase is ReceivingPhase.DELIVERING
                self.delivered.append((action, action.message.reader().read()))

    @property
    def codes(self) -> list[str]:
        return [line[:3].decode() for line in self.said if line[3:4] != b"-"]


def test_a_transaction_is_delivered_unstuffed() -> None:
    """MAIL, two RCPT and DATA: one Deliver with the envelope and the dot-unstuffed message;
    250 only once the outcome is given, and the spool is then let go."""
    run = Run().feed(b"EHLO printer\r\n", ENVELOPE, b"RCPT TO:<carol@contoso.com>\r\nDATA\r\n",
                     MESSAGE)
    assert run.codes == ["250", "250", "250", "250", "354"]
    [(deliver, content)] = run.delivered
    assert deliver.sender == "scanner@contoso.com"
    assert deliver.recipients == ("bob@contoso.com", "carol@contoso.com")
    assert content == UNSTUFFED
    run.answer()
    assert run.said[-1] == b"250 2.0.0 OK sent" and run.spools[0].closed
    assert run.core.phase is ReceivingPhase.COMMANDS


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_any_split_gives_the_same_conversation(cuts: list[int]) -> None:
    """Whatever pieces the bytes come in, the answers and the delivered bytes are the same."""
    stream = (b"EHLO p\r\n" + ENVELOPE + b"DATA\r\n" + MESSAGE + b"RSET\r\n" + ENVELOPE +
              b"BDAT 7\r\n.\r\n.\r\nxBDAT 0 LAST\r\nNOOP\r\n")
    whole = Run().feed(stream)
    whole.answer()
    whole.answer()
    bounds = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]
    pieces = [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    split = Run()
    for piece in pieces:
        split.feed(piece)
        while split.core.phase is ReceivingPhase.DELIVERING:
            split.answer()
    assert split.said == whole.said
    assert [content for _, content in split.delivered] == [UNSTUFFED, b".\r\n.\r\nx"]


def test_pipelined_commands_after_a_message_wait_for_its_outcome() -> None:
    """A second transaction pipelined after the end of DATA is not read until the first
    message's outcome is known; then its answers follow the 250 in one write."""
    run = Run().feed(ENVELOPE + b"DATA\r\n" + MESSAGE + ENVELOPE + b"DATA\r\n")
    assert run.codes == ["250", "250", "354"] and len(run.delivered) == 1
    actions = run.core.delivered("250", "2.0.0 OK")
    assert actions == [Send(b"250 2.0.0 OK\r\n250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n"
                            b"354 Start mail input; end with <CRLF>.<CRLF>\r\n")]


def test_bdat_chunks_are_concatenated() -> None:
    """BDAT chunks (binary-safe: a dot line and CRLF.CRLF inside stay as they are) are one
    message; each non-last chunk gets its own 250, the LAST one the delivery's."""
    first, last = b"Subject: x\r\n\r\n.\r\n", b"\r\n.\r\nend\r\n"
    run = Run().feed(ENVELOPE, b"BDAT %d\r\n" % len(first) + first,
                     b"BDAT %d LAST\r\n" % len(last) + last)
    assert run.said[-1] == b"250 2.0.0 %d octets received" % len(first)
    assert [content for _, content in run.delivered] == [first + last]
    run.answer()
    assert run.codes[-1] == "250"


def test_refused_bdat_chunk_is_read_then_refused() -> None:
    """BDAT before MAIL: the chunk's bytes are consumed (not taken as commands), then 503."""
    run = Run().feed(b"BDAT 6\r\nQUIT\r\n", b"NOOP\r\n")
    assert run.codes == ["503", "250"] and not run.closed and not run.delivered


def test_data_after_bdat_and_bad_bdat_syntax() -> None:
    """DATA may not follow BDAT in one message; BDAT without a size is a syntax error."""
    run = Run().feed(ENVELOPE, b"BDAT 1\r\nx", b"DATA\r\n", b"BDAT lots\r\n")
    assert run.codes == ["250", "250", "250", "503", "501"]


def test_declared_size_over_the_limit_is_refused_at_mail() -> None:
    """MAIL FROM with SIZE= above the limit gets 552 5.3.4 before any data is sent."""
    run = Run().feed(b"MAIL FROM:<a@b.c> SIZE=%d\r\n" % (LIMIT + 1), b"MAIL FROM:<a@b.c> SIZE=5\r\n")
    assert run.said[0].startswith(b"552 5.3.4 ") and run.codes[1] == "250"


@pytest.mark.parametrize("chunked", [False, True])
def test_oversized_message_is_read_to_its_end_then_refused(chunked: bool) -> None:
    """A message over the limit without SIZE=: all of it is read (the stream stays in step),
    nothing is kept or delivered, 552 5.3.4 follows, and the next message goes through."""
    big = b"x" * 80 + b"\r\n"
    body = big * (LIMIT // len(big) + 1)
    content = b"DATA\r\n" + body + b".\r\n" if not chunked else b"BDAT %d LAST\r\n" % len(body) + body
    run = Run().feed(ENVELOPE, content[:5000], content[5000:])
    assert run.said[-1].startswith(b"552 5.3.4 ") and not run.delivered
    assert run.spools[0].closed
    run.feed(ENVELOPE + b"DATA\r\n" + MESSAGE)
    assert [content for _, content in run.delivered] == [UNSTUFFED]


@pytest.mark.parametrize(("commands", "codes"), [
    (b"RCPT TO:<b@c.d>\r\n", ["503"]),
    (b"MAIL FROM:<a@b.c>\r\nMAIL FROM:<a@b.c>\r\n", ["250", "503"]),
    (b"MAIL FROM:<a@b.c>\r\nDATA\r\n", ["250", "503"]),
    (b"MAIL FROM:<>\r\nRCPT TO:<b@c.d>\r\nRSET\r\nDATA\r\n", ["250", "250", "250", "503"]),
    (b"MAIL FROM:<a@b.c> BODY=8BITMIME AUTH=<>\r\n", ["250"]),
    (b"MAIL FROM: a@b.c\r\nRCPT TO: <b@c.d>\r\n", ["250", "250"]),
    (b"MAIL FROM:<a@b.c> BODY=BINARYMIME\r\n", ["555"]),
    (b"MAIL FROM:<a@b.c> SMTPUTF8\r\n", ["555"]),
    (b"MAIL TO:<a@b.c>\r\n", ["501"]),
    (b"MAIL FROM:<a@b.c\r\n", ["501"]),
    (b"MAIL FROM:<a@b.c>\r\nRCPT TO:<nobody>\r\n", ["250", "501"]),
    (b"MAIL FROM:<a@b.c>\r\nRCPT TO:<b@c.d> NOTIFY=NEVER\r\n", ["250", "555"]),
    (b"DATA x\r\n", ["501"]),
    (b"AUTH PLAIN AGFAAGI=\r\nSTARTTLS\r\n", ["503", "503"]),
    (b"VRFY x\r\nHELP\r\nNOOP\r\nFOO\r\n", ["252", "214", "250", "500"]),
    (b"EHLO\r\nHELO\r\nHELO printer\r\n", ["501", "501", "250"]),
])
def test_command_answers(commands: bytes, codes: list[str]) -> None:
    """Each command's answer, in order, for what a client may get wrong."""
    assert Run().feed(commands).codes == codes


def test_ehlo_offers_the_listener_size_and_resets() -> None:
    """EHLO lists the configured SIZE, CHUNKING, PIPELINING, 8BITMIME, ENHANCEDSTATUSCODES and
    AUTH, and forgets a transaction in progress."""
    run = Run().feed(b"MAIL FROM:<a@b.c>\r\nEHLO again\r\nRCPT TO:<b@c.d>\r\n")
    lines = run.said[1:-1]
    for keyword in (b"SIZE %d" % LIMIT, b"CHUNKING", b"PIPELINING", b"8BITMIME",
                    b"ENHANCEDSTATUSCODES", b"AUTH PLAIN LOGIN"):
        assert any(line[4:] == keyword for line in lines), (keyword, lines)
    assert run.codes[-1] == "503"


def test_too_many_recipients() -> None:
    """Recipients beyond Exchange Online's 500 get 452 4.5.3; the ones before count."""
    rcpts = b"".join(b"RCPT TO:<r%d@c.d>\r\n" % i for i in range(MAX_RECIPIENTS + 1))
    run = Run(max_errors=5).feed(b"MAIL FROM:<a@b.c>\r\n" + rcpts + b"DATA\r\n" + MESSAGE)
    assert run.codes[-2] == "452" and run.codes[-1] == "354"
    assert len(run.delivered[0][0].recipients) == MAX_RECIPIENTS


def test_quit_closes_and_nothing_follows() -> None:
    """QUIT: 221, Close; later input is ignored and a half-sent BDAT message is let go."""
    run = Run().feed(ENVELOPE + b"BDAT 2\r\nabQUIT\r\nNOOP\r\n")
    assert run.codes == ["250", "250", "250", "221"] and run.closed
    assert run.spools[0].closed
    assert run.core.receive_data(b"NOOP\r\n") == []


def test_too_many_errors_close_the_connection() -> None:
    """The error answer that reaches max_errors comes with 421 and a Close."""
    run = Run(max_errors=3).feed(b"FOO\r\n" * 5)
    assert run.codes == ["500", "500", "500", "421"] and run.closed


def test_overlong_command_line() -> None:
    """A command line over the cap is answered 500 5.5.2 and the session reads on after it."""
    run = Run().feed(b"NOOP " + b"x" * 5000 + b"\r\nNOOP\r\n")
    assert run.said == [b"500 5.5.2 Line too long", b"250 2.0.0 OK"]


def test_close_while_receiving_lets_the_message_go() -> None:
    """The client gone mid-DATA: close() drops the spool (its temporary file goes with it)."""
    run = Run().feed(ENVELOPE + b"DATA\r\n" + b"x" * 500)
    run.core.close()
    assert run.spools[0].closed and run.core.phase is ReceivingPhase.CLOSED


def test_delivered_without_a_delivery_is_a_bug() -> None:
    """delivered() with no Deliver out raises, as login outcomes do in the pre-login cores."""
    with pytest.raises(RuntimeError, match="nothing is out"):
        Run().core.delivered("250", "2.0.0 OK")


def test_refusal_of_the_mail_service_is_passed_on() -> None:
    """A 5xx outcome reaches the client as given; the next transaction starts afresh."""
    run = Run().feed(ENVELOPE + b"DATA\r\n" + MESSAGE)
    run.answer("550", "5.7.1 the app may not send mail as scanner@contoso.com")
    run.feed(b"RCPT TO:<b@c.d>\r\n")
    assert run.said[-2] == b"550 5.7.1 the app may not send mail as scanner@contoso.com"
    assert run.codes[-1] == "503"


@pytest.mark.parametrize(("stream", "content", "rest"), [
    (b".\r\n", b"", b""),
    (b"a\r\n.\r\nNOOP\r\n", b"a\r\n", b"NOOP\r\n"),
    (b"a\n.b\n.\nX", b"a\nb\n", b"X"),  # bare LF lines, as some printers send
    (b"..\r\n.\r\n", b".\r\n", b""),
    (b"a\r\n.\rb\r\n.\r\n", b"a\r\n\rb\r\n", b""),
    (b"x.\r\n.\r\n", b"x.\r\n", b""),
])
def test_dot_decoder(stream: bytes, content: bytes, rest: bytes) -> None:
    """DATA's end line and stuffed dots, fed whole and byte by byte."""
    decoder = DotDecoder()
    assert decoder.feed(stream) == (content, rest)
    decoder, pieces, after = DotDecoder(), [], None
    for i in range(len(stream)):
        piece, after = decoder.feed(stream[i : i + 1])
        pieces.append(piece)
        if after is not None:
            after += stream[i + 1 :]
            break
    assert (b"".join(pieces), after) == (content, rest)
