"""proxy.tokens.broker.TokenBroker: unlock, cache, refresh, rotation, failures, with a real
FileStore and a stub EntraClient, run synchronously (the integration tests use the real fake
Entra ID)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred

from proxy.account_state import RefreshTrouble
from proxy.errors import (
    AccountNotReady,
    FailureKind,
    NeedsReauthorisation,
    TemporaryFailure,
    TokenEndpointThrottled,
    TokenEndpointUnavailable,
    WrongPassword,
)
from proxy.store import AccountMeta, FileStore, Secrets
from proxy.tokens.broker import BACKOFF_FIRST, REFRESH_MARGIN
from tests.support.broker import APP_USER, FAST, NOW, PASSWORD, USER, make


def test_cached_key_and_token_need_no_second_kdf(tmp_path: Path) -> None:
    """A second login with the same password costs no KDF and no token request."""
    s = make(tmp_path)
    assert s.grant().access_token == "access-0"
    assert s.grant().access_token == "access-0"
    assert s.store.derivations == 1
    assert s.entra.calls == []


def test_wrong_password_sends_no_token_request(tmp_path: Path) -> None:
    """A wrong password raises WrongPassword (a credentials failure) and asks Entra nothing."""
    s = make(tmp_path, access_expires_at=NOW - 1)
    with pytest.raises(WrongPassword) as caught:
        s.grant("not the password")
    assert caught.value.kind is FailureKind.CREDENTIALS
    assert s.entra.calls == []


def test_wrong_password_after_a_good_one_keeps_the_cache(tmp_path: Path) -> None:
    """A wrong password does not evict the unlocked account: the right one still costs no KDF."""
    s = make(tmp_path)
    s.grant()
    with pytest.raises(WrongPassword):
        s.grant("guess")
    s.grant()
    assert s.store.derivations == 2  # the first unlock and the guess


def test_unknown_user_is_wrong_password(tmp_path: Path) -> None:
    """A user not in the config gets the same WrongPassword as a wrong password, no file read."""
    s = make(tmp_path)
    with pytest.raises(WrongPassword):
        s.grant(user="nobody@contoso.example")
    assert s.store.derivations == 0


def test_configured_account_without_file_is_not_ready(tmp_path: Path) -> None:
    """A configured account never added is a temporary failure naming `account add`."""
    s = make(tmp_path)
    with pytest.raises(AccountNotReady, match=f"account add {APP_USER}"):
        s.grant(user=APP_USER)


def test_expired_token_refreshed_once_and_rotation_saved_before_return(tmp_path: Path) -> None:
    """An expired token is refreshed with one request; the rotated refresh token is in the file
    by the time grant returns, and the next login uses the cache."""
    s = make(tmp_path, access_expires_at=NOW - 10)
    seen_in_file: list[str | None] = []
    s.entra.during = lambda: seen_in_file.append(s.file_secrets().refresh_token)
    grant = s.grant()
    assert grant.access_token == "access-1" and grant.fresh
    assert s.entra.calls == [("refresh", "refresh-0")]
    assert seen_in_file == ["refresh-0"]  # during the request the file held the old one
    assert s.file_secrets().refresh_token == "refresh-1"
    assert s.file_secrets().access_token == "access-1"
    assert s.grant().access_token == "access-1"
    assert len(s.entra.calls) == 1


def test_token_inside_refresh_margin_is_refreshed(tmp_path: Path) -> None:
    """A token that expires within the refresh margin is renewed ahead of expiry."""
    s = make(tmp_path, access_expires_at=NOW + REFRESH_MARGIN - 1)
    assert s.grant().access_token == "access-1"


def test_client_credentials_account_gets_a_new_app_token(tmp_path: Path) -> None:
    """An app-only account asks client_credentials, not refresh, and stores no refresh token."""
    s = make(tmp_path)
    key = s.store.new_key("app pw")
    s.store.save(APP_USER, key, Secrets(None, "old", NOW - 1),
                 AccountMeta(APP_USER, APP_USER, "client_credentials"))
    assert s.grant("app pw", APP_USER).access_token == "access-1"
    assert s.entra.calls == [("client_credentials", None)]
    assert s.file_secrets("app pw", APP_USER).refresh_token is None


def test_invalid_grant_marks_the_account_and_keeps_its_tokens(tmp_path: Path) -> None:
    """invalid_grant marks the meta needs_reauth, keeps the ciphertext, and later logins get
    NeedsReauthorisation without asking Entra again."""
    s = make(tmp_path, access_expires_at=NOW - 1)
    before = s.file_secrets()
    s.entra.errors = [NeedsReauthorisation(USER, "revoked")]
    with pytest.raises(NeedsReauthorisation) as caught:
        s.grant()
    assert caught.value.kind is FailureKind.CREDENTIALS
    assert f"run: xoauth2-proxy account add {USER}" in caught.value.message
    meta = s.store.read_meta(USER)
    assert meta is not None and meta.state == "needs_reauth"
    assert s.file_secrets() == before
    with pytest.raises(NeedsReauthorisation, match="account add"):
        s.grant()
    assert len(s.entra.calls) == 1


@pytest.mark.parametrize("error", [
    TokenEndpointUnavailable("Microsoft's sign-in service answered HTTP 500; try again later"),
    TokenEndpointThrottled(1.0, "throttled"),
])
def test_temporary_failure_keeps_the_file_byte_identical(tmp_path: Path, error: Exception) -> None:
    """A temporary failure during refresh leaves the account file byte for byte as it was."""
    s = make(tmp_path, access_expires_at=NOW - 1)
    before = s.store.path(USER).read_bytes()
    s.entra.errors = [error]
    with pytest.raises(TemporaryFailure) as caught:
        s.grant()
    assert caught.value.kind is FailureKind.TEMPORARY
    assert s.store.path(USER).read_bytes() == before


def test_backoff_after_a_temporary_failure(tmp_path: Path) -> None:
    """After a temporary failure, logins within the backoff fail at once without a request;
    after it the next login asks again and succeeds."""
    s = make(tmp_path, access_expires_at=NOW - 1, resilient=True)
    s.entra.errors = [TokenEndpointUnavailable("down")]
    with pytest.raises(TokenEndpointUnavailable):
        s.grant()
    with pytest.raises(TokenEndpointUnavailable, match="down"):
        s.grant()
    assert len(s.entra.calls) == 1
    s.clock[0] += BACKOFF_FIRST + 0.1
    assert s.grant().access_token == "access-1"
    assert len(s.entra.calls) == 2


def test_backoff_doubles_and_honours_retry_after(tmp_path: Path) -> None:
    """Repeated failures double the wait; a Retry-After longer than that wins."""
    s = make(tmp_path, access_expires_at=NOW - 1, resilient=True)
    s.entra.errors = [TokenEndpointUnavailable("a"), TokenEndpointUnavailable("b"),
                      TokenEndpointThrottled(30.0, "slow down")]
    for advance in (0.0, BACKOFF_FIRST + 0.1, 2 * BACKOFF_FIRST + 0.1):
        s.clock[0] += advance
        with pytest.raises(TemporaryFailure):
            s.grant()
    assert len(s.entra.calls) == 3
    s.clock[0] += 4 * BACKOFF_FIRST + 0.1  # the doubled backoff is over, Retry-After is not
    with pytest.raises(TokenEndpointThrottled):
        s.grant()
    assert len(s.entra.calls) == 3
    s.clock[0] += 30
    assert s.grant().fresh


def test_without_the_options_every_failure_is_reported_and_retried(tmp_path: Path) -> None:
    """By default a failed refresh is a temporary failure even with a still valid token, and the
    next login asks Entra again at once."""
    s = make(tmp_path, access_expires_at=NOW + 100)
    s.entra.errors = [TokenEndpointUnavailable("down")]
    with pytest.raises(TokenEndpointUnavailable):
        s.grant()
    assert s.grant().access_token == "access-1"
    assert len(s.entra.calls) == 2


def test_still_valid_token_is_used_while_refresh_fails(tmp_path: Path) -> None:
    """A refresh ahead of expiry that fails temporarily hands out the current, still valid token."""
    s = make(tmp_path, access_expires_at=NOW + 100, resilient=True)
    s.entra.errors = [TokenEndpointUnavailable("down")]
    grant = s.grant()
    assert grant.access_token == "access-0" and not grant.fresh
    assert s.grant().access_token == "access-0"  # within the backoff: no second request
    assert len(s.entra.calls) == 1


def test_password_change_elsewhere_makes_the_cached_password_fail(tmp_path: Path) -> None:
    """After `account passwd` in another process, the old password gets WrongPassword and the
    new one works, without restarting the broker (StaleKey)."""
    s = make(tmp_path)
    s.grant()
    FileStore(s.store.root, kdf=FAST).change_password(USER, PASSWORD, "new password")
    with pytest.raises(WrongPassword):
        s.grant()
    assert s.grant("new password").access_token == "access-0"
    assert s.entra.calls == []


def test_refresh_by_another_process_is_picked_up(tmp_path: Path) -> None:
    """Tokens another process stored (rotation included) are used, not the cached old ones."""
    s = make(tmp_path, access_expires_at=NOW + 3600)
    s.grant()
    s.store.save(USER, s.key, Secrets("refresh-x", "access-x", NOW + 3600))
    assert s.grant().access_token == "access-x"
    s.clock[0] += 3600
    s.grant()
    assert s.entra.calls == [("refresh", "refresh-x")]


def test_removed_account_is_no_longer_granted(tmp_path: Path) -> None:
    """After `account remove`, a cached login fails (temporary, naming account add)."""
    s = make(tmp_path)
    s.grant()
    s.store.remove(USER)
    with pytest.raises(AccountNotReady):
        s.grant()


def test_save_failure_keeps_new_tokens_and_saves_them_next_grant(tmp_path: Path) -> None:
    """When the refreshed tokens cannot be written, the login fails temporarily, the tokens stay
    in memory, and the next grant writes them first, without another request."""
    s = make(tmp_path, access_expires_at=NOW - 1)
    s.store.failing_saves = 1
    with pytest.raises(TemporaryFailure, match="Could not save"):
        s.grant()
    assert s.file_secrets().refresh_token == "refresh-0"
    grant = s.grant()
    assert grant.access_token == "access-1"
    assert s.file_secrets().refresh_token == "refresh-1"
    assert s.entra.calls == [("refresh", "refresh-0")]


def test_save_failure_twice_keeps_waiting(tmp_path: Path) -> None:
    """A disk that still refuses keeps the pending tokens and never hands out the access token."""
    s = make(tmp_path, access_expires_at=NOW - 1)
    s.store.failing_saves = 2
    for _ in range(2):
        with pytest.raises(TemporaryFailure, match="Could not save"):
            s.grant()
    assert s.grant().access_token == "access-1"
    assert s.file_secrets().refresh_token == "refresh-1"
    assert len(s.entra.calls) == 1


def test_pending_tokens_yield_to_newer_tokens_on_disk(tmp_path: Path) -> None:
    """Pending unsaved tokens are dropped when another process stored newer ones meanwhile."""
    s = make(tmp_path, access_expires_at=NOW - 1)
    s.store.failing_saves = 1
    with pytest.raises(TemporaryFailure):
        s.grant()
    s.store.save(USER, s.key, Secrets("refresh-other", "access-other", NOW + 3600))
    assert s.grant().access_token == "access-other"
    assert s.file_secrets().refresh_token == "refresh-other"


def test_forget_access_token_forces_a_refresh(tmp_path: Path) -> None:
    """After the upstream refused the cached token, the next grant refreshes even though the
    token has not expired."""
    s = make(tmp_path)
    assert s.grant().access_token == "access-0"
    s.broker.forget_access_token(USER.upper())
    grant = s.grant()
    assert grant.access_token == "access-1" and grant.fresh
    assert s.entra.calls == [("refresh", "refresh-0")]
    assert s.grant().access_token == "access-1"


def test_refused_token_is_not_reused_when_refresh_fails(tmp_path: Path) -> None:
    """A token the upstream refused is never handed out again as a fallback."""
    s = make(tmp_path, resilient=True)
    s.grant()
    s.broker.forget_access_token(USER)
    s.entra.errors = [TokenEndpointUnavailable("down")]
    with pytest.raises(TokenEndpointUnavailable):
        s.grant()


def test_concurrent_logins_share_one_refresh(tmp_path: Path) -> None:
    """Five logins arriving while the token is expired wait for one refresh and all get it."""
    pending: list[tuple[Callable[[], Any], Deferred[Any]]] = []

    def queued(work: Callable[[], Any]) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        pending.append((work, d))
        return d

    s = make(tmp_path, access_expires_at=NOW - 1, run_blocking=queued)
    results: list[Any] = []
    for _ in range(5):
        Deferred.fromCoroutine(s.broker.grant(USER, PASSWORD)).addBoth(results.append)
    while pending:
        work, d = pending.pop(0)
        d.callback(work())
    assert [r.access_token for r in results] == ["access-1"] * 5
    assert s.entra.calls == [("refresh", "refresh-0")]
    assert s.store.derivations == 1


def test_failing_refresh_is_remembered_since_its_first_failure_until_a_success(
        tmp_path: Path) -> None:
    """A refresh that keeps failing is noted with the time of its first failure and the
    latest reason (for the admin page); a successful refresh clears it."""
    s = make(tmp_path, access_expires_at=NOW - 1)
    s.entra.errors = [TokenEndpointUnavailable("down"), TokenEndpointUnavailable("still down")]
    for _ in range(2):
        with pytest.raises(TokenEndpointUnavailable):
            s.grant()
        s.clock[0] += 60
    assert s.broker.trouble[USER] == RefreshTrouble(NOW, "still down")
    s.grant()
    assert USER not in s.broker.trouble


def test_every_token_request_is_reported_with_its_outcome(tmp_path: Path) -> None:
    """on_token_request hears of each request made to Entra ID (and of no cached grant)."""
    s = make(tmp_path, access_expires_at=NOW - 1)
    heard: list[str] = []
    s.broker._on_token_request = lambda error: heard.append(type(error).__name__)
    s.entra.errors = [TokenEndpointThrottled(1.0, "slow down")]
    with pytest.raises(TokenEndpointThrottled):
        s.grant()
    s.grant()
    s.grant()  # cached: no request
    assert heard == ["TokenEndpointThrottled", "NoneType"]


def test_forget_failures_lets_a_reauthorised_account_ask_at_once(tmp_path: Path) -> None:
    """After an authorisation, the old trouble and the retry backoff are forgotten."""
    s = make(tmp_path, access_expires_at=NOW - 1, resilient=True)
    s.entra.errors = [TokenEndpointUnavailable("down")]
    with pytest.raises(TokenEndpointUnavailable):
        s.grant()
    s.broker.forget_failures(USER.upper())
    assert USER not in s.broker.trouble
    s.grant()  # no backoff left: asks Entra ID again
    assert len(s.entra.calls) == 2
