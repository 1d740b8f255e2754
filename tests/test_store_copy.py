"""`xoauth2-proxy store copy`: accounts move between the files and a real PostgreSQL database
still sealed, and open there with their local password."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from proxy.resources import GRAPH, OUTLOOK
from proxy.store import AccessToken, AccountMeta, FileStore, Secrets
from proxy.store.postgresql import PostgresStore
from tests.support.postgres import PostgresServer
from tests.test_config import LISTENER

ROOT = Path(__file__).resolve().parents[1]
USERS = ("alice@contoso.com", "bob@contoso.com")
SECRETS = Secrets("R-refresh", "A-access", 1_900_000_000.0,
                  other_tokens={GRAPH: AccessToken("G-access", 1_800_000_000.0)})
EXPIRIES = {OUTLOOK: 1_900_000_000.0, GRAPH: 1_800_000_000.0}


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", "--config", str(config), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_store_copy_to_the_database_and_back(tmp_path: Path,
                                             postgres_server: PostgresServer) -> None:
    """Every account in the files is copied to the database as it is (its password opens it
    there, its meta has each resource's expiry); one already there is left alone and the
    command says so; --to files goes back."""
    files = FileStore(tmp_path / "store")
    for user in USERS:
        files.save(user, files.new_key(f"pw of {user}"), SECRETS,
                   AccountMeta(user, user, "device_code"))
    dsn = postgres_server.new_database("copy")
    config = tmp_path / "config.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "store"}"\ndsn = "{dsn}"\n' + LISTENER)

    copied = _cli(config, "store", "copy", "--to", "postgresql")
    assert copied.returncode == 0, copied.stderr
    assert "2 of 2 account(s) copied" in copied.stdout
    database = PostgresStore(dsn)
    try:
        for user in USERS:
            assert database.load(user, database.derive_key(user, f"pw of {user}")) == SECRETS
        assert [meta.access_expiries for meta in database.list_meta()] == [EXPIRIES] * 2
        assert postgres_server.password not in copied.stdout + copied.stderr

        again = _cli(config, "store", "copy", "--to", "postgresql")
        assert again.returncode == 1 and "already in" in again.stdout

        database.remove(USERS[0])
        files.remove(USERS[1])
        back = _cli(config, "store", "copy", "--to", "files")
        assert "1 of 1 account(s) copied" in back.stdout
        assert files.load(USERS[1], files.derive_key(USERS[1], f"pw of {USERS[1]}")) == SECRETS
        assert [meta.access_expiries for meta in files.list_meta()] == [EXPIRIES] * 2
    finally:
        database.close()
