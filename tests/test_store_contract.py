"""The Store contract, one table run against every backend: the files under a folder and a real
PostgreSQL database. What the broker and the account commands rely on holds for both."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from proxy.errors import AccountNotReady, StaleKey, WrongPassword
from proxy.resources import GRAPH, OUTLOOK
from proxy.store import AccessToken, AccountMeta, FileStore, ScryptParams, Secrets, Store
from proxy.store.rekey import rekey_if_outdated
from tests.support.postgres import PostgresServer

FAST = ScryptParams(n=16, r=1, p=1)
OLD = ScryptParams(n=32, r=2, p=1)  # stands for the cost of records written before
ALICE = "alice@contoso.com"
BOB = "bob@contoso.com"
SECRETS = Secrets("R-secret-refresh", "A-secret-access", 1_900_000_000.5, {"k": "v"})

MakeStore = Callable[..., Store]


@pytest.fixture(params=["files", "postgresql"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeStore]:
    """Stores of one backend that all see the same records (as two processes or instances
    would); the first call's store is the one a test mostly uses."""
    opened: list[Store] = []
    if request.param == "files":
        def make(kdf: ScryptParams = FAST) -> Store:
            opened.append(FileStore(tmp_path / "store", kdf=kdf))
            return opened[-1]
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        dsn = server.new_database("contract")
        from proxy.store.postgresql import PostgresStore

        def make(kdf: ScryptParams = FAST) -> Store:
            opened.append(PostgresStore(dsn, kdf=kdf))
            return opened[-1]
    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: MakeStore) -> Store:
    return make_store()


def add(store: Store, username: str = ALICE, password: str = "pw") -> None:
    store.save(username, store.new_key(password), SECRETS,
               AccountMeta(username, "shared@contoso.com", "device_code"))


def test_round_trip_and_meta(store: Store) -> None:
    """Saved secrets come back with the password's key; meta is readable without it."""
    add(store)
    assert store.exists(ALICE) and store.exists(ALICE.upper())
    assert store.load(ALICE, store.derive_key(ALICE, "pw")) == SECRETS
    meta = store.read_meta(ALICE)
    assert meta is not None
    assert (meta.username, meta.mailbox, meta.flow, meta.state) == (
        ALICE, "shared@contoso.com", "device_code", "ok")
    assert (meta.access_expires_at, meta.refresh_token_present) == (1_900_000_000.5, True)
    assert store.location(ALICE)  # somewhere an administrator can be told about


def test_meta_has_each_resources_expiry_and_copies_with_it(make_store: MakeStore,
                                                          tmp_path: Path) -> None:
    """With an Exchange and a Graph token, meta read back (by another store object, and from
    a copy in the other backend) has each one's expiry; an update_meta keeps them."""
    store, other = make_store(), make_store()
    both = SECRETS.with_token(GRAPH, AccessToken("G-secret-access", 1_800_000_000.0), "R-2")
    store.save(ALICE, store.new_key("pw"), both,
               AccountMeta(ALICE, "shared@contoso.com", "device_code"))
    expected = {OUTLOOK: 1_900_000_000.5, GRAPH: 1_800_000_000.0}
    store.update_meta(ALICE, state="needs_reauth")
    meta = other.read_meta(ALICE)
    assert meta is not None and meta.access_expiries == expected
    assert meta.access_expires_at == 1_800_000_000.0
    copy = FileStore(tmp_path / "copy", kdf=FAST)
    assert copy.put_record(store.records()[0])
    assert [m.access_expiries for m in copy.list_meta()] == [expected]
    store.remove(ALICE)
    assert store.put_record(copy.records()[0])
    assert [m.access_expiries for m in other.list_meta()] == [expected]


def test_wrong_password_changes_nothing(store: Store) -> None:
    """A wrong password raises WrongPassword and leaves the record and its stamp as they were."""
    add(store)
    stamp = store.stamp(ALICE)
    with pytest.raises(WrongPassword) as caught:
        store.load(ALICE, store.derive_key(ALICE, "not pw"))
    assert type(caught.value) is WrongPassword
    assert store.stamp(ALICE) == stamp


def test_missing_account(store: Store) -> None:
    """No record: no meta, no stamp, and AccountNotReady naming `account add`."""
    assert not store.exists(ALICE)
    assert store.read_meta(ALICE) is None and store.stamp(ALICE) is None
    assert store.list_meta() == [] and store.records() == []
    with pytest.raises(AccountNotReady, match=f"account add {ALICE}"):
        store.derive_key(ALICE, "pw")
    with pytest.raises(AccountNotReady):
        store.update_meta(ALICE, state="ok")
    assert store.remove(ALICE) is False


def test_list_is_sorted_and_update_meta_keeps_secrets(store: Store) -> None:
    """list_meta is sorted by user name; update_meta changes meta, not the sealed secrets."""
    add(store, BOB)
    add(store, ALICE)
    assert [meta.username for meta in store.list_meta()] == [ALICE, BOB]
    assert store.update_meta(ALICE, state="needs_reauth").state == "needs_reauth"
    meta = store.read_meta(ALICE)
    assert meta is not None and meta.state == "needs_reauth"
    assert store.load(ALICE, store.derive_key(ALICE, "pw")) == SECRETS


def test_every_write_changes_the_stamp(make_store: MakeStore) -> None:
    """save, update_meta, change_password and remove-then-add each give a new stamp, seen by
    another store object on the same records."""
    store, other = make_store(), make_store()
    add(store)
    seen = [other.stamp(ALICE)]
    store.save(ALICE, store.derive_key(ALICE, "pw"), SECRETS)
    seen.append(other.stamp(ALICE))
    store.update_meta(ALICE, state="needs_reauth")
    seen.append(other.stamp(ALICE))
    store.change_password(ALICE, "pw", "new pw")
    seen.append(other.stamp(ALICE))
    assert store.remove(ALICE) is True
    assert other.stamp(ALICE) is None
    add(store)
    seen.append(other.stamp(ALICE))
    assert None not in seen and len(set(seen)) == len(seen)


def test_change_password(store: Store) -> None:
    """The new password opens the record, a key of the old one is stale; a wrong old password
    changes nothing."""
    add(store)
    old_key = store.derive_key(ALICE, "pw")
    with pytest.raises(WrongPassword):
        store.change_password(ALICE, "wrong", "new pw")
    assert store.load(ALICE, old_key) == SECRETS
    store.change_password(ALICE, "pw", "new pw")
    with pytest.raises(StaleKey):
        store.load(ALICE, old_key)
    assert store.load(ALICE, store.derive_key(ALICE, "new pw")) == SECRETS


def test_lock_excludes_another_store_until_released(make_store: MakeStore) -> None:
    """While one store object holds an account's lock, another (another process or instance)
    waits for it; the holder may nest it; what it saved is there once it lets go."""
    store, other = make_store(), make_store()
    add(store)
    key = store.derive_key(ALICE, "pw")
    got_it = threading.Event()

    def contender() -> None:
        with other.lock(ALICE):
            got_it.set()

    with store.lock(ALICE):
        with store.lock(ALICE):  # nested in one thread
            store.save(ALICE, key, Secrets("R-2", "A-2", 5.0))
        thread = threading.Thread(target=contender)
        thread.start()
        assert not got_it.wait(0.5)
    assert got_it.wait(10)
    thread.join()
    assert other.load(ALICE, key).refresh_token == "R-2"


def test_a_write_before_an_error_under_the_lock_stays(store: Store) -> None:
    """A meta change saved under the lock before an error (the refresh refused for good) is
    kept, as a written file would be."""
    add(store)
    with pytest.raises(RuntimeError), store.lock(ALICE):
        store.update_meta(ALICE, state="needs_reauth")
        raise RuntimeError("refused")
    meta = store.read_meta(ALICE)
    assert meta is not None and meta.state == "needs_reauth"


def test_records_copy_sealed_between_stores(make_store: MakeStore, tmp_path: Path) -> None:
    """A record copied with records()/put_record opens with the same password in the other
    store, and an account already there is not overwritten."""
    store = make_store()
    add(store)
    target = FileStore(tmp_path / "copy", kdf=FAST)
    (record,) = store.records()
    assert target.put_record(record) is True
    assert target.load(ALICE, target.derive_key(ALICE, "pw")) == SECRETS
    assert target.put_record(record) is False
    store.remove(ALICE)
    assert store.put_record(target.records()[0]) is True
    assert store.load(ALICE, store.derive_key(ALICE, "pw")) == SECRETS


def test_an_old_record_is_resealed_at_the_current_cost(make_store: MakeStore) -> None:
    """rekey_if_outdated re-seals a record whose key has an older cost, once: the new key opens
    it, the old key is stale, a current key is kept as it is."""
    old_store = make_store(OLD)
    add(old_store)
    store = make_store()
    key = store.derive_key(ALICE, "pw")
    assert key.params == OLD and store.outdated(key)
    fresh = rekey_if_outdated(store, ALICE, key, "pw")
    assert fresh.params == FAST and not store.outdated(fresh)
    assert store.load(ALICE, fresh) == SECRETS
    assert store.derive_key(ALICE, "pw") == fresh
    with pytest.raises(StaleKey):
        store.load(ALICE, key)
    assert rekey_if_outdated(store, ALICE, fresh, "pw") is fresh
