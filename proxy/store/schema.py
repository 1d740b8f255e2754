"""The PostgreSQL backend's tables, created and migrated by the proxy itself.

Versioned (the table xoauth2_proxy_schema holds the version reached), idempotent (only the
steps above that version run), and safe when several instances start at once: the steps run in
one transaction that first takes an advisory lock, so the second instance waits and then finds
nothing left to do.
"""

from __future__ import annotations

import hashlib
from typing import Any

import psycopg

from ..errors import StoreFileInvalid

ACCOUNTS = "xoauth2_proxy_accounts"
SCHEMA = "xoauth2_proxy_schema"
VERSIONS = "xoauth2_proxy_versions"
MIGRATION_LOCK = int.from_bytes(hashlib.sha256(b"xoauth2-proxy schema").digest()[:8], "big",
                                signed=True)

# Step N brings the schema from version N-1 to N. Never edit a released step: add one.
STEPS: tuple[str, ...] = (
    f"""
    CREATE SEQUENCE {VERSIONS};
    CREATE TABLE {ACCOUNTS} (
        name text PRIMARY KEY,             -- the user name, lower-cased
        record text NOT NULL,              -- the encrypted record, as the files backend keeps it
        mailbox text NOT NULL,             -- the rest is the record's readable meta, for people
        flow text NOT NULL,
        state text NOT NULL,
        access_expires_at timestamptz,
        refresh_token_present boolean NOT NULL,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        version bigint NOT NULL DEFAULT nextval('{VERSIONS}')  -- new at every write
    );
    """,
)


def migrate(db: psycopg.Connection[Any], where: str) -> None:
    """Bring the schema up to date; StoreFileInvalid if a newer proxy already moved it further."""
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        db.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA} (version integer NOT NULL)")
        row = db.execute(f"SELECT max(version) FROM {SCHEMA}").fetchone()
        current = int(row[0]) if row and row[0] is not None else 0
        if current > len(STEPS):
            raise StoreFileInvalid(
                where, f"has schema version {current}; this version knows up to {len(STEPS)}",
                "Upgrade xoauth2-proxy on this machine to the version the others run",
            )
        for version, step in enumerate(STEPS[current:], current + 1):
            db.execute(step)
            db.execute(f"INSERT INTO {SCHEMA} (version) VALUES (%s)", (version,))
