"""The PostgreSQL backend: one row per account in a database every instance shares.

Each row holds the same encrypted record as the files backend (proxy.store.record; the
database never sees a clear token or password) and, beside it, the readable meta that
`account list` shows. A write gives the row a new `version` from one sequence, the change
stamp the broker compares. The account lock is pg_advisory_xact_lock on a key derived from the
user name, held by a transaction that the methods called under it join (one connection per
thread while it is held): everything saved under the lock commits when it is released, and a
crashed instance's lock ends with its connection.

Plain synchronous code (psycopg 3 with its connection pool), called from a thread pool. A
database that cannot be reached raises StoreUnavailable; the pool reconnects by itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from ..errors import StoreUnavailable
from .contract import Stamp
from .kdf import DEFAULT_KDF, KdfParams
from .record import Record, account_name
from .schema import ACCOUNTS, migrate
from .sealed import SealedRecords

# A lock waits at most this long for another instance's refresh (token requests time out
# well before); then the login gets a temporary failure instead of hanging.
LOCK_TIMEOUT_SECONDS = 60
CONNECT_TIMEOUT_SECONDS = 5  # per attempt; a login waits at most POOL_TIMEOUT for a connection
POOL_TIMEOUT_SECONDS = 5.0

_COLUMNS = "name, record"
_UPSERT = f"""
    INSERT INTO {ACCOUNTS} (name, record, mailbox, flow, state, access_expires_at,
                            refresh_token_present, created_at, updated_at)
    VALUES (%(name)s, %(record)s, %(mailbox)s, %(flow)s, %(state)s,
            to_timestamp(%(access_expires_at)s), %(refresh_token_present)s,
            to_timestamp(%(created_at)s), to_timestamp(%(updated_at)s))
    ON CONFLICT (name) DO UPDATE SET
        record = EXCLUDED.record, mailbox = EXCLUDED.mailbox, flow = EXCLUDED.flow,
        state = EXCLUDED.state, access_expires_at = EXCLUDED.access_expires_at,
        refresh_token_present = EXCLUDED.refresh_token_present,
        updated_at = EXCLUDED.updated_at, version = DEFAULT
"""


def lock_key(name: str) -> int:
    """The advisory lock key (a signed 64-bit integer) of an account, the same in every instance."""
    digest = hashlib.sha256(b"xoauth2-proxy account\0" + name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def describe_dsn(dsn: str) -> str:
    """Where a DSN points, without its password: for messages."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "the PostgreSQL database (its dsn cannot be parsed)"
    host, port = parts.get("host") or "localhost", parts.get("port") or "5432"
    return f"PostgreSQL database {parts.get('dbname') or parts.get('user') or '?'} at {host}:{port}"


@dataclass
class _Held:
    """The transaction this thread holds account locks in."""

    connection: psycopg.Connection[Any]
    names: set[str] = field(default_factory=set)


class PostgresStore(SealedRecords):
    """The accounts in a PostgreSQL database; safe to share between threads and instances."""

    local_stamps = False  # stamp() is a query

    def __init__(self, dsn: str, kdf: KdfParams = DEFAULT_KDF, max_connections: int = 8) -> None:
        super().__init__(kdf)
        self.where = describe_dsn(dsn)
        self._local = threading.local()
        self._schema_lock = threading.Lock()
        self._schema_ready = False
        self._pool = ConnectionPool(
            dsn, min_size=1, max_size=max_connections, open=False, timeout=POOL_TIMEOUT_SECONDS,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_SECONDS},
            check=ConnectionPool.check_connection,  # a connection the server dropped is replaced
            name="xoauth2-proxy",
        )
        self._pool.open(wait=False)  # start even while the database is down

    # -- reading, no password needed --

    def location(self, username: str) -> str:
        return f"{self.where}, table {ACCOUNTS}, row {account_name(username)!r}"

    def exists(self, username: str) -> bool:
        return self.stamp(username) is not None

    def stamp(self, username: str) -> Stamp | None:
        with self._transaction() as db:
            row = db.execute(f"SELECT version FROM {ACCOUNTS} WHERE name = %s",
                             (account_name(username),)).fetchone()
        return None if row is None else (int(row[0]),)

    def records(self) -> list[Record]:
        with self._transaction() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM {ACCOUNTS} ORDER BY name").fetchall()
        return [self._parse(name, raw) for name, raw in rows]

    def remove(self, username: str) -> bool:
        name = account_name(username)
        with self.lock(name), self._transaction() as db:
            return db.execute(f"DELETE FROM {ACCOUNTS} WHERE name = %s RETURNING name",
                              (name,)).fetchone() is not None

    @contextlib.contextmanager
    def lock(self, username: str) -> Iterator[None]:
        """pg_advisory_xact_lock in this thread's transaction (begun here if there is none);
        what was written under it commits when the outermost lock is released."""
        name = account_name(username)
        held: _Held | None = getattr(self._local, "held", None)
        if held is not None:
            if name not in held.names:
                self._take(held.connection, name)
                held.names.add(name)
            yield
            return
        failure: Exception | None = None
        with self._transaction() as db:
            db.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_SECONDS}s'")
            self._take(db, name)
            self._local.held = _Held(db, {name})
            try:
                yield
            except psycopg.Error:
                raise  # the transaction is broken: roll back
            except Exception as e:
                # Like a file written before the error: what was saved (a state change before
                # NeedsReauthorisation) stays saved.
                failure = e
            finally:
                self._local.held = None
        if failure is not None:
            raise failure

    def close(self) -> None:
        self._pool.close(timeout=5)

    # -- internals --

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection in a transaction: the one this thread's lock holds, or a new one that
        commits at the end. Connection failures become StoreUnavailable."""
        held: _Held | None = getattr(self._local, "held", None)
        if held is not None:
            yield held.connection
            return
        try:
            with self._pool.connection() as db:
                self._ensure_schema(db)
                with db.transaction():
                    yield db
        except psycopg.OperationalError as e:  # includes the pool's timeout and lock_timeout
            reason = (str(e).strip().splitlines() or ["no reason given"])[-1][:200]
            raise StoreUnavailable(
                f"The account database ({self.where}) could not be used: {reason}; "
                "try again later"
            ) from None

    def _ensure_schema(self, db: psycopg.Connection[Any]) -> None:
        if self._schema_ready:
            return
        with self._schema_lock:
            if not self._schema_ready:
                migrate(db, self.where)
                self._schema_ready = True

    def _take(self, db: psycopg.Connection[Any], name: str) -> None:
        db.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(name),))

    def _get(self, name: str) -> Record | None:
        with self._transaction() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM {ACCOUNTS} WHERE name = %s",
                             (name,)).fetchone()
        return None if row is None else self._parse(*row)

    def _parse(self, name: str, raw: str) -> Record:
        return Record.parse(raw.encode("utf-8"), self.location(name), name)

    def _write(self, record: Record) -> None:
        meta = record.meta
        with self._transaction() as db:
            db.execute(_UPSERT, {
                "name": meta.username, "record": record.to_bytes().decode("utf-8"),
                "mailbox": meta.mailbox, "flow": meta.flow, "state": meta.state,
                "access_expires_at": meta.access_expires_at,
                "refresh_token_present": meta.refresh_token_present,
                "created_at": meta.created_at, "updated_at": meta.updated_at,
            })
