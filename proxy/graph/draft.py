"""A Graph draft message built from a MIME message in the spool, for messages too large for one
sendMail request.

The draft's JSON carries what Graph needs to rebuild the message: subject, From, To, Cc, Bcc
(plus the envelope-only recipients), Reply-To, importance, one body (the HTML alternative when
there is one, else the text) and the attachments. Attachments under UPLOAD_THRESHOLD go in as
fileAttachment with contentBytes, in the create request while it stays under Graph's request
limit, else one request each; larger ones go through upload sessions, streamed from the spool.
"""

from __future__ import annotations

import codecs
import itertools
import json
import mimetypes
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import IO, Any

from .addresses import EnvelopeFit, addresses
from .mime import Head, Leaf, decoded, decoded_size
from .streams import StreamBody, base64_chunks, base64_length

REQUEST_BUDGET = 4_000_000  # bytes of JSON per request, under Graph's limit of 4 MiB
UPLOAD_THRESHOLD = 3_000_000  # attachments of this size or more go through upload sessions
BODY_TYPES = ("text/plain", "text/html")
IMPORTANCE = {"high": "high", "urgent": "high", "low": "low", "non-urgent": "low",
              "normal": "normal"}


class BodyTooLarge(ValueError):
    """The message text alone is over Graph's request limit."""


@dataclass(frozen=True)
class FilePart:
    """One attachment: where it is in the spool and what Graph is told about it."""

    leaf: Leaf
    name: str
    content_type: str
    size: int  # decoded bytes
    content_id: str | None = None
    inline: bool = False

    def metadata(self) -> dict[str, Any]:
        item: dict[str, Any] = {"name": self.name, "contentType": self.content_type,
                                "isInline": self.inline}
        if self.content_id:
            item["contentId"] = self.content_id
        return item

    def json(self, message: IO[bytes]) -> tuple[list[Iterable[bytes]], int]:
        """The fileAttachment JSON with contentBytes: (pieces, length). The base64 is streamed
        from the spool into the JSON (it is plain ASCII, so it needs no escaping)."""
        head = json.dumps({"@odata.type": "#microsoft.graph.fileAttachment",
                           **self.metadata()}).encode()[:-1] + b', "contentBytes": "'
        pieces = [[head], base64_chunks(decoded(message, self.leaf)), [b'"}']]
        return pieces, len(head) + base64_length(self.size) + 2

    def request(self, message: IO[bytes]) -> StreamBody:
        """The body of POST .../attachments."""
        pieces, length = self.json(message)
        return StreamBody(itertools.chain.from_iterable(pieces), length)


@dataclass
class DraftPlan:
    fields: dict[str, Any]  # the message JSON without attachments
    in_create: list[FilePart] = field(default_factory=list)  # sent with the create request
    posted: list[FilePart] = field(default_factory=list)  # one POST .../attachments each
    uploaded: list[FilePart] = field(default_factory=list)  # one upload session each

    def create_request(self, message: IO[bytes]) -> StreamBody:
        """The JSON of POST /messages, with the attachments that fit streamed into it."""
        head = json.dumps(self.fields).encode()
        if not self.in_create:
            return StreamBody([head], len(head))
        pieces: list[Iterable[bytes]] = [[head[:-1] + b', "attachments": [']]
        length = len(head) - 1 + len(b', "attachments": [') + len(b"]}")
        for number, part in enumerate(self.in_create):
            if number:
                pieces.append([b", "])
                length += 2
            part_pieces, part_length = part.json(message)
            pieces += part_pieces
            length += part_length
        pieces.append([b"]}"])
        return StreamBody(itertools.chain.from_iterable(pieces), length)


def plan_draft(message: IO[bytes], head: Head, leaves: list[Leaf],
               fit: EnvelopeFit) -> DraftPlan:
    headers = head.headers
    body, consumed = _body(leaves)
    fields: dict[str, Any] = {
        "subject": str(headers.get("Subject", "")),
        "body": _body_json(message, body),
        "toRecipients": _recipients(headers, "To", fit),
        "ccRecipients": _recipients(headers, "Cc", fit),
        "bccRecipients": (_recipients(headers, "Bcc", fit)
                          + [_recipient("", a) for a in fit.extra_bcc]),
        "importance": _importance(headers),
    }
    sender = addresses(headers, "From")[:1]
    if sender:
        fields["from"] = _recipient(*sender[0])
    reply_to = _recipients(headers, "Reply-To")
    if reply_to:
        fields["replyTo"] = reply_to
    plan = DraftPlan(fields)
    budget = REQUEST_BUDGET - len(json.dumps(fields).encode())
    for number, leaf in enumerate(leaves, 1):
        if any(leaf is body_leaf for body_leaf in consumed):
            continue
        part = _file_part(message, leaf, number)
        if part.size >= UPLOAD_THRESHOLD:
            plan.uploaded.append(part)
            continue
        cost = part.json(message)[1] + 2  # its JSON and a separator; nothing is read yet
        if cost <= budget:
            plan.in_create.append(part)
            budget -= cost
        else:
            plan.posted.append(part)
    return plan


def _body(leaves: list[Leaf]) -> tuple[Leaf | None, list[Leaf]]:
    """The leaf that becomes the body, and every leaf it stands for: the first text part that is
    not an attachment, or the HTML one among its alternatives."""
    first = next((leaf for leaf in leaves if _is_text_body(leaf)), None)
    if first is None:
        return None, []
    if first.alternative is None:
        return first, [first]
    siblings = [leaf for leaf in leaves
                if leaf.alternative == first.alternative and _is_text_body(leaf)]
    html = next((leaf for leaf in siblings if leaf.headers.get_content_type() == "text/html"),
                first)
    return html, siblings


def _is_text_body(leaf: Leaf) -> bool:
    headers = leaf.headers
    return (headers.get_content_type() in BODY_TYPES
            and headers.get_content_disposition() != "attachment"
            and not headers.get_filename())


def _body_json(message: IO[bytes], leaf: Leaf | None) -> dict[str, str]:
    if leaf is None:
        return {"contentType": "text", "content": ""}
    if leaf.encoded_size > REQUEST_BUDGET:
        raise BodyTooLarge("the message text is over the 4 MB Microsoft Graph accepts; send "
                           "it as an attachment instead")
    charset = str(leaf.headers.get_param("charset", "us-ascii"))
    try:
        codecs.lookup(charset)
    except (LookupError, ValueError):  # unknown, or not even a name
        charset = "utf-8"
    content = b"".join(decoded(message, leaf)).decode(charset, "replace")
    kind = "html" if leaf.headers.get_content_type() == "text/html" else "text"
    return {"contentType": kind, "content": content}


def _file_part(message: IO[bytes], leaf: Leaf, number: int) -> FilePart:
    headers = leaf.headers
    content_type = headers.get_content_type()
    content_id = str(headers.get("Content-ID", "")).strip().strip("<>") or None
    inline = bool(content_id) and headers.get_content_disposition() != "attachment"
    name = headers.get_filename()  # Content-Disposition's filename, else Content-Type's name
    if not name or not name.strip():
        extension = mimetypes.guess_extension(content_type) or ".bin"
        name = f"part-{number}{extension}"
    return FilePart(leaf, name.strip(), content_type, decoded_size(message, leaf), content_id,
                    inline)


def _recipient(name: str, address: str) -> dict[str, Any]:
    email: dict[str, str] = {"address": address}
    if name:
        email["name"] = name
    return {"emailAddress": email}


def _recipients(headers: EmailMessage, field_name: str,
                fit: EnvelopeFit | None = None) -> list[dict[str, Any]]:
    return [_recipient(name, address) for name, address in addresses(headers, field_name)
            if fit is None or fit.keeps(address)]


def _importance(headers: EmailMessage) -> str:
    for name in ("Importance", "Priority"):
        value = str(headers.get(name, "")).strip().lower()
        if value in IMPORTANCE:
            return IMPORTANCE[value]
    priority = str(headers.get("X-Priority", "")).strip()[:1]
    return {"1": "high", "2": "high", "4": "low", "5": "low"}.get(priority, "normal")
