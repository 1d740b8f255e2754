"""The token broker's blocking work on an account's stored record, run in its thread pool.

Opening (key derivation, and re-sealing a record of an older cost), following the record's
change stamp, and the refresh itself: under the store's account lock the record is read again
(another process or instance may have refreshed and rotated already), tokens are requested
only if still needed, and the rotated refresh token is saved before the new access token is
returned. Tokens that could not be saved travel up in SaveFailed, to be written before anything
else (see TokenBroker).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..entra.answers import TokenSet
from ..errors import AccountNotReady, NeedsReauthorisation, StoreUnavailable, TemporaryFailure
from ..store.contract import Stamp, Store
from ..store.record import Secrets, UnlockKey
from ..store.rekey import rekey_if_outdated
from .authorisation import with_tokens


@dataclass
class Unsaved:
    """Tokens Entra ID issued that could not be written: written before anything else."""

    secrets: Secrets
    replaced: str | None  # the refresh token they replace, which the store still holds


class SaveFailed(TemporaryFailure):
    def __init__(self, secrets: Secrets, replaced: str | None, reason: str) -> None:
        super().__init__(f"Could not save the refreshed credentials: {reason}")
        self.unsaved = Unsaved(secrets, replaced)


def not_added(username: str) -> AccountNotReady:
    return AccountNotReady(f"{username} has no stored credentials yet; "
                           f"run: xoauth2-proxy account add {username}")


def open_record(store: Store, name: str, password: str) -> tuple[UnlockKey, Secrets, Stamp]:
    """The key `password` gives (WrongPassword if it opens nothing), the secrets and the stamp;
    a record sealed at an older key-derivation cost is sealed again at today's."""
    stamp = store.stamp(name)  # before reading: a write in between shows next time
    if stamp is None:
        raise not_added(name)
    key = store.derive_key(name, password)
    secrets = store.load(name, key)
    fresh = rekey_if_outdated(store, name, key, password)
    if fresh is not key:
        stamp = store.stamp(name) or stamp
    return fresh, secrets, stamp


def read_record(store: Store, name: str, key: UnlockKey) -> tuple[Secrets, Stamp]:
    stamp = store.stamp(name)  # before reading: a write in between shows next time
    if stamp is None:
        raise not_added(name)
    return store.load(name, key), stamp


def changed_record(
    store: Store, name: str, key: UnlockKey, stamp: Stamp | None
) -> tuple[Secrets, Stamp] | None:
    """The record read again when its stamp is no longer `stamp`, else None (one stat or one
    small query: `account passwd`, `add` or `remove` anywhere shows at the next login)."""
    now = store.stamp(name)
    if now is None:
        raise not_added(name)
    return None if now == stamp else (store.load(name, key), now)


def save_pending(store: Store, name: str, key: UnlockKey, pending: Unsaved) -> Secrets:
    with store.lock(name):
        current = store.load(name, key)
        if current.refresh_token != pending.replaced:
            return current  # someone wrote newer tokens meanwhile: theirs win
        _save(store, name, key, pending.secrets, pending.replaced)
        return pending.secrets


def refresh_record(
    store: Store,
    name: str,
    key: UnlockKey,
    resource: str,
    still_usable: Callable[[Secrets], bool],
    request: Callable[[Secrets], TokenSet],
) -> tuple[Secrets, Stamp | None]:
    """New tokens for `resource`, unless the record read again under the lock has usable ones."""
    renewed: Secrets | None = None
    replaced: str | None = None
    try:
        with store.lock(name):
            secrets = store.load(name, key)
            meta = store.read_meta(name)
            if meta is not None and meta.state == "needs_reauth":
                raise NeedsReauthorisation(name)
            if still_usable(secrets):
                return secrets, store.stamp(name)
            tokens = request(secrets)
            replaced = secrets.refresh_token
            renewed = with_tokens(secrets, resource, tokens)
            store.save(name, key, renewed)
            stamp = store.stamp(name)
    except (OSError, StoreUnavailable) as e:
        if renewed is None:
            raise
        raise SaveFailed(renewed, replaced, _reason(e)) from None
    # The rotated refresh token is durable (the lock released, the transaction committed)
    # before the access token leaves this function.
    return renewed, stamp


def _save(
    store: Store, name: str, key: UnlockKey, secrets: Secrets, replaced: str | None
) -> None:
    try:
        store.save(name, key, secrets)
    except (OSError, StoreUnavailable) as e:
        raise SaveFailed(secrets, replaced, _reason(e)) from None


def _reason(error: OSError | StoreUnavailable) -> str:
    return error.message if isinstance(error, StoreUnavailable) else error.strerror or str(error)
