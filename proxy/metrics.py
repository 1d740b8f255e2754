"""What the running proxy has done since it started: Prometheus metrics in a registry of its own,
and the last login of each account, for /metrics and the admin page.

The glue reports as things happen (a session accepted, a login's outcome, a token request, an
upstream connection's timings, a session relaying and its end); gauges of the present (sessions
open, listeners up, accounts by state, lockouts) are set just before each scrape, and the bytes
relayed are read from the open sessions at each scrape. No label or value ever carries a
password, a token or a peer's password: only listener names, results and states. Each runtime
owns its registry, so several runtimes in one process do not collide.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from .errors import (
    FailureKind,
    LockedOut,
    NeedsReauthorisation,
    ProxyError,
    TokenEndpointThrottled,
    TokenEndpointUnavailable,
)

PREFIX = "xoauth2_proxy_"
LOGIN_RESULTS = ("ok", "wrong_password", "needs_authorisation", "temporary", "throttled")
TOKEN_RESULTS = ("ok", "refused", "needs_authorisation", "unavailable", "throttled")
DIRECTIONS = ("to_upstream", "to_client")
ACCOUNT_STATES = ("valid", "expired", "refresh_failing", "needs_authorisation")
# Seconds; an upstream connect on a LAN takes milliseconds, a sign-in at Office 365 about a second.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# (stage, seconds): stage is "connect" (TCP and TLS) or "login" (greeting to signed in).
Timing = Callable[[str, float], None]


class Relaying(Protocol):
    """An open session's bytes so far (the relay, or a Graph listener's session)."""

    def relayed(self) -> tuple[int, int]:
        """(bytes from the client, bytes to the client) since login."""


class RelayedBytes(Collector):
    """Bytes relayed after login, by listener and direction: those of ended sessions plus what
    the open ones have relayed so far, so an IDLE session of hours or a 100 MB transfer shows
    while it runs. Read on the reactor thread, like the sessions it reads."""

    def __init__(self) -> None:
        self._ended: dict[tuple[str, str], int] = {}
        self._open: dict[Relaying, str] = {}  # session -> listener

    def listener_started(self, listener: str) -> None:
        for direction in DIRECTIONS:
            self._ended.setdefault((listener, direction), 0)

    def relaying(self, listener: str, session: Relaying) -> None:
        self._open[session] = listener

    def ended(self, listener: str, session: Relaying | None, to_upstream: int,
              to_client: int) -> None:
        """A session is over; its bytes move from the open to the ended totals in one step,
        so the counter never goes back."""
        if session is not None:
            self._open.pop(session, None)
        self._ended[(listener, "to_upstream")] = self.total(listener, "to_upstream") + to_upstream
        self._ended[(listener, "to_client")] = self.total(listener, "to_client") + to_client

    def total(self, listener: str, direction: str) -> int:
        return self._ended.get((listener, direction), 0)

    def collect(self) -> Iterator[Metric]:
        totals = dict(self._ended)
        for session, listener in self._open.items():
            for direction, count in zip(DIRECTIONS, session.relayed(), strict=True):
                totals[(listener, direction)] = totals.get((listener, direction), 0) + count
        family = CounterMetricFamily(PREFIX + "relayed_bytes", "Bytes relayed after login",
                                     labels=["listener", "direction"])
        for (listener, direction), count in sorted(totals.items()):
            family.add_metric([listener, direction], count)
        yield family


@dataclass(frozen=True)
class LastLogin:
    at: float  # time.time()
    source: str  # the device's address
    listener: str


def login_result(error: ProxyError | None) -> str:
    """The `result` label of a login that ended with `error` (None: it succeeded)."""
    if error is None:
        return "ok"
    if isinstance(error, LockedOut):
        return "throttled"
    if isinstance(error, NeedsReauthorisation):
        return "needs_authorisation"
    return "wrong_password" if error.kind is FailureKind.CREDENTIALS else "temporary"


def token_result(error: ProxyError | None) -> str:
    """The `result` label of a token request to Entra ID that ended with `error`."""
    if error is None:
        return "ok"
    if isinstance(error, TokenEndpointThrottled):
        return "throttled"
    if isinstance(error, TokenEndpointUnavailable):
        return "unavailable"
    if isinstance(error, NeedsReauthorisation):
        return "needs_authorisation"
    return "refused"


class ProxyMetrics:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry()
        self._clock = clock
        registry = self.registry
        self.sessions_open = Gauge(PREFIX + "sessions_open", "Device sessions open now",
                                   ["listener"], registry=registry)
        self.sessions = Counter(PREFIX + "sessions", "Device sessions accepted",
                                ["listener"], registry=registry)
        self.logins = Counter(PREFIX + "logins", "Device logins by result", ["listener", "result"],
                              registry=registry)
        self.token_requests = Counter(PREFIX + "token_requests",
                                      "Token requests to Entra ID at login time, by result",
                                      ["result"], registry=registry)
        self.upstream_connect = Histogram(
            PREFIX + "upstream_connect_seconds", "Time to connect to the mail server (TCP, TLS)",
            ["listener"], buckets=LATENCY_BUCKETS, registry=registry)
        self.upstream_login = Histogram(
            PREFIX + "upstream_login_seconds", "Time from connected to signed in upstream",
            ["listener"], buckets=LATENCY_BUCKETS, registry=registry)
        self.relayed = RelayedBytes()
        registry.register(self.relayed)
        self.listener_up = Gauge(PREFIX + "listener_up", "1 while a configured listener listens",
                                 ["listener"], registry=registry)
        self.accounts = Gauge(PREFIX + "accounts", "Configured accounts by state", ["state"],
                              registry=registry)
        self.lockouts = Gauge(PREFIX + "lockouts",
                              "Addresses (and accounts) refused for too many failed logins",
                              ["kind"], registry=registry)
        for result in TOKEN_RESULTS:
            self.token_requests.labels(result)
        self.last_logins: dict[str, LastLogin] = {}  # by user name in lower case

    # -- reported by the glue as things happen --

    def listener_started(self, listener: str) -> None:
        """Every series of a new listener exists from the start, at 0."""
        self.sessions.labels(listener)
        for result in LOGIN_RESULTS:
            self.logins.labels(listener, result)
        self.relayed.listener_started(listener)

    def session_opened(self, listener: str) -> None:
        self.sessions.labels(listener).inc()

    def login(self, listener: str, username: str, source: str, error: ProxyError | None) -> None:
        self.logins.labels(listener, login_result(error)).inc()
        if error is None:
            self.last_logins[username.lower()] = LastLogin(self._clock(), source, listener)

    def session_relaying(self, listener: str, session: Relaying) -> None:
        """A session was handed over after login; its bytes count from now on."""
        self.relayed.relaying(listener, session)

    def session_ended(self, listener: str, session: Relaying | None, to_upstream: int,
                      to_client: int) -> None:
        self.relayed.ended(listener, session, to_upstream, to_client)

    def token_request(self, error: ProxyError | None) -> None:
        """Called from the thread pool; prometheus_client's counters are thread-safe."""
        self.token_requests.labels(token_result(error)).inc()

    def upstream_timing(self, listener: str) -> Timing:
        def observe(stage: str, seconds: float) -> None:
            histogram = self.upstream_connect if stage == "connect" else self.upstream_login
            histogram.labels(listener).observe(seconds)

        return observe

    # -- the present, set before a scrape --

    def set_present(
        self, listeners: Mapping[str, tuple[int, bool]], account_states: Tally[str],
        lockouts: Tally[str],
    ) -> None:
        """`listeners`: name -> (sessions open, up); listeners no longer configured drop out."""
        self.sessions_open.clear()
        self.listener_up.clear()
        for name, (open_now, up) in listeners.items():
            self.sessions_open.labels(name).set(open_now)
            self.listener_up.labels(name).set(1 if up else 0)
        for state in ACCOUNT_STATES:
            self.accounts.labels(state).set(account_states.get(state, 0))
        for kind in ("address", "account"):
            self.lockouts.labels(kind).set(lockouts.get(kind, 0))

    # -- read back for the admin page --

    def logins_of(self, listener: str) -> dict[str, int]:
        """Logins of `listener` since start, by result."""
        counts = dict.fromkeys(LOGIN_RESULTS, 0)
        for family in self.logins.collect():
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels.get("listener") == listener:
                    counts[sample.labels["result"]] = int(sample.value)
        return counts
