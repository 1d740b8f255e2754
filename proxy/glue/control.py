"""The control endpoint: HTTP on a free loopback port, for `xoauth2-proxy reload` and local tools.

Every request needs `Authorization: Bearer TOKEN` with the random token of the runtime file
(proxy.runtime_file), which only the proxy's user can read.
  POST /reload    read the configuration file again and apply it: 200 {"ok": true, "changes":
                  "..."}, or 422 {"ok": false, "error": "FILE: TABLE: KEY: ..."} (old one kept)
  GET  /runtime   the runtime view (listeners, open sessions, last reload) as JSON
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.web import resource, server

from ..errors import ConfigError
from ..web.auth import bearer_token, same_secret
from ..web.http import QuietSite, json_answer, write_answer
from .runtime import Runtime

log = Logger(namespace="xoauth2-proxy")


class ControlResource(resource.Resource):
    isLeaf = True

    def __init__(self, runtime: Runtime, token: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.runtime = runtime
        self.token = token

    def render(self, request: server.Request) -> int:
        given = bearer_token(request.getHeader("authorization"))
        if given is None or not same_secret(given, self.token):
            write_answer(request, json_answer(
                403, {"ok": False, "error": "a valid control token is required"}))
        elif request.method == b"GET" and request.path == b"/runtime":
            write_answer(request, json_answer(200, self.runtime.view().as_json()))
        elif request.method == b"POST" and request.path == b"/reload":
            defer.Deferred.fromCoroutine(self._reload(request))
        else:
            write_answer(request, json_answer(404, {"ok": False, "error": "no such control action"}))
        return server.NOT_DONE_YET

    async def _reload(self, request: server.Request) -> None:
        outcome = await reload_now(self.runtime)
        status = 200 if outcome.ok else 422 if outcome.refused else 500
        body = {"ok": True, "changes": outcome.text} if outcome.ok else {"ok": False, "error": outcome.text}
        write_answer(request, json_answer(status, body))


@dataclass(frozen=True)
class ReloadResult:
    ok: bool
    text: str  # what changed, or why nothing did
    refused: bool = False  # the configuration was refused (not a fault of the proxy's own)


async def reload_now(runtime: Runtime) -> ReloadResult:
    """Read the configuration file again and apply it (the control endpoint, the admin page)."""
    try:
        changes = await runtime.reload_from_file()
    except ConfigError as e:
        return ReloadResult(False, e.message, refused=True)
    except Exception as e:  # a fault of the proxy's own: logged, and the caller told
        log.failure("reload failed", event="reload_failed")
        return ReloadResult(False, f"internal error ({type(e).__name__}); see the log")
    return ReloadResult(True, changes.summary())


async def start_control(reactor: Any, runtime: Runtime) -> tuple[IListeningPort, str, str]:
    """Listen on a free loopback port; returns the port, its URL and the token it requires."""
    token = secrets.token_urlsafe(32)
    endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
    site = QuietSite(ControlResource(runtime, token))  # type: ignore[no-untyped-call]
    port = await endpoint.listen(site)
    address = port.getHost()
    return port, f"http://127.0.0.1:{getattr(address, 'port', 0)}/", token
