"""`xoauth2-proxy demo`: the real proxy between local stand-ins for Entra ID and Office 365.

Everything runs in this process on 127.0.0.1, in a temporary folder removed at the end: a
throwaway CA and server certificate, the demo token endpoint (proxy.demo.authority), the demo
IMAP, POP3 and SMTP servers and the demo Microsoft Graph (sendMail only), a config.toml written
as a user would write one, and a store filled exactly as `xoauth2-proxy account add` fills it.
Then the runtime runs the proxy unchanged. Nothing reaches Microsoft or any other machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import defer, threads
from twisted.internet.error import ReactorNotRunning
from twisted.internet.ssl import PrivateCertificate

from ..commands.accounts import account_add
from ..config import Config, load_config
from ..glue.runtime import Runtime
from ..store import open_store
from .authority import DemoAuthority
from .certs import make_certificates
from .graph_server import graph_site
from .imap_server import imap_factory
from .mailbox import DemoMailbox
from .pop3_server import pop3_factory
from .selftest import Target, run_checks
from .smtp_server import smtp_factory
from .text import config_text, instructions

LOOPBACK = "127.0.0.1"
USER = "demo@example.com"
PASSWORD = "demo"
TENANT = "demo.example.com"
CLIENT_ID = "00000000-0000-4000-8000-00000000d3e0"
CLIENT_SECRET = "demo-client-secret"  # only the demo authority in this process knows it
# The ports of the README's examples when they are free, so mail programs set up once keep
# working across demo runs; any free port otherwise (and always for --self-test).
PREFERRED_PORTS = {"imap": 1143, "pop3": 1110, "smtp": 1587, "graph": 1588}
SELF_TEST_TIMEOUT = 30.0


@dataclass
class _Outcome:
    code: int = 0
    stopping: bool = False


def run_demo(self_test: bool = False) -> int:
    """Run the demo until Ctrl-C (or, with self_test, until the checks are done)."""
    from twisted.internet import reactor

    folder = Path(tempfile.mkdtemp(prefix="xoauth2-proxy-demo-"))
    try:
        return _run(reactor, folder, self_test)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        print(f"Demo stopped; removed {folder}", flush=True)


def _run(reactor: Any, folder: Path, self_test: bool) -> int:
    _bypass_web_proxies()
    certificates = make_certificates(folder)
    authority = DemoAuthority(TENANT, CLIENT_ID, CLIENT_SECRET)
    mailbox = DemoMailbox(USER, authority.token_valid)
    tls = PrivateCertificate.loadPEM(certificates.server_pem.read_text()).options()
    upstream = {
        "authority": reactor.listenTCP(0, authority.site(), interface=LOOPBACK),
        "imap": reactor.listenSSL(0, imap_factory(mailbox), tls, interface=LOOPBACK),
        "pop3": reactor.listenSSL(0, pop3_factory(mailbox), tls, interface=LOOPBACK),
        "smtp": reactor.listenTCP(0, smtp_factory(mailbox, tls), interface=LOOPBACK),
        "graph": reactor.listenTCP(0, graph_site(authority, mailbox), interface=LOOPBACK),
    }
    upstream_ports = {name: int(port.getHost().port) for name, port in upstream.items()}
    ports = {name: _free_port(0 if self_test else preferred)
             for name, preferred in PREFERRED_PORTS.items()}
    config_path = folder / "config.toml"
    config_path.write_text(config_text(
        ports, upstream_ports, certificates.ca_path.name, USER, TENANT, CLIENT_ID, CLIENT_SECRET,
    ))
    config = load_config(config_path)
    outcome = _Outcome()
    target = Target(LOOPBACK, ports["imap"], ports["pop3"], ports["smtp"], ports["graph"],
                    USER, PASSWORD,
                    lambda: threads.blockingCallFromThread(
                        reactor, lambda: list(mailbox.submissions)))

    def stop(code: int) -> None:
        if outcome.stopping:
            return
        outcome.code, outcome.stopping = code, True
        with contextlib.suppress(ReactorNotRunning):  # already stopping (Ctrl-C, SIGTERM)
            reactor.stop()

    if self_test:
        def too_slow() -> None:
            print(f"FAIL  the self-test did not finish within {SELF_TEST_TIMEOUT:g} seconds",
                  flush=True)
            stop(1)

        timer = reactor.callLater(SELF_TEST_TIMEOUT, too_slow)
        reactor.addSystemEventTrigger("before", "shutdown",
                                      lambda: timer.cancel() if timer.active() else None)

    async def start() -> None:
        try:
            await _start_proxy(reactor, config, folder)
        except Exception as e:  # a refused token request, a port in use: say so and stop
            print(f"xoauth2-proxy demo: could not start: {getattr(e, 'message', e)}",
                  file=sys.stderr, flush=True)
            stop(1)
            return
        if not self_test:
            print(instructions(ports, upstream_ports, folder, USER, PASSWORD), flush=True)
            return
        print(f"Self-test: legacy clients log in to the proxy at {LOOPBACK} (IMAP "
              f"{ports['imap']}, POP3 {ports['pop3']}, SMTP {ports['smtp']}, SMTP through "
              f"Graph {ports['graph']}) as {USER}", flush=True)
        passed = await threads.deferToThread(run_checks, target, _say)
        stop(0 if passed else 1)

    reactor.callWhenRunning(lambda: defer.ensureDeferred(start()))
    reactor.run()
    return outcome.code


async def _start_proxy(reactor: Any, config: Config, folder: Path) -> None:
    account = config.account(USER)
    store = open_store(config)
    print("Authorising the demo account as `xoauth2-proxy account add` does (client "
          "credentials, against the demo authority):", flush=True)
    # account_add blocks (a token request with requests, scrypt): never on the reactor thread.
    await threads.deferToThread(
        account_add, config, account, store, lambda prompt, confirm: PASSWORD, True,
    )
    sys.stdout.flush()
    runtime = Runtime(config, reactor)
    await runtime.start()
    # A demonstration stops at once, open sessions or not.
    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: defer.Deferred.fromCoroutine(runtime.stop(grace=0)))


def _say(line: str) -> None:
    print(line, flush=True)


def _free_port(preferred: int) -> int:
    """`preferred` if nothing listens there, else a port the system picks. Another program
    could take it before the proxy listens; then the demo says so and stops."""
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket() as probe:
            try:
                probe.bind((LOOPBACK, port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise OSError("no free port on 127.0.0.1")


def _bypass_web_proxies() -> None:
    """requests honours HTTP_PROXY and friends; the demo authority on 127.0.0.1 must be
    reached directly, whatever web proxy this machine is set up for."""
    for name in ("NO_PROXY", "no_proxy"):
        current = os.environ.get(name, "")
        os.environ[name] = ",".join(filter(None, (current, LOOPBACK, "localhost")))
