"""SMTP reply syntax both ways (RFC 5321 4.2), sans I/O: our replies out, a server's in.

Every reply the proxy writes to a device is made by `reply`, so each of its lines is one line of
bounded, cleaned ASCII text whoever wrote the text (an error message may quote a server).
`ReplyReader` reads a server's replies, multi-line ones whole.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..lines import LineBuffer
from ..text import one_line

# RFC 5321 4.5.3.1.5: a reply line is at most 512 octets; this leaves room for the code.
MAX_TEXT = 400


def reply(code: str, *texts: str) -> bytes:
    """A reply with `code`: one line per text, in the multi-line form when there are several.

    Each text is made one line and bounded (proxy.text), and the reply is ASCII: a character
    outside it becomes "?" (SMTPUTF8 is not offered, and old devices choke on 8-bit replies).
    """
    last = len(texts) - 1
    lines = (
        f"{code}{' ' if i == last else '-'}{one_line(text, MAX_TEXT)}\r\n"
        for i, text in enumerate(texts)
    )
    return "".join(lines).encode("ascii", "replace")


@dataclass(frozen=True)
class Reply:
    """One complete (possibly multi-line) SMTP reply."""

    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(line for line in self.lines if line)


class MalformedReply(Exception):
    """The server sent something that is not an SMTP reply."""


class ReplyReader:
    """Whole replies from a server's lines."""

    def __init__(self, lines: LineBuffer) -> None:
        self._lines = lines
        self._pending: list[str] = []  # texts of the lines of the reply read so far

    def next_reply(self) -> Reply | None:
        """The next complete reply, or None until it has arrived; raises MalformedReply, and
        LineTooLong for an overlong line."""
        while (raw := self._lines.next_line()) is not None:
            code, last, text = _parse_line(raw)
            self._pending.append(text)
            if last:
                lines, self._pending = tuple(self._pending), []
                return Reply(code, lines)
        return None


def _parse_line(raw: bytes) -> tuple[int, bool, str]:
    """(code, is_last_line, text) of one reply line."""
    head, separator = raw[:3], raw[3:4]
    if len(head) != 3 or not head.isdigit() or separator not in (b"", b" ", b"-"):
        raise MalformedReply("not an SMTP reply line")
    return int(head), separator != b"-", raw[4:].decode("utf-8", "replace")
