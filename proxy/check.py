"""`xoauth2-proxy account check USER`: token, upstream login and a harmless command on every
configured listener's upstream, with a plain verdict per step."""

from __future__ import annotations

import time
from typing import TextIO

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from .broker import TokenBroker
from .config import AccountConfig, Config, ListenerConfig
from .errors import ProxyError, UpstreamUnavailable
from .protocols import Probe, cores_for
from .service import blocking_runner
from .store import Store
from .upstream import UpstreamTarget, connect_upstream

PROBE_TIMEOUT = 30.0


class _ProbeReader:
    """Sends the probe command once logged in and waits for its answer."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.answer: defer.Deferred[str] = defer.Deferred()
        self._buffer = b""

    def from_upstream(self, data: bytes) -> None:
        self._buffer += data
        while b"\n" in self._buffer and not self.answer.called:
            line, self._buffer = self._buffer.split(b"\n", 1)
            text = line.decode("utf-8", "replace").strip()
            verdict = self.probe.verdict(text)
            if verdict is True:
                self.answer.callback(text)
            elif verdict is False:
                self.answer.errback(UpstreamUnavailable(f"{self.probe.name} failed: {text[:200]}"))

    def upstream_read_closed(self) -> None:
        self.upstream_lost()

    def upstream_lost(self) -> None:
        if not self.answer.called:
            self.answer.errback(UpstreamUnavailable("the server closed the connection"))


async def _check_listener(
    reactor: IReactorTime, listener: ListenerConfig, timeout: float, mailbox: str, token: str
) -> str:
    target = UpstreamTarget.from_listener(listener, timeout)
    cores = cores_for(listener, target)
    upstream, _ = await connect_upstream(reactor, target, lambda: cores.make_login(mailbox, token))
    reader = _ProbeReader(cores.probe)
    upstream.splice = reader
    leftover = upstream.core.take_unparsed()
    upstream.stream.write(cores.probe.command)
    if leftover:
        reader.from_upstream(leftover)
    timer = reactor.callLater(PROBE_TIMEOUT, reader.upstream_lost)
    try:
        answer = await reader.answer
    finally:
        if timer.active():
            timer.cancel()
        upstream.stream.write(cores.probe.goodbye)
        upstream.stream.loseConnection()
    return answer


def check_account(
    config: Config, account: AccountConfig, store: Store, password: str, out: TextIO
) -> int:
    from twisted.internet import reactor

    failures: list[str] = []

    async def run() -> None:
        pool = ThreadPool(minthreads=0, maxthreads=2, name="xoauth2-proxy-check")
        pool.start()
        try:
            broker = TokenBroker(config, store, blocking_runner(reactor, pool))
            try:
                grant = await broker.grant(account.username, password)
            except ProxyError as e:
                failures.append(f"token: {e.message}")
                out.write(f"token: FAILED: {e.message}\n")
                return
            expires = store.read_meta(account.username)
            when = (
                time.strftime("%Y-%m-%d %H:%M", time.localtime(expires.access_expires_at))
                if expires and expires.access_expires_at else "unknown"
            )
            out.write(f"token: ok ({account.flow}, valid until {when})\n")
            for listener in config.listeners:
                label = f"{listener.protocol} {listener.upstream}"
                try:
                    answer = await _check_listener(
                        reactor, listener, config.limits.upstream_timeout_seconds,
                        grant.mailbox, grant.access_token,
                    )
                except ProxyError as e:
                    failures.append(label)
                    out.write(f"{label}: FAILED: {e.message}\n")
                else:
                    out.write(f"{label}: ok, signed in as {grant.mailbox}; {answer[:80]}\n")
        finally:
            pool.stop()

    def finish(_: object) -> None:
        reactor.stop()

    def unexpected(failure: Failure) -> None:
        failures.append(str(failure.value))
        out.write(f"error: {failure.value}\n")

    def start() -> None:
        d = defer.Deferred.fromCoroutine(run())
        d.addErrback(unexpected)
        d.addBoth(finish)

    reactor.callWhenRunning(start)
    reactor.run()
    out.write("verdict: " + ("all checks passed\n" if not failures else "FAILED\n"))
    return 0 if not failures else 1
