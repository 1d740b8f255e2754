"""What both backends do the same way: keys, sealing and opening records, meta changes.

A backend keeps whole records (proxy.store.record) and says how to find, write and lock one
(`_get`, `_write`, `lock`, `location`); everything that works on the record itself is here,
so the files and the PostgreSQL backends cannot drift apart in what they store or refuse.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from typing import Any

from ..errors import AccountNotReady
from .kdf import DEFAULT_KDF, KdfParams
from .record import AccountMeta, Record, Secrets, UnlockKey, account_name, new_key


class SealedRecords(ABC):
    def __init__(self, kdf: KdfParams = DEFAULT_KDF) -> None:
        self.kdf = kdf

    # -- what a backend provides --

    @abstractmethod
    def location(self, username: str) -> str:
        """Where the account's record is kept, for messages (a path, a table row)."""

    @abstractmethod
    def lock(self, username: str) -> AbstractContextManager[None]: ...

    @abstractmethod
    def records(self) -> list[Record]:
        """Every account's record as it is kept, sorted by user name."""

    @abstractmethod
    def _get(self, name: str) -> Record | None:
        """The account's record as stored, or None; `name` is lower-cased."""

    @abstractmethod
    def _write(self, record: Record) -> None:
        """Store `record` (replacing the account's current one) in one atomic step."""

    # -- keys --

    def exists(self, username: str) -> bool:
        return self._get(account_name(username)) is not None

    def new_key(self, password: str) -> UnlockKey:
        """A key for a new account or a new password: fresh salt, this store's KDF cost. Slow."""
        return new_key(password, self.kdf)

    def outdated(self, key: UnlockKey) -> bool:
        return key.params != self.kdf

    def derive_key(self, username: str, password: str) -> UnlockKey:
        """The key `password` gives for the account's record, with the record's salt and cost.
        Slow. Raises AccountNotReady when there is no record; any password gives a key, only
        load() tells whether it was the right one."""
        return self._require(username).derive_key(password)

    # -- secrets and meta --

    def read_meta(self, username: str) -> AccountMeta | None:
        """The account's meta, or None when it has no record. No KDF, no decryption."""
        record = self._get(account_name(username))
        return record.meta if record else None

    def list_meta(self) -> list[AccountMeta]:
        return [record.meta for record in self.records()]

    def load(self, username: str, key: UnlockKey) -> Secrets:
        """Decrypt the account's secrets. Never writes anything.

        Raises WrongPassword when the key does not open the record, StaleKey (a WrongPassword)
        when the key was derived for an earlier version of it (the password has been changed
        since), AccountNotReady when there is none, StoreFileInvalid when it is broken.
        """
        return self._require(username).open(key, self.location(username))

    def save(
        self, username: str, key: UnlockKey, secrets: Secrets, meta: AccountMeta | None = None
    ) -> AccountMeta:
        """Seal `secrets` with `key` (fresh nonce) and replace the account's record atomically.

        `meta` defaults to the record's current meta (AccountNotReady if there is none); its
        access_expires_at, access_expiries and refresh_token_present are taken from `secrets`.
        Returns the meta written. Takes the account lock itself, so it is safe inside or
        outside lock().
        """
        name = account_name(username)
        with self.lock(name):
            if meta is None:
                meta = self._require(name).meta
            elif account_name(meta.username) != name:
                raise ValueError(f"meta is for {meta.username!r}, not {name!r}")
            record = Record.seal(key, secrets, meta)
            self._write(record)
            return record.meta

    def update_meta(self, username: str, **changes: Any) -> AccountMeta:
        """Change meta fields (state, access_expires_at, ...) without the password, atomically.

        The sealed secrets are kept as they are. Raises AccountNotReady when there is no
        record, TypeError for unknown or fixed fields, ValueError for bad values.
        """
        name = account_name(username)
        self._require(name)  # before the lock, which a backend may create for the account
        with self.lock(name):
            record = self._require(name).with_meta(**changes)
            self._write(record)
            return record.meta

    def put_record(self, record: Record) -> bool:
        """Keep `record` as it is (still sealed) unless the account has one; False then."""
        with self.lock(record.meta.username):
            if self.exists(record.meta.username):
                return False
            self._write(record)
            return True

    def change_password(self, username: str, old_password: str, new_password: str) -> UnlockKey:
        """Re-seal the account under `new_password` with a new salt; returns the new key.
        Raises WrongPassword (nothing changed) when `old_password` is wrong."""
        with self.lock(username):
            secrets = self.load(username, self.derive_key(username, old_password))
            key = self.new_key(new_password)
            self.save(username, key, secrets)
            return key

    def _require(self, username: str) -> Record:
        name = account_name(username)
        record = self._get(name)
        if record is None:
            raise AccountNotReady(
                f"No stored credentials for {name}; run: xoauth2-proxy account add {name}"
            )
        return record
