"""Failed-login throttling, sans I/O: counts per source address and per account.

A guesser is slowed first (a delay before its password is even looked at) and then refused for a
cooling-off period, with a temporary answer so a device that merely mistyped does not drop its
saved password. Checks happen before the key derivation, so a brute-force run costs the proxy
almost nothing and never reaches Entra ID.

An account lockout must not let an attacker lock the real device out: addresses that have logged
in to an account successfully are remembered and exempt from that account's lockout (their own
per-address count still applies).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ThrottleSettings:
    failures_before_delay: int = 3  # per address: then each attempt waits
    delay: float = 1.0  # seconds, doubling per further failure ...
    max_delay: float = 8.0  # ... up to this
    failures_before_lockout: int = 10  # per address: then refused for `lockout`
    account_failures_before_lockout: int = 30  # per account, from addresses not known to it
    lockout: float = 900.0  # seconds of cooling-off
    window: float = 900.0  # failures older than this are forgotten


@dataclass(frozen=True)
class Allow:
    delay: float = 0.0  # seconds to wait before checking the password


@dataclass(frozen=True)
class Refuse:
    retry_after: float  # seconds until the cooling-off ends

    @property
    def message(self) -> str:
        minutes = max(1, round(self.retry_after / 60))
        return f"Too many failed logins; try again in {minutes} minute{'s' * (minutes != 1)}"


Verdict = Allow | Refuse


@dataclass(frozen=True)
class Lockout:
    """A source address, or an account (for addresses not known to it), refused for now."""

    kind: str  # "address" | "account"
    key: str  # the address, or the account's user name in lower case
    seconds_left: float


@dataclass
class _Record:
    failures: list[float] = field(default_factory=list)  # times of recent failures
    locked_until: float = 0.0


class LoginThrottle:
    def __init__(
        self, settings: ThrottleSettings | None = None, now: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings or ThrottleSettings()
        self._now = now
        self._sources: dict[str, _Record] = {}
        self._accounts: dict[str, _Record] = {}
        self._known: dict[str, set[str]] = {}  # account -> addresses that logged in before
        self._last_sweep = self._now()

    def check(self, source: str, account: str) -> Verdict:
        """What to do with a login attempt, before its password is looked at."""
        now = self._now()
        record = self._current(self._sources, source, now)
        if record.locked_until > now:
            return Refuse(record.locked_until - now)
        if source not in self._known.get(account.lower(), ()):
            account_record = self._current(self._accounts, account.lower(), now)
            if account_record.locked_until > now:
                return Refuse(account_record.locked_until - now)
        extra = len(record.failures) - self.settings.failures_before_delay
        if extra < 0:
            return Allow()
        return Allow(min(self.settings.delay * 2**extra, self.settings.max_delay))

    def failed(self, source: str, account: str) -> None:
        """The password was wrong (only credential failures count, never outages)."""
        now = self._now()
        settings = self.settings
        record = self._current(self._sources, source, now)
        record.failures.append(now)
        if len(record.failures) >= settings.failures_before_lockout:
            record.locked_until = now + settings.lockout
        if source not in self._known.get(account.lower(), ()):
            account_record = self._current(self._accounts, account.lower(), now)
            account_record.failures.append(now)
            if len(account_record.failures) >= settings.account_failures_before_lockout:
                account_record.locked_until = now + settings.lockout

    def succeeded(self, source: str, account: str) -> None:
        """A right password: the address's count starts again and it is known to the account."""
        self._sources.pop(source, None)
        self._known.setdefault(account.lower(), set()).add(source)

    def lockouts(self) -> list[Lockout]:
        """What is refused right now, addresses first."""
        now = self._now()
        return [
            Lockout(kind, key, record.locked_until - now)
            for kind, table in (("address", self._sources), ("account", self._accounts))
            for key, record in sorted(table.items())
            if record.locked_until > now
        ]

    def lift(self, kind: str, key: str) -> bool:
        """An administrator ends a lockout: the address (or account) starts again with no
        failures. False when there was none."""
        table = self._sources if kind == "address" else self._accounts if kind == "account" else {}
        record = table.get(key)
        if record is None or record.locked_until <= self._now():
            return False
        del table[key]
        return True

    def _current(self, table: dict[str, _Record], key: str, now: float) -> _Record:
        """The record for `key` with failures outside the window dropped (and empty ones gone,
        so memory stays bounded by the addresses that failed recently)."""
        record = table.get(key)
        if record is None:
            record = table[key] = _Record()
        horizon = now - self.settings.window
        record.failures = [t for t in record.failures if t > horizon]
        if not record.failures and record.locked_until <= now:
            record.locked_until = 0.0
        self._forget_stale(table, now)
        return record

    def _forget_stale(self, table: dict[str, _Record], now: float) -> None:
        """Drop records with nothing left to remember; a full pass at most once a minute."""
        if len(table) < 1024 or now - self._last_sweep < 60:
            return
        self._last_sweep = now
        horizon = now - self.settings.window
        stale = [
            key for key, record in table.items()
            if record.locked_until <= now and all(t <= horizon for t in record.failures)
        ]
        for key in stale:
            del table[key]
