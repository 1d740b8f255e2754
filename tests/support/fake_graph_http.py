"""The HTTP side of the fake Graph: routing, Graph's error shape, the 4 MiB request limit,
Content-Length required, and the injected failures. The service itself is in fake_graph.py."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from tests.support.local_http import JsonHandler

if TYPE_CHECKING:
    from tests.support.fake_graph import FakeGraph

REQUEST_LIMIT = 4 * 1024 * 1024
STEPS = ("sendMail", "create", "get", "delete", "attachment", "uploadSession", "upload", "send")
FAILURES: dict[str, tuple[int, str, str]] = {
    "429": (429, "ApplicationThrottled", "Application is over its MailboxConcurrency limit."),
    "500": (500, "InternalServerError", "An internal server error occurred."),
    "503": (503, "ServiceUnavailable", "Service is temporarily unavailable."),
    "504": (504, "GatewayTimeout", "The gateway did not receive a response in time."),
    "access_denied": (403, "ErrorAccessDenied", "Access is denied. Check credentials and try "
                      "again."),
    "send_as_denied": (403, "ErrorSendAsDenied", "The user account which was used to submit "
                       "this request does not have the right to send mail on behalf of the "
                       "specified sending account., Cannot submit message."),
    "invalid_recipients": (400, "ErrorInvalidRecipients", "At least one recipient is not "
                           "valid., Recipient 'nobody@example.invalid' is not resolved."),
    "not_rest_enabled": (404, "MailboxNotEnabledForRESTAPI", "The mailbox is either inactive, "
                         "soft-deleted, or is hosted on-premise."),
}
HELD = ("timeout", "reset")  # failures that never answer


class GraphError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}")
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Request:
    method: str
    step: str
    authorization: bool  # whether an Authorization header came with it
    length: int


def iso_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


def route_request(method: str, path: str) -> tuple[str, list[str]] | None:
    """(step, path segments) of a request Graph would serve, else None."""
    segments = [s for s in urlsplit(path).path.split("/") if s]
    if method == "PUT" and len(segments) == 2 and segments[0] == "upload":
        return "upload", segments
    if segments[:2] != ["v1.0", "users"] or len(segments) < 4:
        return None
    rest = segments[3:]
    step = None
    if rest == ["sendMail"] and method == "POST":
        step = "sendMail"
    elif rest == ["messages"] and method == "POST":
        step = "create"
    elif len(rest) == 2 and rest[0] == "messages" and method in ("GET", "DELETE"):
        step = method.lower()
    elif len(rest) == 3 and rest[0] == "messages" and method == "POST":
        step = {"attachments": "attachment", "send": "send"}.get(rest[2])
    elif rest[:1] == ["messages"] and rest[2:] == ["attachments", "createUploadSession"] and \
            method == "POST":
        step = "uploadSession"
    return (step, segments) if step else None


class GraphHandler(JsonHandler):
    server_version = "FakeGraph/1.0"
    protocol_version = "HTTP/1.1"  # keep-alive, as requests' connection pool expects

    @property
    def fake(self) -> FakeGraph:
        return self.server.fake  # type: ignore[attr-defined, no-any-return]

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        request_id = str(uuid.uuid4())
        headers = {k.lower(): v for k, v in self.headers.items()}
        echo = {"request-id": request_id,
                "client-request-id": headers.get("client-request-id", request_id)}
        if "content-length" not in headers and method in ("POST", "PUT"):
            self.close_connection = True
            self._error(411, "LengthRequired", "Content-Length is required.", echo)
            return
        length = int(headers.get("content-length") or 0)
        route = route_request(method, self.path)
        limit = self.fake.send_mail_limit if route and route[0] == "sendMail" else REQUEST_LIMIT
        body = self._read(length, limit)
        if route is None:
            self._error(404, "UnknownError", "Resource not found for the segment.", echo)
            return
        step, segments = route
        kind = self.fake._record(Request(method, step, "authorization" in headers, length))
        if body is None:
            if self.fake.too_large_as_400:
                self._error(400, "BadRequest", "Maximum request length exceeded.", echo)
            else:
                self._error(413, "RequestEntityTooLarge", f"The request is larger than "
                            f"{limit} bytes.", echo)
        elif kind == "timeout":
            self._hold(self.fake._stopping, self.fake.hang_seconds)
        elif kind == "reset":
            self._reset()
        elif kind is not None:
            status, code, message = FAILURES[kind]
            extra = {"Retry-After": str(self.fake.retry_after)} if kind == "429" else {}
            self._error(status, code, message, {**echo, **extra})
        else:
            try:
                status, payload, extra = self.fake.handle(method, segments, headers, body)
            except GraphError as e:
                self._error(e.status, e.code, e.message, echo)
                return
            if payload is None:
                self._send(status, b"", "text/plain", {**echo, **extra})
            else:
                self._send_json(status, payload, {**echo, **extra})

    def _read(self, length: int, limit: int) -> bytes | None:
        """The body; None (after reading it all, so the answer arrives) if over `limit`."""
        if length <= limit:
            return self.rfile.read(length)
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 20))
            if not chunk:
                break
            length -= len(chunk)
        return None

    def _error(self, status: int, code: str, message: str, headers: dict[str, str]) -> None:
        inner = {"date": iso_time(time.time()), "request-id": headers["request-id"],
                 "client-request-id": headers["client-request-id"]}
        self._send_json(status, {"error": {"code": code, "message": message,
                                           "innerError": inner}}, headers)
