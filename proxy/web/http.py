"""What every HTTP answer of the proxy's own web endpoints (the admin page, the control
endpoint) shares: the answer as data, security headers, a cap on request bodies, and a site
that keeps no access log (request URIs may carry the admin token)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from twisted.web import http, server

from .forms import MAX_BODY

# Nothing on these pages comes from elsewhere, runs inline, or may be framed.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the page's address never travels to another site
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
HTML = "text/html; charset=utf-8"
TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str = HTML
    headers: dict[str, str] = field(default_factory=dict)
    # Pages with secrets on them (a device code, a CSRF token) must not be kept; static files may.
    cacheable: bool = False


def redirect(location: str, headers: dict[str, str] | None = None) -> Answer:
    """303 See Other: after a POST, and to drop the token from the address bar."""
    return Answer(303, b"", TEXT, {"Location": location, **(headers or {})})


def json_answer(status: int, body: dict[str, Any]) -> Answer:
    return Answer(status, json.dumps(body).encode(), "application/json")


def write_answer(request: server.Request, answer: Answer) -> None:
    """Send `answer` unless the client has gone."""
    if request.finished or request._disconnected:
        return
    request.setResponseCode(answer.status)
    for name, value in {**SECURITY_HEADERS, **answer.headers}.items():
        request.setHeader(name, value)
    request.setHeader("Content-Type", answer.content_type)
    request.setHeader("Cache-Control", "private, max-age=300" if answer.cacheable else "no-store")
    request.setHeader("Content-Length", str(len(answer.body)))
    if request.method != b"HEAD":
        request.write(answer.body)
    request.finish()


class CappedRequest(server.Request):
    """A request whose body may not exceed MAX_BODY: a larger one ends the connection before it
    is stored (Twisted would otherwise keep any amount, in memory and then a temporary file)."""

    _received = 0

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > MAX_BODY:
            self.channel.transport.abortConnection()  # type: ignore[union-attr]
            return
        super().gotLength(length)  # type: ignore[no-untyped-call]

    def handleContentChunk(self, data: bytes) -> None:
        self._received += len(data)
        if self._received > MAX_BODY:
            self.channel.transport.abortConnection()  # type: ignore[union-attr]
            return
        super().handleContentChunk(data)  # type: ignore[no-untyped-call]

    def setHeader(self, name: str | bytes, value: str | bytes) -> None:
        # Twisted names itself and its version in a Server header: that tells a scanner which
        # flaws to try and an administrator nothing.
        if (name.encode() if isinstance(name, str) else name).lower() == b"server":
            return
        super().setHeader(name, value)  # type: ignore[no-untyped-call]


class QuietSite(server.Site):
    """No access log: the proxy logs what the actions did, and a URI may carry the token."""

    noisy = False
    requestFactory = CappedRequest

    def log(self, request: http.Request) -> None:
        pass
