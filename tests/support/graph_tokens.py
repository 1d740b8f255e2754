"""Microsoft Graph access tokens as the fake Entra ID issues them and the fake Graph checks them.

Real Graph tokens are RS256 JWTs that only Microsoft checks; here both fakes share an HS256 key,
which keeps the checks real (signature, expiry, audience, permissions) without a key service.
Also: which resource a scope belongs to, since Entra ID issues a token for one resource only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from tests.support.jwt import mint_hs256

GRAPH = "https://graph.microsoft.com"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
GRAPH_AUDIENCES = frozenset({GRAPH, GRAPH_APP_ID})
EXCHANGE = "https://outlook.office.com"  # outlook.office365.com names the same resource
EXCHANGE_HOSTS = frozenset({"https://outlook.office.com", "https://outlook.office365.com"})
NON_RESOURCE_SCOPES = frozenset({"offline_access", "openid", "profile", "email"})


def resource_of(scope: str) -> str | None:
    """The resource a scope is for: None for OpenID scopes; a bare name (User.Read) is Graph's."""
    if scope in NON_RESOURCE_SCOPES:
        return None
    if "/" not in scope:
        return GRAPH
    prefix = scope.rsplit("/", 1)[0]
    if prefix == GRAPH_APP_ID or prefix.rstrip("/") == GRAPH:
        return GRAPH
    if prefix.rstrip("/") in EXCHANGE_HOSTS:
        return EXCHANGE
    return prefix.rstrip("/")


def resources(scopes: list[str] | tuple[str, ...]) -> list[str]:
    """The resources of the scopes, each once, in order of first mention."""
    found: list[str] = []
    for scope in scopes:
        resource = resource_of(scope)
        if resource is not None and resource not in found:
            found.append(resource)
    return found


def permission_name(scope: str) -> str:
    """https://graph.microsoft.com/Mail.Send -> Mail.Send (what `scp` lists)."""
    return scope.rsplit("/", 1)[-1]


def mint_graph_token(
    key: bytes, *, tenant: str, client_id: str, now: float, lifetime: int,
    mailbox: str | None = None, scp: list[str] | None = None, roles: list[str] | None = None,
) -> str:
    """A Graph access token: `scp` and `upn` for a signed-in user, `roles` for an app. As from
    Entra ID, `idtyp` says which, and an app granted no application permission gets no `roles`
    claim at all (not an empty list)."""
    issued = int(now)
    claims: dict[str, Any] = {
        "aud": GRAPH, "iss": f"https://sts.windows.net/{tenant}/", "tid": tenant,
        "appid": client_id, "iat": issued - 300, "nbf": issued - 300, "exp": issued + lifetime,
        "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, mailbox or client_id)), "ver": "1.0",
        "uti": secrets.token_urlsafe(16),
    }
    claims["idtyp"] = "user" if scp is not None else "app"
    if scp is not None:
        claims.update(scp=" ".join(scp), upn=mailbox, unique_name=mailbox)
    if roles:
        claims["roles"] = roles
    return mint_hs256(key, claims)


@dataclass(frozen=True)
class GraphCaller:
    """Who a valid token speaks for."""

    client_id: str
    mailbox: str | None  # the signed-in user; None for an app-only token
    permissions: frozenset[str]
    token_id: str  # the `uti` claim, to revoke one token


class InvalidToken(Exception):
    """Why Graph refuses a bearer token (the text of its 401 answer)."""


def verify_graph_token(key: bytes, token: str, now: float) -> GraphCaller:
    try:
        header_part, payload_part, signature_part = token.split(".")
        header = json.loads(_decode(header_part))
        claims = json.loads(_decode(payload_part))
        signature = _decode(signature_part)
    except ValueError:
        raise InvalidToken("IDX14100: JWT is not well formed.") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise InvalidToken("IDX14100: JWT is not well formed.")
    expected = hmac.new(key, f"{header_part}.{payload_part}".encode(), hashlib.sha256).digest()
    if header.get("alg") != "HS256" or not hmac.compare_digest(signature, expected):
        raise InvalidToken("Invalid signature.") from None
    if claims.get("aud") not in GRAPH_AUDIENCES:
        raise InvalidToken("Invalid audience.")
    if not isinstance(claims.get("exp"), int) or claims["exp"] <= now:
        raise InvalidToken("Lifetime validation failed, the token is expired.")
    scopes = claims.get("scp")
    roles = claims.get("roles")
    permissions = set(scopes.split()) if isinstance(scopes, str) else set()
    permissions |= set(roles) if isinstance(roles, list) else set()
    mailbox = claims.get("upn") if isinstance(scopes, str) else None
    return GraphCaller(str(claims.get("appid")), mailbox, frozenset(permissions),
                       str(claims.get("uti")))


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
