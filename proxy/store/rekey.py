"""Re-sealing a record whose key was derived at an older cost, at a successful login: the
only moment the proxy holds the password that opens it."""

from __future__ import annotations

from .contract import Store
from .record import UnlockKey


def rekey_if_outdated(store: Store, username: str, key: UnlockKey, password: str) -> UnlockKey:
    """The key to keep using: `key` itself, or a new one at the store's cost after the record
    was re-sealed with it. `password` must be the one `key` was derived from (checked by the
    caller's load). Derives one new key (slow), outside the account lock."""
    if not store.outdated(key):
        return key
    fresh = store.new_key(password)
    with store.lock(username):
        # Under the lock: another process may have re-sealed or refreshed meanwhile. StaleKey
        # if the record changed its key; then the caller starts again from the password.
        secrets = store.load(username, key)
        store.save(username, fresh, secrets)
    return fresh

