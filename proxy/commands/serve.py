"""`xoauth2-proxy serve`: start every listener and run until stopped, reloading on request.

SIGHUP and `xoauth2-proxy reload` (through the control endpoint named in the runtime file)
re-read the configuration; SIGTERM, SIGINT and Ctrl-Break stop accepting, give open sessions
[limits] shutdown_grace_seconds to end, close the rest and exit 0. With [admin] (or on the first
run, without a configuration file) the admin page is served too; its address with the token goes
to standard output, never to the log.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..config import AdminConfig, Config
from ..errors import ConfigError
from ..glue.control import start_control
from ..glue.runtime import Runtime
from ..glue.signals import install_handlers
from ..runtime_file import RuntimeFile, remove_runtime_file, write_runtime_file
from ..web.admin import RunningAdmin, start_admin
from . import EXIT_FAILED, EXIT_OK

log = Logger(namespace="xoauth2-proxy")


class _Service:
    """What `serve` runs: the runtime, its control endpoint, the signals that steer it."""

    def __init__(self, config: Config, reactor: Any, first_run: bool = False) -> None:
        self.reactor = reactor
        self.runtime = Runtime(config, reactor)
        self.first_run = first_run
        self.admin: RunningAdmin | None = None
        self.failed = False
        self.stop_requested = False

    async def start(self) -> None:
        # Signals and the runtime file first: whoever sees a listener accept can reload or
        # stop this proxy (SIGHUP's default would end it).
        install_handlers(self.reactor, self.on_stop_signal, self.on_reload_signal)
        await self._start_control()
        try:
            await self.runtime.start()
            admin = self.runtime.config.admin or (AdminConfig() if self.first_run else None)
            if admin is not None:
                self.admin = await start_admin(self.reactor, self.runtime, admin, self.first_run)
                self.runtime.admin = self.admin.config
        except Exception as e:  # a port in use, a bad certificate: say so and stop
            self.failed = True
            message = e.message if isinstance(e, ConfigError) else str(e)
            log.error("could not start: {error}", error=message, event="start_failed")
            self.reactor.stop()
            return
        config = self.runtime.config
        log.info("store: {path}; config: {config}", path=config.store_path, config=config.path,
                 event="started")
        if self.admin is not None:
            self._announce(self.admin)

    def _announce(self, admin: RunningAdmin) -> None:
        if self.first_run:
            print(f"xoauth2-proxy: no configuration file at {self.runtime.config.path}; "
                  "set up the first listener and account on the admin page.")
        if admin.token_from_file:
            print(f"xoauth2-proxy admin page: {admin.url} (token from [admin] token_file)")
        else:
            print(f"xoauth2-proxy admin page: {admin.url_with_token}")
        sys.stdout.flush()
        log.info("admin page on {url} (its address with the token is on standard output)",
                 url=admin.url, event="admin_started")

    async def _start_control(self) -> None:
        config = self.runtime.config
        try:
            _, url, token = await start_control(self.reactor, self.runtime)
            info = RuntimeFile(os.getpid(), url, token, str(config.path))
            write_runtime_file(config.store_path, info)  # 200 bytes, before anything is served
        except OSError as e:
            log.warn("`xoauth2-proxy reload` cannot reach this proxy ({error}); SIGHUP still "
                     "reloads where the platform has it", error=e, event="control_unavailable")

    def on_stop_signal(self, name: str) -> None:
        if self.stop_requested:
            log.info("{signal} again: closing open sessions now", signal=name, event="stop_now")
            self.runtime.close_now()
            return
        self.stop_requested = True
        log.info("{signal} received: stopping", signal=name, event="stop_requested")
        self.reactor.stop()

    def on_reload_signal(self, name: str) -> None:
        log.info("{signal} received: reloading {path}", signal=name,
                 path=self.runtime.config.path, event="reload_requested")
        d = defer.Deferred.fromCoroutine(self.runtime.reload_from_file())
        d.addErrback(_log_unless_refused)

    async def shutdown(self) -> None:
        """Before the reactor stops: the graceful stop, then the runtime file goes."""
        await self.runtime.stop()
        if self.admin is not None:
            await self.admin.stop()
        remove_runtime_file(self.runtime.config.store_path)  # tiny, and nothing else is served now


def _log_unless_refused(failure: Failure) -> None:
    """A refused configuration is logged by the runtime; anything else is a fault of ours."""
    if not failure.check(ConfigError):
        log.failure("reload failed", failure, event="reload_failed")


def serve(config: Config, first_run: bool = False) -> int:
    """`first_run`: no configuration file yet; `config` has no listener and the admin page
    offers the setup."""
    from twisted.internet import reactor

    service = _Service(config, reactor, first_run)
    reactor.callWhenRunning(lambda: defer.Deferred.fromCoroutine(service.start()))
    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: defer.Deferred.fromCoroutine(service.shutdown()))
    reactor.run()
    return EXIT_FAILED if service.failed else EXIT_OK
