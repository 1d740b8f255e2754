"""LineBuffer: CRLF (or bare LF) lines, raw byte runs and a hard line cap."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.lines import LineBuffer, LineTooLong
from tests.support.playbook import split

TOO_LONG = "LineTooLong"


def read_all(chunks: Sequence[bytes], max_line: int = 8) -> tuple[list[object], bytes]:
    """Feed `chunks` one after the other, reading every line that is complete after each.

    Returns the lines (and a TOO_LONG marker where LineTooLong was raised) and what is left.
    """
    buffer = LineBuffer(max_line)
    events: list[object] = []
    for chunk in chunks:
        buffer.feed(chunk)
        while True:
            try:
                line = buffer.next_line()
            except LineTooLong:
                events.append(TOO_LONG)
                continue
            if line is None:
                break
            events.append(line)
    return events, buffer.take_unparsed()


# (input, expected lines and TOO_LONG markers, expected leftover) with max_line = 8
CASES = [
    pytest.param(b"", [], b"", id="nothing"),
    pytest.param(b"abc\r\n", [b"abc"], b"", id="crlf"),
    pytest.param(b"abc\n", [b"abc"], b"", id="bare-lf"),
    pytest.param(b"abc\r\ndef\nghi", [b"abc", b"def"], b"ghi", id="partial-line-left"),
    pytest.param(b"\r\n\n", [b"", b""], b"", id="empty-lines"),
    pytest.param(b"a\rb\r\n", [b"a\rb"], b"", id="inner-cr-kept"),
    pytest.param(b"abc\r\r\n", [b"abc\r"], b"", id="only-one-cr-stripped"),
    pytest.param(b"12345678\r\n", [b"12345678"], b"", id="exactly-max-line-crlf"),
    pytest.param(b"12345678\n", [b"12345678"], b"", id="exactly-max-line-lf"),
    pytest.param(b"123456789\r\nok\r\n", [TOO_LONG, b"ok"], b"", id="one-over-crlf"),
    pytest.param(b"123456789\nok\n", [TOO_LONG, b"ok"], b"", id="one-over-bare-lf"),
    pytest.param(
        b"x" * 50 + b"\r\nok\r\n", [TOO_LONG, b"ok"], b"", id="overlong-dropped-then-resumes"
    ),
    pytest.param(
        b"x" * 50 + b"\r\n" + b"y" * 50 + b"\nz\n",
        [TOO_LONG, TOO_LONG, b"z"],
        b"",
        id="two-overlong-lines",
    ),
    pytest.param(b"x" * 50, [TOO_LONG], b"", id="overlong-unfinished-is-dropped"),
    pytest.param(b"x" * 50 + b"\r\nrest", [TOO_LONG], b"rest", id="overlong-then-partial"),
]


@pytest.mark.parametrize("data, expected, leftover", CASES)
def test_lines(data: bytes, expected: list[object], leftover: bytes) -> None:
    """Each input gives exactly these lines, cap errors and leftover bytes."""
    assert read_all([data]) == (expected, leftover)


@pytest.mark.parametrize("data, expected, leftover", CASES)
def test_lines_byte_by_byte(data: bytes, expected: list[object], leftover: bytes) -> None:
    """Feeding one byte at a time gives the same lines as one chunk."""
    assert read_all([data[i : i + 1] for i in range(len(data))]) == (expected, leftover)


@settings(max_examples=200, deadline=None)
@given(case=st.sampled_from(CASES), cuts=st.lists(st.integers(min_value=0), max_size=6))
def test_lines_random_splits(case: object, cuts: list[int]) -> None:
    """Any split of the input gives the same lines as one chunk."""
    data, expected, leftover = case.values  # type: ignore[attr-defined]
    chunks = split(data, cuts)
    assert read_all(chunks) == (expected, leftover)


def test_cap_is_the_same_for_lf_and_crlf() -> None:
    """A line of max_line + 1 bytes is too long whether it ends in CRLF or in a bare LF."""
    assert read_all([b"123456789\r\n"])[0] == [TOO_LONG]
    assert read_all([b"123456789\n"])[0] == [TOO_LONG]


def test_too_long_raised_once_per_line() -> None:
    """LineTooLong is raised once for an overlong line, however many bytes of it follow."""
    buffer = LineBuffer(4)
    buffer.feed(b"abcdefgh")
    with pytest.raises(LineTooLong):
        buffer.next_line()
    buffer.feed(b"ijklmnopqrstuvwxyz" * 10)
    assert buffer.next_line() is None
    assert len(buffer) == 0  # the overlong line is not kept in memory
    buffer.feed(b"tail\r\nnext\r\n")
    assert buffer.next_line() == b"next"


def test_next_bytes_takes_exact_count() -> None:
    """next_bytes returns exactly `count` raw bytes, CR and LF included, or None until they are in."""
    buffer = LineBuffer(4)
    buffer.feed(b"ab\r\n")
    assert buffer.next_bytes(5) is None
    buffer.feed(b"cdefghij\r\n")
    assert buffer.next_bytes(5) == b"ab\r\nc"
    assert buffer.next_bytes(0) == b""
    assert buffer.take_unparsed() == b"defghij\r\n"
    buffer = LineBuffer(4)
    buffer.feed(b"0123456789xy\r\n")
    assert buffer.next_bytes(10) == b"0123456789"  # byte runs are not limited by max_line
    assert buffer.next_line() == b"xy"


def test_take_unparsed_empties_the_buffer() -> None:
    """take_unparsed hands out every buffered byte once and leaves the buffer empty."""
    buffer = LineBuffer()
    buffer.feed(b"A1 NOOP\r\nA2 LIST")
    assert buffer.next_line() == b"A1 NOOP"
    assert len(buffer) == len(b"A2 LIST")
    assert buffer.take_unparsed() == b"A2 LIST"
    assert buffer.take_unparsed() == b""
    assert len(buffer) == 0


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=200),
    cuts=st.lists(st.integers(min_value=0), max_size=8),
    max_line=st.integers(min_value=1, max_value=20),
)
def test_arbitrary_bytes_split_independent(data: bytes, cuts: list[int], max_line: int) -> None:
    """For any bytes, no line handed out exceeds the cap, and splits don't matter."""
    chunks = split(data, cuts)
    whole = read_all([data], max_line)
    assert read_all(chunks, max_line) == whole
    for line in whole[0]:
        if isinstance(line, bytes):
            assert b"\n" not in line
            assert len(line) <= max_line
