"""A throwaway PostgreSQL cluster for tests: Debian's server binaries (initdb, pg_ctl from
/usr/lib/postgresql/*/bin), a temporary folder, 127.0.0.1 on a free port, password logins.

initdb refuses to run as root, so as root the cluster belongs to the same unprivileged system
user as the test Dovecot's mailboxes. One cluster serves the whole test session (the fixture
stops it at the end); each test asks for a database of its own with new_database().
"""

from __future__ import annotations

import glob
import itertools
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.dovecot import MAIL_USER, _ensure_mail_user
from tests.support.ports import free_port, wait_for_port

PACKAGE = "postgresql"
SUPERUSER = "postgres"
_databases = itertools.count(1)


def server_binaries() -> Path | None:
    """The newest /usr/lib/postgresql/N/bin that has initdb and pg_ctl."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    return Path(found[-1]).parent if found else None


def postgres_available() -> str | None:
    """None if a cluster can be started here, else why not."""
    if server_binaries() is None:
        return f"PostgreSQL's server is not installed (apt-get install {PACKAGE})"
    if shutil.which("pg_dump") is None:
        return f"pg_dump is not installed (apt-get install {PACKAGE})"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed: pip install -e '.[test]'"
    return None


class PostgresServer:
    def __init__(self) -> None:
        binaries = server_binaries()
        assert binaries is not None
        self.bin = binaries
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        self.dir = Path(tempfile.mkdtemp(prefix="xoauth2-pg-"))  # traversable by the owner
        self.data = self.dir / "data"
        self.log_path = self.dir / "server.log"
        self._owner = _ensure_mail_user() if os.geteuid() == 0 else None
        self.running = False

    def _run(self, *command: str, timeout: float = 60) -> None:
        prefix = ["runuser", "-u", MAIL_USER, "--"] if self._owner else []
        result = subprocess.run([*prefix, *command], capture_output=True, text=True,
                                timeout=timeout, cwd=self.dir)
        if result.returncode != 0:
            log = self.log_path.read_text() if self.log_path.exists() else ""
            raise RuntimeError(f"{' '.join(command)} failed: {result.stderr}{result.stdout}\n{log}")

    def create(self) -> None:
        password_file = self.dir / "password"
        password_file.write_text(self.password + "\n")
        if self._owner:
            uid, gid = self._owner
            for path in (self.dir, password_file):
                os.chown(path, uid, gid)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
                  "--auth=scram-sha-256", f"--pwfile={password_file}", "-E", "UTF8",
                  "--no-sync")
        password_file.unlink()

    def start(self) -> None:
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options,
                  "-l", str(self.log_path), "-w", "start")
        self.running = True
        wait_for_port(self.port)

    def stop(self) -> None:
        """Stop the server (fast: open sessions are ended)."""
        if self.running:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
            self.running = False

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def dsn(self, database: str = "postgres") -> str:
        return (f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"
                "?connect_timeout=5")

    def new_database(self, prefix: str = "test") -> str:
        """A new empty database; its DSN."""
        import psycopg

        name = f"{prefix}_{os.getpid()}_{next(_databases)}"
        with psycopg.connect(self.dsn(), autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"'.encode())
        return self.dsn(name)

    def dump(self, dsn: str) -> str:
        """pg_dump of a database: schema and data, as text."""
        result = subprocess.run(["pg_dump", "--no-owner", dsn], capture_output=True, text=True,
                                timeout=60, check=True)
        return result.stdout


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the whole test session, stopped and removed at the end."""
    reason = postgres_available()
    if reason is not None:
        pytest.skip(reason)
    server = PostgresServer()
    try:
        server.create()
        server.start()
        yield server
    finally:
        server.stop()
        server.remove()
