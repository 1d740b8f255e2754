"""Handing a received message to Microsoft Graph: the blocking GraphClient in the thread pool,
never on the reactor, and a token that stays good for as long as the session lasts.

Before each message the grant is renewed if its token is close to expiry; when Graph refuses the
token (401) it is refreshed once and the message sent once more, and a second refusal is a
temporary failure. Both renewals come from the key the login unlocked (TokenBroker.renew): the
device's password is not kept.
"""

from __future__ import annotations

import requests
from twisted.internet.defer import Deferred

from ..errors import ProxyError
from ..graph import Envelope, GraphClient, Outcome, Temporary, TokenRefused
from ..graph.outcome import TOKEN_TEMPORARY
from ..spool import MessageSpool
from ..tokens.blocking import RunBlocking
from ..tokens.broker import Grant, TokenBroker


class GraphSender:
    """Sends for every session of one listener."""

    def __init__(self, client: GraphClient, broker: TokenBroker, run_blocking: RunBlocking) -> None:
        self.client = client
        self.broker = broker
        self._run = run_blocking

    @classmethod
    def for_url(cls, graph_url: str, ca: str | None, broker: TokenBroker,
                run_blocking: RunBlocking) -> GraphSender:
        """A sender with its own requests.Session, verifying Graph against `ca` if given."""
        session = requests.Session()
        if ca is not None:
            session.verify = ca
        return cls(GraphClient(session, graph_url), broker, run_blocking)

    async def send(self, grant: Grant, message: MessageSpool,
                   envelope: Envelope) -> tuple[Outcome, Grant]:
        """The outcome, and the grant to use for the next message."""
        try:
            grant = await self.broker.renew(grant, refused=False)
        except ProxyError as e:
            return _no_token(e), grant
        outcome = await self._send(grant, message, envelope)
        if not isinstance(outcome, TokenRefused):
            return outcome, grant
        try:
            grant = await self.broker.renew(grant, refused=True)
        except ProxyError as e:
            return _no_token(e), grant
        outcome = await self._send(grant, message, envelope)
        if isinstance(outcome, TokenRefused):
            outcome = Temporary("Microsoft Graph refused the access token even after a refresh; "
                                "the administrator should run: xoauth2-proxy account check",
                                TOKEN_TEMPORARY, code=outcome.code, request_id=outcome.request_id)
        return outcome, grant

    def _send(self, grant: Grant, message: MessageSpool, envelope: Envelope) -> Deferred[Outcome]:
        return self._run(lambda: self.client.send(grant.access_token, grant.mailbox,
                                                  message.reader(), envelope, grant.delegate))


def _no_token(error: ProxyError) -> Temporary:
    return Temporary(f"no access token for Microsoft Graph: {error.message}", TOKEN_TEMPORARY,
                     code=type(error).__name__)
