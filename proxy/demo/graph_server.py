"""A stand-in for Microsoft Graph's sendMail, for `xoauth2-proxy demo` only.

POST /v1.0/users/{mailbox}/sendMail with `Content-Type: text/plain` and the MIME message in
base64, as the proxy sends every message up to about 3 MB (the demo's Graph listener takes no
more than 2 MB); a bearer token the demo authority issued for Graph; the demo mailbox only.
It answers 202 like Graph and stores the message as a submission (to To, Cc and Bcc), so it
lands in the demo INBOX when it is addressed there. Errors come in Graph's JSON shape. There are
no drafts or upload sessions: this is not Graph, only enough of it to show a scan arrive.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from email import message_from_bytes, policy
from urllib.parse import unquote

from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from ..resources import GRAPH_APP_SCOPE
from .authority import DemoAuthority, QuietSite
from .mailbox import DemoMailbox

log = Logger(namespace="xoauth2-proxy.demo")

REQUEST_LIMIT = 4 * 1024 * 1024  # Graph's limit per request


class _SendMail(Resource):
    isLeaf = True

    def __init__(self, authority: DemoAuthority, mailbox: DemoMailbox) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.authority = authority
        self.mailbox = mailbox

    def render_POST(self, request: Request) -> bytes:
        segments = [unquote(s) for s in (request.path or b"").decode("latin-1").split("/") if s]
        if len(segments) != 4 or segments[:2] != ["v1.0", "users"] or segments[3] != "sendMail":
            return _error(request, 404, "UnknownError", "The demo stand-in of Microsoft Graph "
                          "serves POST /v1.0/users/{mailbox}/sendMail only.")
        scheme, _, token = (request.getHeader("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not self.authority.token_valid(token, GRAPH_APP_SCOPE):
            return _error(request, 401, "InvalidAuthenticationToken", "Access token is empty, "
                          "expired or not for Microsoft Graph.")
        if segments[2].lower() != self.mailbox.address.lower():
            return _error(request, 404, "ErrorInvalidUser",
                          f"The requested user '{segments[2]}' is invalid.")
        assert request.content is not None
        body = request.content.read(REQUEST_LIMIT + 1)
        if len(body) > REQUEST_LIMIT:
            return _error(request, 413, "RequestEntityTooLarge", "The request is too large.")
        if not (request.getHeader("content-type") or "").startswith("text/plain"):
            return _error(request, 400, "ErrorInvalidRequest", "The demo stand-in takes the "
                          "MIME message only (Content-Type: text/plain, base64).")
        try:
            mime = base64.b64decode(b"".join(body.split()), validate=True)
        except binascii.Error:
            return _error(request, 400, "ErrorMimeContentInvalidBase64String",
                          "Invalid base64 string for MIME content.")
        headers = message_from_bytes(mime, policy=policy.default)
        recipients = tuple(address.addr_spec for name in ("to", "cc", "bcc")
                           for value in headers.get_all(name, [])
                           for address in getattr(value, "addresses", ()))
        sender = str(headers.get("from", ""))
        self.mailbox.submit(sender, recipients, mime, through_graph=True)
        log.info("demo Graph: sendMail accepted a message of {size} bytes for {count} "
                 "recipient(s)", size=len(mime), count=len(recipients))
        request.setResponseCode(202)
        request.setHeader(b"request-id", str(uuid.uuid4()).encode())
        return b""


def _error(request: Request, status: int, code: str, message: str) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    request_id = str(uuid.uuid4())
    request.setHeader(b"request-id", request_id.encode())
    return json.dumps({"error": {"code": code, "message": message,
                                 "innerError": {"request-id": request_id}}}).encode()


def graph_site(authority: DemoAuthority, mailbox: DemoMailbox) -> Site:
    site = QuietSite(_SendMail(authority, mailbox), "demo Microsoft Graph")
    site.noisy = False
    return site
