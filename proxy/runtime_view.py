"""A read-only picture of the running proxy: what the control endpoint answers and what an
admin page renders. Plain data, no Twisted; `as_json()` gives the same as JSON-ready values."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ListenerView:
    name: str  # "imap tcp:1143:interface=127.0.0.1"
    protocol: str  # imap | pop3 | smtp
    listen: str  # the configured endpoint string
    address: str  # where it is bound, e.g. "127.0.0.1:1143"
    upstream: str
    tls: str  # none | starttls | implicit
    tls_fingerprint: str | None  # SHA-256 of its certificate, as devices show it
    sessions_open: int


@dataclass(frozen=True)
class ReloadOutcome:
    at: float  # time.time() of the attempt
    ok: bool
    summary: str  # what changed, or why it was refused


@dataclass(frozen=True)
class RuntimeView:
    config_path: str
    store_path: str
    started_at: float | None
    stopping: bool
    listeners: tuple[ListenerView, ...]
    listeners_down: tuple[str, ...]  # configured, but not listening (lost after a refused reload)
    sessions_on_removed_listeners: int  # removed by a reload, still going on
    accounts: tuple[str, ...]  # user names of the configured accounts
    last_reload: ReloadOutcome | None

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
