"""The body of a MIME sendMail request: base64 of the message as it came, its recipient fields
fitted to the SMTP envelope when they differ (a Bcc field for the envelope-only recipients; To,
Cc and Bcc without those the envelope leaves out), streamed from the spool."""

from __future__ import annotations

import itertools
from email.utils import formataddr
from typing import IO

from .addresses import RECIPIENT_FIELDS, EnvelopeFit, addresses
from .mime import Head, raw_chunks
from .streams import StreamBody, base64_chunks, base64_length


def for_envelope(head: Head, fit: EnvelopeFit) -> tuple[bytes, int]:
    """(new header block, where the original message's header block ends): the message to send
    is the new block followed by the original from that offset on. When the header and the
    envelope agree, the header block is the original's, byte for byte; otherwise the recipient
    fields it rewrites come first, the other fields as they were."""
    if fit.changes_nothing:
        return head.raw, len(head.raw)
    eol = head.line_end
    rewritten = RECIPIENT_FIELDS if fit.left_out else ("Bcc",)
    fields, raw = b"", head.raw
    for name in rewritten:
        kept = [(display, address) for display, address in addresses(head.headers, name)
                if fit.keeps(address)]
        if name == "Bcc":
            kept += [("", address) for address in fit.extra_bcc]
        if kept:
            fields += (name.encode() + b": " + (b"," + eol + b" ").join(
                _mailbox(display, address) for display, address in kept) + eol)
        raw = _without_field(raw, name.lower().encode())
    return fields + raw, len(head.raw)


def _mailbox(display: str, address: str) -> bytes:
    """One address for a header field, its display name encoded as RFC 2047 wants."""
    try:
        return formataddr((display, address), charset="utf-8").encode("ascii")
    except UnicodeError:  # an internationalised address (SMTPUTF8): as it came, without a name
        return address.encode("utf-8")


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


def mime_size(head: Head, fit: EnvelopeFit, size: int) -> int:
    """Bytes of MIME that sendMail would carry (before base64)."""
    prefix, skip = for_envelope(head, fit)
    return len(prefix) + size - skip


def send_mail_body(head: Head, fit: EnvelopeFit, message: IO[bytes],
                   size: int) -> StreamBody:
    prefix, skip = for_envelope(head, fit)
    raw = itertools.chain([prefix], raw_chunks(message, skip, size))
    return StreamBody(base64_chunks(raw), base64_length(len(prefix) + size - skip))
