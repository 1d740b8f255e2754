"""IMAP command syntax before login, sans I/O.

`CommandReader` splits the client's byte stream into whole commands *before* anything is parsed:
a line that ends in `{n}` or `{n+}` announces exactly n bytes of literal data, which are taken by
count, so literal data can never be mistaken for a command. `parse_command` then reads the tag,
the command name and the arguments (atoms, quoted strings with escapes, literals, lists, NIL).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..lines import LineBuffer, LineTooLong

# A line ending in {123} or {123+}: the announcement of a literal (RFC 3501, RFC 7888).
# Any number of digits: a marker too big to accept must still be seen as one, or the literal
# data after it would be read as commands.
LITERAL_MARKER = re.compile(rb"\{(\d+)(\+?)\}$")
# RFC 3501 tag: ASTRING-CHARs but "+": printable 7-bit, none of ( ) { % * " \ and no space.
TAG_CHARS = re.compile(rb"[^\x00-\x20\x7f-\xff(){%*\"\\+]+")
COMMAND_NAME = re.compile(rb" +([A-Za-z][A-Za-z0-9-]{0,31})(?= |$)")


@dataclass(frozen=True)
class Literal:
    data: bytes


Piece = bytes | Literal
Argument = bytes | None | tuple["Argument", ...]


@dataclass(frozen=True)
class RawCommand:
    """A complete command: text pieces of its lines and the literal data between them."""

    pieces: tuple[Piece, ...]

    @property
    def tag(self) -> str:
        return tag_of(self.pieces[0] if isinstance(self.pieces[0], bytes) else b"")


@dataclass(frozen=True)
class ContinuationNeeded:
    """A synchronising literal was announced: the client waits for `+` before sending it."""


@dataclass(frozen=True)
class Rejected:
    """The command cannot be accepted; answer `BAD` with this text, tagged when the tag is known.

    `fatal` means the stream can no longer be followed (the client will send data we refused to
    wait for), so the connection must close after the answer.
    """

    tag: str
    text: str
    fatal: bool = False


ReaderEvent = RawCommand | ContinuationNeeded | Rejected


class CommandReader:
    def __init__(
        self, max_line: int = 8192, max_literal: int = 65536, max_command: int = 262144
    ) -> None:
        self.max_literal = max_literal
        self.max_command = max_command
        self._lines = LineBuffer(max_line)
        self._pieces: list[Piece] = []
        self._size = 0
        self._literal_due: int | None = None  # bytes of literal data still expected

    def feed(self, data: bytes) -> None:
        self._lines.feed(data)

    def next_event(self) -> ReaderEvent | None:
        """The next event, or None until more data arrives."""
        while True:
            if self._literal_due is not None:
                data = self._lines.next_bytes(self._literal_due)
                if data is None:
                    return None
                self._pieces.append(Literal(data))
                self._literal_due = None
            try:
                line = self._lines.next_line()
            except LineTooLong:
                return self._reject("Line too long", fatal=True)
            if line is None:
                return None
            if not self._pieces and not line.strip():
                continue  # empty lines between commands are harmless; some clients send them
            self._size += len(line)
            marker = LITERAL_MARKER.search(line)
            if marker is None:
                self._pieces.append(line)
                return self._complete()
            self._pieces.append(line[: marker.start()])
            digits, non_synchronising = marker.group(1), marker.group(2) == b"+"
            # int() of thousands of digits is slow (and refused past 4300): cap before converting.
            size = int(digits) if len(digits) <= 12 else self.max_command + 1
            self._size += size
            if size > self.max_literal or self._size > self.max_command:
                # A synchronising literal was not sent yet: refusing it keeps the stream in step.
                return self._reject("Literal too large", fatal=non_synchronising)
            self._literal_due = size
            if not non_synchronising:
                return ContinuationNeeded()

    def next_line(self) -> bytes | None:
        """A bare line, for SASL responses during AUTHENTICATE; raises LineTooLong."""
        return self._lines.next_line()

    def take_unparsed(self) -> bytes:
        return self._lines.take_unparsed()

    def _complete(self) -> RawCommand:
        command = RawCommand(tuple(self._pieces))
        self._pieces, self._size = [], 0
        return command

    def _reject(self, text: str, fatal: bool) -> Rejected:
        first = self._pieces[0] if self._pieces else b""
        tag = tag_of(first) if isinstance(first, bytes) else ""
        self._pieces, self._size, self._literal_due = [], 0, None
        return Rejected(tag, text, fatal)


def tag_of(line: bytes) -> str:
    """The tag that starts a command line, or "" when there is no valid one."""
    match = TAG_CHARS.match(line)
    if match is None or line[match.end() : match.end() + 1] not in (b" ", b""):
        return ""
    return match.group().decode("ascii", "replace")


class ParseError(Exception):
    pass


@dataclass(frozen=True)
class Command:
    tag: str
    name: str  # upper case
    args: tuple[Argument, ...]


def parse_command(raw: RawCommand) -> Command:
    """Tag, name and arguments of a complete command; raises ParseError with a reason."""
    tokens = _Tokenizer(raw.pieces).arguments()
    if len(tokens) < 2 or not isinstance(tokens[0], bytes) or not isinstance(tokens[1], bytes):
        raise ParseError("Missing command")
    tag = raw.tag
    if not tag:
        raise ParseError("Invalid tag")
    first = raw.pieces[0] if isinstance(raw.pieces[0], bytes) else b""
    # The name must be a plain atom right after the tag in the command's own text: never a
    # quoted string or literal data, so it is safe to echo back.
    name = COMMAND_NAME.match(first, len(tag))
    if name is None:
        raise ParseError("Invalid command name")
    return Command(tag, name.group(1).decode("ascii").upper(), tuple(tokens[2:]))


class _Tokenizer:
    """Reads space-separated IMAP values across the pieces of a command."""

    def __init__(self, pieces: tuple[Piece, ...]) -> None:
        self.pieces = pieces

    def arguments(self) -> list[Argument]:
        stack: list[list[Argument]] = [[]]
        for piece in self.pieces:
            if isinstance(piece, Literal):
                stack[-1].append(piece.data)
                continue
            text, i = piece, 0
            while i < len(text):
                char = text[i : i + 1]
                if char == b" ":
                    i += 1
                elif char == b"(":
                    stack.append([])
                    i += 1
                elif char == b")":
                    if len(stack) == 1:
                        raise ParseError("Unbalanced parenthesis")
                    inner = tuple(stack.pop())
                    stack[-1].append(inner)
                    i += 1
                elif char == b'"':
                    value, i = _quoted(text, i)
                    stack[-1].append(value)
                else:
                    end = i
                    while end < len(text) and text[end : end + 1] not in (b" ", b"(", b")", b'"'):
                        end += 1
                    atom = text[i:end]
                    stack[-1].append(None if atom.upper() == b"NIL" else atom)
                    i = end
        if len(stack) != 1:
            raise ParseError("Unbalanced parenthesis")
        return stack[0]


def _quoted(text: bytes, start: int) -> tuple[bytes, int]:
    """A quoted string starting at text[start] == '"'; returns its value and the index after."""
    value = bytearray()
    i = start + 1
    while i < len(text):
        char = text[i : i + 1]
        if char == b"\\":
            escaped = text[i + 1 : i + 2]
            if escaped not in (b"\\", b'"'):
                raise ParseError("Invalid escape in quoted string")
            value += escaped
            i += 2
        elif char == b'"':
            return bytes(value), i + 1
        else:
            value += char
            i += 1
    raise ParseError("Unterminated quoted string")


def quote(text: str) -> bytes:
    """An IMAP quoted string (for ID answers and the like)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return b'"' + escaped.encode() + b'"'
