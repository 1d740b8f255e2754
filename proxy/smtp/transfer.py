"""The two ways a message's bytes arrive after its envelope (RFC 5321 DATA, RFC 3030 BDAT), and
the envelope's own syntax, sans I/O.

`DotDecoder` takes DATA's raw stream in any pieces and gives the message back dot-unstuffed,
holding at most two bytes (a possible end line) between pieces, so a message of any size passes
through in the pieces it arrived in. `mail_arguments` and `rcpt_arguments` read MAIL FROM and
RCPT TO, with the ESMTP parameters the proxy offers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DOT = 0x2E
# An address in a path: no spaces, no brackets, no control characters (RFC 5321 4.1.2, loosely:
# the mail service judges the address itself; this only keeps garbage out of the envelope).
_ADDRESS = re.compile(rb"[^\x00-\x20\x7f<>]*")
_RECIPIENT = re.compile(rb"[^\x00-\x20\x7f<>@]+@[^\x00-\x20\x7f<>@]+")


class DotDecoder:
    """DATA's content: the lines up to one holding a single dot, with the dot that starts any
    other line removed (RFC 5321 4.5.2). A bare LF ends a line too, as some printers send."""

    def __init__(self) -> None:
        self._at_line_start = True
        self._held = b""  # "." or ".\r" at the end of a piece: maybe the end, maybe not

    def feed(self, chunk: bytes) -> tuple[bytes, bytes | None]:
        """(message bytes, None) while the message goes on; once its end line has arrived,
        (the last message bytes, what the client sent after the end line)."""
        data = self._held + chunk if self._held else chunk
        self._held = b""
        out: list[bytes] = []
        pos, size = 0, len(data)
        while pos < size:
            if self._at_line_start:
                if data[pos] == DOT:
                    tail = data[pos : pos + 3]
                    if tail.startswith((b".\r\n", b".\n")):
                        end_line = 3 if tail.startswith(b".\r\n") else 2
                        return b"".join(out), data[pos + end_line :]
                    if tail in (b".", b".\r"):
                        self._held = tail
                        break
                    pos += 1  # a stuffed dot: the line's own text follows
                self._at_line_start = False
            end = data.find(b"\n.", pos)
            if end < 0:
                out.append(data[pos:])
                self._at_line_start = data.endswith(b"\n")
                break
            out.append(data[pos : end + 1])
            pos = end + 1
            self._at_line_start = True
        return b"".join(out), None


class EnvelopeError(ValueError):
    """A MAIL or RCPT command the proxy refuses: `reply` is the SMTP answer, "CODE x.y.z text"."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


@dataclass(frozen=True)
class MailArguments:
    sender: str  # "" for the null sender <>
    size: int | None  # what SIZE= declared


def _path(argument: bytes, keyword: bytes) -> tuple[bytes, list[bytes]]:
    """The address in `FROM:<a@b> PARAMS` (keyword FROM or TO) and the parameters after it.
    Lenient like the servers printers were set up against: a space after the colon, or an
    address without angle brackets, is accepted."""
    head, colon, rest = argument.partition(b":")
    if not colon or head.strip().upper() != keyword:
        raise EnvelopeError(f"501 5.5.4 Syntax: {keyword.decode()}:<address>")
    rest = rest.lstrip()
    if rest.startswith(b"<"):
        address, closing, params = rest[1:].partition(b">")
        if not closing:
            raise EnvelopeError(f"501 5.1.7 Syntax: {keyword.decode()}:<address> (no closing >)")
    else:
        address, _, params = rest.partition(b" ")
    if not _ADDRESS.fullmatch(address):
        raise EnvelopeError("501 5.1.7 Bad address syntax")
    return address, params.split()


def mail_arguments(argument: bytes, max_size: int) -> MailArguments:
    """MAIL FROM's sender and declared size; EnvelopeError for what is refused."""
    address, params = _path(argument, b"FROM")
    size = None
    for param in params:
        name, _, value = param.partition(b"=")
        name = name.upper()
        if name == b"SIZE" and value.isdigit() and len(value) <= 20:
            size = int(value)
            if size > max_size:
                raise EnvelopeError(too_large(max_size))
        # AUTH= (RFC 4954 5) says who submitted the message: nothing to do with it here.
        elif not (name == b"BODY" and value.upper() in (b"7BIT", b"8BITMIME") or name == b"AUTH"):
            shown = param.decode("ascii", "replace")
            raise EnvelopeError(f"555 5.5.4 Unsupported MAIL parameter {shown}")
    return MailArguments(address.decode("utf-8", "replace"), size)


def too_large(max_size: int) -> str:
    """The answer to a message over the size limit (RFC 3463 5.3.4)."""
    return f"552 5.3.4 Message size exceeds fixed maximum message size ({max_size} bytes)"


def rcpt_arguments(argument: bytes) -> str:
    """RCPT TO's address; EnvelopeError for what is refused (no DSN parameters are offered)."""
    address, params = _path(argument, b"TO")
    if params:
        shown = params[0].decode("ascii", "replace")
        raise EnvelopeError(f"555 5.5.4 Unsupported RCPT parameter {shown}")
    if not _RECIPIENT.fullmatch(address):
        raise EnvelopeError("501 5.1.3 Bad recipient address syntax")
    return address.decode("utf-8", "replace")


def bdat_arguments(argument: bytes) -> tuple[int, bool] | None:
    """(chunk size, LAST) of `BDAT size [LAST]`, or None when it cannot be read."""
    words = argument.split()
    if not 1 <= len(words) <= 2 or not words[0].isdigit() or len(words[0]) > 20:
        return None
    if len(words) == 2 and words[1].upper() != b"LAST":
        return None
    return int(words[0]), len(words) == 2
