"""What an authorisation leaves behind, wherever it ran (`account add`, the admin page): the
tokens sealed with the key of the local password, and the account's meta."""

from __future__ import annotations

from ..config import AccountConfig
from ..entra.answers import TokenSet
from ..store import AccountMeta, Secrets, Store, UnlockKey


def store_authorisation(
    store: Store, account: AccountConfig, key: UnlockKey, tokens: TokenSet
) -> AccountMeta:
    """Replace the account's record at once (blocking: file or database I/O)."""
    meta = AccountMeta(username=account.username, mailbox=account.mailbox, flow=account.flow)
    secrets = Secrets(tokens.refresh_token, tokens.access_token, tokens.expires_at)
    return store.save(account.username, key, secrets, meta)
