"""The running proxy as a Twisted service: a listener per [[listener]], one token broker, one
thread pool for the blocking work."""

from __future__ import annotations

from typing import Any

from twisted.application import service, strports
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.ssl import CertificateOptions
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.threadpool import ThreadPool

from ..config import Config, Limits, ListenerConfig
from ..protocols import cores_for
from ..store import Store, open_store
from ..throttle import LoginThrottle, ThrottleSettings
from ..tokens.blocking import ThreadPoolService, blocking_runner
from ..tokens.broker import TokenBroker
from .balancer import BalancerFactory, inner_endpoint
from .front import FrontFactory
from .front_tls import server_certificate, server_tls_options
from .gateway import Gateway
from .upstream_connection import UpstreamTarget, upstream_sign_in

# requests, key derivation and the store block; they run here, never on the reactor thread.
THREADS = 8

log = Logger(namespace="xoauth2-proxy")


def make_service(config: Config, reactor: Any) -> service.MultiService:
    root = service.MultiService()
    pool = ThreadPool(minthreads=0, maxthreads=THREADS, name="xoauth2-proxy")
    ThreadPoolService(pool).setServiceParent(root)  # type: ignore[no-untyped-call]
    store = open_store(config)
    _Closing(store).setServiceParent(root)  # type: ignore[no-untyped-call]
    broker = TokenBroker(config, store, blocking_runner(reactor, pool))
    throttle = LoginThrottle(throttle_settings(config.limits))
    for listener in config.listeners:
        target = UpstreamTarget.from_listener(listener, config.limits.upstream_timeout_seconds)
        cores = cores_for(listener.protocol, target.implicit_tls)
        sign_in = upstream_sign_in(reactor, target, cores.make_login)
        gateway = Gateway(reactor, broker, sign_in, throttle)
        server_tls = _server_tls(listener, config)
        factory: IProtocolFactory = FrontFactory(
            listener, cores.make_session, gateway, reactor, config.limits, cores.busy,
            server_tls if listener.tls == "starttls" else None,
        )
        if listener.tls == "implicit":
            assert server_tls is not None
            factory = TLSMemoryBIOFactory(server_tls, False, factory)
        listen = listener.listen
        if listener.behind_balancer:
            factory = BalancerFactory(factory, listener, reactor)
            listen = inner_endpoint(listen)
        listening = strports.service(listen, factory, reactor=reactor)
        listening.setName(listener.name)
        # Fail at start when the port is taken, instead of logging it and serving nothing.
        listening._raiseSynchronously = True
        listening.setServiceParent(root)
    return root


class _Closing(service.Service):
    """Closes the store (its database connections) when the service stops."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        self.store.close()


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
