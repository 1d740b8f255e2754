"""The running proxy: a listener per [[listener]], one token broker, one thread pool."""

from __future__ import annotations

from typing import Any, Callable

from twisted.application import service, strports
from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.python.threadpool import ThreadPool

from .broker import TokenBroker
from .config import Config
from .front import FrontFactory
from .gateway import Gateway
from .protocols import cores_for
from .store import Store
from .upstream import UpstreamTarget

# requests and scrypt block; they run here, never on the reactor thread.
THREADS = 8


class ThreadPoolService(service.Service):
    def __init__(self, pool: ThreadPool) -> None:
        self.pool = pool

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:  # type: ignore[override]
        super().stopService()
        self.pool.stop()


def make_service(config: Config, reactor: Any) -> service.MultiService:
    root = service.MultiService()
    pool = ThreadPool(minthreads=0, maxthreads=THREADS, name="xoauth2-proxy")
    ThreadPoolService(pool).setServiceParent(root)

    def run_blocking(work: Callable[[], Any]) -> Deferred[Any]:
        return threads.deferToThreadPool(reactor, pool, work)

    broker = TokenBroker(config, Store(config.store_path), run_blocking)
    for listener in config.listeners:
        target = UpstreamTarget.from_listener(listener)
        cores = cores_for(listener, target)
        gateway = Gateway(reactor, broker, target, cores.make_login)
        factory = FrontFactory(listener, cores.make_session, gateway, reactor)
        listening = strports.service(listener.listen, factory, reactor=reactor)
        listening.setName(listener.name)
        # Fail at start when the port is taken, instead of logging it and serving nothing.
        listening._raiseSynchronously = True  # type: ignore[attr-defined]
        listening.setServiceParent(root)
    return root
