"""Reading a MIME message from its spool without holding it in memory.

The email package parses a whole message into memory (a 35 MB scan would take several times
that), so only header blocks go through it (`email.parser.BytesParser`, policy `default`: RFC
2047 words, RFC 2231 file names, address lists). The bodies stay in the spool: `leaves()` walks
the message once, line by line, and notes where each leaf part's body starts and ends; `decoded()`
then streams a body out of the spool, undoing its base64 or quoted-printable transfer encoding.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import IO

LINE_PIECE = 64 * 1024  # longest piece of a line read at once (a boundary line is far shorter)
HEADER_LIMIT = 256 * 1024  # longest header block of a message or part
CHUNK = 48 * 1024  # bytes read from the spool at once
# Padding is dropped with everything else outside the alphabet and put back at the end: a "="
# in the middle (broken or concatenated base64) then cannot stop the decoding half-way.
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_BASE64 = bytes(sorted(set(range(256)) - set(_BASE64_ALPHABET)))


class MimeError(ValueError):
    """The message cannot be read as MIME (e.g. a header block over the limit)."""


@dataclass(frozen=True)
class Head:
    """The message's own header block: raw bytes (without the blank line) and parsed."""

    raw: bytes
    headers: EmailMessage
    line_end: bytes  # b"\r\n" as SMTP delivers it; b"\n" in a message that uses bare LF


@dataclass(frozen=True)
class Leaf:
    """A part with a body of its own (not a multipart): its headers and where its body is."""

    headers: EmailMessage
    start: int  # offsets in the spool: the body is message[start:end]
    end: int
    alternative: int | None  # which multipart/alternative holds it, if any
    related: bool  # inside a multipart/related (inline images of an HTML body)

    @property
    def encoded_size(self) -> int:
        return self.end - self.start


def parse_headers(raw: bytes) -> EmailMessage:
    parsed = BytesParser(policy=policy.default).parsebytes(raw + b"\r\n", headersonly=True)
    assert isinstance(parsed, EmailMessage)
    return parsed


def read_head(message: IO[bytes]) -> Head:
    """The header block at the start of the message."""
    lines = _Lines(message, 0)
    raw = _header_block(lines)
    first_end = raw.find(b"\n")
    line_end = b"\r\n" if first_end <= 0 or raw[first_end - 1:first_end] == b"\r" else b"\n"
    return Head(raw, parse_headers(raw), line_end)


@dataclass
class _Multipart:
    delimiter: bytes  # b"--" + boundary
    alternative: int | None
    related: bool


def leaves(message: IO[bytes]) -> list[Leaf]:
    """Every leaf part in order. Tolerant like mail readers: a missing closing delimiter ends
    the part at the end of the message; preambles and epilogues are skipped."""
    lines = _Lines(message, 0)
    found: list[Leaf] = []
    open_parts: list[_Multipart] = []
    multiparts = 0
    while True:
        headers = parse_headers(_header_block(lines))
        start = lines.offset
        boundary = headers.get_boundary() if headers.get_content_maintype() == "multipart" else None
        if boundary:
            enclosing = open_parts[-1] if open_parts else None
            subtype = headers.get_content_subtype()
            multiparts += 1
            open_parts.append(_Multipart(
                b"--" + boundary.encode("ascii", "replace"),
                multiparts if subtype == "alternative"
                else enclosing.alternative if enclosing else None,
                subtype == "related" or bool(enclosing and enclosing.related),
            ))
            delimiter, _ = _next_delimiter(lines, open_parts)
        else:
            delimiter, end = _next_delimiter(lines, open_parts)
            enclosing = open_parts[-1] if open_parts else None
            found.append(Leaf(headers, start, max(start, end),
                              enclosing.alternative if enclosing else None,
                              bool(enclosing and enclosing.related)))
        while delimiter is not None:  # a closing delimiter: go on in the enclosing multipart
            index, closing = delimiter
            del open_parts[index + 1:]  # inner multiparts left unclosed end here too
            if not closing:
                break
            open_parts.pop()
            if not open_parts:
                return found  # the epilogue of the outermost multipart is not read
            delimiter, _ = _next_delimiter(lines, open_parts)
        if delimiter is None:
            return found


def decoded(message: IO[bytes], leaf: Leaf) -> Iterator[bytes]:
    """The body of `leaf` with its transfer encoding undone, in pieces of about CHUNK bytes."""
    encoding = str(leaf.headers.get("Content-Transfer-Encoding", "")).strip().lower()
    if encoding == "base64":
        return _from_base64(raw_chunks(message, leaf.start, leaf.end))
    if encoding == "quoted-printable":
        return (binascii.a2b_qp(line) for _, line, _ in _Lines(message, leaf.start, leaf.end))
    return raw_chunks(message, leaf.start, leaf.end)


def decoded_size(message: IO[bytes], leaf: Leaf) -> int:
    return sum(len(piece) for piece in decoded(message, leaf))


def _from_base64(chunks: Iterator[bytes]) -> Iterator[bytes]:
    carry = b""
    for chunk in chunks:
        data = carry + chunk.translate(None, _NOT_BASE64)
        cut = len(data) - len(data) % 4
        if cut:
            yield binascii.a2b_base64(data[:cut])
        carry = data[cut:]
    if len(carry) > 1:  # the last group, short of its padding (one character holds no byte)
        yield binascii.a2b_base64(carry + b"=" * (-len(carry) % 4))


def raw_chunks(message: IO[bytes], start: int, end: int) -> Iterator[bytes]:
    """message[start:end] as it is, in pieces of CHUNK bytes."""
    offset = start
    while offset < end:
        message.seek(offset)  # other readers of the spool may have moved it in between
        chunk = message.read(min(CHUNK, end - offset))
        if not chunk:
            return
        offset += len(chunk)
        yield chunk


class _Lines:
    """Lines (or pieces of over-long lines) of message[start:end], with their offsets."""

    def __init__(self, message: IO[bytes], start: int, end: int | None = None) -> None:
        self.message = message
        self.offset = start
        self.end = end
        self.at_line_start = True

    def __iter__(self) -> Iterator[tuple[int, bytes, bool]]:
        """(offset, piece, whether the piece starts a line)."""
        while True:
            limit = LINE_PIECE if self.end is None else min(LINE_PIECE, self.end - self.offset)
            if limit <= 0:
                return
            self.message.seek(self.offset)
            piece = self.message.readline(limit)
            if not piece:
                return
            offset, at_start = self.offset, self.at_line_start
            self.offset += len(piece)
            self.at_line_start = piece.endswith(b"\n")
            yield offset, piece, at_start


def _header_block(lines: _Lines) -> bytes:
    """Header lines up to the blank line (consumed, not returned) or the end of the message."""
    block = bytearray()
    for _, piece, at_start in lines:
        if at_start and piece in (b"\r\n", b"\n"):
            break
        block += piece
        if len(block) > HEADER_LIMIT:
            raise MimeError(f"a header block is longer than {HEADER_LIMIT // 1024} KB")
    return bytes(block)


def _next_delimiter(
    lines: _Lines, open_parts: list[_Multipart]
) -> tuple[tuple[int, bool] | None, int]:
    """Read up to the next delimiter line of any open multipart: ((which, closing) or None at
    the end of the message, where the content before it ends). The line break before a
    delimiter belongs to the delimiter (RFC 2046 5.1.1). This loop reads every line of every
    body, so it stays tight: no generator, no seek per line."""
    delimiters = [part.delimiter for part in open_parts]
    readline = lines.message.readline
    lines.message.seek(lines.offset)
    offset, at_start, previous_break = lines.offset, lines.at_line_start, 0
    while piece := readline(LINE_PIECE):
        if at_start and piece[:2] == b"--" and piece[-1:] == b"\n":
            line = piece.rstrip(b" \t\r\n")
            for index in range(len(delimiters) - 1, -1, -1):
                if line == delimiters[index] or line == delimiters[index] + b"--":
                    lines.offset, lines.at_line_start = offset + len(piece), True
                    return (index, line != delimiters[index]), offset - previous_break
        offset += len(piece)
        at_start = piece[-1:] == b"\n"
        previous_break = 2 if piece[-2:] == b"\r\n" else 1 if at_start else 0
    lines.offset, lines.at_line_start = offset, at_start
    return None, offset
