"""One log format for Twisted's logger and for the standard library's (used by proxy.entra).

Lines go to standard error, which journald and Docker both collect. Nothing logged anywhere in
the proxy carries a password, a token or an XOAUTH2 string; the messages are built for that.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    globalLogBeginner,
)
from zope.interface import implementer


@implementer(ILogObserver)
class _LineObserver:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, event: dict[str, Any]) -> None:
        text = formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None:
            text += "\n" + failure.getTraceback()
        level = event.get("log_level", LogLevel.info).name.upper()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.get("log_time", time.time())))
        self.stream.write(f"{stamp} {level:<5} {text}\n")
        self.stream.flush()


def start_logging(verbose: bool = False, quiet: bool = False, stream: TextIO | None = None) -> None:
    """`quiet` (the account commands) logs warnings and errors only: their plain-language
    output says what happened; `verbose` logs everything."""
    out = stream or sys.stderr
    level = LogLevel.debug if verbose else LogLevel.warn if quiet else LogLevel.info
    predicate = LogLevelFilterPredicate(defaultLogLevel=level)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(_LineObserver(out), [predicate])], redirectStandardIO=False
    )
    # The standard library's loggers (proxy.entra) feed the same observer via Twisted's bridge.
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-5s %(message)s",
                                           "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger("proxy")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    root.propagate = False
