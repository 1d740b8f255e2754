"""The files backend: one encrypted record per account under a folder. Plain synchronous code,
called from a thread pool.

Layout: ROOT/accounts/<sha256 hex of the lower-cased user name>.json (the record's bytes, see
proxy.store.record), with a <same>.lock sidecar for the account lock (filelock: flock on POSIX,
LockFileEx through msvcrt on Windows). Hashing makes any user name
(dots, slashes, unicode, 254 characters) a safe file name of fixed length; the user name itself
is kept in the record's readable "meta". Files are 0600, folders 0700, and every write replaces
the file atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from ..errors import StoreFileInvalid
from ..private_files import PRIVATE_FILE_MODE, fsync_dir, make_private_folder, write_atomically
from .contract import Stamp
from .kdf import DEFAULT_KDF, KdfParams
from .record import (
    MAX_RECORD_BYTES,
    Record,
    account_name,
)
from .sealed import SealedRecords


@dataclass
class _HeldLock:
    rlock: threading.RLock = field(default_factory=threading.RLock)
    depth: int = 0
    file_lock: FileLock | None = None


class FileStore(SealedRecords):
    """The account files under `root`. Safe to share between threads of one process; other
    processes are kept in step by the per-account file lock."""

    local_stamps = True  # stamp() is one stat

    def __init__(self, root: Path, kdf: KdfParams = DEFAULT_KDF) -> None:
        super().__init__(kdf)
        self.root = Path(root)
        self.accounts = self.root / "accounts"
        self._mutex = threading.Lock()
        self._locks: dict[str, _HeldLock] = {}

    # -- reading, no password needed --

    def path(self, username: str) -> Path:
        """The account's file (which may not exist)."""
        digest = hashlib.sha256(account_name(username).encode("utf-8")).hexdigest()
        return self.accounts / f"{digest}.json"

    def location(self, username: str) -> str:
        return str(self.path(username))

    def exists(self, username: str) -> bool:
        return self.path(username).is_file()  # one stat, no read

    def records(self) -> list[Record]:
        """Every account's record as it is kept, sorted by user name."""
        found = []
        for path in sorted(self.accounts.glob("*.json")):
            record = self._read(path, None)
            if record is None:  # removed while we were listing
                continue
            if self.path(record.meta.username) != path:
                raise StoreFileInvalid(
                    path,
                    f"holds the account {record.meta.username!r} but is not named after it",
                    f"Move it back to {self.path(record.meta.username).name} or delete it",
                )
            found.append(record)
        return sorted(found, key=lambda record: record.meta.username)

    def stamp(self, username: str) -> Stamp | None:
        """The account file's inode, size and modification time: every write replaces the
        file, so any change gives another stamp. One stat, no read."""
        try:
            found = os.stat(self.path(username))
        except FileNotFoundError:
            return None
        return (found.st_ino, found.st_size, found.st_mtime_ns)

    def remove(self, username: str) -> bool:
        """Delete the account's file; False when there was none.

        The .lock sidecar stays: deleting a lock file while another process waits on it would
        let two processes hold "the" lock at once.
        """
        name = account_name(username)
        if not self.accounts.is_dir():
            return False
        with self.lock(name):
            self._clean_temporaries(name)
            try:
                os.unlink(self.path(name))
            except FileNotFoundError:
                return False
            fsync_dir(self.accounts)
            return True

    def close(self) -> None:
        """Nothing to release: every method opens and closes its own files."""

    @contextlib.contextmanager
    def lock(self, username: str) -> Iterator[None]:
        """Hold the account's exclusive lock (a file lock on its .lock sidecar).

        Other processes and other threads wait; the same thread may nest it. Hold it around a
        read-modify-write such as load, refresh, save.
        """
        name = account_name(username)
        with self._mutex:
            held = self._locks.setdefault(name, _HeldLock())
        with held.rlock:
            if held.depth == 0:
                self._make_folders()
                # One holder per account inside this process is the RLock's job; the file lock
                # keeps other processes out, so it need not be per thread.
                held.file_lock = FileLock(
                    self.path(name).with_suffix(".lock"), mode=PRIVATE_FILE_MODE, thread_local=False
                )
                held.file_lock.acquire()
            held.depth += 1
            try:
                yield
            finally:
                held.depth -= 1
                if held.depth == 0 and held.file_lock is not None:
                    held.file_lock.release()
                    held.file_lock = None

    # -- internals --

    def _get(self, name: str) -> Record | None:
        return self._read(self.path(name), name)

    def _read(self, path: Path, name: str | None) -> Record | None:
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_RECORD_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreFileInvalid(
                path, f"cannot be read ({e.strerror})", "Check the owner and mode of the store"
            ) from None
        return Record.parse(raw, path, name)

    def _make_folders(self) -> None:
        self.root.parent.mkdir(parents=True, exist_ok=True)
        make_private_folder(self.root, tighten_existing=False)  # may be a shared volume
        make_private_folder(self.accounts, tighten_existing=True)

    def _clean_temporaries(self, name: str) -> None:
        """Remove this account's temporary files left by a crash (we hold its lock)."""
        for path in self.accounts.glob(f"{self.path(name).stem}.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _write(self, record: Record) -> None:
        """Replace the account's file: a crash at any point leaves the old or the new file."""
        name = record.meta.username
        self._make_folders()
        self._clean_temporaries(name)
        write_atomically(self.path(name), record.to_bytes())
