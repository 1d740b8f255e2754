"""The running proxy: one object owns the configuration, the store, the token broker, the login
throttle, the thread pool and one entry per listener (its port, its factory, its open sessions).

`reload(new_config)` applies a new configuration whole or not at all; `stop(grace)` stops
accepting, waits for open sessions up to `grace` seconds and closes the rest; `view()` is a
read-only picture of what runs, for the control endpoint and the admin page.
"""

from __future__ import annotations

import time
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from ..config import AdminConfig, Config, ListenerConfig, load_config
from ..config.changes import ConfigChanges, ListenerSpec, config_changes, store_change
from ..errors import ConfigError
from ..metrics import ProxyMetrics
from ..runtime_view import ListenerView, ReloadOutcome, RuntimeView
from ..store import open_store
from ..throttle import LoginThrottle
from ..tokens.blocking import blocking_runner
from ..tokens.broker import TokenBroker
from . import descriptors
from .balancer import inner_endpoint
from .listeners import (
    ListenerFactory,
    ListenerTLS,
    build_factory,
    listener_spec,
    listener_tls,
    throttle_settings,
)
from .sessions import OpenSessions
from .tcp_options import with_default_backlog

# requests and scrypt block; they run here, never on the reactor thread.
THREADS = 8

log = Logger(namespace="xoauth2-proxy")
T = TypeVar("T")


@dataclass
class RunningListener:
    spec: ListenerSpec
    port: IListeningPort
    entry: ListenerFactory  # what the port is bound with; its `current` serves new connections
    sessions: OpenSessions  # shared by every factory this listener has had


@dataclass(frozen=True)
class _Prepared:
    """A listener of the new configuration, ready to serve, not yet bound or switched to."""

    spec: ListenerSpec
    tls: ListenerTLS | None


class Runtime:
    def __init__(self, config: Config, reactor: Any, threads: int = THREADS) -> None:
        self.config = config
        self.reactor = reactor
        self.pool = ThreadPool(minthreads=0, maxthreads=threads, name="xoauth2-proxy")
        self.run_blocking = blocking_runner(reactor, self.pool)
        self.store = open_store(config)
        self.metrics = ProxyMetrics()
        self.broker = TokenBroker(config, self.store, self.run_blocking,
                                  on_token_request=self.metrics.token_request)
        self.throttle = LoginThrottle(throttle_settings(config.limits))
        self.listeners: dict[str, RunningListener] = {}
        self.started_at: float | None = None
        self.last_reload: ReloadOutcome | None = None
        self.admin: AdminConfig | None = None  # what the admin page runs with (set by serve)
        self.stopping = False
        self._retired: list[OpenSessions] = []  # of removed listeners, sessions still open
        self._changing = defer.DeferredLock()  # one start, reload or stop at a time
        self._ending: defer.Deferred[None] | None = None  # the stop's wait for open sessions

    # -- starting and reloading --

    async def start(self) -> None:
        """Bind every listener; if one cannot be bound, none stays bound (ConfigError)."""
        descriptors.BUDGET.enabled = descriptors.raise_open_files_limit() is not None
        self.pool.start()
        try:
            await self._locked(self._apply(self.config))
        except BaseException:
            self.pool.stop()
            raise
        self.started_at = time.time()

    async def reload(self, new: Config) -> ConfigChanges:
        """Apply `new` whole: listeners added, removed or changed, accounts added or removed.
        Raises ConfigError (with the file and key) and keeps the running configuration when
        any part of it cannot be applied; sessions already open are never closed by a reload."""
        try:
            if self.stopping:
                raise ConfigError("the proxy is stopping; a reload is not applied")
            why = store_change(self.config, new)
            if why is not None:
                raise ConfigError(f"{new.path}: {why}")
            changes = await self._locked(self._apply(new))
            changes = replace(changes, admin_changed=new.admin != self.admin)
        except ConfigError as e:
            self.last_reload = ReloadOutcome(time.time(), False, e.message)
            log.error("reload refused, the running configuration is kept: {reason}",
                      reason=e.message, event="reload_refused")
            raise
        self.last_reload = ReloadOutcome(time.time(), True, changes.summary())
        log.info("reloaded {path}: {summary}", path=new.path, summary=changes.summary(),
                 event="reload")
        return changes

    async def reload_from_file(self) -> ConfigChanges:
        """Read the configuration file again (SIGHUP, `xoauth2-proxy reload`) and reload it."""
        try:
            new = load_config(self.config.path)
        except ConfigError as e:
            self.last_reload = ReloadOutcome(time.time(), False, e.message)
            log.error("reload refused, the running configuration is kept: {reason}",
                      reason=e.message, event="reload_refused")
            raise
        return await self.reload(new)

    async def _locked(self, work: Coroutine[Any, Any, T]) -> T:
        await self._changing.acquire()
        try:
            return await work
        finally:
            self._changing.release()

    async def _apply(self, new: Config) -> ConfigChanges:
        """Everything that can fail comes before the first change that stays: certificates,
        factories, then the new ports (released again, and removed listeners listening again,
        if one cannot be bound). Removed listeners are released first, so that a listener can
        move to another interface on the same port."""
        try:
            prepared = await self.run_blocking(lambda: self._prepare(new))
        except OSError as e:  # a generated certificate that cannot be written to the store
            raise ConfigError(f"{new.path}: cannot prepare the listeners' TLS: {e}") from None
        changes = config_changes(
            {key: running.spec for key, running in self.listeners.items()},
            [p.spec for p in prepared.values()], self.config.accounts, new.accounts,
        )
        sessions = {spec.key: OpenSessions() for spec in changes.added}
        sessions.update({spec.key: self.listeners[spec.key].sessions for spec in changes.changed})
        factories = {
            spec.key: build_factory(spec.config, new, prepared[spec.key].tls, self.reactor,
                                    self.broker, self.throttle, sessions[spec.key],
                                    self.run_blocking, self.metrics)
            for spec in changes.added + changes.changed
        }
        removed = [self.listeners[spec.key] for spec in changes.removed]
        for running in removed:
            await defer.maybeDeferred(running.port.stopListening)
        try:
            bound = await self._bind(new, changes.added, factories, sessions)
        except ConfigError:
            for running in removed:
                await self._listen_again(running)
            raise
        # From here on nothing can fail: the new configuration is the running one.
        for running in removed:
            self._retire(self.listeners.pop(running.spec.key))
        for spec in changes.changed:
            running = self.listeners[spec.key]
            running.entry.current = factories[spec.key]
            running.spec = spec
            log.info("{name}: new settings for new connections; {count} open sessions go on "
                     "as they were", name=spec.config.name, count=len(running.sessions),
                     listener=spec.config.name, event="listener_changed")
        self.listeners.update(bound)
        self.config = new
        self.broker.use_config(new)
        self.throttle.settings = throttle_settings(new.limits)
        return changes

    def _prepare(self, new: Config) -> dict[str, _Prepared]:
        """Certificates and TLS contexts of every listener (file I/O, maybe a key to generate):
        in the thread pool. A certificate that cannot be read is a ConfigError."""
        prepared = {}
        for listener in new.listeners:
            tls = listener_tls(listener, new)
            prepared[listener.listen] = _Prepared(listener_spec(listener, new, tls), tls)
        return prepared

    async def _bind(
        self, new: Config, added: tuple[ListenerSpec, ...], factories: dict[str, Any],
        sessions: dict[str, OpenSessions],
    ) -> dict[str, RunningListener]:
        """Ports for the added listeners; if one fails, the others are released again."""
        bound: dict[str, RunningListener] = {}
        for spec in added:
            entry = ListenerFactory(factories[spec.key])
            try:
                port = await _server_endpoint(self.reactor, spec.key).listen(entry)
            except Exception as e:  # CannotListenError, or an endpoint's own errors
                for running in bound.values():
                    await defer.maybeDeferred(running.port.stopListening)
                raise ConfigError(f"{new.path}: {_where(new, spec.config)}: listen = "
                                  f"{spec.key!r}: cannot listen there: {_reason(e)}") from None
            bound[spec.key] = RunningListener(spec, port, entry, sessions[spec.key])
        for spec in added:
            log.info("{protocol} listening on {listen}, upstream {upstream}",
                     protocol=spec.config.protocol, listen=spec.key,
                     upstream=spec.config.upstream, listener=spec.config.name,
                     event="listening")
        return bound

    async def _listen_again(self, running: RunningListener) -> None:
        """A refused reload puts back a listener it had released."""
        try:
            endpoint = _server_endpoint(self.reactor, running.spec.key)
            running.port = await endpoint.listen(running.entry)
        except Exception as e:  # taken meanwhile by another program: say so loudly
            self._retire(self.listeners.pop(running.spec.key))
            log.error("{name}: could not listen again after a refused reload: {reason}",
                      name=running.spec.config.name, reason=_reason(e),
                      listener=running.spec.config.name, event="listener_lost")

    def _retire(self, running: RunningListener) -> None:
        if len(running.sessions):
            self._retired.append(running.sessions)
        log.info("{name}: no longer listening; {count} open sessions go on",
                 name=running.spec.config.name, count=len(running.sessions),
                 listener=running.spec.config.name, event="listener_removed")

    # -- stopping --

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let open sessions end for up to `grace` seconds ([limits]
        shutdown_grace_seconds by default), close the rest, stop the thread pool."""
        if self.stopping:
            return
        self.stopping = True
        grace = self.config.limits.shutdown_grace_seconds if grace is None else grace
        await self._changing.acquire()  # a reload under way finishes first
        try:
            for running in self.listeners.values():
                await defer.maybeDeferred(running.port.stopListening)
            sessions = self._all_sessions()
            open_now = sum(len(s) for s in sessions)
            log.info("stopping: no longer accepting; {count} open sessions get up to {grace} s "
                     "to end", count=open_now, grace=grace, event="stopping")
            if open_now and not await self._sessions_end_within(sessions, grace):
                closed = sum(s.close_all() for s in sessions)
                log.info("closed {count} sessions still open at the end of the grace period",
                         count=closed, event="sessions_closed")
            elif open_now:
                log.info("every open session ended", event="sessions_ended")
        finally:
            self._changing.release()
            if self.started_at is not None:
                # Closing a database pool waits for its connections: not on the reactor thread.
                await self.run_blocking(self.store.close)
                self.pool.stop()
        log.info("stopped", event="stopped")

    def close_now(self) -> None:
        """Give up waiting for open sessions (a second stop signal): close them at once."""
        if self._ending is not None and not self._ending.called:
            self._ending.cancel()

    async def _sessions_end_within(self, sessions: list[OpenSessions], grace: float) -> bool:
        ending: defer.Deferred[Any] = defer.gatherResults(
            [s.when_empty() for s in sessions], consumeErrors=True)
        self._ending = ending
        ending.addTimeout(grace, self.reactor)
        try:
            await ending
        except (defer.TimeoutError, defer.CancelledError, defer.FirstError):
            return False
        finally:
            self._ending = None
        return True

    def _all_sessions(self) -> list[OpenSessions]:
        self._retired = [s for s in self._retired if len(s)]
        return [running.sessions for running in self.listeners.values()] + self._retired

    # -- what runs --

    def view(self) -> RuntimeView:
        listeners = tuple(
            ListenerView(
                name=running.spec.config.name,
                protocol=running.spec.config.protocol,
                listen=key,
                address=_address(running.port),
                upstream=running.spec.config.upstream,
                tls=running.spec.config.tls,
                tls_fingerprint=running.spec.fingerprint,
                sessions_open=len(running.sessions),
            )
            for key, running in self.listeners.items()
        )
        return RuntimeView(
            config_path=str(self.config.path),
            store_path=str(self.config.store_path),
            started_at=self.started_at,
            stopping=self.stopping,
            listeners=listeners,
            listeners_down=tuple(listener.name for listener in self.config.listeners
                                 if listener.listen not in self.listeners),
            sessions_on_removed_listeners=sum(len(s) for s in self._retired),
            accounts=tuple(sorted(a.username for a in self.config.accounts.values())),
            last_reload=self.last_reload,
        )


def _server_endpoint(reactor: Any, listen: str) -> IStreamServerEndpoint:
    """The endpoint a listener's port is bound with: a balancer's prefix off, a listen queue
    that holds a burst unless the listen string sets `backlog=`."""
    endpoint: IStreamServerEndpoint = serverFromString(
        reactor, with_default_backlog(inner_endpoint(listen)))
    return endpoint


def _where(config: Config, listener: ListenerConfig) -> str:
    return f"[[listener]] #{config.listeners.index(listener) + 1}"


def _reason(error: Exception) -> str:
    socket_error = getattr(error, "socketError", None)  # CannotListenError carries the cause
    if socket_error is not None:
        return getattr(socket_error, "strerror", None) or str(socket_error)
    return str(error) or type(error).__name__


def _address(port: IListeningPort) -> str:
    host = port.getHost()
    if hasattr(host, "host") and hasattr(host, "port"):
        return f"{host.host}:{host.port}"
    return str(host)
