"""What only the PostgreSQL backend has: its schema migrations, a database that cannot be
reached, and DSNs kept out of messages. Against a real PostgreSQL."""

from __future__ import annotations

import threading

import psycopg
import pytest

from proxy.errors import FailureKind, StoreFileInvalid, StoreUnavailable
from proxy.resources import GRAPH, OUTLOOK
from proxy.store import AccessToken
from proxy.store.postgresql import PostgresStore, describe_dsn
from proxy.store.schema import ACCOUNTS, SCHEMA, STEPS
from tests.support.ports import free_port
from tests.support.postgres import PostgresServer
from tests.test_store_record import FORMAT_1, PASSWORD, SECRETS

ALICE = "alice@example.com"


def test_instances_starting_together_migrate_once(postgres_server: PostgresServer) -> None:
    """Four stores opening a new database at the same moment all work, and each schema step
    ran exactly once."""
    dsn = postgres_server.new_database("migrate")
    assert _first_use_together(dsn, 4) == []
    assert _versions(dsn) == list(range(1, len(STEPS) + 1))


def test_a_database_of_schema_1_is_migrated_and_its_rows_read(
        postgres_server: PostgresServer) -> None:
    """A database from before per-resource expiries (schema 1, a row as that version wrote
    it) is migrated once by two instances starting together; the old row reads with no
    per-resource expiry and opens, and the next save fills the new column for people."""
    dsn = postgres_server.new_database("schema1")
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(f"CREATE TABLE {SCHEMA} (version integer NOT NULL)".encode())
        db.execute(STEPS[0].encode())
        db.execute(f"INSERT INTO {SCHEMA} VALUES (1)".encode())
        db.execute(f"""INSERT INTO {ACCOUNTS} (name, record, mailbox, flow, state,
                           access_expires_at, refresh_token_present, created_at, updated_at)
                       VALUES ('alice@example.com', %s, 'shared@example.com', 'device_code',
                               'ok', to_timestamp(1900000000.5), true, now(), now())""".encode(),
                   (FORMAT_1.decode(),))
    assert _first_use_together(dsn, 2) == []
    assert _versions(dsn) == list(range(1, len(STEPS) + 1))
    store = PostgresStore(dsn)
    try:
        (meta,) = store.list_meta()
        assert (meta.access_expires_at, meta.access_expiries) == (1_900_000_000.5, {})
        key = store.derive_key(ALICE, PASSWORD)
        assert store.load(ALICE, key) == SECRETS
        assert _expiries_column(dsn) is None
        graph = AccessToken("G-access", 1_800_000_000.0)
        store.save(ALICE, key, SECRETS.with_token(GRAPH, graph, "R-refresh"))
    finally:
        store.close()
    assert _expiries_column(dsn) == {OUTLOOK: "2030-03-17T17:46:40.500000+00:00",
                                     GRAPH: "2027-01-15T08:00:00+00:00"}


def _first_use_together(dsn: str, instances: int) -> list[BaseException]:
    """Stores opening the database at the same moment, as instances starting together; the
    errors they met."""
    stores = [PostgresStore(dsn) for _ in range(instances)]
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def first_use(store: PostgresStore) -> None:
        barrier.wait()
        try:
            store.list_meta()
        except BaseException as e:  # reported by the caller
            errors.append(e)

    threads = [threading.Thread(target=first_use, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for store in stores:
        store.close()
    return errors


def _versions(dsn: str) -> list[int]:
    with psycopg.connect(dsn) as db:
        return [row[0] for row in db.execute(f"SELECT version FROM {SCHEMA}".encode()).fetchall()]


def _expiries_column(dsn: str) -> object:
    with psycopg.connect(dsn) as db:
        row = db.execute(f"SELECT access_expiries FROM {ACCOUNTS}".encode()).fetchone()
    assert row is not None
    return row[0]


def test_a_schema_from_a_newer_proxy_is_refused(postgres_server: PostgresServer) -> None:
    """A database a newer xoauth2-proxy migrated further is not touched; the message says to
    upgrade."""
    dsn = postgres_server.new_database("newer")
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(f"CREATE TABLE {SCHEMA} (version integer NOT NULL)".encode())
        db.execute(f"INSERT INTO {SCHEMA} VALUES ({len(STEPS) + 1})".encode())
    store = PostgresStore(dsn)
    try:
        with pytest.raises(StoreFileInvalid, match="Upgrade xoauth2-proxy"):
            store.list_meta()
    finally:
        store.close()


def test_an_unreachable_database_is_a_temporary_failure_without_the_password() -> None:
    """Nothing listening: StoreUnavailable (temporary) within the pool's wait, naming the
    database but not its password."""
    dsn = f"postgresql://proxy:S3cret-pw@127.0.0.1:{free_port()}/accounts?connect_timeout=1"
    store = PostgresStore(dsn)
    try:
        with pytest.raises(StoreUnavailable) as caught:
            store.stamp("alice@contoso.com")
    finally:
        store.close()
    assert caught.value.kind is FailureKind.TEMPORARY
    assert "accounts at 127.0.0.1" in caught.value.message
    assert "S3cret-pw" not in caught.value.message
    assert "S3cret" not in describe_dsn(dsn)
