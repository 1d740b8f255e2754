"""proxy.glue.gateway.Gateway: throttling before the password, the token, and the one retry
when the upstream refuses a cached token. A real TokenBroker over a real FileStore (stub Entra
ID, run synchronously) and a scripted upstream sign-in in place of the network."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock

from proxy.actions import LoggedIn
from proxy.errors import Throttled, UpstreamRejected, WrongPassword
from proxy.glue.gateway import Gateway
from proxy.glue.signed_in import ClientReader, SessionEnded
from proxy.glue.transport import StreamTransport
from proxy.throttle import LoginThrottle, ThrottleSettings
from proxy.tokens.broker import Grant
from tests.support.broker import NOW, PASSWORD, USER, Setup, make, run

SOURCE = "192.0.2.7"


@dataclass
class Accepted:
    """What the scripted upstream hands back for a token it accepts."""

    token: str
    logged_in: LoggedIn = field(default_factory=LoggedIn)
    peer: str = "upstream.example:993"

    def take_client(
        self, client: StreamTransport, unparsed: bytes, on_end: SessionEnded
    ) -> ClientReader:
        raise AssertionError("the gateway never relays")

    def close(self) -> None:
        raise AssertionError("the gateway never closes what it hands back")


@dataclass
class ScriptedUpstream:
    """Signs in with any token but those it refuses; records every attempt."""

    refuses: set[str] = field(default_factory=set)
    attempts: list[tuple[str, str]] = field(default_factory=list)  # (mailbox, token)

    async def sign_in(self, grant: Grant) -> Accepted:
        self.attempts.append((grant.mailbox, grant.access_token))
        if grant.access_token in self.refuses:
            raise UpstreamRejected()
        return Accepted(grant.access_token)

    @property
    def tokens(self) -> list[str]:
        return [token for _, token in self.attempts]


@dataclass
class World:
    setup: Setup
    upstream: ScriptedUpstream
    reactor: MemoryReactorClock
    gateway: Gateway

    def login(self, password: str = PASSWORD) -> Any:
        return run(self.gateway.login(USER, password, SOURCE))


def world(tmp_path: Path, settings: ThrottleSettings | None = None,
          access_expires_at: float = NOW + 3600, refuses: tuple[str, ...] = ()) -> World:
    setup = make(tmp_path, access_expires_at=access_expires_at)
    upstream = ScriptedUpstream(set(refuses))
    reactor = MemoryReactorClock()
    throttle = LoginThrottle(settings, now=reactor.seconds)
    gateway = Gateway(reactor, setup.broker, upstream.sign_in, throttle)
    return World(setup, upstream, reactor, gateway)


def test_right_password_signs_in_with_the_cached_token(tmp_path: Path) -> None:
    """A right password gets the account's cached token to the upstream, for its mailbox."""
    w = world(tmp_path)
    assert w.login().token == "access-0"
    assert w.upstream.attempts == [(USER, "access-0")]
    assert w.setup.entra.calls == []


def test_wrong_password_never_reaches_the_upstream(tmp_path: Path) -> None:
    """A wrong password is WrongPassword, with no upstream connection and no token request."""
    w = world(tmp_path)
    with pytest.raises(WrongPassword):
        w.login("guess")
    assert w.upstream.attempts == [] and w.setup.entra.calls == []


def test_refused_source_is_answered_before_its_password_is_checked(tmp_path: Path) -> None:
    """Once an address is locked out, even the right password is refused without a key
    derivation or an upstream connection."""
    w = world(tmp_path, ThrottleSettings(failures_before_lockout=1))
    with pytest.raises(WrongPassword):
        w.login("guess")
    derivations = w.setup.store.derivations
    with pytest.raises(Throttled, match="Too many failed logins"):
        w.login()
    assert w.setup.store.derivations == derivations
    assert w.upstream.attempts == []


def test_slowed_source_waits_before_its_password_is_checked(tmp_path: Path) -> None:
    """An address with failures waits its delay first; only then is the password derived."""
    w = world(tmp_path, ThrottleSettings(failures_before_delay=1, delay=2.0))
    with pytest.raises(WrongPassword):
        w.login("guess")
    derivations = w.setup.store.derivations
    outcome: list[Any] = []
    Deferred.fromCoroutine(w.gateway.login(USER, PASSWORD, SOURCE)).addBoth(outcome.append)
    w.reactor.advance(1.9)
    assert outcome == [] and w.setup.store.derivations == derivations
    w.reactor.advance(0.1)
    assert [signed_in.token for signed_in in outcome] == ["access-0"]
    assert w.setup.store.derivations == derivations + 1


def test_cached_token_refused_upstream_is_retried_once_with_a_new_one(tmp_path: Path) -> None:
    """A cached token the upstream refuses (revoked early) costs one refresh and one more try."""
    w = world(tmp_path, refuses=("access-0",))
    assert w.login().token == "access-1"
    assert w.upstream.tokens == ["access-0", "access-1"]
    assert w.setup.entra.calls == [("refresh", "refresh-0")]


def test_new_token_refused_after_the_retry_is_not_tried_again(tmp_path: Path) -> None:
    """When the new token is refused too, the refusal is reported: exactly one retry."""
    w = world(tmp_path, refuses=("access-0", "access-1"))
    with pytest.raises(UpstreamRejected):
        w.login()
    assert w.upstream.tokens == ["access-0", "access-1"]
    assert len(w.setup.entra.calls) == 1


def test_fresh_token_refused_upstream_is_not_retried(tmp_path: Path) -> None:
    """A token Entra ID has just issued is not stale: its refusal is reported at once."""
    w = world(tmp_path, access_expires_at=NOW - 10, refuses=("access-1",))
    with pytest.raises(UpstreamRejected):
        w.login()
    assert w.upstream.tokens == ["access-1"]
    assert w.setup.entra.calls == [("refresh", "refresh-0")]
