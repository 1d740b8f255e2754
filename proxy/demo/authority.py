"""A stand-in for Microsoft Entra ID's token endpoint, for `xoauth2-proxy demo` only.

It implements just enough of the OAuth2 v2.0 token endpoint for the client credentials grant:
POST {authority}/{tenant}/oauth2/v2.0/token with client_id, client_secret and
scope=https://outlook.office365.com/.default (the demo mail servers) or
https://graph.microsoft.com/.default (the demo Graph) answers a random bearer token valid for an
hour, good for that one resource.
Errors come in Entra ID's shape (error, error_description "AADSTSnnn: ...", error_codes), so the
proxy's own error handling is what the demo shows. The demo mail servers accept exactly the
tokens issued here. It is not an identity provider: there are no users, keys or signatures.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from dataclasses import dataclass, field

from twisted.logger import Logger
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from ..config import APP_ONLY_SCOPE
from ..resources import GRAPH_APP_SCOPE

log = Logger(namespace="xoauth2-proxy.demo")

TOKEN_LIFETIME = 3600  # what Entra ID usually grants


@dataclass
class DemoAuthority:
    """The one registered app (tenant, client_id, secret) and the tokens issued to it."""

    tenant: str
    client_id: str
    client_secret: str = field(repr=False)
    # token -> (expiry, the scope it was issued for)
    issued: dict[str, tuple[float, str]] = field(default_factory=dict, repr=False)

    def token_valid(self, token: str, scope: str = APP_ONLY_SCOPE) -> bool:
        expires, issued_for = self.issued.get(token, (0.0, ""))
        return issued_for == scope and expires > time.time()

    def issue(self, scope: str) -> str:
        token = "demo-" + secrets.token_urlsafe(32)
        self.issued[token] = (time.time() + TOKEN_LIFETIME, scope)
        return token

    def site(self) -> Site:
        site = QuietSite(_TokenEndpoint(self), "demo Entra ID token endpoint")
        site.noisy = False
        return site


class QuietSite(Site):
    """A demo web service: one plain log line per request it serves, no access log."""

    def __init__(self, resource: Resource, name: str) -> None:
        super().__init__(resource)  # type: ignore[no-untyped-call]
        self.name = name

    def log(self, request: http.Request) -> None:
        pass

    def logPrefix(self) -> str:
        return self.name


class _TokenEndpoint(Resource):
    isLeaf = True

    def __init__(self, authority: DemoAuthority) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.authority = authority

    def render_GET(self, request: Request) -> bytes:
        return _error(request, 405, "invalid_request", 900561,
                      "The endpoint only accepts POST requests.")

    def render_POST(self, request: Request) -> bytes:
        authority = self.authority
        path = (request.path or b"").decode("utf-8", "replace")
        if path != f"/{authority.tenant}/oauth2/v2.0/token":
            return _error(request, 400, "invalid_tenant", 90002,
                          f"Tenant or endpoint not found: {path}")
        form = {key.decode(): values[0].decode() for key, values in (request.args or {}).items()}
        if form.get("grant_type") != "client_credentials":
            return _error(request, 400, "unsupported_grant_type", 70003,
                          "The demo authority supports only the client_credentials grant.")
        if form.get("client_id") != authority.client_id:
            return _error(request, 400, "unauthorized_client", 700016,
                          f"Application with identifier '{form.get('client_id')}' was not "
                          "found in the directory.")
        given = form.get("client_secret", "").encode()
        if not hmac.compare_digest(given, authority.client_secret.encode()):
            return _error(request, 401, "invalid_client", 7000215,
                          "Invalid client secret provided.")
        scope = form.get("scope", "")
        if scope not in (APP_ONLY_SCOPE, GRAPH_APP_SCOPE):
            return _error(request, 400, "invalid_scope", 1002012,
                          f"The provided value for scope is not valid: {scope}")
        token = authority.issue(scope)
        log.info("demo authority: issued an access token to app {client_id}",
                 client_id=authority.client_id)
        return _json(request, 200, {"token_type": "Bearer", "expires_in": TOKEN_LIFETIME,
                                    "ext_expires_in": TOKEN_LIFETIME, "access_token": token})


def _error(request: Request, status: int, error: str, code: int, text: str) -> bytes:
    return _json(request, status, {"error": error, "error_description": f"AADSTS{code}: {text}",
                                   "error_codes": [code]})


def _json(request: Request, status: int, payload: dict[str, object]) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
    request.setHeader(b"Cache-Control", b"no-store")
    return json.dumps(payload).encode()
