"""The body of a MIME sendMail request: base64 of the message as it came, with a Bcc field for
the envelope-only recipients when there are any, streamed from the spool."""

from __future__ import annotations

import itertools
from typing import IO

from .addresses import addresses
from .mime import Head, raw_chunks
from .streams import StreamBody, base64_chunks, base64_length


def with_bcc(head: Head, extra_bcc: list[str]) -> tuple[bytes, int]:
    """(new header block, where the original message's header block ends): the message to send
    is the new block followed by the original from that offset on. Without extra recipients the
    header block is the original's, byte for byte."""
    if not extra_bcc:
        return head.raw, len(head.raw)
    eol = head.line_end
    kept = [address for _, address in addresses(head.headers, "Bcc")]
    field = b"Bcc: " + (b"," + eol + b" ").join(a.encode("utf-8") for a in kept + extra_bcc)
    return field + eol + _without_field(head.raw, b"bcc"), len(head.raw)


def _without_field(raw: bytes, name: bytes) -> bytes:
    """The header block minus every field called `name` (with its folded lines)."""
    out: list[bytes] = []
    dropping = False
    for line in raw.splitlines(keepends=True):
        if line[:1] not in (b" ", b"\t"):
            dropping = line.split(b":", 1)[0].strip().lower() == name
        if not dropping:
            out.append(line)
    return b"".join(out)


def mime_size(head: Head, extra_bcc: list[str], size: int) -> int:
    """Bytes of MIME that sendMail would carry (before base64)."""
    prefix, skip = with_bcc(head, extra_bcc)
    return len(prefix) + size - skip


def send_mail_body(head: Head, extra_bcc: list[str], message: IO[bytes],
                   size: int) -> StreamBody:
    prefix, skip = with_bcc(head, extra_bcc)
    raw = itertools.chain([prefix], raw_chunks(message, skip, size))
    return StreamBody(base64_chunks(raw), base64_length(len(prefix) + size - skip))
