"""An account's state in words, for the admin page and the accounts-by-state metric.

Pure: from the account's configuration, its stored meta (no secret in it), what the token broker
knows about a refresh that keeps failing, and the time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .config import AccountConfig
from .resources import NAMES, OUTLOOK, resources_in
from .store.record import AccountMeta


@dataclass(frozen=True)
class RefreshTrouble:
    """Token requests for an account keep failing: since when, and Entra ID's reason."""

    since: float  # time.time() of the first failure in a row
    message: str  # one plain sentence (with the AADSTS code when Entra ID named one)


@dataclass(frozen=True)
class AccountState:
    label: str  # valid | expired | refresh_failing | needs_authorisation (the metric's label)
    words: str  # what the page says
    detail: str | None = None  # the reason, e.g. Entra ID's AADSTS sentence

    @property
    def needs_authorisation(self) -> bool:
        return self.label == "needs_authorisation"


@dataclass(frozen=True)
class ResourceToken:
    resource: str  # its name, e.g. "Exchange Online (IMAP, POP3, SMTP)"
    expires_at: float | None  # of the access token held for it, None when there is none


def describe_account(
    account: AccountConfig, meta: AccountMeta | None, trouble: RefreshTrouble | None,
    now: float,
) -> AccountState:
    if meta is None:
        return AccountState("needs_authorisation", "needs authorisation (not authorised yet)")
    if meta.state == "needs_reauth":
        return AccountState("needs_authorisation", "needs authorisation again: Microsoft "
                            "refused its stored sign-in", trouble.message if trouble else None)
    if trouble is not None:
        return AccountState("refresh_failing",
                            f"refresh failing since {local_time(trouble.since)}", trouble.message)
    expires = meta.access_expires_at
    if expires is not None and expires > now:
        return AccountState("valid", f"valid until {local_time(expires)}")
    return AccountState("expired", "access token expired; a new one is fetched at the next login")


def tokens_by_resource(account: AccountConfig, meta: AccountMeta | None) -> tuple[ResourceToken, ...]:
    """One entry per resource the account's scopes name (Exchange Online, Microsoft Graph),
    with the expiry of that resource's access token (None when it has none yet). A record
    written before meta kept one expiry per resource has only the earliest: each entry shows
    that until the next refresh writes the record again."""
    def expiry(resource: str) -> float | None:
        if meta is None:
            return None
        if not meta.access_expiries:  # a record from before, or one without any token
            return meta.access_expires_at
        return meta.access_expiries.get(resource)

    return tuple(ResourceToken(NAMES[resource], expiry(resource))
                 for resource in resources_in(account.scopes) or (OUTLOOK,))


def local_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch))
