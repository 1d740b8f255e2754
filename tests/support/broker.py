"""A TokenBroker over a real FileStore with a stub Entra ID, run synchronously: shared by the
broker's and the gateway's unit tests."""

from __future__ import annotations

import errno
from collections.abc import Callable, Coroutine
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from proxy.config import AccountConfig, Config
from proxy.entra.answers import TokenSet
from proxy.errors import StoreUnavailable
from proxy.store import AccountMeta, FileStore, KdfParams, ScryptParams, Secrets, UnlockKey
from proxy.store.contract import Stamp
from proxy.tokens.broker import BACKOFF_FIRST, BACKOFF_MAX, MIN_REMAINING, Grant, TokenBroker

USER = "dana@contoso.example"
APP_USER = "app@contoso.example"
PASSWORD = "local password"
NOW = 1_800_000_000.0
FAST = ScryptParams(n=2**4)


class CountingStore(FileStore):
    """A real FileStore that counts key derivations and record reads, can refuse the next
    saves, and can stand for a database that is down (`down`: every call fails)."""

    def __init__(self, root: Path, kdf: KdfParams = FAST) -> None:
        super().__init__(root, kdf=kdf)
        self.derivations = 0
        self.new_keys = 0
        self.loads = 0
        self.failing_saves = 0
        self.down = False

    def _reachable(self) -> None:
        if self.down:
            raise StoreUnavailable("The account database could not be used: connection refused")

    def derive_key(self, username: str, password: str) -> UnlockKey:
        self._reachable()
        self.derivations += 1
        return super().derive_key(username, password)

    def new_key(self, password: str) -> UnlockKey:
        self.new_keys += 1
        return super().new_key(password)

    def load(self, username: str, key: UnlockKey) -> Secrets:
        self._reachable()
        self.loads += 1
        return super().load(username, key)

    def stamp(self, username: str) -> Stamp | None:
        self._reachable()
        return super().stamp(username)

    def lock(self, username: str) -> AbstractContextManager[None]:
        self._reachable()
        return super().lock(username)

    def save(self, username: str, key: UnlockKey, secrets: Secrets,
             meta: AccountMeta | None = None) -> AccountMeta:
        self._reachable()
        if self.failing_saves:
            self.failing_saves -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().save(username, key, secrets, meta)


class StubEntra:
    """Stands in for EntraClient: hands out numbered tokens, or raises what it is told to."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.calls: list[tuple[str, str | None]] = []
        self.resources: list[str | None] = []  # the resource of each call
        self.lifetime = 3600.0
        self.errors: list[Exception] = []
        self.during: Callable[[], None] | None = None  # runs inside the request
        self.counter = 0

    def _issue(self, rotate: bool) -> TokenSet:
        if self.during is not None:
            self.during()
        if self.errors:
            raise self.errors.pop(0)
        self.counter += 1
        return TokenSet(access_token=f"access-{self.counter}",
                        expires_at=self.clock() + self.lifetime,
                        refresh_token=f"refresh-{self.counter}" if rotate else None)

    def refresh(self, refresh_token: str, resource: str | None = None) -> TokenSet:
        self.calls.append(("refresh", refresh_token))
        self.resources.append(resource)
        return self._issue(rotate=True)

    def client_credentials(self, resource: str | None = None) -> TokenSet:
        self.calls.append(("client_credentials", None))
        self.resources.append(resource)
        return self._issue(rotate=False)


@dataclass
class Setup:
    broker: TokenBroker
    store: CountingStore
    entra: StubEntra
    clock: list[float]
    key: UnlockKey

    def grant(self, password: str = PASSWORD, user: str = USER) -> Grant:
        return run(self.broker.grant(user, password))

    def file_secrets(self, password: str = PASSWORD, user: str = USER) -> Secrets:
        probe = FileStore(self.store.root, kdf=FAST)
        return probe.load(user, probe.derive_key(user, password))


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """The result of a coroutine whose Deferreds all fire synchronously."""
    results: list[Any] = []
    Deferred.fromCoroutine(coroutine).addBoth(results.append)
    assert results, "the coroutine is still waiting"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def account(username: str, flow: str) -> AccountConfig:
    return AccountConfig(username=username, tenant="contoso.example", client_id="app",
                         flow=flow, mailbox=username, scopes=("scope",),
                         client_secret="s" if flow == "client_credentials" else None)


def make(tmp_path: Path, access_expires_at: float | None = NOW + 3600,
         run_blocking: Callable[[Callable[[], Any]], Deferred[Any]] | None = None,
         resilient: bool = False) -> Setup:
    """A broker over a real store holding USER's tokens; `resilient` turns on the fallback to
    a still valid token and the retry backoff."""
    clock = [NOW]
    store = CountingStore(tmp_path / "store")
    accounts = {USER: account(USER, "device_code"),
                APP_USER: account(APP_USER, "client_credentials")}
    config = Config(path=tmp_path / "config.toml", store_path=store.root, listeners=(),
                    accounts=accounts)
    key = store.new_key(PASSWORD)
    store.save(USER, key, Secrets("refresh-0", "access-0", access_expires_at),
               AccountMeta(USER, USER, "device_code"))
    entra = StubEntra(lambda: clock[0])
    broker = TokenBroker(config, store, run_blocking or (lambda f: defer.maybeDeferred(f)),
                         entra_for=lambda _account: entra,  # type: ignore[arg-type,return-value]
                         now=lambda: clock[0],
                         fallback_remaining=MIN_REMAINING if resilient else None,
                         retry_backoff=(BACKOFF_FIRST, BACKOFF_MAX) if resilient else None)
    return Setup(broker, store, entra, clock, key)


