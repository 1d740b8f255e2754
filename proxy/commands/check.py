"""`xoauth2-proxy account check USER`: token, upstream login and a harmless command on every
configured listener's upstream, with a plain verdict per step."""

from __future__ import annotations

from typing import TextIO

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from ..account_state import local_time
from ..config import AccountConfig, Config, ListenerConfig
from ..errors import ProxyError
from ..glue.upstream_connection import UpstreamTarget, connect_upstream
from ..protocols import cores_for
from ..store import Store
from ..tokens.blocking import blocking_runner
from ..tokens.broker import TokenBroker
from . import EXIT_FAILED, EXIT_OK
from .probes import PROBES, ProbeReader

PROBE_TIMEOUT = 30.0


async def _check_listener(
    reactor: IReactorTime, listener: ListenerConfig, timeout: float, mailbox: str, token: str
) -> str:
    target = UpstreamTarget.from_listener(listener, timeout)
    cores = cores_for(listener.protocol, target.implicit_tls)
    signed_in = await connect_upstream(reactor, target, lambda: cores.make_login(mailbox, token))
    probe = PROBES[listener.protocol]
    reader = ProbeReader(probe)
    upstream = signed_in.connection.hand_over(reader)
    upstream.transport.write(probe.command)
    if upstream.unparsed:
        reader.from_upstream(upstream.unparsed)
    timer = reactor.callLater(PROBE_TIMEOUT, reader.upstream_lost)
    try:
        answer = await reader.answer
    finally:
        if timer.active():
            timer.cancel()
        upstream.transport.write(probe.goodbye)
        upstream.transport.loseConnection()
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
                local_time(expires.access_expires_at)
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
    return EXIT_OK if not failures else EXIT_FAILED
