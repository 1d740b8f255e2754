"""Sending mail through Microsoft Graph, for tenants where SMTP AUTH is switched off.

No Twisted in here: `GraphClient.send` blocks and runs in a thread pool. See client.py.
"""

from .client import DEFAULT_GRAPH_URL, MIME_LIMIT, Envelope, GraphClient, graph_base_url
from .outcome import Outcome, Permanent, Sent, Temporary, TokenRefused, describe
from .permissions import GraphGrant, read_grant

__all__ = [
    "DEFAULT_GRAPH_URL", "MIME_LIMIT", "Envelope", "GraphClient", "GraphGrant", "Outcome",
    "Permanent", "Sent", "Temporary", "TokenRefused", "describe", "graph_base_url", "read_grant",
]
