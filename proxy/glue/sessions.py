"""The sessions a listener has open, across the factories reloads give it: counted per client
address for the session limits, and kept so that a stop can wait for them or close them."""

from __future__ import annotations

from collections import Counter
from typing import Protocol

from twisted.internet.defer import Deferred


class Closable(Protocol):
    def close_now(self) -> None:
        """End the session at once (a stop whose grace period is over)."""


class OpenSessions:
    def __init__(self) -> None:
        self.by_address: Counter[str] = Counter()
        self._open: set[Closable] = set()
        self._waiting: list[Deferred[None]] = []

    def __len__(self) -> int:
        return len(self._open)

    def count(self, address: str) -> int:
        return self.by_address[address]

    def opened(self, address: str, session: Closable) -> None:
        self.by_address[address] += 1
        self._open.add(session)

    def closed(self, address: str, session: Closable) -> None:
        self.by_address[address] -= 1
        if self.by_address[address] <= 0:
            del self.by_address[address]
        self._open.discard(session)
        if not self._open:
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                if not d.called:  # a wait that was given up (cancelled) has fired already
                    d.callback(None)

    def when_empty(self) -> Deferred[None]:
        """Fires once no session is open (at once if none is)."""
        d: Deferred[None] = Deferred()
        if self._open:
            self._waiting.append(d)
        else:
            d.callback(None)
        return d

    def close_all(self) -> int:
        """Close every open session now; returns how many there were."""
        sessions = list(self._open)
        for session in sessions:
            session.close_now()
        return len(sessions)
