"""One listener: the factory that serves its connections, built from its settings, and the
factory its port keeps across reloads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from twisted.internet.interfaces import IAddress, IProtocolFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from ..actions import FrontSession
from ..config import Config, Limits, ListenerConfig
from ..config.changes import ListenerSpec
from ..metrics import ProxyMetrics
from ..protocols import BUSY, cores_for
from ..throttle import LoginThrottle, ThrottleSettings
from ..tokens.blocking import RunBlocking
from ..tokens.broker import TokenBroker
from .balancer import BalancerFactory
from .front import FrontFactory
from .front_tls import ServerCertificate, server_certificate, server_tls_options
from .gateway import Gateway
from .graph_session import graph_front, graph_sign_in
from .sessions import OpenSessions
from .signed_in import SignIn
from .upstream_connection import UpstreamTarget, upstream_sign_in

log = Logger(namespace="xoauth2-proxy")


@dataclass(frozen=True)
class ListenerTLS:
    """A listener's certificate and the server context made from it (None: no TLS)."""

    certificate: ServerCertificate
    options: CertificateOptions


def listener_tls(listener: ListenerConfig, config: Config) -> ListenerTLS | None:
    """Reads (or generates and stores) the certificate: blocking, run it in the thread pool."""
    if listener.tls == "none":
        return None
    certificate = server_certificate(listener, config.store_path)
    return ListenerTLS(certificate, server_tls_options(listener, certificate))


def listener_spec(listener: ListenerConfig, config: Config, tls: ListenerTLS | None) -> ListenerSpec:
    return ListenerSpec(listener, config.limits, tls.certificate.fingerprint if tls else None)


def build_factory(
    listener: ListenerConfig,
    config: Config,
    tls: ListenerTLS | None,
    reactor: Any,
    broker: TokenBroker,
    throttle: LoginThrottle,
    sessions: OpenSessions,
    run_blocking: RunBlocking,
    metrics: ProxyMetrics,
) -> IProtocolFactory:
    """The factory for the listener's new connections; logs what an administrator must know
    about its TLS."""
    _log_security(listener, tls)
    make_session, sign_in = _front_and_sign_in(listener, config, reactor, broker, run_blocking,
                                               metrics)
    gateway = Gateway(reactor, broker, sign_in, throttle, listener.resource)
    front = FrontFactory(
        listener, make_session, gateway, reactor, config.limits, BUSY[listener.protocol],
        tls.options if tls and listener.tls == "starttls" else None, sessions, metrics,
    )
    metrics.listener_started(listener.name)
    factory: IProtocolFactory = front
    if tls and listener.tls == "implicit":
        factory = TLSMemoryBIOFactory(tls.options, False, front)
    if listener.behind_balancer:
        factory = BalancerFactory(factory, listener, reactor)
    return factory


def _front_and_sign_in(
    listener: ListenerConfig, config: Config, reactor: Any, broker: TokenBroker,
    run_blocking: RunBlocking, metrics: ProxyMetrics,
) -> tuple[Callable[..., FrontSession], SignIn]:
    """The listener's pre-login session and how its logins sign in: to a TCP upstream, or
    (upstream = "graph") to nothing but a Graph token."""
    if listener.sends_through_graph:
        return graph_front(listener), graph_sign_in(reactor, listener, broker, run_blocking)
    target = UpstreamTarget.from_listener(listener, config.limits.upstream_timeout_seconds)
    cores = cores_for(listener.protocol, target.implicit_tls)
    return cores.make_session, upstream_sign_in(reactor, target, cores.make_login,
                                                metrics.upstream_timing(listener.name))


class ListenerFactory(Factory):
    """The factory a listener's port is bound with, for as long as the listener exists. Each
    connection goes to the `current` factory; a reload that changes the listener replaces it,
    so the port never closes and sessions already open keep the factory that built them."""

    noisy = False

    def __init__(self, current: IProtocolFactory) -> None:
        self.current = current

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        return cast("Protocol | None", self.current.buildProtocol(addr))  # type: ignore[arg-type]


def throttle_settings(limits: Limits) -> ThrottleSettings:
    return ThrottleSettings(
        failures_before_delay=limits.failures_before_delay,
        failures_before_lockout=limits.failures_before_lockout,
        account_failures_before_lockout=limits.account_failures_before_lockout,
        lockout=limits.lockout_minutes * 60.0,
        window=limits.lockout_minutes * 60.0,
    )


def _log_security(listener: ListenerConfig, tls: ListenerTLS | None) -> None:
    if tls is None:
        if not listener.loopback_only:
            log.warn(
                "{name}: passwords from devices cross the network in the clear "
                "(allow_plaintext = true); consider tls = \"starttls\" or \"implicit\"",
                name=listener.name, listener=listener.name, event="plaintext_listener",
            )
        return
    certificate = tls.certificate
    log.info(
        "{name}: TLS certificate {path} ({origin}), SHA-256 fingerprint {fingerprint}",
        name=listener.name, path=certificate.pem_path,
        origin="generated" if certificate.generated else "tls_cert",
        fingerprint=certificate.fingerprint, listener=listener.name, event="certificate",
    )
    if listener.tls_minimum in ("1.0", "1.1"):
        log.warn("{name}: accepts TLS {version}, which is obsolete; only for devices that "
                 "know nothing newer", name=listener.name, version=listener.tls_minimum,
                 listener=listener.name, event="obsolete_tls")
