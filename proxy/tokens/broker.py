"""The token broker: local password in, access token out.

It unlocks an account's stored record (one KDF per account and password per process; after that
a login costs an HMAC and a read of the small record, which is how a password changed or an
account re-authorised by another process is noticed), keeps the access token until shortly
before it expires, and refreshes it with at most one request per account at a time, however many
clients log in at once. A refresh runs under the store's account lock, re-reads the record
(another process may have refreshed already) and saves a rotated refresh token before the new
access token is handed out. A temporary failure keeps every stored token; the next request waits for a backoff,
and the current access token is used meanwhile while it is still valid (see TokenBroker).
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
from twisted.internet.defer import DeferredLock
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
    TemporaryFailure,
    Throttled,
    TokenEndpointUnavailable,
    TokenRequestRefused,
    WrongPassword,
)
from ..store.contract import Store
from ..store.record import Secrets, UnlockKey
from .blocking import RunBlocking

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
# What counts as "Entra ID is in the way for now" (as opposed to a local problem).
BACKOFF_ERRORS = (TokenEndpointUnavailable, Throttled, TokenRequestRefused)


@dataclass(frozen=True)
class Grant:
    mailbox: str
    access_token: str = field(repr=False)
    fresh: bool  # just issued by Entra ID, so an upstream refusal is not a stale cache


@dataclass
class _Unlocked:
    key: UnlockKey
    password_digest: bytes
    secrets: Secrets
    refused: str | None = None  # fingerprint of an access token the upstream refused


@dataclass
class _Unsaved:
    """Tokens Entra ID issued that could not be written: written before anything else."""

    secrets: Secrets
    replaced: str | None  # the refresh token they replace, which the store still holds


@dataclass
class _Backoff:
    until: float
    delay: float
    error: TemporaryFailure


class _SaveFailed(TemporaryFailure):
    def __init__(self, secrets: Secrets, replaced: str | None, reason: str) -> None:
        super().__init__(f"Could not save the refreshed credentials: {reason}")
        self.secrets = secrets
        self.replaced = replaced


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
        self._unsaved: dict[str, _Unsaved] = {}
        self._backoff: dict[str, _Backoff] = {}
        self._locks: defaultdict[str, DeferredLock] = defaultdict(DeferredLock)
        self._clients: dict[str, EntraClient] = {}
        # Called (from the thread pool) after each token request: None or how it failed.
        self._on_token_request = on_token_request or (lambda error: None)
        # Accounts whose token requests keep failing, for the admin page; cleared by a success.
        self.trouble: dict[str, RefreshTrouble] = {}

    async def grant(self, username: str, password: str) -> Grant:
        """An access token for `username`; raises WrongPassword, NeedsReauthorisation or a
        TemporaryFailure. Never sends anything to Entra ID before the password is verified."""
        account = self.config.accounts.get(username.lower())
        if account is None:
            raise WrongPassword()  # unknown and wrong look the same to a guesser
        name = account.username.lower()
        lock = self._locks[name]
        await lock.acquire()
        try:
            try:
                return await self._grant_locked(account, password)
            except StaleKey:
                # The record was re-encrypted (account passwd / add) since we unlocked it: the
                # password must be checked again against the new record.
                self._unlocked.pop(name, None)
                return await self._grant_locked(account, password)
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

    def forget_access_token(self, username: str) -> None:
        """The upstream refused the cached token (revoked early): the next grant refreshes."""
        unlocked = self._unlocked.get(username.lower())
        if unlocked is not None and unlocked.secrets.access_token:
            unlocked.refused = _fingerprint(unlocked.secrets.access_token)

    async def _grant_locked(self, account: AccountConfig, password: str) -> Grant:
        name = account.username.lower()
        unlocked = await self._unlock(account, password)
        pending = self._unsaved.get(name)
        if pending is not None:
            # Raises _SaveFailed again if the store still refuses: the tokens stay pending.
            unlocked.secrets = await self._run(
                lambda: self._save_pending(account, unlocked.key, pending)
            )
            del self._unsaved[name]
        if self._usable(unlocked.secrets, unlocked.refused, self._margin):
            return self._grant(account, unlocked, fresh=False)
        backoff = self._backoff.get(name)
        if backoff is not None and self._now() < backoff.until:
            if self._fallback_usable(unlocked):
                return self._grant(account, unlocked, fresh=False)
            raise backoff.error.with_traceback(None)
        try:
            unlocked.secrets = await self._run(
                lambda: self._refresh_blocking(account, unlocked.key, unlocked.refused)
            )
        except _SaveFailed as e:
            self._unsaved[name] = _Unsaved(e.secrets, e.replaced)
            raise
        except NeedsReauthorisation as e:
            self._note_trouble(name, e)
            raise
        except BACKOFF_ERRORS as e:
            self._note_trouble(name, e)
            self._note_failure(name, e)
            if self._fallback_usable(unlocked):
                log.warn("{user}: token refresh failed ({error}); the current access token is "
                         "still valid and is used meanwhile", user=account.username,
                         error=e.message, account=account.username,
                         event="token_refresh_failed", reason=e.message)
                return self._grant(account, unlocked, fresh=False)
            raise
        self._backoff.pop(name, None)
        self.trouble.pop(name, None)
        unlocked.refused = None
        return self._grant(account, unlocked, fresh=True)

    def _grant(self, account: AccountConfig, unlocked: _Unlocked, fresh: bool) -> Grant:
        assert unlocked.secrets.access_token is not None
        return Grant(account.mailbox, unlocked.secrets.access_token, fresh=fresh)

    async def _unlock(self, account: AccountConfig, password: str) -> _Unlocked:
        name = account.username.lower()
        digest = hmac.new(self._pepper, password.encode("utf-8"), hashlib.sha256).digest()
        cached = self._unlocked.get(name)
        if cached is not None and hmac.compare_digest(cached.password_digest, digest):
            # Re-read the record: `account passwd` or `account add` may have re-encrypted it
            # (StaleKey), another process may have refreshed, `account remove` may have removed
            # it (AccountNotReady). Reading and decrypting ~1 KiB costs far less than the KDF.
            key = cached.key
            cached.secrets = await self._run(lambda: self.store.load(account.username, key))
            return cached
        key, secrets = await self._run(lambda: self._open_blocking(account, password))
        unlocked = _Unlocked(key, digest, secrets)
        self._unlocked[name] = unlocked
        return unlocked

    def _usable(self, secrets: Secrets, refused: str | None, margin: float) -> bool:
        return (
            secrets.access_token is not None
            and secrets.access_expires_at is not None
            and secrets.access_expires_at - margin > self._now()
            and refused != _fingerprint(secrets.access_token)
        )

    def _fallback_usable(self, unlocked: _Unlocked) -> bool:
        return self._fallback is not None and self._usable(
            unlocked.secrets, unlocked.refused, self._fallback)

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

    # -- blocking work, run in the thread pool --

    def _open_blocking(self, account: AccountConfig, password: str) -> tuple[UnlockKey, Secrets]:
        if not self.store.exists(account.username):
            raise AccountNotReady(
                f"{account.username} has no stored credentials yet; "
                f"run: xoauth2-proxy account add {account.username}"
            )
        key = self.store.derive_key(account.username, password)
        return key, self.store.load(account.username, key)

    def _save_pending(self, account: AccountConfig, key: UnlockKey, pending: _Unsaved) -> Secrets:
        name = account.username
        with self.store.lock(name):
            current = self.store.load(name, key)
            if current.refresh_token != pending.replaced:
                return current  # someone wrote newer tokens meanwhile: theirs win
            self._save(name, key, pending.secrets, pending.replaced)
            return pending.secrets

    def _refresh_blocking(
        self, account: AccountConfig, key: UnlockKey, refused: str | None
    ) -> Secrets:
        name = account.username
        with self.store.lock(name):
            # Re-read under the lock: another process may have refreshed (and rotated) already.
            secrets = self.store.load(name, key)
            meta = self.store.read_meta(name)
            if meta is not None and meta.state == "needs_reauth":
                raise NeedsReauthorisation(name)
            if self._usable(secrets, refused, self._margin):
                return secrets
            tokens = self._request_tokens(account, secrets)
            renewed = Secrets(
                refresh_token=tokens.refresh_token or secrets.refresh_token,
                access_token=tokens.access_token,
                access_expires_at=tokens.expires_at,
                extra=secrets.extra,
            )
            # The rotated refresh token is stored before the access token leaves this method.
            self._save(name, key, renewed, secrets.refresh_token)
            return renewed

    def _save(self, name: str, key: UnlockKey, secrets: Secrets, replaced: str | None) -> None:
        try:
            self.store.save(name, key, secrets)
        except OSError as e:
            raise _SaveFailed(secrets, replaced, e.strerror or str(e)) from None

    def _request_tokens(self, account: AccountConfig, secrets: Secrets) -> TokenSet:
        if account.flow != "client_credentials" and not secrets.refresh_token:
            self.store.update_meta(account.username, state="needs_reauth")
            raise NeedsReauthorisation(account.username, "no refresh token is stored")
        client = self._client(account)
        try:
            if account.flow == "client_credentials":
                tokens = client.client_credentials()
            else:
                assert secrets.refresh_token is not None
                tokens = client.refresh(secrets.refresh_token)
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
