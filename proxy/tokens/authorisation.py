"""Tokens Entra ID issued, into an account's secrets and its stored record: the one way for
`account add`, the admin page's sign-ins and the broker's refreshes alike."""

from __future__ import annotations

from ..config import AccountConfig
from ..entra.answers import TokenSet
from ..entra.client import EntraClient
from ..errors import ConsentMissing
from ..store import AccessToken, AccountMeta, Secrets, Store, UnlockKey


def with_tokens(secrets: Secrets, resource: str, tokens: TokenSet) -> Secrets:
    """`secrets` holding `tokens` for `resource`; a refresh token Entra ID did not rotate is
    kept (client credentials have none)."""
    return secrets.with_token(resource, AccessToken(tokens.access_token, tokens.expires_at),
                              tokens.refresh_token or secrets.refresh_token)


def _tokens_without_sign_in(
    client: EntraClient, account: AccountConfig, resource: str, secrets: Secrets
) -> TokenSet:
    """Tokens for one more resource after a sign-in: the app's own credentials, or the refresh
    token the sign-in gave (blocking: a request to Entra ID)."""
    if account.flow == "client_credentials":
        return client.client_credentials(resource)
    assert secrets.refresh_token is not None, "a delegated sign-in gives a refresh token"
    return client.refresh(secrets.refresh_token, resource)


def tokens_while_consented(
    client: EntraClient, account: AccountConfig, resources: tuple[str, ...], secrets: Secrets
) -> tuple[Secrets, tuple[str, ...]]:
    """`secrets` with tokens for `resources` got without a sign-in, in turn, and the resources
    still needing one: none, or from the first that Entra ID refused for want of consent. Only a
    device code account signs in again for it (Entra ID redeems a device code for one resource;
    an authorisation request names them all), so for any other ConsentMissing is raised.
    Blocking: requests to Entra ID."""
    for done, resource in enumerate(resources):
        try:
            tokens = _tokens_without_sign_in(client, account, resource, secrets)
        except ConsentMissing:
            if account.flow != "device_code":
                raise
            return secrets, resources[done:]
        secrets = with_tokens(secrets, resource, tokens)
    return secrets, ()


def store_authorisation(store: Store, account: AccountConfig, key: UnlockKey,
                        secrets: Secrets) -> None:
    """Replace the account's record with a newly authorised one, sealed with `key`."""
    meta = AccountMeta(username=account.username, mailbox=account.mailbox, flow=account.flow)
    store.save(account.username, key, secrets, meta)
