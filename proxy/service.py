"""The running proxy: a listener per [[listener]], one token broker, one thread pool."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application import service, strports
from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.ssl import CertificateOptions
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.threadpool import ThreadPool

from .broker import RunBlocking, TokenBroker
from .config import Config, Limits, ListenerConfig
from .front import FrontFactory, log
from .gateway import Gateway
from .localtls import server_certificate, server_tls_options
from .protocols import cores_for
from .store import Store
from .throttle import LoginThrottle, ThrottleSettings
from .upstream import UpstreamTarget

# requests and scrypt block; they run here, never on the reactor thread.
THREADS = 8


class ThreadPoolService(service.Service):
    def __init__(self, pool: ThreadPool) -> None:
        self.pool = pool

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        self.pool.stop()


def blocking_runner(reactor: Any, pool: ThreadPool) -> RunBlocking:
    """Runs blocking work (requests, scrypt, file writes) in `pool`, off the reactor thread."""

    def run_blocking(work: Callable[[], Any]) -> Deferred[Any]:
        return threads.deferToThreadPool(reactor, pool, work)

    return run_blocking


def make_service(config: Config, reactor: Any) -> service.MultiService:
    root = service.MultiService()
    pool = ThreadPool(minthreads=0, maxthreads=THREADS, name="xoauth2-proxy")
    ThreadPoolService(pool).setServiceParent(root)  # type: ignore[no-untyped-call]
    broker = TokenBroker(config, Store(config.store_path), blocking_runner(reactor, pool))
    throttle = LoginThrottle(throttle_settings(config.limits))
    for listener in config.listeners:
        target = UpstreamTarget.from_listener(listener, config.limits.upstream_timeout_seconds)
        cores = cores_for(listener, target)
        gateway = Gateway(reactor, broker, target, cores.make_login, throttle)
        server_tls = _server_tls(listener, config)
        factory: IProtocolFactory = FrontFactory(
            listener, cores.make_session, gateway, reactor, config.limits, cores.busy,
            server_tls if listener.tls == "starttls" else None,
        )
        if listener.tls == "implicit":
            assert server_tls is not None
            factory = TLSMemoryBIOFactory(server_tls, False, factory)
        listening = strports.service(listener.listen, factory, reactor=reactor)
        listening.setName(listener.name)
        # Fail at start when the port is taken, instead of logging it and serving nothing.
        listening._raiseSynchronously = True
        listening.setServiceParent(root)
    return root


def throttle_settings(limits: Limits) -> ThrottleSettings:
    return ThrottleSettings(
        failures_before_delay=limits.failures_before_delay,
        failures_before_lockout=limits.failures_before_lockout,
        account_failures_before_lockout=limits.account_failures_before_lockout,
        lockout=limits.lockout_minutes * 60.0,
        window=limits.lockout_minutes * 60.0,
    )


def _server_tls(listener: ListenerConfig, config: Config) -> CertificateOptions | None:
    if listener.tls == "none":
        if not listener.loopback_only:
            log.warn(
                "{name}: passwords from devices cross the network in the clear "
                "(allow_plaintext = true); consider tls = \"starttls\" or \"implicit\"",
                name=listener.name,
            )
        return None
    certificate = server_certificate(listener, config.store_path)
    log.info(
        "{name}: TLS certificate {path} ({origin}), SHA-256 fingerprint {fingerprint}",
        name=listener.name, path=certificate.pem_path,
        origin="generated" if certificate.generated else "tls_cert",
        fingerprint=certificate.fingerprint,
    )
    if listener.tls_minimum in ("1.0", "1.1"):
        log.warn("{name}: accepts TLS {version}, which is obsolete; only for devices that "
                 "know nothing newer", name=listener.name, version=listener.tls_minimum)
    return server_tls_options(listener, certificate)
