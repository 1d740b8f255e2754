"""The token broker: local password in, access token out.

It unlocks an account's stored record (one KDF per account and password per process, a few at a
time; a record sealed at an older KDF cost is re-sealed then; after that a login costs an HMAC
and the store's change stamp, and the record is read again only when the stamp changed, which is
how a password changed, an account removed or re-authorised by another process or instance is
noticed), keeps the access token until shortly before it expires, and refreshes it with at most
one request per account at a time, however many clients log in at once. A refresh runs under the store's account lock, re-reads the record
(another process may have refreshed already) and saves a rotated refresh token before the new
access token is handed out. A temporary failure keeps every stored token; the next request waits
for a backoff, and the current access token is used meanwhile while it is still valid (see
TokenBroker). When the store cannot be reached (a database that is down), an unlocked account
keeps working from memory while its access token lasts.

Tokens are per resource (proxy.resources): an account serving IMAP and sending through Microsoft
Graph holds an Exchange token and a Graph token, both refreshed from its one refresh token, one
request at a time per account (the refresh token rotates, whichever resource asks). A session
that outlives its token, or whose token is refused, gets a new one with `renew`, from the key
the login unlocked: the device's password is never kept.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import requests
from twisted.internet.defer import DeferredLock, DeferredSemaphore
from twisted.logger import Logger

from ..account_state import RefreshTrouble
from ..config import AccountConfig, Config
from ..entra.answers import TokenSet
from ..entra.client import EntraClient
from ..errors import (
    AccountNotReady,
    NeedsReauthorisation,
    ProxyError,
    StaleKey,
    StoreUnavailable,
    TemporaryFailure,
    Throttled,
    TokenEndpointUnavailable,
    TokenRequestRefused,
    WrongPassword,
)
from ..resources import OUTLOOK
from ..store.contract import Stamp, Store
from ..store.record import Secrets, UnlockKey
from .blocking import RunBlocking
from .records import (
    SaveFailed,
    Unsaved,
    changed_record,
    open_record,
    read_record,
    refresh_record,
    save_pending,
)

log = Logger(namespace="xoauth2-proxy")

# Refresh this long before expiry, so a token never expires between check and upstream login.
REFRESH_MARGIN = 300.0
# TokenBroker's defaults for fallback_remaining and retry_backoff: an upstream login takes
# seconds, so a token valid 30 s more is still good; an outage must not turn every login of every
# device into a request that may hang for the full timeout, but recovery should be noticed
# within two minutes.
MIN_REMAINING = 30.0
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 120.0
# What counts as "Entra ID or the database is in the way for now" (as opposed to a local problem).
BACKOFF_ERRORS = (TokenEndpointUnavailable, Throttled, TokenRequestRefused, StoreUnavailable)
# Key derivations at once: each takes its memory cost (46 MiB for Argon2id), and after a
# restart every device logs in within seconds; more than the cores would only queue in the CPU.
PARALLEL_DERIVATIONS = 2


@dataclass(frozen=True)
class Grant:
    mailbox: str
    access_token: str = field(repr=False)
    fresh: bool  # just issued by Entra ID, so an upstream refusal is not a stale cache
    username: str = ""
    resource: str = OUTLOOK
    # What `renew` needs instead of the password: the key the login unlocked the record with.
    key: UnlockKey | None = field(default=None, repr=False, compare=False)
    expires_at: float | None = None
    delegate: str | None = None  # the user signed in for another's mailbox (AccountConfig)


@dataclass
class _Unlocked:
    key: UnlockKey
    password_digest: bytes
    secrets: Secrets
    stamp: Stamp | None  # the record's change stamp when `secrets` were read
    # Per resource, the fingerprint of an access token the upstream refused.
    refused: dict[str, str] = field(default_factory=dict)


@dataclass
class _Backoff:
    until: float
    delay: float
    error: TemporaryFailure


class TokenBroker:
    """Access tokens for logins. Two behaviours soften a failing Entra ID (None turns them off):

    - fallback_remaining=S: when a refresh fails temporarily (Entra ID down, throttling, a
      refused request) and the current access token is still valid for more than S seconds,
      the login gets that token instead of a temporary failure.
    - retry_backoff=(FIRST, MAX): after such a failure the account's next token request waits
      FIRST seconds, doubling up to MAX (longer if Entra ID sent Retry-After); logins in between
      get the same temporary failure (or the fallback token) without a request.
    """

    def __init__(
        self,
        config: Config,
        store: Store,
        run_blocking: RunBlocking,
        entra_for: Callable[[AccountConfig], EntraClient] | None = None,
        now: Callable[[], float] = time.time,
        refresh_margin: float = REFRESH_MARGIN,
        fallback_remaining: float | None = MIN_REMAINING,
        retry_backoff: tuple[float, float] | None = (BACKOFF_FIRST, BACKOFF_MAX),
        on_token_request: Callable[[ProxyError | None], None] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self._run = run_blocking
        self._entra_for = entra_for or _default_entra
        self._now = now
        self._margin = refresh_margin
        self._fallback = fallback_remaining
        self._retry_backoff = retry_backoff
        self._pepper = os.urandom(32)  # password digests are only comparable in this process
        self._unlocked: dict[str, _Unlocked] = {}
        self._unsaved: dict[str, Unsaved] = {}
        self._backoff: dict[str, _Backoff] = {}
        self._locks: defaultdict[str, DeferredLock] = defaultdict(DeferredLock)
        self._derivations = DeferredSemaphore(PARALLEL_DERIVATIONS)
        self._clients: dict[str, EntraClient] = {}
        # Called (from the thread pool) after each token request: None or how it failed.
        self._on_token_request = on_token_request or (lambda error: None)
        # Accounts whose token requests keep failing, for the admin page; cleared by a success.
        self.trouble: dict[str, RefreshTrouble] = {}

    async def grant(self, username: str, password: str, resource: str = OUTLOOK) -> Grant:
        """An access token for `username` and `resource`; raises WrongPassword,
        NeedsReauthorisation or a TemporaryFailure. Never sends anything to Entra ID before the
        password is verified."""
        account = self.config.accounts.get(username.lower())
        if account is None:
            raise WrongPassword()  # unknown and wrong look the same to a guesser
        name = account.username.lower()
        lock = self._locks[name]
        await lock.acquire()
        try:
            try:
                return await self._grant_locked(account, password, resource)
            except StaleKey:
                # The record was re-encrypted (account passwd / add) since we unlocked it: the
                # password must be checked again against the new record.
                self._unlocked.pop(name, None)
                return await self._grant_locked(account, password, resource)
        finally:
            lock.release()

    async def renew(self, grant: Grant, refused: bool) -> Grant:
        """A token for the same account and resource as `grant`, for a session that has no
        password to give: a fresh one if `refused` (the upstream refused grant's token), else
        the current one, refreshed when it is close to expiry. Raises StaleKey (the password
        was changed meanwhile: the session must end) or a TemporaryFailure."""
        account = self.config.account(grant.username)
        assert grant.key is not None, "renew needs a grant made by this broker"
        key, name = grant.key, account.username.lower()
        lock = self._locks[name]
        await lock.acquire()
        try:
            cached = self._unlocked.get(name)
            if cached is not None and cached.key == key:
                unlocked = cached
                await self._follow(account, unlocked)
            else:
                secrets, stamp = await self._run(
                    lambda: read_record(self.store, account.username, key))
                unlocked = _Unlocked(key, b"", secrets, stamp)
            if refused:
                unlocked.refused[grant.resource] = _fingerprint(grant.access_token)
            return await self._grant_unlocked(account, unlocked, grant.resource)
        finally:
            lock.release()

    def use_config(self, config: Config) -> None:
        """A reload: accounts removed or changed are forgotten (a changed one gets a new Entra
        ID client and unlocks again); tokens issued but not yet saved are kept whatever happens."""
        for name, account in self.config.accounts.items():
            if config.accounts.get(name) != account:
                self._unlocked.pop(name, None)
                self._clients.pop(name, None)
                self._backoff.pop(name, None)
        self.config = config

    def forget_failures(self, username: str) -> None:
        """The account was authorised again: what failed before is over, and its next login
        may ask Entra ID at once."""
        self.trouble.pop(username.lower(), None)
        self._backoff.pop(username.lower(), None)

    def forget_access_token(self, username: str, resource: str = OUTLOOK) -> None:
        """The upstream refused the cached token (revoked early): the next grant refreshes."""
        unlocked = self._unlocked.get(username.lower())
        token = unlocked.secrets.token_for(resource) if unlocked is not None else None
        if unlocked is not None and token is not None:
            unlocked.refused[resource] = _fingerprint(token.token)

    async def _grant_locked(self, account: AccountConfig, password: str, resource: str) -> Grant:
        unlocked = await self._unlock(account, password)
        return await self._grant_unlocked(account, unlocked, resource)

    async def _grant_unlocked(self, account: AccountConfig, unlocked: _Unlocked,
                              resource: str) -> Grant:
        name = account.username.lower()
        pending = self._unsaved.get(name)
        if pending is not None:
            # Raises SaveFailed again if the store still refuses: the tokens stay pending.
            unlocked.secrets = await self._run(
                lambda: save_pending(self.store, account.username, unlocked.key, pending)
            )
            del self._unsaved[name]
        refused = unlocked.refused.get(resource)
        if self._usable(unlocked.secrets, resource, refused, self._margin):
            return self._grant(account, unlocked, resource, fresh=False)
        backoff = self._backoff.get(name)
        if backoff is not None and self._now() < backoff.until:
            if self._fallback_usable(unlocked, resource):
                return self._grant(account, unlocked, resource, fresh=False)
            raise backoff.error.with_traceback(None)
        try:
            unlocked.secrets, unlocked.stamp = await self._run(lambda: refresh_record(
                self.store, account.username, unlocked.key, resource,
                lambda secrets: self._usable(secrets, resource, refused, self._margin),
                lambda secrets: self._request_tokens(account, secrets, resource)))
        except SaveFailed as e:
            self._unsaved[name] = e.unsaved
            raise
        except NeedsReauthorisation as e:
            self._note_trouble(name, e)
            raise
        except BACKOFF_ERRORS as e:
            self._note_trouble(name, e)
            self._note_failure(name, e)
            if self._fallback_usable(unlocked, resource):
                log.warn("{user}: token refresh failed ({error}); the current access token is "
                         "still valid and is used meanwhile", user=account.username,
                         error=e.message, account=account.username,
                         event="token_refresh_failed", reason=e.message)
                return self._grant(account, unlocked, resource, fresh=False)
            raise
        self._backoff.pop(name, None)
        self.trouble.pop(name, None)
        unlocked.refused.pop(resource, None)
        return self._grant(account, unlocked, resource, fresh=True)

    def _grant(self, account: AccountConfig, unlocked: _Unlocked, resource: str,
               fresh: bool) -> Grant:
        token = unlocked.secrets.token_for(resource)
        assert token is not None
        return Grant(account.mailbox, token.token, fresh, account.username, resource,
                     unlocked.key, token.expires_at, account.delegate)

    async def _unlock(self, account: AccountConfig, password: str) -> _Unlocked:
        name = account.username.lower()
        digest = hmac.new(self._pepper, password.encode("utf-8"), hashlib.sha256).digest()
        cached = self._unlocked.get(name)
        if cached is not None and hmac.compare_digest(cached.password_digest, digest):
            # `account passwd` or `account add` may have re-sealed the record (StaleKey),
            # another process may have refreshed, `account remove` may have removed it: the
            # stamp says whether to read it again.
            await self._follow(account, cached)
            return cached
        key, secrets, stamp = await self._derivations.run(
            lambda: self._run(lambda: open_record(self.store, account.username, password)))
        unlocked = _Unlocked(key, digest, secrets, stamp)
        self._unlocked[name] = unlocked
        return unlocked

    def _usable(self, secrets: Secrets, resource: str, refused: str | None,
                margin: float) -> bool:
        token = secrets.token_for(resource)
        return (
            token is not None
            and token.expires_at is not None
            and token.expires_at - margin > self._now()
            and refused != _fingerprint(token.token)
        )

    def _fallback_usable(self, unlocked: _Unlocked, resource: str) -> bool:
        return self._fallback is not None and self._usable(
            unlocked.secrets, resource, unlocked.refused.get(resource), self._fallback)

    def _note_trouble(self, name: str, error: ProxyError) -> None:
        previous = self.trouble.get(name)
        since = previous.since if previous is not None else self._now()
        self.trouble[name] = RefreshTrouble(since, error.message)

    def _note_failure(self, name: str, error: TemporaryFailure) -> None:
        if self._retry_backoff is None:
            return
        first, most = self._retry_backoff
        previous = self._backoff.get(name)
        delay = first if previous is None else min(previous.delay * 2, most)
        retry_after = getattr(error, "retry_after", None)
        wait = max(delay, retry_after or 0.0)
        self._backoff[name] = _Backoff(self._now() + wait, delay, error)

    async def _follow(self, account: AccountConfig, unlocked: _Unlocked) -> None:
        """Bring `unlocked` up to date with the store; with the store down, go on from memory."""
        if self.store.local_stamps and self._unchanged(account, unlocked):
            return
        try:
            changed = await self._run(
                lambda: changed_record(self.store, account.username, unlocked.key, unlocked.stamp))
        except StoreUnavailable as e:
            log.warn("{user}: {error}; going on with the credentials in memory",
                     user=account.username, error=e.message)
            return
        except AccountNotReady:
            self._unlocked.pop(account.username.lower(), None)
            raise
        if changed is not None:
            unlocked.secrets, unlocked.stamp = changed

    def _unchanged(self, account: AccountConfig, unlocked: _Unlocked) -> bool:
        """One stat on the reactor thread: at every login it spares a trip to the thread pool
        and back. Anything else (changed, gone, unreadable) is looked at in the pool."""
        try:
            return self.store.stamp(account.username) == unlocked.stamp
        except Exception:
            return False

    # -- blocking work, run in the thread pool --

    def _request_tokens(self, account: AccountConfig, secrets: Secrets,
                        resource: str) -> TokenSet:
        if account.flow != "client_credentials" and not secrets.refresh_token:
            self.store.update_meta(account.username, state="needs_reauth")
            raise NeedsReauthorisation(account.username, "no refresh token is stored")
        client = self._client(account)
        try:
            if account.flow == "client_credentials":
                tokens = client.client_credentials(resource)
            else:
                assert secrets.refresh_token is not None
                tokens = client.refresh(secrets.refresh_token, resource)
        except ProxyError as e:
            self._on_token_request(e)
            if isinstance(e, NeedsReauthorisation):
                # Only a definitive refusal marks the account; every stored token is kept.
                self.store.update_meta(account.username, state="needs_reauth")
            raise
        self._on_token_request(None)
        return tokens

    def _client(self, account: AccountConfig) -> EntraClient:
        name = account.username.lower()
        if name not in self._clients:
            self._clients[name] = self._entra_for(account)
        return self._clients[name]



def _default_entra(account: AccountConfig) -> EntraClient:
    return EntraClient(account, requests.Session())


def _fingerprint(token: str) -> str:
    """Identifies a token in memory without keeping a second copy of it."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]
