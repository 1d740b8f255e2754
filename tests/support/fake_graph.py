"""A local fake of the Microsoft Graph endpoints that send mail, served over real HTTP on 127.0.0.1.

It checks what Graph checks, the way Graph answers: the bearer token (signature, expiry, audience,
Mail.Send for sending, Mail.ReadWrite for drafts and uploads; for a user's token on another's
mailbox, a shared one, only Mail.Send.Shared and Mail.ReadWrite.Shared, and only with Full Access
there, `grant_full_access`), the 4 MiB request limit (413, or with `too_large_as_400` the 400
Graph has also been seen to answer; `send_mail_limit` lowers it for sendMail), the mailbox
(unknown: 404 ErrorInvalidUser; not on Exchange Online: MailboxNotEnabledForRESTAPI), the From
address (ErrorSendAsDenied unless the sender, the signed-in user for a delegated token, is it or
has Send As on it, `grant_send_as`), the recipients (ErrorInvalidRecipients), upload sessions (at
least 2 MiB, sequential Content-Range pieces of at most 4 MiB, no Authorization header on the
pre-authenticated URL). Errors come in Graph's JSON with a request-id. `fail_next()` injects
throttling, outages and refusals.

What was sent is kept for tests to compare byte for byte: `deliveries` (the MIME as received, or
the draft's fields and attachment bytes), `sent_items()` (the copy in Sent Items), `drafts()`.

Endpoints, under /v1.0/users/{mailbox}: POST sendMail (base64 MIME as text/plain, or JSON),
POST messages, GET and DELETE messages/{id}, POST messages/{id}/attachments,
POST messages/{id}/attachments/createUploadSession, POST messages/{id}/send; and
PUT /upload/{session} (the upload URL).
"""

from __future__ import annotations

import base64
import binascii
import collections
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from typing import Any
from urllib.parse import unquote

from tests.support.fake_graph_http import (
    FAILURES,
    HELD,
    REQUEST_LIMIT,
    STEPS,
    GraphError,
    GraphHandler,
    Request,
    iso_time,
)
from tests.support.graph_tokens import GraphCaller, InvalidToken, verify_graph_token
from tests.support.local_http import LocalService

__all__ = ["REQUEST_LIMIT", "UPLOAD_MINIMUM", "Attachment", "FakeGraph", "Message"]

UPLOAD_MINIMUM = 2 * 1024 * 1024  # createUploadSession refuses smaller attachments
SEND = "Mail.Send"
READ_WRITE = "Mail.ReadWrite"
SHARED = ".Shared"  # the delegated permissions for mailboxes other than the user's own


@dataclass
class Attachment:
    name: str
    content_type: str
    content: bytes
    is_inline: bool = False
    content_id: str | None = None
    uploaded: bool = False  # through an upload session rather than in a request


@dataclass
class Message:
    """A draft, or a sent message (then also its Sent Items copy)."""

    id: str
    mailbox: str
    fields: dict[str, Any] = field(default_factory=dict)
    attachments: list[Attachment] = field(default_factory=list)
    mime: bytes | None = None  # what sendMail received, decoded from base64
    folder: str = "drafts"

    def addresses(self, kind: str) -> list[str]:
        """Addresses of "to", "cc", "bcc" or "from", from the MIME or the JSON fields."""
        if self.mime is not None:
            headers = message_from_bytes(self.mime, policy=policy.default)
            return [a.addr_spec for value in headers.get_all(kind, [])
                    for a in getattr(value, "addresses", ())]
        if kind == "from":
            entries = [self.fields["from"]] if self.fields.get("from") else []
        else:
            entries = self.fields.get(f"{kind}Recipients") or []
        return [entry["emailAddress"]["address"] for entry in entries]


@dataclass
class UploadSession:
    mailbox: str
    message_id: str
    item: dict[str, Any]
    received: bytearray = field(default_factory=bytearray)


@dataclass
class Mailbox:
    address: str
    rest_enabled: bool = True
    full_access: set[str] = field(default_factory=set)  # users who may open it (delegates)


class FakeGraph(LocalService):
    """start() it and point the client's graph_url at `.url`."""

    thread_name = "fake-graph"
    handler = GraphHandler

    def __init__(self, token_key: bytes, *, clock: Callable[[], float] = time.time,
                 retry_after: int = 1, hang_seconds: float = 5.0,
                 max_message_size: int = 150 * 1024 * 1024,
                 send_mail_limit: int = REQUEST_LIMIT) -> None:
        super().__init__()
        self.token_key = token_key
        self.clock = clock
        self.retry_after = retry_after
        self.hang_seconds = hang_seconds
        self.max_message_size = max_message_size
        # sendMail requests over this many bytes get 413 like any request over 4 MiB; lower it
        # to stand for a MIME message whose base64 comes out over the limit of the day
        self.send_mail_limit = send_mail_limit
        self.too_large_as_400 = False  # 400 BadRequest "Maximum request length exceeded."
        self._lock = threading.RLock()
        self._mailboxes: dict[str, Mailbox] = {}
        self._messages: dict[str, Message] = {}
        self._sessions: dict[str, UploadSession] = {}
        self._revoked: set[str] = set()
        self._seen: set[str] = set()  # ids of the tokens presented so far
        self._app_scopes: dict[str, set[str]] = {}
        self._send_as: dict[str, set[str]] = {}  # who -> the addresses it may send as
        self._failures: collections.deque[tuple[str | None, str]] = collections.deque()
        self.deliveries: list[Message] = []
        self.requests: list[Request] = []
        self.upload_puts: list[int] = []  # bytes in each PUT to an upload URL

    # -- set-up by tests --

    def add_mailbox(self, address: str, *, rest_enabled: bool = True,
                    send_as: tuple[str, ...] = ()) -> None:
        """A mailbox Graph knows; it may send as itself and as the `send_as` addresses."""
        with self._lock:
            self._mailboxes[address.lower()] = Mailbox(address, rest_enabled)
            self._send_as[address.lower()] = {a.lower() for a in send_as}

    def grant_full_access(self, mailbox: str, user: str) -> None:
        """`user` may open `mailbox` (Add-MailboxPermission -AccessRights FullAccess)."""
        with self._lock:
            self._mailboxes[mailbox.lower()].full_access.add(user.lower())

    def grant_send_as(self, mailbox: str, user: str) -> None:
        """`user` may send as `mailbox` (Add-RecipientPermission -AccessRights SendAs)."""
        with self._lock:
            self._send_as.setdefault(user.lower(), set()).add(mailbox.lower())

    def restrict_app(self, client_id: str, mailboxes: list[str]) -> None:
        """App-only tokens of `client_id` may use these mailboxes only (Exchange RBAC)."""
        with self._lock:
            self._app_scopes[client_id] = {m.lower() for m in mailboxes}

    def revoke(self, access_token: str) -> None:
        """Graph answers 401 to this token from now on (as after a password reset)."""
        caller = verify_graph_token(self.token_key, access_token, self.clock())
        with self._lock:
            self._revoked.add(caller.token_id)

    def revoke_seen(self) -> None:
        """Graph answers 401 to every token presented to it so far."""
        with self._lock:
            self._revoked |= self._seen

    def fail_next(self, n: int, kind: str, step: str | None = None) -> None:
        """The next n requests (of `step` only, if given; see STEPS) fail: one of FAILURES
        (429 comes with Retry-After), or "timeout" (held, then closed) or "reset"."""
        if kind not in FAILURES and kind not in HELD:
            raise ValueError(f"kind must be one of {', '.join([*FAILURES, *HELD])}")
        if step is not None and step not in STEPS:
            raise ValueError(f"step must be one of {', '.join(STEPS)}")
        with self._lock:
            self._failures.extend([(step, kind)] * n)

    def sent_items(self, mailbox: str) -> list[Message]:
        with self._lock:
            return [m for m in self._messages.values()
                    if m.mailbox.lower() == mailbox.lower() and m.folder == "sentitems"]

    def drafts(self, mailbox: str) -> list[Message]:
        with self._lock:
            return [m for m in self._messages.values()
                    if m.mailbox.lower() == mailbox.lower() and m.folder == "drafts"]

    def steps(self) -> list[str]:
        with self._lock:
            return [r.step for r in self.requests]

    # -- the service, called by the handler threads --

    def _record(self, request: Request) -> str | None:
        """Count the request; the failure to inject, if one is queued for its step."""
        with self._lock:
            self.requests.append(request)
            for index, (step, kind) in enumerate(self._failures):
                if step is None or step == request.step:
                    del self._failures[index]
                    return kind
            return None

    def _caller(self, authorization: str | None, mailbox: str, permission: str) -> GraphCaller:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
        try:
            caller = verify_graph_token(self.token_key, token, self.clock())
        except InvalidToken as e:
            raise GraphError(401, "InvalidAuthenticationToken", str(e)) from None
        self._seen.add(caller.token_id)
        if caller.token_id in self._revoked:
            raise GraphError(401, "InvalidAuthenticationToken", "Access token has been revoked.")
        box = self._mailboxes.get(mailbox.lower())
        if box is None:
            raise GraphError(404, "ErrorInvalidUser", f"The requested user '{mailbox}' is "
                             "invalid.")
        if not self._allowed(caller, box, permission):
            raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and "
                             "try again.")
        if not box.rest_enabled:
            code, message = FAILURES["not_rest_enabled"][1:]
            raise GraphError(404, code, message)
        return caller

    def _allowed(self, caller: GraphCaller, box: Mailbox, permission: str) -> bool:
        """App-only: the role, in the app's Exchange scope if any. A user: the permission or its
        .Shared form for the user's own mailbox; for another's, the .Shared form and Full Access."""
        if caller.mailbox is None:
            scope = self._app_scopes.get(caller.client_id)
            return permission in caller.permissions and (
                scope is None or box.address.lower() in scope)
        user = caller.mailbox.lower()
        if permission + SHARED not in caller.permissions:
            return user == box.address.lower() and permission in caller.permissions
        return user == box.address.lower() or user in box.full_access

    def _message(self, mailbox: str, message_id: str) -> Message:
        message = self._messages.get(message_id)
        if message is None or message.mailbox.lower() != mailbox.lower():
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in "
                             "the store.")
        return message

    def _deliver(self, message: Message, caller: GraphCaller) -> None:
        """Checks Exchange makes when a message is submitted; then it is sent. The sender is the
        signed-in user of a delegated token, else the mailbox; no From means the mailbox's."""
        who = (caller.mailbox or message.mailbox).lower()
        for sender in message.addresses("from") or [message.mailbox]:
            if sender.lower() not in {who, *self._send_as.get(who, ())}:
                code, text = FAILURES["send_as_denied"][1:]
                raise GraphError(403, code, text)
        recipients = [a for kind in ("to", "cc", "bcc") for a in message.addresses(kind)]
        bad = [a for a in recipients if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", a)]
        if not recipients or bad:
            raise GraphError(400, "ErrorInvalidRecipients", "At least one recipient is not "
                             f"valid., Recipient '{bad[0] if bad else ''}' is not resolved.")
        size = len(message.mime or b"") + sum(len(a.content) for a in message.attachments)
        if size > self.max_message_size:
            raise GraphError(400, "ErrorMessageSizeExceeded", "The message exceeds the maximum "
                             "supported size.")
        message.folder = "sentitems"
        self._messages[message.id] = message
        self.deliveries.append(message)

    def handle(self, method: str, path: list[str], headers: dict[str, str],
               body: bytes) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        """(status, JSON answer or None, extra headers) for a routed request."""
        with self._lock:
            if path[0] == "upload":
                return self._upload(path[1], headers, body)
            mailbox, rest = unquote(path[2]), path[3:]
            auth = headers.get("authorization")
            if rest == ["sendMail"]:
                caller = self._caller(auth, mailbox, SEND)
                self._deliver(self._received(mailbox, headers, body), caller)
                return 202, None, {}
            if rest[-1:] == ["send"]:
                caller = self._caller(auth, mailbox, SEND)
                draft = self._message(mailbox, rest[1])
                self._deliver(draft, caller)
                return 202, None, {}
            self._caller(auth, mailbox, READ_WRITE)
            if rest == ["messages"]:
                fields = _json(body)
                draft = Message(f"AAMk{secrets.token_urlsafe(24)}", mailbox)
                draft.attachments = [_attachment(a) for a in fields.pop("attachments", [])]
                draft.fields = fields
                self._messages[draft.id] = draft
                return 201, {"id": draft.id, "isDraft": True, **fields}, {}
            draft = self._message(mailbox, rest[1])
            if method == "GET":
                return 200, {"id": draft.id, "isDraft": draft.folder == "drafts",
                             **draft.fields}, {}
            if method == "DELETE":
                del self._messages[draft.id]
                return 204, None, {}
            if rest[2:] == ["attachments"]:
                draft.attachments.append(_attachment(_json(body)))
                return 201, {"id": secrets.token_urlsafe(16)}, {}
            return self._start_upload(mailbox, draft, _json(body).get("AttachmentItem") or {})

    def _received(self, mailbox: str, headers: dict[str, str], body: bytes) -> Message:
        message = Message(f"AAMk{secrets.token_urlsafe(24)}", mailbox)
        if headers.get("content-type", "").startswith("text/plain"):
            try:
                message.mime = base64.b64decode(b"".join(body.split()), validate=True)
            except binascii.Error:
                raise GraphError(400, "ErrorMimeContentInvalidBase64String", "Invalid base64 "
                                 "string for MIME content.") from None
            return message
        payload = _json(body).get("message") or {}
        message.attachments = [_attachment(a) for a in payload.pop("attachments", [])]
        message.fields = payload
        return message

    def _start_upload(self, mailbox: str, draft: Message,
                      item: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        size = item.get("size")
        if item.get("attachmentType") != "file" or not item.get("name") or \
                not isinstance(size, int):
            raise GraphError(400, "ErrorInvalidRequest", "AttachmentItem needs attachmentType "
                             "file, a name and a size.")
        if size < UPLOAD_MINIMUM:
            raise GraphError(400, "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize",
                             "Attachment size must be greater than the minimum size.")
        if size > self.max_message_size:
            raise GraphError(400, "ErrorMessageSizeExceeded", "The message exceeds the maximum "
                             "supported size.")
        session = secrets.token_urlsafe(24)
        self._sessions[session] = UploadSession(mailbox, draft.id, item)
        return 201, {"uploadUrl": f"{self.url}/upload/{session}?authtoken="
                     f"{secrets.token_urlsafe(32)}", "expirationDateTime": iso_time(self.clock() + 900),
                     "nextExpectedRanges": ["0-"]}, {}

    def _upload(self, name: str, headers: dict[str, str],
                body: bytes) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        session = self._sessions.get(name)
        if session is None:
            raise GraphError(404, "ErrorItemNotFound", "The upload session was not found.")
        if "authorization" in headers:
            raise GraphError(401, "InvalidAuthenticationToken", "The upload URL is "
                             "pre-authenticated: send no Authorization header.")
        self.upload_puts.append(len(body))
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", headers.get("content-range", ""))
        total = session.item["size"]
        if match is None:
            raise GraphError(400, "ErrorInvalidRequest", "Content-Range is missing or invalid.")
        first, last, declared = (int(g) for g in match.groups())
        if declared != total or first != len(session.received) or last < first or \
                last >= total or last - first + 1 != len(body):
            raise GraphError(416, "ErrorInvalidRange", f"Expected the range starting at "
                             f"{len(session.received)} of {total} bytes.")
        session.received += body
        if len(session.received) < total:
            return 200, {"expirationDateTime": iso_time(self.clock() + 900),
                         "nextExpectedRanges": [f"{len(session.received)}-"]}, {}
        del self._sessions[name]
        item = session.item
        draft = self._message(session.mailbox, session.message_id)
        draft.attachments.append(Attachment(
            item["name"], item.get("contentType", "application/octet-stream"),
            bytes(session.received), bool(item.get("isInline")), item.get("contentId"),
            uploaded=True))
        return 201, None, {"Location": f"{self.url}/v1.0/users('{session.mailbox}')/messages("
                                       f"'{draft.id}')/attachments('{secrets.token_hex(8)}')"}


def _json(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except ValueError:
        raise GraphError(400, "BadRequest", "Unable to read JSON request payload.") from None
    if not isinstance(payload, dict):
        raise GraphError(400, "BadRequest", "The request payload must be a JSON object.")
    return payload


def _attachment(item: dict[str, Any]) -> Attachment:
    if item.get("@odata.type") != "#microsoft.graph.fileAttachment" or \
            not isinstance(item.get("contentBytes"), str) or not item.get("name"):
        raise GraphError(400, "ErrorInvalidRequest", "A fileAttachment needs a name and "
                         "contentBytes.")
    try:
        content = base64.b64decode(item["contentBytes"], validate=True)
    except binascii.Error:
        raise GraphError(400, "ErrorInvalidRequest", "contentBytes is not base64.") from None
    return Attachment(item["name"], item.get("contentType", "application/octet-stream"),
                      content, bool(item.get("isInline")), item.get("contentId"))
