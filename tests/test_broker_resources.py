"""proxy.tokens.broker with two resources: an Exchange and a Microsoft Graph token from one
rotating refresh token, one refresh per account at a time, and later tokens for a session
without its password (`renew`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred

from proxy.errors import StaleKey, TokenEndpointUnavailable
from proxy.resources import GRAPH, OUTLOOK
from proxy.store import AccessToken, AccountMeta, Secrets
from proxy.tokens.broker import REFRESH_MARGIN
from tests.support.broker import APP_USER, NOW, PASSWORD, USER, make, run


def test_graph_token_comes_from_the_same_refresh_token(tmp_path: Path) -> None:
    """A Graph grant on an account holding only an Exchange token asks Entra ID for Graph
    with the stored refresh token, saves the rotated one, and leaves the Exchange token be."""
    s = make(tmp_path)
    grant = run(s.broker.grant(USER, PASSWORD, GRAPH))
    assert grant.access_token == "access-1" and grant.resource == GRAPH and grant.fresh
    assert s.entra.calls == [("refresh", "refresh-0")] and s.entra.resources == [GRAPH]
    stored = s.file_secrets()
    assert stored.refresh_token == "refresh-1"
    assert stored.token_for(OUTLOOK) == AccessToken("access-0", NOW + 3600)
    assert stored.token_for(GRAPH) == AccessToken("access-1", NOW + 3600)
    assert s.grant().access_token == "access-0"  # Exchange: still the cached one
    assert run(s.broker.grant(USER, PASSWORD, GRAPH)).access_token == "access-1"
    assert len(s.entra.calls) == 1


def test_refreshes_for_two_resources_take_turns(tmp_path: Path) -> None:
    """Logins for Exchange and for Graph while both tokens are due wait for each other: the
    second request carries the refresh token the first one rotated in."""
    pending: list[tuple[Callable[[], Any], Deferred[Any]]] = []

    def queued(work: Callable[[], Any]) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        pending.append((work, d))
        return d

    s = make(tmp_path, access_expires_at=NOW - 1, run_blocking=queued)
    results: list[Any] = []
    for resource in (OUTLOOK, GRAPH, OUTLOOK, GRAPH):
        Deferred.fromCoroutine(s.broker.grant(USER, PASSWORD, resource)).addBoth(results.append)
    while pending:
        work, d = pending.pop(0)
        d.callback(work())
    assert [r.access_token for r in results] == ["access-1", "access-2", "access-1", "access-2"]
    assert s.entra.calls == [("refresh", "refresh-0"), ("refresh", "refresh-1")]
    assert s.entra.resources == [OUTLOOK, GRAPH]
    assert s.file_secrets().refresh_token == "refresh-2"


def test_renew_needs_no_password(tmp_path: Path) -> None:
    """A session renews its Graph token from its grant alone: the current token while it is
    good, a new one once it is close to expiry, never a key derivation."""
    s = make(tmp_path)
    grant = run(s.broker.grant(USER, PASSWORD, GRAPH))
    assert run(s.broker.renew(grant, refused=False)).access_token == grant.access_token
    s.clock[0] += 3600 - REFRESH_MARGIN + 1
    renewed = run(s.broker.renew(grant, refused=False))
    assert renewed.access_token == "access-2" and renewed.resource == GRAPH
    assert s.store.derivations == 1 and len(s.entra.calls) == 2
    assert "key" not in repr(renewed)


def test_renew_after_a_refusal_gets_a_new_token(tmp_path: Path) -> None:
    """A token Graph refused (401) is replaced even though it has not expired; the Exchange
    token is not touched."""
    s = make(tmp_path)
    grant = run(s.broker.grant(USER, PASSWORD, GRAPH))
    renewed = run(s.broker.renew(grant, refused=True))
    assert renewed.access_token == "access-2" and renewed.fresh
    assert s.file_secrets().token_for(OUTLOOK) == AccessToken("access-0", NOW + 3600)
    assert s.grant().access_token == "access-0"


def test_renew_when_the_broker_forgot_the_account(tmp_path: Path) -> None:
    """A renewal works from the grant's key even when the broker holds no unlocked account
    (a new broker after a reload, say)."""
    s = make(tmp_path)
    grant = run(s.broker.grant(USER, PASSWORD, GRAPH))
    s.broker._unlocked.clear()
    assert run(s.broker.renew(grant, refused=True)).access_token == "access-2"


def test_renew_after_a_password_change_ends_the_session(tmp_path: Path) -> None:
    """Once `account passwd` re-encrypted the record, the session's key no longer opens it."""
    s = make(tmp_path)
    grant = run(s.broker.grant(USER, PASSWORD, GRAPH))
    s.store.change_password(USER, PASSWORD, "a new password")
    with pytest.raises(StaleKey):
        run(s.broker.renew(grant, refused=True))


def test_renew_keeps_a_temporary_failure_temporary(tmp_path: Path) -> None:
    """Entra ID down during a renewal is a TemporaryFailure, and the stored tokens stay."""
    s = make(tmp_path)
    grant = run(s.broker.grant(USER, PASSWORD, GRAPH))
    before = s.store.path(USER).read_bytes()
    s.entra.errors = [TokenEndpointUnavailable("down")]
    with pytest.raises(TokenEndpointUnavailable):
        run(s.broker.renew(grant, refused=True))
    assert s.store.path(USER).read_bytes() == before


def test_forgetting_one_resource_keeps_the_other(tmp_path: Path) -> None:
    """An upstream refusing the Exchange token forces an Exchange refresh only."""
    s = make(tmp_path)
    run(s.broker.grant(USER, PASSWORD, GRAPH))
    s.broker.forget_access_token(USER, OUTLOOK)
    assert run(s.broker.grant(USER, PASSWORD, GRAPH)).access_token == "access-1"
    assert s.grant().access_token == "access-2"
    assert s.entra.resources == [GRAPH, OUTLOOK]


def test_client_credentials_ask_per_resource(tmp_path: Path) -> None:
    """An app-only account asks client credentials for the resource the login needs."""
    s = make(tmp_path)
    key = s.store.new_key("app pw")
    s.store.save(APP_USER, key, Secrets(None, "old", NOW + 3600),
                 AccountMeta(APP_USER, APP_USER, "client_credentials"))
    assert run(s.broker.grant(APP_USER, "app pw", GRAPH)).access_token == "access-1"
    assert s.entra.calls == [("client_credentials", None)] and s.entra.resources == [GRAPH]
    assert s.file_secrets("app pw", APP_USER).token_for(OUTLOOK) == AccessToken("old", NOW + 3600)
