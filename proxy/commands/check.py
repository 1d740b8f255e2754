"""`xoauth2-proxy account check USER`: a token per service the listeners need, upstream login and
a harmless command on every relaying listener's upstream, and for Graph listeners what the Graph
token allows (Mail.Send; Mail.ReadWrite for large messages; Mail.Send.Shared for a user's token
used for a shared mailbox), with a plain verdict per step. An app-only token without Mail.Send
gets a note, not a failure: Exchange RBAC for Applications grants it outside the token."""

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
from ..graph import read_grant
from ..graph.permissions import FAILED, OK
from ..protocols import cores_for
from ..resources import NAMES, OUTLOOK
from ..store import Store
from ..tokens.blocking import blocking_runner
from ..tokens.broker import Grant, TokenBroker
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


def _check_graph(listener: ListenerConfig, grant: Grant, failures: list[str],
                 out: TextIO) -> None:
    """What the Graph token allows, from its own claims: Mail.Send is needed for every
    message, Mail.ReadWrite for those over about 3 MB (their .Shared forms when a user signs
    in for another's mailbox)."""
    label = f"smtp graph ({listener.graph_url})"
    permissions = read_grant(grant.access_token, grant.delegate)
    if permissions is None:
        failures.append(label)
        out.write(f"{label}: FAILED: the access token is not a JWT; its permissions are "
                  "unknown\n")
        return
    verdict, text = permissions.verdict, permissions.explain(grant.mailbox)
    if verdict == FAILED:
        failures.append(label)
    out.write(f"{label}: {verdict}{',' if verdict == OK else ':'} {text}\n")


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
            grants: dict[str, Grant] = {}
            for resource in config.resources:
                label = "token" if resource == OUTLOOK else f"token for {NAMES[resource]}"
                try:
                    grant = grants[resource] = await broker.grant(account.username, password,
                                                                  resource)
                except ProxyError as e:
                    failures.append(f"{label}: {e.message}")
                    out.write(f"{label}: FAILED: {e.message}\n")
                    return
                when = local_time(grant.expires_at) if grant.expires_at else "unknown"
                out.write(f"{label}: ok ({account.flow}, valid until {when})\n")
            for listener in config.listeners:
                grant = grants[listener.resource]
                if listener.sends_through_graph:
                    _check_graph(listener, grant, failures, out)
                    continue
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
