"""The running proxy as a Twisted service: a listener per [[listener]], one token broker, one
thread pool for the blocking work."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application import service, strports
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.ssl import CertificateOptions
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.threadpool import ThreadPool

from ..actions import FrontSession
from ..config import Config, Limits, ListenerConfig
from ..protocols import BUSY, cores_for
from ..store import open_store
from ..throttle import LoginThrottle, ThrottleSettings
from ..tokens.blocking import RunBlocking, ThreadPoolService, blocking_runner
from ..tokens.broker import TokenBroker
from .front import FrontFactory
from .front_tls import server_certificate, server_tls_options
from .gateway import Gateway
from .graph_session import graph_front, graph_sign_in
from .signed_in import SignIn
from .upstream_connection import UpstreamTarget, upstream_sign_in

# requests and scrypt block; they run here, never on the reactor thread.
THREADS = 8

log = Logger(namespace="xoauth2-proxy")


def make_service(config: Config, reactor: Any) -> service.MultiService:
    root = service.MultiService()
    pool = ThreadPool(minthreads=0, maxthreads=THREADS, name="xoauth2-proxy")
    ThreadPoolService(pool).setServiceParent(root)  # type: ignore[no-untyped-call]
    run_blocking = blocking_runner(reactor, pool)
    broker = TokenBroker(config, open_store(config), run_blocking)
    throttle = LoginThrottle(throttle_settings(config.limits))
    for listener in config.listeners:
        make_session, sign_in = _front_and_sign_in(listener, config, reactor, broker, run_blocking)
        gateway = Gateway(reactor, broker, sign_in, throttle, listener.resource)
        server_tls = _server_tls(listener, config)
        factory: IProtocolFactory = FrontFactory(
            listener, make_session, gateway, reactor, config.limits, BUSY[listener.protocol],
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


def _front_and_sign_in(
    listener: ListenerConfig, config: Config, reactor: Any, broker: TokenBroker,
    run_blocking: RunBlocking,
) -> tuple[Callable[..., FrontSession], SignIn]:
    """The listener's pre-login session and how its logins sign in: to a TCP upstream, or
    (upstream = "graph") to nothing but a Graph token."""
    if listener.sends_through_graph:
        return graph_front(listener), graph_sign_in(reactor, listener, broker, run_blocking)
    target = UpstreamTarget.from_listener(listener, config.limits.upstream_timeout_seconds)
    cores = cores_for(listener.protocol, target.implicit_tls)
    return cores.make_session, upstream_sign_in(reactor, target, cores.make_login)


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
