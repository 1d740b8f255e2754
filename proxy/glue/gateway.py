"""From a local login to a signed-in upstream, for one listener: throttle, token, sign-in."""

from __future__ import annotations

from twisted.internet import task
from twisted.internet.interfaces import IReactorTime

from ..errors import LockedOut, UpstreamRejected, WrongPassword
from ..resources import OUTLOOK
from ..throttle import LoginThrottle, Refuse
from ..tokens.broker import TokenBroker
from .signed_in import SignedIn, SignIn


class Gateway:
    def __init__(
        self, reactor: IReactorTime, broker: TokenBroker, sign_in: SignIn, throttle: LoginThrottle,
        resource: str = OUTLOOK,
    ) -> None:
        """`resource`: which token the listener's upstream takes (proxy.resources)."""
        self.reactor = reactor
        self.broker = broker
        self.sign_in = sign_in
        self.throttle = throttle
        self.resource = resource

    async def login(self, username: str, password: str, source: str) -> SignedIn:
        """Raises WrongPassword and friends before any upstream connection is made; a
        throttled source is delayed or refused before its password is even looked at."""
        verdict = self.throttle.check(source, username)
        if isinstance(verdict, Refuse):
            raise LockedOut(verdict.message)
        if verdict.delay:
            await task.deferLater(self.reactor, verdict.delay)
        try:
            grant = await self.broker.grant(username, password, self.resource)
        except WrongPassword:
            self.throttle.failed(source, username)
            raise
        self.throttle.succeeded(source, username)
        try:
            return await self.sign_in(grant)
        except UpstreamRejected:
            if grant.fresh:
                raise
            # A cached token can be revoked before it expires: one new token, one more try.
            self.broker.forget_access_token(username, self.resource)
            grant = await self.broker.grant(username, password, self.resource)
            return await self.sign_in(grant)
