"""One log format for Twisted's logger and for the standard library's (used by proxy.entra and
proxy.graph): text lines by default, or one JSON object per line (`--log-format json`) for
journald, Loki and the like.

Lines go to standard error, which journald and Docker both collect. Nothing logged anywhere in
the proxy carries a password, a token or an XOAUTH2 string; the messages are built for that.
Twisted's own informational lines ("Starting factory ...", "... starting on 1143") say nothing
an administrator needs: they appear with --verbose only, its warnings and errors always.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
import time
from typing import Any, TextIO, cast

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    formatEvent,
    globalLogBeginner,
)
from zope.interface import implementer

NAMESPACE = "xoauth2-proxy"  # the proxy's own Twisted loggers
FORMATS = ("text", "json")
# Every JSON line has these keys (null when they do not apply), then "message".
JSON_KEYS = ("time", "level", "listener", "peer", "account", "event", "reason")
FIELDS = ("listener", "peer", "account", "event", "reason")  # what log calls may pass


def json_line(timestamp: float, level: str, message: str, fields: dict[str, Any]) -> str:
    """One JSON object: the stable keys, the message, a traceback when there is one."""
    stamp = datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)
    record: dict[str, Any] = {
        "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": level,
        **{key: _plain(fields.get(key)) for key in FIELDS},
        "message": message,
    }
    record["event"] = record["event"] or "log"  # a line the proxy gave no event name
    if fields.get("traceback"):
        record["traceback"] = fields["traceback"]
    return json.dumps(record, ensure_ascii=False)


@implementer(ILogObserver)
class _LineObserver:
    def __init__(self, stream: TextIO, json_format: bool) -> None:
        self.stream = stream
        self.json_format = json_format

    def __call__(self, event: dict[str, Any]) -> None:
        text = formatEvent(event)
        failure = event.get("log_failure")
        traceback = failure.getTraceback() if failure is not None else None
        level = event.get("log_level", LogLevel.info).name
        when = event.get("log_time", time.time())
        if self.json_format:
            line = json_line(when, level, text, {**event, "traceback": traceback})
        else:
            text += "\n" + traceback if traceback else ""
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
            line = f"{stamp} {level.upper():<5} {text}"
        self.stream.write(line + "\n")
        self.stream.flush()


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = {key: getattr(record, key, None) for key in FIELDS}
        if record.exc_info:
            fields["traceback"] = self.formatException(record.exc_info)
        level = {"WARNING": "warn"}.get(record.levelname, record.levelname.lower())
        return json_line(record.created, level, record.getMessage(), fields)


def _quiet_twisted(verbose: bool) -> Any:
    """Twisted's informational lines only with --verbose; the proxy's own always."""

    def predicate(event: dict[str, Any]) -> PredicateResult:
        shown = (verbose or event.get("log_namespace") == NAMESPACE
                 or event.get("log_level", LogLevel.info) >= LogLevel.warn)
        return cast(PredicateResult, PredicateResult.maybe if shown else PredicateResult.no)

    return predicate


def start_logging(
    verbose: bool = False, quiet: bool = False, stream: TextIO | None = None,
    log_format: str = "text",
) -> None:
    """`quiet` (the account commands) logs warnings and errors only: their plain-language
    output says what happened; `verbose` logs everything."""
    out = stream or sys.stderr
    json_format = log_format == "json"
    level = LogLevel.debug if verbose else LogLevel.warn if quiet else LogLevel.info
    predicates = [LogLevelFilterPredicate(defaultLogLevel=level), _quiet_twisted(verbose)]
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(_LineObserver(out, json_format), predicates)],
        redirectStandardIO=False,
    )
    # The standard library's loggers (proxy.entra, proxy.graph) write to the same stream.
    handler = logging.StreamHandler(out)
    handler.setFormatter(_JsonFormatter() if json_format else logging.Formatter(
        "%(asctime)s %(levelname)-5s %(message)s", "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger("proxy")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    root.propagate = False


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)
