"""Everything one benchmark run talks to, started once and stopped at the end: a real Dovecot 2.3
with the bulk messages delivered, the fake Entra ID, the light IMAP upstream, this proxy and
emailproxy, both pointed at the same Dovecot, light upstream and fake Entra ID."""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from proxy.sasl import xoauth2
from tests.bench.procfs import open_files_limit, raise_open_files_limit
from tests.bench.servers import EmailProxy, LightImap, Subprocess, emailproxy_config
from tests.bench.wire import Access
from tests.support.dovecot import Dovecot
from tests.support.fake_entra import FakeEntra
from tests.support.ports import free_port
from tests.support.proxy_config import (
    account_toml,
    limits_toml,
    listener_toml,
    store_toml,
)
from tests.support.proxy_process import ProxyProcess
from tests.support.world import ALICE, ALICE_SECRET, TENANT

STORM = "storm@contoso.example"  # the account whose token has expired when the storm comes
STORM_SECRET = "storm-app-secret-51c2"
PASSWORD = "bench-Password-1"
APP_ONLY_SCOPE = "https://outlook.office365.com/.default"
DIRECT, EMAILPROXY, THIS_PROXY = "direct", "emailproxy", "this proxy"
BEFORE = "this proxy, before"  # an earlier version of this proxy, from another source folder
# Sessions at once that the benchmark may open (crowd, burst): every limit is set above it.
MAX_SESSIONS = 12000
OPEN_FILES = 65536


@dataclass
class Target:
    """One way to reach the mail server: directly, or through one of the two proxies."""

    name: str
    imap: Access
    pop3: Access
    smtp: Access
    light: Access | None = None  # IMAP to the light upstream (proxies only)
    storm: Access | None = None  # the same, as the STORM account
    process: ProxyProcess | Subprocess | None = None
    files_limit_at_start: tuple[int, int] | None = None

    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid


@dataclass
class BenchWorld:
    dovecot: Dovecot
    entra: FakeEntra
    light: LightImap
    targets: list[Target]
    workdir: Path
    notes: list[str] = field(default_factory=list)

    def target(self, name: str) -> Target:
        return next(t for t in self.targets if t.name == name)


def _proxied(name: str, ports: dict[str, int], process: ProxyProcess | Subprocess) -> Target:
    """A proxy with listeners at `ports`: "imap", "pop3", "smtp" to Dovecot, "light" to the
    light upstream; devices log in with the local password."""
    def access(port: str, user: str = ALICE) -> Access:
        return Access(ports[port], user, PASSWORD)

    return Target(name, access("imap"), access("pop3"), access("smtp"), light=access("light"),
                  storm=access("light", STORM), process=process)


def _proxy_config(workdir: Path, dovecot: Dovecot, light: LightImap, entra: FakeEntra,
                  ports: dict[str, int]) -> str:
    ca = dovecot.ca.cert_path
    listen = "tcp:{}:interface=127.0.0.1".format
    return (
        store_toml(workdir / "store")
        + limits_toml(max_sessions=MAX_SESSIONS, max_sessions_per_address=MAX_SESSIONS)
        + listener_toml("imap", listen(ports["imap"]), f"tls:127.0.0.1:{dovecot.imaps_port}", ca)
        + listener_toml("pop3", listen(ports["pop3"]), f"tls:127.0.0.1:{dovecot.pop3s_port}", ca)
        + listener_toml("smtp", listen(ports["smtp"]), f"tcp:127.0.0.1:{dovecot.submission_port}", ca)
        + listener_toml("imap", listen(ports["light"]), f"tls:127.0.0.1:{light.port}", ca)
        + account_toml(ALICE, "app-alice", ALICE_SECRET, entra.authority)
        + account_toml(STORM, "app-storm", STORM_SECRET, entra.authority)
    )


def _start_this_proxy(workdir: Path, dovecot: Dovecot, light: LightImap, entra: FakeEntra,
                      stack: contextlib.ExitStack, name: str = THIS_PROXY,
                      source: Path | None = None) -> Target:
    """This proxy, from this checkout or from the source folder `source`."""
    ports = {name: free_port() for name in ("imap", "pop3", "smtp", "light")}
    proxy = ProxyProcess(workdir, _proxy_config(workdir, dovecot, light, entra, ports),
                         source=source)
    for user, lifetime in ((ALICE, 3600), (STORM, 2)):
        # STORM's token expires two seconds after it is stored: the storm finds it expired.
        entra.access_token_lifetime = lifetime
        added = proxy.cli("account", "add", user, "--password-stdin", stdin=PASSWORD + "\n")
        if added.returncode != 0:
            raise RuntimeError(f"account add {user} failed: {added.stderr}")
    entra.access_token_lifetime = 3600
    stack.callback(proxy.stop)
    proxy.start(*ports.values())
    return _proxied(name, ports, proxy)


def _start_emailproxy(executable: Path, workdir: Path, dovecot: Dovecot, light: LightImap,
                      entra: FakeEntra, stack: contextlib.ExitStack) -> Target:
    ports = {name: free_port() for name in ("imap", "pop3", "smtp", "light")}
    servers = [("IMAP", ports["imap"], dovecot.imaps_port), ("POP", ports["pop3"], dovecot.pop3s_port),
               ("SMTP", ports["smtp"], dovecot.submission_port), ("IMAP", ports["light"], light.port)]
    accounts = [
        {"username": user, "token_url": entra.token_url(TENANT), "oauth2_scope": APP_ONLY_SCOPE,
         "oauth2_flow": "client_credentials", "client_id": client_id, "client_secret": secret}
        for user, client_id, secret in ((ALICE, "app-alice", ALICE_SECRET),
                                        (STORM, "app-storm", STORM_SECRET))
    ]
    emailproxy = EmailProxy(executable, workdir, emailproxy_config(servers, accounts),
                            dovecot.ca.cert_path)
    stack.callback(emailproxy.stop)
    emailproxy.start(*ports.values())
    return _proxied(EMAILPROXY, ports, emailproxy)


def _direct(dovecot: Dovecot) -> Target:
    tls = dovecot_tls(dovecot)
    token = xoauth2(ALICE, dovecot.token(ALICE, lifetime=24 * 3600))
    imap, pop3, smtp = (Access(port, ALICE, xoauth2=token, tls=tls) for port in
                        (dovecot.imaps_port, dovecot.pop3s_port, dovecot.submission_port))
    return Target(DIRECT, imap, pop3, smtp)


def dovecot_tls(dovecot: Dovecot) -> ssl.SSLContext:
    """What a device would use: verify the server against the test CA."""
    return ssl.create_default_context(cafile=str(dovecot.ca.cert_path))


@contextlib.contextmanager
def bench_world(workdir: Path, emailproxy: Path | None, messages: list[bytes],
                before: Path | None = None) -> Iterator[BenchWorld]:
    """Start everything in `workdir` (emailproxy only if its executable is given, an earlier
    version of this proxy only if its source folder `before` is) with `messages` delivered to
    ALICE's inbox; stop it all on exit. This proxy is always the last target."""
    with contextlib.ExitStack() as stack:
        jwt_key = os.urandom(32)
        dovecot = Dovecot(workdir / "dovecot", jwt_key, max_userip_connections=MAX_SESSIONS)
        stack.callback(dovecot.stop)
        dovecot.start()
        for raw in messages:
            dovecot.deliver(ALICE, raw)
        entra = FakeEntra(lambda mailbox, lifetime: dovecot.token(mailbox, lifetime))
        stack.callback(entra.stop)
        entra.start()
        entra.add_app(TENANT, "app-alice", secret=ALICE_SECRET, mailbox=ALICE)
        entra.add_app(TENANT, "app-storm", secret=STORM_SECRET, mailbox=STORM)
        light = LightImap(workdir / "light", dovecot.ca, jwt_key)
        stack.callback(light.stop)
        light.start()
        targets = [_direct(dovecot)]
        notes = []
        if emailproxy is not None:
            targets.append(_start_emailproxy(emailproxy, workdir / "emailproxy", dovecot, light,
                                             entra, stack))
        else:
            notes.append("emailproxy: not run (its executable was not found)")
        if before is not None:
            targets.append(_start_this_proxy(workdir / "before", dovecot, light, entra, stack,
                                             BEFORE, before))
        targets.append(_start_this_proxy(workdir / "proxy", dovecot, light, entra, stack))
        # The light server and both proxies hold two descriptors per crowd session; the limit
        # each proxy started with is reported.
        raise_open_files_limit(light.pid, OPEN_FILES)
        for target in targets[1:]:
            pid = target.pid()
            assert pid is not None
            target.files_limit_at_start = open_files_limit(pid)
            raise_open_files_limit(pid, OPEN_FILES)
        raise_open_files_limit(os.getpid(), OPEN_FILES)
        yield BenchWorld(dovecot, entra, light, targets, workdir, notes)
