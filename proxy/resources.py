"""The two Microsoft services the proxy asks access tokens for, and which scopes belong to which.

Entra ID issues an access token for one resource per request: a scope list naming Exchange Online
(IMAP, POP3, SMTP) and Microsoft Graph (sendMail) together is refused (AADSTS28000, or 70011 for
client credentials). An account serving both therefore holds one access token per resource, all
from the same refresh token, and every token request carries the scopes of one resource only.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

OUTLOOK = "outlook"  # Exchange Online: outlook.office.com / outlook.office365.com
GRAPH = "graph"  # Microsoft Graph: graph.microsoft.com
RESOURCES = (OUTLOOK, GRAPH)
NAMES = {OUTLOOK: "Exchange Online (IMAP, POP3, SMTP)", GRAPH: "Microsoft Graph"}

# Scopes that name no resource: they ride along with any token request.
OPENID_SCOPES = frozenset({"offline_access", "openid", "profile", "email"})
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
# Microsoft Graph in each cloud (worldwide, US Government L4 and L5, China).
GRAPH_HOSTS = frozenset({"graph.microsoft.com", "graph.microsoft.us", "dod-graph.microsoft.us",
                         "microsoftgraph.chinacloudapi.cn"})
GRAPH_URL = "https://graph.microsoft.com"  # without /v1.0
GRAPH_SEND_SCOPES = ("https://graph.microsoft.com/Mail.Send",
                     "https://graph.microsoft.com/Mail.ReadWrite")
# A signed-in user sending from another's mailbox (a shared one) needs these instead; they
# cover the user's own mailbox too, but ask more of the tenant than the ordinary case needs.
GRAPH_SHARED_SCOPES = ("https://graph.microsoft.com/Mail.Send.Shared",
                       "https://graph.microsoft.com/Mail.ReadWrite.Shared")
GRAPH_APP_SCOPE = "https://graph.microsoft.com/.default"


def resource_of(scope: str) -> str | None:
    """The resource a scope is for; None for the OpenID scopes. A bare permission name
    (Mail.Send) is Graph's, as Entra ID reads it; any other URL is taken as Exchange's."""
    if scope in OPENID_SCOPES:
        return None
    if "/" not in scope:
        return GRAPH
    if scope.startswith(GRAPH_APP_ID + "/"):
        return GRAPH
    host = urlsplit(scope).hostname or ""
    return GRAPH if host in GRAPH_HOSTS else OUTLOOK


def scopes_for(scopes: Iterable[str], resource: str) -> tuple[str, ...]:
    """The scopes of one token request for `resource`: that resource's, and the OpenID ones
    (offline_access keeps a refresh token coming)."""
    return tuple(s for s in scopes if resource_of(s) in (resource, None))


def resources_in(scopes: Iterable[str]) -> tuple[str, ...]:
    """The resources the scopes name, in RESOURCES order."""
    named = {resource_of(s) for s in scopes}
    return tuple(r for r in RESOURCES if r in named)
