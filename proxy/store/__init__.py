"""The credential store: a Protocol (contract), the encrypted record every backend keeps
(record, with its key derivation in kdf), and two backends: files (one file per account) and
postgresql (one row per account in a database several instances share)."""

from __future__ import annotations

from ..config import Config, StoreConfig
from ..errors import ConfigError
from .contract import Store
from .files import FileStore
from .kdf import Argon2Params, KdfParams, ScryptParams
from .record import AccessToken, AccountMeta, Secrets, UnlockKey

POSTGRESQL_EXTRA = "pip install 'xoauth2-proxy[postgresql]'"


def open_store(config: Config) -> Store:
    """The store the configuration names."""
    settings = config.store_config
    if settings.backend == "postgresql":
        return open_database(settings)
    return FileStore(settings.path)


def open_database(settings: StoreConfig) -> Store:
    """The PostgreSQL store [store] dsn or dsn_file names (whatever the backend setting)."""
    try:
        from .postgresql import PostgresStore
    except ImportError as e:  # psycopg, its pool, or libpq
        raise ConfigError(
            f'[store] backend = "postgresql" needs psycopg 3, which is not installed ({e}); '
            f"install it with: {POSTGRESQL_EXTRA}"
        ) from None
    return PostgresStore(settings.read_dsn())


__all__ = [
    "AccessToken", "AccountMeta", "Argon2Params", "FileStore", "KdfParams", "ScryptParams",
    "Secrets", "Store", "UnlockKey", "open_database", "open_store",
]
