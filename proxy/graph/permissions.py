"""What a Graph access token allows, read from its own claims, for `account check`.

The token is the proxy's own, fresh from Entra ID, so its signature is not checked here (Graph
checks it); only the payload is read. Delegated tokens list their permissions in `scp` (space
separated), app-only tokens in `roles` (a list, left out when there is none). App-only access
can also be granted in Exchange (RBAC for Applications) without any role in the token, so a
missing role there is a note on how to verify the grant, not a failure. A user's token for
another's mailbox (a shared one) needs Mail.Send.Shared instead of Mail.Send, and the user needs
Send As there in Exchange, which no token shows.
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
SHARED = ".Shared"  # Mail.Send.Shared, Mail.ReadWrite.Shared: also for others' mailboxes
OK, NOTE, FAILED = "ok", "note", "FAILED"


@dataclass(frozen=True)
class GraphGrant:
    """The audience and permissions of a Graph access token."""

    audience: str | None
    permissions: frozenset[str]
    app_only: bool  # client credentials rather than a user signed in
    app_id: str | None = None
    # The signed-in user, when the token is to send from another's mailbox (AccountConfig's
    # delegate): then only the .Shared permissions count. App-only tokens need no such thing.
    delegate: str | None = None

    @property
    def for_graph(self) -> bool:
        return self.audience in GRAPH_AUDIENCES

    @property
    def shared(self) -> bool:
        return self.delegate is not None and not self.app_only

    def has(self, permission: str) -> bool:
        """Whether the token allows `permission` (SEND, READ_WRITE) for this use: for another's
        mailbox only its .Shared form, which covers the user's own mailbox too."""
        if not self.app_only and permission + SHARED in self.permissions:
            return True
        return not self.shared and permission in self.permissions

    @property
    def can_send(self) -> bool:
        return self.has(SEND)

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
        if self.shared:
            return self._explain_shared(mailbox)
        if not self.can_send and self.app_only:
            also = ("" if self.has(READ_WRITE) else " (and Mail.ReadWrite, for "
                    "messages over about 3 MB)")
            return ("Mail.Send is not in the token. That is right if the app is granted it "
                    "through Exchange RBAC for Applications, which never shows in the token: "
                    "verify with Test-ServicePrincipalAuthorization -Identity "
                    f"{self.app_id or '<client_id>'} -Resource {mailbox}. Otherwise {mailbox} "
                    "cannot send through Microsoft Graph: add the application Graph permission "
                    f"Mail.Send{also} to the app registration and grant admin consent.")
        if not self.can_send:
            return (f"The token has no Mail.Send permission, so {mailbox} cannot send through "
                    f"Microsoft Graph: add the {kind} Graph permission Mail.Send to the app "
                    "registration and grant admin consent.")
        if not self.has(READ_WRITE):
            return (f"The token has Mail.Send: {mailbox} can send messages up to about 3 MB. "
                    f"Larger ones need the {kind} Graph permission Mail.ReadWrite as well.")
        return (f"The token has Mail.Send and Mail.ReadWrite: {mailbox} can send messages of any "
                "size Exchange Online accepts.")

    def _explain_shared(self, mailbox: str) -> str:
        """A user's token for another's mailbox: Graph wants the .Shared permissions, and
        Exchange wants the user to hold Full Access and Send As there, which no token shows."""
        user = self.delegate
        exchange = (f"In Exchange, {user} also needs Full Access and Send As on {mailbox}: "
                    f"Add-MailboxPermission -Identity {mailbox} -User {user} -AccessRights "
                    f"FullAccess; Add-RecipientPermission -Identity {mailbox} -Trustee {user} "
                    "-AccessRights SendAs.")
        if not self.can_send:
            plain = (f" (it has Mail.Send, which covers {user}'s own mailbox only)"
                     if SEND in self.permissions else "")
            return (f"The token has no Mail.Send.Shared permission{plain}, which {user} needs "
                    f"to send from {mailbox}, a mailbox not {user}'s own: add the delegated "
                    "Graph permissions Mail.Send.Shared and Mail.ReadWrite.Shared (for messages "
                    "over about 3 MB) to the app registration, grant admin consent, and list "
                    f"them in the account's scopes if it sets any. {exchange}")
        if not self.has(READ_WRITE):
            return (f"The token has Mail.Send.Shared: {user} can send from {mailbox} messages "
                    "up to about 3 MB; larger ones need the delegated Graph permission "
                    f"Mail.ReadWrite.Shared as well. {exchange}")
        return (f"The token has Mail.Send.Shared and Mail.ReadWrite.Shared: {user} can send "
                f"from {mailbox} messages of any size Exchange Online accepts. {exchange}")


def read_grant(access_token: str, delegate: str | None = None) -> GraphGrant | None:
    """The grant in a JWT access token, to be used for `delegate` (see GraphGrant); None if it
    is not a JWT with a JSON payload."""
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
                      app_only=app_only, app_id=app_id if isinstance(app_id, str) else None,
                      delegate=delegate)
