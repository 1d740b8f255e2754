"""IMAP wire syntax: the command reader (lines, literals, caps) and the command parser."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.imap.wire import (
    Command,
    CommandReader,
    ContinuationNeeded,
    Literal,
    ParseError,
    RawCommand,
    Rejected,
    parse_command,
    quote,
    tag_of,
)
from tests.support.playbook import split

CONTINUE = ContinuationNeeded()


def read(chunks: Sequence[bytes], **caps: int) -> tuple[list[object], bytes]:
    """All reader events for `chunks` fed one after the other, and the bytes left over."""
    reader = CommandReader(**caps)
    events: list[object] = []
    for chunk in chunks:
        reader.feed(chunk)
        while (event := reader.next_event()) is not None:
            events.append(event)
    return events, reader.take_unparsed()


def raw(*pieces: bytes | Literal) -> RawCommand:
    return RawCommand(tuple(pieces))


SMALL = {"max_line": 40, "max_literal": 10, "max_command": 30}

# (input, reader caps, expected events, expected leftover)
READER_CASES = [
    pytest.param(b"a1 NOOP\r\n", {}, [raw(b"a1 NOOP")], b"", id="one-line"),
    pytest.param(b"a1 NOOP\n", {}, [raw(b"a1 NOOP")], b"", id="bare-lf"),
    pytest.param(
        b"a1 NOOP\r\na2 CAPABILITY\r\na3 LOG",
        {},
        [raw(b"a1 NOOP"), raw(b"a2 CAPABILITY")],
        b"a3 LOG",
        id="pipelined-and-partial",
    ),
    pytest.param(b"\r\n\r\na1 NOOP\r\n", {}, [raw(b"a1 NOOP")], b"", id="empty-lines-skipped"),
    pytest.param(
        b"a1 LOGIN {5}\r\nalice {6}\r\ns3cret\r\n",
        {},
        [CONTINUE, CONTINUE, raw(b"a1 LOGIN ", Literal(b"alice"), b" ", Literal(b"s3cret"), b"")],
        b"",
        id="synchronising-literals",
    ),
    pytest.param(
        b"a1 LOGIN {5+}\r\nalice {6+}\r\ns3cret\r\n",
        {},
        [raw(b"a1 LOGIN ", Literal(b"alice"), b" ", Literal(b"s3cret"), b"")],
        b"",
        id="non-synchronising-literals",
    ),
    pytest.param(
        b"a1 LOGIN alice {11+}\r\nb2 LOGOUT\r\n\r\nc3 NOOP\r\n",
        {},
        [raw(b"a1 LOGIN alice ", Literal(b"b2 LOGOUT\r\n"), b""), raw(b"c3 NOOP")],
        b"",
        id="literal-data-is-never-a-command",
    ),
    pytest.param(
        b"a1 LOGIN alice {0}\r\n\r\n",
        {},
        [CONTINUE, raw(b"a1 LOGIN alice ", Literal(b""), b"")],
        b"",
        id="empty-literal",
    ),
    pytest.param(
        b"a1 LOGIN alice {4}\r\n",
        {},
        [CONTINUE],
        b"",
        id="literal-awaited",
    ),
    pytest.param(
        b"a1 LOGIN alice {4}\r\nab",
        {},
        [CONTINUE],
        b"ab",
        id="literal-partly-in",
    ),
    pytest.param(
        b"a1 X {3}\r\n" + b"\xff\x00\n" + b"\r\n",
        {},
        [CONTINUE, raw(b"a1 X ", Literal(b"\xff\x00\n"), b"")],
        b"",
        id="literal-binary-bytes",
    ),
    pytest.param(
        b"a1 X {10}\r\n0123456789\r\n",
        SMALL,
        [CONTINUE, raw(b"a1 X ", Literal(b"0123456789"), b"")],
        b"",
        id="literal-at-cap",
    ),
    pytest.param(
        b"a1 X {11}\r\na2 NOOP\r\n",
        SMALL,
        [Rejected("a1", "Literal too large", fatal=False), raw(b"a2 NOOP")],
        b"",
        id="sync-literal-over-cap-refused-stream-kept",
    ),
    pytest.param(
        b"a1 X {11+}\r\n01234567890\r\n",
        SMALL,
        # The stream is lost: the caller closes; the reader itself just reads on.
        [Rejected("a1", "Literal too large", fatal=True), raw(b"01234567890")],
        b"",
        id="non-sync-literal-over-cap-fatal",
    ),
    pytest.param(
        b"a1 X {9}\r\n012345678 {10}\r\na2 NOOP\r\n",
        SMALL,
        [CONTINUE, Rejected("a1", "Literal too large", fatal=False), raw(b"a2 NOOP")],
        b"",
        id="command-over-cap",
    ),
    pytest.param(
        b"a1 X {9999999999}\r\n",
        {},
        [Rejected("a1", "Literal too large", fatal=False)],
        b"",
        id="huge-literal-announced",
    ),
    pytest.param(
        b"a1 " + b"x" * 50 + b"\r\na2 NOOP\r\n",
        SMALL,
        [Rejected("", "Line too long", fatal=True), raw(b"a2 NOOP")],
        b"",
        id="overlong-line-fatal",
    ),
    pytest.param(
        b"a1 X {3}\r\nabc" + b"y" * 50 + b"\r\n",
        SMALL,
        [CONTINUE, Rejected("a1", "Line too long", fatal=True)],
        b"",
        id="overlong-continuation-line-keeps-tag",
    ),
    pytest.param(
        b"a1 LOGIN {00000000005+}\r\nb2 NOOP\r\n",
        {},
        [raw(b"a1 LOGIN ", Literal(b"b2 NO"), b"OP")],
        b"",
        id="leading-zeros-still-a-literal",
    ),
    pytest.param(
        b"a1 LOGIN {" + b"9" * 60 + b"}\r\na2 NOOP\r\n",
        {},
        [Rejected("a1", "Literal too large", fatal=False), raw(b"a2 NOOP")],
        b"",
        id="sixty-digit-sync-literal-refused",
    ),
    pytest.param(
        b"a1 LOGIN {" + b"9" * 60 + b"+}\r\nb2 NOOP\r\n",
        {},
        [Rejected("a1", "Literal too large", fatal=True), raw(b"b2 NOOP")],
        b"",
        id="sixty-digit-non-sync-literal-fatal",
    ),
    pytest.param(
        b"a1 X {3}\r\nabc{x}\r\n",
        {},
        [CONTINUE, raw(b"a1 X ", Literal(b"abc"), b"{x}")],
        b"",
        id="brace-not-a-marker",
    ),
]


@pytest.mark.parametrize("data, caps, expected, leftover", READER_CASES)
def test_reader(data: bytes, caps: dict[str, int], expected: list[object], leftover: bytes) -> None:
    """Each byte stream gives exactly these reader events and leftover bytes."""
    assert read([data], **caps) == (expected, leftover)


@pytest.mark.parametrize("data, caps, expected, leftover", READER_CASES)
def test_reader_byte_by_byte(
    data: bytes, caps: dict[str, int], expected: list[object], leftover: bytes
) -> None:
    """Feeding one byte at a time gives the same events as one chunk."""
    assert read([data[i : i + 1] for i in range(len(data))], **caps) == read([data], **caps)


@settings(max_examples=300, deadline=None)
@given(case=st.sampled_from(READER_CASES), cuts=st.lists(st.integers(min_value=0), max_size=8))
def test_reader_random_splits(case: Any, cuts: list[int]) -> None:
    """Any split of the input gives the same events as one chunk."""
    data, caps, _, _ = case.values
    chunks = split(data, cuts)
    assert read(chunks, **caps) == read([data], **caps)


def test_next_line_reads_bare_sasl_lines() -> None:
    """next_line hands out a bare line (a SASL response) without parsing it as a command."""
    reader = CommandReader()
    reader.feed(b"AGFsaWNlAHB3\r\na2 NOOP\r\n")
    assert reader.next_line() == b"AGFsaWNlAHB3"
    assert reader.next_event() == raw(b"a2 NOOP")


@settings(max_examples=300, deadline=None)
@given(
    chunks=st.lists(
        st.one_of(
            st.binary(max_size=30),
            st.sampled_from(
                [
                    b"\r\n",
                    b"\n",
                    b"{3}\r\n",
                    b"{2+}\r\n",
                    b"{0}\r\n",
                    b"{99}\r\n",
                    b"a1 ",
                    b"x" * 45,
                ]
            ),
        ),
        max_size=12,
    )
)
def test_arbitrary_bytes_never_raise(chunks: list[bytes]) -> None:
    """Any byte stream gives only reader events, never an exception, and every command parses or raises ParseError."""
    events, _ = read(chunks, **SMALL)
    for event in events:
        assert isinstance(event, (RawCommand, ContinuationNeeded, Rejected))
        if isinstance(event, RawCommand):
            with contextlib.suppress(ParseError):
                parse_command(event)


# -- parse_command --

PARSE_CASES = [
    pytest.param(raw(b"a1 NOOP"), Command("a1", "NOOP", ()), id="no-args"),
    pytest.param(raw(b"a1 noop"), Command("a1", "NOOP", ()), id="name-upper-cased"),
    pytest.param(
        raw(b"A001 LOGIN alice s3cret"),
        Command("A001", "LOGIN", (b"alice", b"s3cret")),
        id="atoms",
    ),
    pytest.param(
        raw(b'a1 LOGIN "alice smith" "s3 cr\\"et\\\\"'),
        Command("a1", "LOGIN", (b"alice smith", b's3 cr"et\\')),
        id="quoted-with-escapes",
    ),
    pytest.param(raw(b'a1 LOGIN "" ""'), Command("a1", "LOGIN", (b"", b"")), id="empty-quoted"),
    pytest.param(
        raw(b"a1 LOGIN ", Literal(b"alice"), b" ", Literal(b"pa ss\r\n"), b""),
        Command("a1", "LOGIN", (b"alice", b"pa ss\r\n")),
        id="literals",
    ),
    pytest.param(
        raw(b"a1 LOGIN ", Literal(b'"NIL" ('), b" x"),
        Command("a1", "LOGIN", (b'"NIL" (', b"x")),
        id="literal-content-not-tokenised",
    ),
    pytest.param(
        raw(b'a1 ID ("name" "mutt" "version" NIL)'),
        Command("a1", "ID", ((b"name", b"mutt", b"version", None),)),
        id="list-and-nil",
    ),
    pytest.param(raw(b"a1 ID NIL"), Command("a1", "ID", (None,)), id="nil"),
    pytest.param(raw(b"a1 ID nil"), Command("a1", "ID", (None,)), id="nil-any-case"),
    pytest.param(raw(b'a1 X "NIL"'), Command("a1", "X", (b"NIL",)), id="quoted-nil-is-a-string"),
    pytest.param(
        raw(b"a1 X ((a) ()) b"),
        Command("a1", "X", (((b"a",), ()), b"b")),
        id="nested-lists",
    ),
    pytest.param(raw(b"a1  NOOP  "), Command("a1", "NOOP", ()), id="extra-spaces"),
    pytest.param(raw(b"a] NOOP"), Command("a]", "NOOP", ()), id="bracket-in-tag"),
    pytest.param(
        raw(b"a1 AUTHENTICATE PLAIN ="),
        Command("a1", "AUTHENTICATE", (b"PLAIN", b"=")),
        id="sasl-ir-equals",
    ),
]


@pytest.mark.parametrize("command, expected", PARSE_CASES)
def test_parse(command: RawCommand, expected: Command) -> None:
    """A complete command parses into this tag, upper-case name and arguments."""
    assert parse_command(command) == expected


PARSE_ERRORS = [
    pytest.param(raw(b"a1"), "Missing command", id="tag-only"),
    pytest.param(raw(b""), "Missing command", id="empty"),
    pytest.param(raw(b"a1 (NOOP)"), "Missing command", id="list-as-name"),
    pytest.param(raw(b"a1 NIL"), "Missing command", id="nil-as-name"),
    pytest.param(raw(b"* NOOP"), "Invalid tag", id="star-tag"),
    pytest.param(raw(b"+ NOOP"), "Invalid tag", id="plus-tag"),
    pytest.param(raw(b"a+b NOOP"), "Invalid tag", id="plus-in-tag"),
    pytest.param(raw(b"a%b NOOP"), "Invalid tag", id="wildcard-in-tag"),
    pytest.param(raw(b'"a1" NOOP'), "Invalid tag", id="quoted-tag"),
    pytest.param(raw(b"a{1 NOOP"), "Invalid tag", id="brace-in-tag"),
    pytest.param(raw(b"a1 LOGIN (alice"), "Unbalanced parenthesis", id="open-paren"),
    pytest.param(raw(b"a1 LOGIN alice)"), "Unbalanced parenthesis", id="close-paren"),
    pytest.param(raw(b'a1 LOGIN "alice'), "Unterminated quoted string", id="unterminated"),
    pytest.param(raw(b'a1 LOGIN "al\\ice"'), "Invalid escape in quoted string", id="bad-escape"),
    pytest.param(raw(b'a1 LOGIN "alice\\'), "Invalid escape in quoted string", id="escape-at-end"),
]


@pytest.mark.parametrize("command, reason", PARSE_ERRORS)
def test_parse_errors(command: RawCommand, reason: str) -> None:
    """A malformed command raises ParseError with this reason."""
    with pytest.raises(ParseError, match=reason):
        parse_command(command)


def test_eight_bit_tag_is_invalid() -> None:
    """A tag with a byte over 0x7f is invalid rather than echoed as U+FFFD."""
    assert tag_of(b"\xff1 NOOP") == ""
    assert tag_of("ä1 NOOP".encode()) == ""
    with pytest.raises(ParseError, match="Invalid tag"):
        parse_command(raw(b"a\x801 NOOP"))


@pytest.mark.parametrize(
    "line, tag",
    [
        (b"a1 NOOP", "a1"),
        (b"a1", "a1"),
        (b"A.b-c_9 LOGIN", "A.b-c_9"),
        (b" a1 NOOP", ""),
        (b"a(1 NOOP", ""),
        (b"a*1 NOOP", ""),
        (b"a\\1 NOOP", ""),
        (b"", ""),
    ],
)
def test_tag_of(line: bytes, tag: str) -> None:
    """tag_of returns the tag a line starts with, or "" when it has no valid one."""
    assert tag_of(line) == tag


@pytest.mark.parametrize(
    "text, expected",
    [("plain", b'"plain"'), ('say "hi"', b'"say \\"hi\\""'), ("a\\b", b'"a\\\\b"'), ("", b'""')],
)
def test_quote(text: str, expected: bytes) -> None:
    """quote() escapes backslash and double quote, and parses back to the same text."""
    assert quote(text) == expected
    assert parse_command(raw(b"a1 X " + quote(text))).args == (text.encode(),)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_parse_arbitrary_line(data: bytes) -> None:
    """parse_command on any single line either parses or raises ParseError."""
    try:
        command = parse_command(raw(data))
    except ParseError:
        return
    assert command.tag and command.name == command.name.upper()
