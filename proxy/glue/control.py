"""The control endpoint: HTTP on a free loopback port, for `xoauth2-proxy reload` and local tools.

Every request needs `Authorization: Bearer TOKEN` with the random token of the runtime file
(proxy.runtime_file), which only the proxy's user can read.
  POST /reload    read the configuration file again and apply it: 200 {"ok": true, "changes":
                  "..."}, or 422 {"ok": false, "error": "FILE: TABLE: KEY: ..."} (old one kept)
  GET  /runtime   the runtime view (listeners, open sessions, last reload) as JSON
"""

from __future__ import annotations

import hmac
import json
import secrets
from typing import Any

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.web import http, resource, server

from ..errors import ConfigError
from .runtime import Runtime

log = Logger(namespace="xoauth2-proxy")


class ControlResource(resource.Resource):
    isLeaf = True

    def __init__(self, runtime: Runtime, token: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.runtime = runtime
        self.token = token

    def render(self, request: server.Request) -> bytes | int:
        given = request.getHeader("authorization") or ""
        expected = f"Bearer {self.token}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return _json(request, 403, {"ok": False, "error": "a valid control token is required"})
        method, path = request.method, request.path
        if method == b"GET" and path == b"/runtime":
            return _json(request, 200, self.runtime.view().as_json())
        if method == b"POST" and path == b"/reload":
            defer.Deferred.fromCoroutine(self._reload(request))
            return server.NOT_DONE_YET
        return _json(request, 404, {"ok": False, "error": "no such control action"})

    async def _reload(self, request: server.Request) -> None:
        try:
            changes = await self.runtime.reload_from_file()
        except ConfigError as e:
            answer = (422, {"ok": False, "error": e.message})
        except Exception as e:  # a fault of the proxy's own: logged, and the caller told
            log.failure("control: reload failed", event="reload_failed")
            answer = (500, {"ok": False, "error": f"internal error ({type(e).__name__}); see the log"})
        else:
            answer = (200, {"ok": True, "changes": changes.summary()})
        if not request.finished and not request._disconnected:
            request.write(_json(request, *answer))
            request.finish()


class _QuietSite(server.Site):
    """No access log: the proxy logs what the actions did."""

    noisy = False

    def log(self, request: http.Request) -> None:
        pass


async def start_control(reactor: Any, runtime: Runtime) -> tuple[IListeningPort, str, str]:
    """Listen on a free loopback port; returns the port, its URL and the token it requires."""
    token = secrets.token_urlsafe(32)
    endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
    site = _QuietSite(ControlResource(runtime, token))  # type: ignore[no-untyped-call]
    port = await endpoint.listen(site)
    address = port.getHost()
    return port, f"http://127.0.0.1:{getattr(address, 'port', 0)}/", token


def _json(request: server.Request, code: int, body: dict[str, Any]) -> bytes:
    request.setResponseCode(code)
    request.setHeader("content-type", "application/json")
    request.setHeader("cache-control", "no-store")
    return json.dumps(body).encode()
