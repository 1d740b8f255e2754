"""What only the PostgreSQL backend has: its schema migrations, a database that cannot be
reached, and DSNs kept out of messages. Against a real PostgreSQL."""

from __future__ import annotations

import threading

import psycopg
import pytest

from proxy.errors import FailureKind, StoreFileInvalid, StoreUnavailable
from proxy.store.postgresql import PostgresStore, describe_dsn
from proxy.store.schema import SCHEMA, STEPS
from tests.support.ports import free_port
from tests.support.postgres import PostgresServer


def test_instances_starting_together_migrate_once(postgres_server: PostgresServer) -> None:
    """Four stores opening a new database at the same moment all work, and each schema step
    ran exactly once."""
    dsn = postgres_server.new_database("migrate")
    stores = [PostgresStore(dsn) for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def first_use(store: PostgresStore) -> None:
        barrier.wait()
        try:
            store.list_meta()
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=first_use, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for store in stores:
        store.close()
    assert errors == []
    with psycopg.connect(dsn) as db:
        versions = [row[0] for row in db.execute(f"SELECT version FROM {SCHEMA}").fetchall()]
    assert versions == list(range(1, len(STEPS) + 1))


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
