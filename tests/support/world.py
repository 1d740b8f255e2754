"""A world for integration tests and benchmarks: a real Dovecot as Office 365, a fake Entra ID
minting tokens Dovecot accepts, and the proxy as a subprocess with its accounts authorised."""

from __future__ import annotations

import base64
import contextlib
import imaplib
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from proxy.sasl import xoauth2
from proxy.tokens.broker import BACKOFF_FIRST, MIN_REMAINING
from tests.support.dovecot import Dovecot
from tests.support.fake_entra import FakeEntra
from tests.support.forwarder import CountingForwarder
from tests.support.ports import free_port
from tests.support.proxy_process import ProxyProcess

TENANT = "contoso.example"
ALICE = "alice@contoso.example"  # client_credentials with a secret, long-lived tokens
CAROL = "carol@contoso.example"  # client_credentials with a secret file, tokens always refreshed
PASSWORD = 'Pa$$ "quoted" \\ word'  # needs quoting and escaping on the way in
CAROL_PASSWORD = "carol-local-password"
ALICE_SECRET = "alice-app-secret-3f9a1c"
CAROL_SECRET = "carol-app-secret-7e21bb"
CAROL_TOKEN_LIFETIME = int(MIN_REMAINING) - 10
LISTENER_NAMES = ("imap", "imap-counted", "imap-dead", "pop3", "pop3-dead", "smtp", "smtp-dead")


@dataclass
class World:
    dovecot: Dovecot
    entra: FakeEntra
    proxy: ProxyProcess
    forwarder: CountingForwarder  # between the proxy's "imap-counted" listener and Dovecot
    ports: dict[str, int]  # proxy listeners: "imap", "pop3", "smtp", and "*-dead" (no upstream)

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.dovecot.ca.cert_path))

    def direct_imap(self, mailbox: str) -> imaplib.IMAP4_SSL:
        """A session straight to Dovecot with XOAUTH2, for comparisons."""
        client = imaplib.IMAP4_SSL("127.0.0.1", self.dovecot.imaps_port, ssl_context=self.ssl_context())
        raw = base64.b64decode(xoauth2(mailbox, self.dovecot.token(mailbox)))
        client.authenticate("XOAUTH2", lambda _: raw)  # imaplib does the base64 itself
        return client

    def wait_out_token_backoff(self) -> None:
        """After a failed token request the proxy waits before asking Entra ID again."""
        time.sleep(BACKOFF_FIRST + 0.2)

    def proxied_imap(self, username: str = ALICE, password: str = PASSWORD) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.ports["imap"])
        client.login(username, password)
        return client


def _config(world_dir: Path, dovecot: Dovecot, entra: FakeEntra, ports: dict[str, int],
            forwarder: CountingForwarder, secret_file: Path) -> str:
    ca = dovecot.ca.cert_path
    return f"""
[store]
path = "{world_dir / 'store'}"

[[listener]]
protocol = "imap"
listen = "tcp:{ports['imap']}:interface=127.0.0.1"
upstream = "tls:127.0.0.1:{dovecot.imaps_port}"
upstream_ca = "{ca}"

[[listener]]
protocol = "imap"
listen = "tcp:{ports['imap-counted']}:interface=127.0.0.1"
upstream = "tls:127.0.0.1:{forwarder.port}"
upstream_ca = "{ca}"

[[listener]]
protocol = "imap"
listen = "tcp:{ports['imap-dead']}:interface=127.0.0.1"
upstream = "tls:127.0.0.1:{ports['dead']}"
upstream_ca = "{ca}"

[[listener]]
protocol = "pop3"
listen = "tcp:{ports['pop3']}:interface=127.0.0.1"
upstream = "tls:127.0.0.1:{dovecot.pop3s_port}"
upstream_ca = "{ca}"

[[listener]]
protocol = "pop3"
listen = "tcp:{ports['pop3-dead']}:interface=127.0.0.1"
upstream = "tls:127.0.0.1:{ports['dead']}"
upstream_ca = "{ca}"

[[listener]]
protocol = "smtp"
listen = "tcp:{ports['smtp']}:interface=127.0.0.1"
upstream = "tcp:127.0.0.1:{dovecot.submission_port}"
upstream_ca = "{ca}"

[[listener]]
protocol = "smtp"
listen = "tcp:{ports['smtp-dead']}:interface=127.0.0.1"
upstream = "tcp:127.0.0.1:{ports['dead']}"
upstream_ca = "{ca}"

[[account]]
username = "{ALICE}"
tenant = "{TENANT}"
client_id = "app-alice"
flow = "client_credentials"
client_secret = "{ALICE_SECRET}"
authority = "{entra.authority}"

[[account]]
username = "{CAROL}"
tenant = "{TENANT}"
client_id = "app-carol"
flow = "client_credentials"
client_secret_file = "{secret_file}"
authority = "{entra.authority}"
"""


@contextlib.contextmanager
def open_world(world_dir: Path, dovecot: Dovecot) -> Iterator[World]:
    """Start the fake Entra ID, a counting forwarder and the proxy; stop them all on exit."""
    world_dir.mkdir(parents=True, exist_ok=True)
    entra = FakeEntra(lambda mailbox, lifetime: dovecot.token(mailbox, lifetime))
    entra.start()
    forwarder = CountingForwarder(dovecot.imaps_port)
    forwarder.start()
    proxy = None
    try:
        entra.add_app(TENANT, "app-alice", secret=ALICE_SECRET, mailbox=ALICE)
        entra.add_app(TENANT, "app-carol", secret=CAROL_SECRET, mailbox=CAROL)
        for mailbox in (ALICE, CAROL):
            dovecot.deliver(mailbox, b"Subject: welcome\r\n\r\nHello.\r\n")
        secret_file = world_dir / "carol.secret"
        secret_file.write_text(CAROL_SECRET + "\n")
        ports = {name: free_port() for name in LISTENER_NAMES + ("dead",)}
        proxy = ProxyProcess(world_dir, _config(world_dir, dovecot, entra, ports, forwarder, secret_file))
        for user, password, lifetime in ((ALICE, PASSWORD, 3600), (CAROL, CAROL_PASSWORD, CAROL_TOKEN_LIFETIME)):
            # Carol's tokens expire within the refresh margin, and too soon to be used as a
            # fallback when a refresh fails: every login asks Entra ID.
            entra.access_token_lifetime = lifetime
            added = proxy.cli("account", "add", user, "--password-stdin", stdin=password + "\n")
            if added.returncode != 0:
                raise RuntimeError(f"account add {user} failed: {added.stderr}")
        entra.access_token_lifetime = CAROL_TOKEN_LIFETIME
        proxy.start(*(ports[name] for name in LISTENER_NAMES))
        yield World(dovecot, entra, proxy, forwarder, ports)
    finally:
        if proxy is not None:
            proxy.stop()
        forwarder.stop()
        entra.stop()
