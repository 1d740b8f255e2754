"""What a Graph access token allows, read from its own claims, for `account check`.

The token is the proxy's own, fresh from Entra ID, so its signature is not checked here (Graph
checks it); only the payload is read. Delegated tokens list their permissions in `scp` (space
separated), app-only tokens in `roles` (a list, left out when there is none). App-only access
can also be granted in Exchange (RBAC for Applications) without any role in the token, so a
missing role there is a note on how to verify the grant, not a failure.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

GRAPH_AUDIENCES = frozenset({"https://graph.microsoft.com", "https://graph.microsoft.com/",
                             "00000003-0000-0000-c000-000000000000"})
SEND = "Mail.Send"
READ_WRITE = "Mail.ReadWrite"
OK, NOTE, FAILED = "ok", "note", "FAILED"


@dataclass(frozen=True)
class GraphGrant:
    """The audience and permissions of a Graph access token."""

    audience: str | None
    permissions: frozenset[str]
    app_only: bool  # client credentials rather than a user signed in
    app_id: str | None = None

    @property
    def for_graph(self) -> bool:
        return self.audience in GRAPH_AUDIENCES

    @property
    def can_send(self) -> bool:
        return SEND in self.permissions

    @property
    def verdict(self) -> str:
        """OK; NOTE when an app-only token lacks Mail.Send, which Exchange RBAC for
        Applications may grant outside the token; else FAILED."""
        if not self.for_graph:
            return FAILED
        if not self.can_send:
            return NOTE if self.app_only else FAILED
        return OK

    def explain(self, mailbox: str) -> str:
        """Plain words on what this token can send for `mailbox`."""
        kind = "application" if self.app_only else "delegated"
        if not self.for_graph:
            return (f"The token is for {self.audience or 'an unknown audience'}, not Microsoft "
                    "Graph (https://graph.microsoft.com): ask for Graph scopes.")
        if SEND not in self.permissions and self.app_only:
            also = ("" if READ_WRITE in self.permissions else " (and Mail.ReadWrite, for "
                    "messages over about 3 MB)")
            return ("Mail.Send is not in the token. That is right if the app is granted it "
                    "through Exchange RBAC for Applications, which never shows in the token: "
                    "verify with Test-ServicePrincipalAuthorization -Identity "
                    f"{self.app_id or '<client_id>'} -Resource {mailbox}. Otherwise {mailbox} "
                    "cannot send through Microsoft Graph: add the application Graph permission "
                    f"Mail.Send{also} to the app registration and grant admin consent.")
        if SEND not in self.permissions:
            return (f"The token has no Mail.Send permission, so {mailbox} cannot send through "
                    f"Microsoft Graph: add the {kind} Graph permission Mail.Send to the app "
                    "registration and grant admin consent.")
        if READ_WRITE not in self.permissions:
            return (f"The token has Mail.Send: {mailbox} can send messages up to about 3 MB. "
                    f"Larger ones need the {kind} Graph permission Mail.ReadWrite as well.")
        return (f"The token has Mail.Send and Mail.ReadWrite: {mailbox} can send messages of any "
                "size Exchange Online accepts.")


def read_grant(access_token: str) -> GraphGrant | None:
    """The grant in a JWT access token; None if it is not a JWT with a JSON payload."""
    parts = access_token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = parts[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(claims, dict):
        return None
    audience = claims.get("aud")
    roles = claims.get("roles")
    scopes = claims.get("scp")
    permissions: set[str] = set()
    if isinstance(roles, list):
        permissions |= {role for role in roles if isinstance(role, str)}
    if isinstance(scopes, str):
        permissions |= set(scopes.split())
    # `idtyp` says it where present; else a user's token always has `scp`, while an app's has
    # `roles` only when it was granted an application permission.
    kind = claims.get("idtyp")
    app_only = kind == "app" if kind in ("app", "user") else not isinstance(scopes, str)
    app_id = claims.get("appid") or claims.get("azp")
    return GraphGrant(audience if isinstance(audience, str) else None, frozenset(permissions),
                      app_only=app_only, app_id=app_id if isinstance(app_id, str) else None)
