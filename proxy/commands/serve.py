"""`xoauth2-proxy serve`: start every listener and run until stopped."""

from __future__ import annotations

from twisted.logger import Logger

from ..config import Config
from ..glue.listeners import make_service
from . import EXIT_FAILED, EXIT_OK

log = Logger(namespace="xoauth2-proxy")


def serve(config: Config) -> int:
    from twisted.internet import reactor

    root = make_service(config, reactor)
    failed: list[BaseException] = []

    def start() -> None:
        try:
            root.startService()
        except Exception as e:  # a port in use, a bad interface: say so and stop
            failed.append(e)
            log.error("could not start: {error}", error=e)
            reactor.stop()
            return
        for listener in config.listeners:
            log.info("{protocol} listening on {listen}, upstream {upstream}",
                     protocol=listener.protocol, listen=listener.listen, upstream=listener.upstream)
        log.info("store: {path}; config: {config}", path=config.store_path, config=config.path)

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", root.stopService)
    reactor.run()
    return EXIT_FAILED if failed else EXIT_OK
