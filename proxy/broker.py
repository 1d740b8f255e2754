"""The token broker: local password in, access token out.

It unlocks an account's store file (one KDF per account and password per process; after that a
login costs an HMAC), keeps the access token until shortly before it expires, and refreshes it
with at most one request per account at a time, however many clients log in at once. A refresh
runs under the store file's lock, re-reads the file (another process may have refreshed
already) and saves a rotated refresh token before the new access token is handed out.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import requests
from twisted.internet.defer import Deferred, DeferredLock

from .config import AccountConfig, Config
from .errors import AccountNotReady, NeedsReauthorisation, StaleKey, TemporaryFailure, WrongPassword
from .oauth import EntraClient, TokenSet
from .store import Secrets, Store, UnlockKey

T = TypeVar("T")
RunBlocking = Callable[[Callable[[], T]], "Deferred[T]"]

# Refresh this long before expiry, so a token never expires between check and upstream login.
REFRESH_MARGIN = 300.0


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
    unsaved: bool = False  # new tokens that could not be written yet: write before use


class _SaveFailed(TemporaryFailure):
    def __init__(self, secrets: Secrets, reason: str) -> None:
        super().__init__(f"Could not save the refreshed credentials: {reason}")
        self.secrets = secrets


class TokenBroker:
    def __init__(
        self,
        config: Config,
        store: Store,
        run_blocking: Callable[[Callable[[], Any]], Deferred[Any]],
        entra_for: Callable[[AccountConfig], EntraClient] | None = None,
        now: Callable[[], float] = time.time,
        refresh_margin: float = REFRESH_MARGIN,
    ) -> None:
        self.config = config
        self.store = store
        self._run = run_blocking
        self._entra_for = entra_for or _default_entra
        self._now = now
        self._margin = refresh_margin
        self._pepper = os.urandom(32)  # password digests are only comparable in this process
        self._unlocked: dict[str, _Unlocked] = {}
        self._locks: defaultdict[str, DeferredLock] = defaultdict(DeferredLock)
        self._clients: dict[str, EntraClient] = {}

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
                # The file was re-encrypted (account passwd / add) since we unlocked it.
                self._unlocked.pop(name, None)
                return await self._grant_locked(account, password)
        finally:
            lock.release()

    def forget_access_token(self, username: str) -> None:
        """The upstream refused the cached token (revoked early): the next grant refreshes."""
        unlocked = self._unlocked.get(username.lower())
        if unlocked is not None and unlocked.secrets.access_token:
            unlocked.secrets = replace(unlocked.secrets, extra={
                **unlocked.secrets.extra, "refused_access_token": _fingerprint(unlocked.secrets.access_token)})

    async def _grant_locked(self, account: AccountConfig, password: str) -> Grant:
        unlocked = await self._unlock(account, password)
        if unlocked.unsaved:
            await self._run(lambda: self.store.save(account.username, unlocked.key, unlocked.secrets))
            unlocked.unsaved = False
        if self._usable(unlocked.secrets):
            assert unlocked.secrets.access_token is not None
            return Grant(account.mailbox, unlocked.secrets.access_token, fresh=False)
        try:
            unlocked.secrets = await self._run(
                lambda: self._refresh_blocking(account, unlocked.key, unlocked.secrets)
            )
        except _SaveFailed as e:
            unlocked.secrets, unlocked.unsaved = e.secrets, True
            raise
        assert unlocked.secrets.access_token is not None
        return Grant(account.mailbox, unlocked.secrets.access_token, fresh=True)

    async def _unlock(self, account: AccountConfig, password: str) -> _Unlocked:
        name = account.username.lower()
        digest = hmac.new(self._pepper, password.encode("utf-8"), hashlib.sha256).digest()
        cached = self._unlocked.get(name)
        if cached is not None and hmac.compare_digest(cached.password_digest, digest):
            return cached
        key, secrets = await self._run(lambda: self._open_blocking(account, password))
        unlocked = _Unlocked(key, digest, secrets)
        self._unlocked[name] = unlocked
        return unlocked

    def _usable(self, secrets: Secrets) -> bool:
        refused = secrets.extra.get("refused_access_token")
        return (
            secrets.access_token is not None
            and secrets.access_expires_at is not None
            and secrets.access_expires_at - self._margin > self._now()
            and refused != _fingerprint(secrets.access_token)
        )

    # -- blocking work, run in the thread pool --

    def _open_blocking(self, account: AccountConfig, password: str) -> tuple[UnlockKey, Secrets]:
        if not self.store.exists(account.username):
            raise AccountNotReady(
                f"{account.username} has no stored credentials yet; "
                f"run: xoauth2-proxy account add {account.username}"
            )
        key = self.store.derive_key(account.username, password)
        return key, self.store.load(account.username, key)

    def _refresh_blocking(self, account: AccountConfig, key: UnlockKey, known: Secrets) -> Secrets:
        name = account.username
        with self.store.lock(name):
            # Re-read under the lock: another process may have refreshed (and rotated) already.
            secrets = self.store.load(name, key)
            refused = known.extra.get("refused_access_token")
            if refused:
                secrets = replace(secrets, extra={**secrets.extra, "refused_access_token": refused})
            meta = self.store.read_meta(name)
            if meta is not None and meta.state == "needs_reauth":
                raise NeedsReauthorisation(name)
            if self._usable(secrets):
                return secrets
            tokens = self._request_tokens(account, secrets)
            renewed = Secrets(
                refresh_token=tokens.refresh_token or secrets.refresh_token,
                access_token=tokens.access_token,
                access_expires_at=tokens.expires_at,
                extra={k: v for k, v in secrets.extra.items() if k != "refused_access_token"},
            )
            try:
                self.store.save(name, key, renewed)
            except OSError as e:
                raise _SaveFailed(renewed, e.strerror or str(e)) from None
            return renewed

    def _request_tokens(self, account: AccountConfig, secrets: Secrets) -> TokenSet:
        client = self._client(account)
        if account.flow == "client_credentials":
            return client.client_credentials()
        if not secrets.refresh_token:
            self.store.update_meta(account.username, state="needs_reauth")
            raise NeedsReauthorisation(account.username, "no refresh token is stored")
        try:
            return client.refresh(secrets.refresh_token)
        except NeedsReauthorisation:
            # Only a definitive refusal marks the account; every stored token is kept.
            self.store.update_meta(account.username, state="needs_reauth")
            raise

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
