"""What the rest of the proxy may ask of a credential store, whatever keeps the records.

Every backend keeps the same encrypted record (proxy.store.record) per account and provides
this Protocol; the token broker and the account commands use nothing else. Methods block
(disk, database, key derivation): call them from a thread pool. User names are matched without
regard to case. A backend that cannot reach where it keeps the records raises StoreUnavailable
(a temporary failure).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol

from .record import AccountMeta, Record, Secrets, UnlockKey

# Compared, never interpreted: equal stamps mean the record was not written in between.
Stamp = tuple[int, ...]


class Store(Protocol):
    @property
    def local_stamps(self) -> bool:
        """Whether stamp() is one stat of a local file, cheap enough for the reactor thread
        (it is asked at every login); False when it is a query to a database."""

    def exists(self, username: str) -> bool:
        """Whether the account has a record."""

    def location(self, username: str) -> str:
        """Where the account's record is kept, for messages to the administrator."""

    def read_meta(self, username: str) -> AccountMeta | None:
        """The account's readable meta, or None without a record. No KDF, no decryption."""

    def list_meta(self) -> list[AccountMeta]:
        """Every account's meta, sorted by user name."""

    def records(self) -> list[Record]:
        """Every account's record as kept (sealed), sorted by user name: for copying."""

    def put_record(self, record: Record) -> bool:
        """Keep a sealed record as it is, unless the account already has one (False then)."""

    def stamp(self, username: str) -> Stamp | None:
        """A cheap value that changes whenever the account's record is written or removed
        (None without a record): whoever holds the secrets reloads them only when it changed."""

    def new_key(self, password: str) -> UnlockKey:
        """A key for a new account or a new password (fresh salt, the store's cost). Slow."""

    def outdated(self, key: UnlockKey) -> bool:
        """Whether `key` was derived at another cost than new keys get: re-seal the record."""

    def derive_key(self, username: str, password: str) -> UnlockKey:
        """The key `password` gives for the account's record; AccountNotReady without one. Slow."""

    def load(self, username: str, key: UnlockKey) -> Secrets:
        """The decrypted secrets; WrongPassword, StaleKey, AccountNotReady or StoreFileInvalid."""

    def save(
        self, username: str, key: UnlockKey, secrets: Secrets, meta: AccountMeta | None = None
    ) -> AccountMeta:
        """Seal `secrets` with `key` and replace the record at once (never half written); `meta`
        defaults to the record's current one. Returns the meta written."""

    def update_meta(self, username: str, **changes: Any) -> AccountMeta:
        """Change meta fields (state, ...) without the password, keeping the sealed secrets."""

    def remove(self, username: str) -> bool:
        """Forget the account's record; False when there was none."""

    def change_password(self, username: str, old_password: str, new_password: str) -> UnlockKey:
        """Re-seal under `new_password`; WrongPassword (nothing changed) for a wrong old one."""

    def lock(self, username: str) -> AbstractContextManager[None]:
        """The account's exclusive lock, across threads and processes (and, for a shared
        backend, machines); nestable in one thread. Held around load, refresh, save; what is
        saved under it is durable when it is released."""

    def close(self) -> None:
        """Release connections; the store is not used afterwards."""
