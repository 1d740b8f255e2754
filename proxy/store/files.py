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
from typing import Any

from filelock import FileLock

from ..errors import AccountNotReady, StoreFileInvalid
from ..private_files import PRIVATE_FILE_MODE, fsync_dir, make_private_folder, write_atomically
from .contract import Stamp
from .kdf import DEFAULT_KDF, KdfParams
from .record import (
    MAX_RECORD_BYTES,
    AccountMeta,
    Record,
    Secrets,
    UnlockKey,
    account_name,
    check_meta_changes,
    new_key,
)
from .rekey import change_password


@dataclass
class _HeldLock:
    rlock: threading.RLock = field(default_factory=threading.RLock)
    depth: int = 0
    file_lock: FileLock | None = None


class FileStore:
    """The account files under `root`. Safe to share between threads of one process; other
    processes are kept in step by the per-account file lock."""

    def __init__(self, root: Path, kdf: KdfParams = DEFAULT_KDF) -> None:
        self.root = Path(root)
        self.accounts = self.root / "accounts"
        self.kdf = kdf
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
        return self.path(username).is_file()

    def read_meta(self, username: str) -> AccountMeta | None:
        """The account's meta, or None when it has no file. No KDF, no decryption."""
        record = self._read(self.path(username), account_name(username))
        return record.meta if record else None

    def list_meta(self) -> list[AccountMeta]:
        """Every account's meta, sorted by user name; left-over temporary files are ignored."""
        return [record.meta for record in self.records()]

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

    # -- keys --

    def new_key(self, password: str) -> UnlockKey:
        """A key for a new account or a new password: fresh salt, this store's KDF cost. Slow."""
        return new_key(password, self.kdf)

    def outdated(self, key: UnlockKey) -> bool:
        return key.params != self.kdf

    def derive_key(self, username: str, password: str) -> UnlockKey:
        """The key `password` gives for the account's file, using the file's salt and cost. Slow.

        Raises AccountNotReady when the account has no file. Any password gives a key; only
        load() tells whether it was the right one.
        """
        return self._require(username).derive_key(password)

    # -- secrets --

    def load(self, username: str, key: UnlockKey) -> Secrets:
        """Decrypt the account's secrets. Never writes anything.

        Raises WrongPassword when the key does not open the file, StaleKey (a WrongPassword)
        when the key was derived for an earlier version of the file (the password has been
        changed since), AccountNotReady when there is no file, StoreFileInvalid when it is broken.
        """
        name = account_name(username)
        return self._require(name).open(key, self.path(name))

    def save(
        self, username: str, key: UnlockKey, secrets: Secrets, meta: AccountMeta | None = None
    ) -> AccountMeta:
        """Encrypt `secrets` with `key` (fresh nonce) and replace the account's file atomically.

        `meta` defaults to the file's current meta (AccountNotReady if there is none); its
        access_expires_at and refresh_token_present are taken from `secrets`. Returns the meta
        written. Takes the account lock itself, so it is safe inside or outside lock().
        """
        name = account_name(username)
        with self.lock(name):
            if meta is None:
                meta = self._require(name).meta
            elif account_name(meta.username) != name:
                raise ValueError(f"meta is for {meta.username!r}, not {name!r}")
            record = Record.seal(key, secrets, meta)
            self._write(name, record)
            return record.meta

    def update_meta(self, username: str, **changes: Any) -> AccountMeta:
        """Change meta fields (state, access_expires_at, ...) without the password, atomically.

        The ciphertext is kept as it is. Raises AccountNotReady when there is no file,
        TypeError for unknown or fixed fields, ValueError for bad values.
        """
        check_meta_changes(changes)
        name = account_name(username)
        self._require(name)  # before lock(), which would create the store's folders
        with self.lock(name):
            record = self._require(name).with_meta(**changes)
            self._write(name, record)
            return record.meta

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

    def put_record(self, record: Record) -> bool:
        """Keep `record` as it is (still sealed) unless the account has one; False then."""
        name = record.meta.username
        with self.lock(name):
            if self.exists(name):
                return False
            self._write(name, record)
            return True

    def close(self) -> None:
        """Nothing to release: every method opens and closes its own files."""

    def change_password(self, username: str, old_password: str, new_password: str) -> UnlockKey:
        """Re-encrypt the account under `new_password` with a new salt; returns the new key.

        Raises WrongPassword (nothing changed) when `old_password` is wrong.
        """
        return change_password(self, username, old_password, new_password)

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

    def _require(self, username: str) -> Record:
        name = account_name(username)
        record = self._read(self.path(name), name)
        if record is None:
            raise AccountNotReady(
                f"No stored credentials for {name}; run: xoauth2-proxy account add {name}"
            )
        return record

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

    def _write(self, name: str, record: Record) -> None:
        """Replace the account's file: a crash at any point leaves the old or the new file."""
        self._make_folders()
        self._clean_temporaries(name)
        write_atomically(self.path(name), record.to_bytes())
