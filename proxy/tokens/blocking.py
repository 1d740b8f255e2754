"""Running blocking work (requests, scrypt, file and database I/O) off the reactor thread.

The broker is given a RunBlocking; the service passes one over its own thread pool, unit tests
one that runs the work at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.python.threadpool import ThreadPool

RunBlocking = Callable[[Callable[[], Any]], "Deferred[Any]"]


class ThreadPoolService(service.Service):
    """Starts and stops a thread pool with the service it belongs to."""

    def __init__(self, pool: ThreadPool) -> None:
        self.pool = pool

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        self.pool.stop()


def blocking_runner(reactor: Any, pool: ThreadPool) -> RunBlocking:
    """Runs blocking work in `pool`, off the reactor thread."""

    def run_blocking(work: Callable[[], Any]) -> Deferred[Any]:
        return threads.deferToThreadPool(reactor, pool, work)

    return run_blocking
