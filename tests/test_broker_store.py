"""The broker and its store: reading a record only when its stamp changed, a store that is
down, records re-sealed at the current cost, and key derivations a few at a time."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, maybeDeferred

from proxy.errors import AccountNotReady, FailureKind, StoreUnavailable, WrongPassword
from proxy.store import AccountMeta, FileStore, ScryptParams, Secrets
from proxy.tokens.broker import PARALLEL_DERIVATIONS
from tests.support.broker import FAST, NOW, PASSWORD, USER, account, make

OLD = ScryptParams(n=2**5)


def test_an_unchanged_record_is_not_read_again(tmp_path: Path) -> None:
    """After the first login, logins read only the stamp until the record changes; a write by
    another process is then read once."""
    s = make(tmp_path)
    for _ in range(3):
        s.grant()
    assert s.store.loads == 1
    other = FileStore(s.store.root, kdf=FAST)
    other.save(USER, s.key, Secrets("refresh-9", "access-9", NOW + 3600))
    assert s.grant().access_token == "access-9"
    s.grant()
    assert s.store.loads == 2


@pytest.mark.parametrize(("local_stamps", "trips_per_login"), [(True, 0), (False, 1)])
def test_an_unchanged_files_record_costs_no_trip_to_the_thread_pool(
        tmp_path: Path, local_stamps: bool, trips_per_login: int) -> None:
    """A cached login on the files backend checks the record's stamp with one stat where it
    runs; a database's stamp is a query, asked in the pool. A change is seen either way."""
    trips: list[object] = []

    def counted(work: Callable[[], Any]) -> Deferred[Any]:
        trips.append(work)
        return maybeDeferred(work)

    s = make(tmp_path, run_blocking=counted)
    s.store.local_stamps = local_stamps  # type: ignore[misc]
    s.grant()
    trips.clear()
    for _ in range(3):
        s.grant()
    assert len(trips) == 3 * trips_per_login
    FileStore(s.store.root, kdf=FAST).save(USER, s.key, Secrets("refresh-9", "access-9", NOW + 3600))
    assert s.grant().access_token == "access-9"


def test_a_store_that_is_down_keeps_unlocked_accounts_working(tmp_path: Path) -> None:
    """While the store is down, a cached account with a valid token logs in with its password
    checked in memory; another password cannot be checked (it may be a new one) and is told to
    come back later; nothing needing the store is granted."""
    s = make(tmp_path)
    s.grant()
    s.store.down = True
    assert s.grant().access_token == "access-0"
    with pytest.raises(StoreUnavailable):
        s.grant("guess")
    s.clock[0] = NOW + 3600  # the cached token expired: a refresh needs the store
    with pytest.raises(StoreUnavailable) as caught:
        s.grant()
    assert caught.value.kind is FailureKind.TEMPORARY
    assert s.entra.calls == []
    s.store.down = False
    assert s.grant().access_token == "access-1"


def test_a_store_that_is_down_at_first_login_is_temporary(tmp_path: Path) -> None:
    """An account not unlocked yet gets a temporary failure, never a wrong-password answer."""
    s = make(tmp_path)
    s.store.down = True
    with pytest.raises(StoreUnavailable):
        s.grant()


def test_removed_elsewhere_is_noticed_by_the_stamp(tmp_path: Path) -> None:
    """An account removed by another process is not granted from memory."""
    s = make(tmp_path)
    s.grant()
    FileStore(s.store.root, kdf=FAST).remove(USER)
    with pytest.raises(AccountNotReady):
        s.grant()


def test_an_old_record_is_resealed_at_the_first_login(tmp_path: Path) -> None:
    """A record sealed at the old cost is re-sealed at the store's cost by the first successful
    login (one derivation each), and later logins derive nothing."""
    s = make(tmp_path)
    old = FileStore(s.store.root, kdf=OLD)
    old.save(USER, old.new_key(PASSWORD), Secrets("refresh-0", "access-0", NOW + 3600))
    assert s.grant().access_token == "access-0"
    assert (s.store.derivations, s.store.new_keys) == (1, 2)  # make() made one key too
    assert s.store.derive_key(USER, PASSWORD).params == FAST
    s.grant()
    s.grant()
    assert (s.store.derivations, s.store.new_keys) == (2, 2)


def test_a_wrong_password_never_reseals(tmp_path: Path) -> None:
    """A wrong password on an old record leaves it as it is."""
    s = make(tmp_path)
    old = FileStore(s.store.root, kdf=OLD)
    old.save(USER, old.new_key(PASSWORD), Secrets("refresh-0", "access-0", NOW + 3600))
    before = s.store.path(USER).read_bytes()
    with pytest.raises(WrongPassword):
        s.grant("guess")
    assert s.store.path(USER).read_bytes() == before


def test_derivations_run_a_few_at_a_time(tmp_path: Path) -> None:
    """Many accounts unlocking at once (a restart) derive at most PARALLEL_DERIVATIONS keys at
    a time; all of them get their token."""
    pending: list[tuple[Callable[[], Any], Deferred[Any]]] = []

    def queued(work: Callable[[], Any]) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        pending.append((work, d))
        return d

    s = make(tmp_path, run_blocking=queued)
    users = [f"user{n}@contoso.example" for n in range(7)]
    for user in users:
        s.broker.config.accounts[user] = account(user, "device_code")
        s.store.save(user, s.store.new_key(PASSWORD), Secrets("r", "a", NOW + 3600),
                     AccountMeta(user, user, "device_code"))
    results: list[Any] = []
    for user in users:
        Deferred.fromCoroutine(s.broker.grant(user, PASSWORD)).addBoth(results.append)
    most = 0
    while pending:
        most = max(most, len(pending))
        work, d = pending.pop(0)
        d.callback(work())
    assert most == PARALLEL_DERIVATIONS
    assert [getattr(r, "access_token", r) for r in results] == ["a"] * len(users)
