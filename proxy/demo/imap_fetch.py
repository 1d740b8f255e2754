"""FETCH answers of the demo IMAP server (proxy.demo.imap_server), for `xoauth2-proxy demo` only.

Whole messages, headers, texts, HEADER.FIELDS selections and partial ranges of one in-memory
message; ENVELOPE and BODYSTRUCTURE are not implemented and get a BAD.
"""

from __future__ import annotations

import re

from .mailbox import Message, imap_date

SECTION = re.compile(r"BODY(\.PEEK)?\[([^\]]*)\](?:<(\d+)\.(\d+)>)?", re.IGNORECASE)
HEADER_FIELDS = re.compile(r"HEADER\.FIELDS(\.NOT)? \(([^)]*)\)$", re.IGNORECASE)


class Unsupported(Exception):
    """A request this minimal server does not implement; the text goes into the BAD answer."""


def fetch(message: Message, names: list[str], uid: bool) -> bytes:
    """The inside of one FETCH response; reading a body without PEEK sets \\Seen."""
    parts: list[bytes] = []
    if uid and "UID" not in (n.upper() for n in names):
        parts.append(b"UID %d" % message.uid)  # RFC 3501: UID FETCH always answers the UID
    was_seen = "\\Seen" in message.flags
    for name in names:
        upper = name.upper()
        if upper == "UID":
            parts.append(b"UID %d" % message.uid)
        elif upper == "FLAGS":
            parts.append(b"FLAGS (%s)" % " ".join(sorted(message.flags)).encode())
        elif upper == "INTERNALDATE":
            parts.append(b'INTERNALDATE "%s"' % imap_date(message.internal_date).encode())
        elif upper == "RFC822.SIZE":
            parts.append(b"RFC822.SIZE %d" % len(message.data))
        elif upper in ("RFC822", "RFC822.HEADER", "RFC822.TEXT"):
            section = {"RFC822": "", "RFC822.HEADER": "HEADER", "RFC822.TEXT": "TEXT"}[upper]
            parts.append(upper.encode() + b" " + _literal(_section(message.data, section)))
            if upper != "RFC822.HEADER":
                message.flags.add("\\Seen")
        elif match := SECTION.fullmatch(name):
            peek, spec, start, count = match.groups()
            data = _section(message.data, spec)
            label = f"BODY[{spec}]"
            if start is not None:
                data = data[int(start): int(start) + int(count)]
                label += f"<{start}>"
            parts.append(label.encode() + b" " + _literal(data))
            if not peek:
                message.flags.add("\\Seen")
        else:
            raise Unsupported(f"FETCH {name} is not supported by the demo server")
    if not was_seen and "\\Seen" in message.flags and "FLAGS" not in (n.upper() for n in names):
        parts.append(b"FLAGS (%s)" % " ".join(sorted(message.flags)).encode())
    return b" ".join(parts)


def _section(data: bytes, spec: str) -> bytes:
    head, _, body = data.partition(b"\r\n\r\n")
    upper = spec.upper()
    if upper == "":
        return data
    if upper == "HEADER":
        return head + b"\r\n\r\n"
    if upper in ("TEXT", "1"):
        return body
    match = HEADER_FIELDS.match(spec)
    if match is None:
        raise Unsupported(f"BODY[{spec}] is not supported by the demo server")
    wanted = {name.lower() for name in match.group(2).split()}
    fields = re.split(rb"\r\n(?![ \t])", head)  # continuation lines stay with their field
    kept = [f for f in fields
            if (f.split(b":", 1)[0].strip().decode().lower() in wanted) != bool(match.group(1))]
    return b"".join(f + b"\r\n" for f in kept) + b"\r\n"


def _literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data
