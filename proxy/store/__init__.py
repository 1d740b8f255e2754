"""The credential store: a Protocol (contract), the encrypted record every backend keeps
(record), and the files backend (files)."""

from __future__ import annotations

from ..config import Config
from .contract import Store
from .files import FileStore
from .record import AccessToken, AccountMeta, ScryptParams, Secrets, UnlockKey


def open_store(config: Config) -> Store:
    """The store the configuration names."""
    return FileStore(config.store_path)


__all__ = [
    "AccessToken", "AccountMeta", "FileStore", "ScryptParams", "Secrets", "Store", "UnlockKey", "open_store",
]
