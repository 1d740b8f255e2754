"""From a checked local password to a signed-in upstream connection, for one listener."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import task
from twisted.internet.interfaces import IReactorTime

from ..actions import LoggedIn, UpstreamLogin
from ..errors import Throttled, UpstreamRejected, WrongPassword
from ..throttle import LoginThrottle, Refuse
from ..tokens.broker import TokenBroker
from .upstream_connection import UpstreamProtocol, UpstreamTarget, connect_upstream

MakeUpstreamLogin = Callable[[str, str], UpstreamLogin]  # (mailbox, access token) -> core


class Gateway:
    def __init__(
        self,
        reactor: IReactorTime,
        broker: TokenBroker,
        target: UpstreamTarget,
        make_login: MakeUpstreamLogin,
        throttle: LoginThrottle,
    ) -> None:
        self.reactor = reactor
        self.broker = broker
        self.target = target
        self.make_login = make_login
        self.throttle = throttle

    async def login(
        self, username: str, password: str, source: str
    ) -> tuple[UpstreamProtocol, LoggedIn]:
        """Raises WrongPassword and friends before any upstream connection is made; a
        throttled source is delayed or refused before its password is even looked at."""
        verdict = self.throttle.check(source, username)
        if isinstance(verdict, Refuse):
            raise Throttled(verdict.message)
        if verdict.delay:
            await task.deferLater(self.reactor, verdict.delay)
        try:
            grant = await self.broker.grant(username, password)
        except WrongPassword:
            self.throttle.failed(source, username)
            raise
        self.throttle.succeeded(source, username)
        try:
            return await self._connect(grant.mailbox, grant.access_token)
        except UpstreamRejected:
            if grant.fresh:
                raise
            # A cached token can be revoked before it expires: one new token, one more try.
            self.broker.forget_access_token(username)
            grant = await self.broker.grant(username, password)
            return await self._connect(grant.mailbox, grant.access_token)

    async def _connect(self, mailbox: str, token: str) -> tuple[UpstreamProtocol, LoggedIn]:
        return await connect_upstream(
            self.reactor, self.target, lambda: self.make_login(mailbox, token)
        )
