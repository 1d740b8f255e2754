"""Several proxy instances on one PostgreSQL database, as behind a load balancer: each a real
`serve` subprocess with an IMAP listener of its own and a haproxy: listener for HAProxy, all
sharing the accounts; a fake Entra ID in strict rotation (a refresh token used twice is
refused, so any double refresh shows)."""

from __future__ import annotations

import imaplib
import socket
from dataclasses import dataclass
from pathlib import Path

from tests.support.dovecot import Dovecot
from tests.support.fake_entra import FakeEntra
from tests.support.flows import account_block
from tests.support.ports import free_port
from tests.support.proxy_config import limits_toml, listener_toml
from tests.support.proxy_process import ProxyProcess

DANA = "dana@contoso.example"  # device code: refresh tokens that rotate
APP = "app-dana"
LOCAL_PASSWORD = "dana local password"
FAILURES_BEFORE_LOCKOUT = 3  # per instance (see the README: the bound is per instance)


@dataclass
class Instance:
    proxy: ProxyProcess
    imap_port: int  # plain tcp listener, for direct logins
    balanced_port: int  # haproxy: listener, for HAProxy only

    def start(self) -> None:
        self.proxy.start(self.imap_port, self.balanced_port)


def instance_config(workdir: Path, dsn: str, dovecot: Dovecot, entra: FakeEntra,
                    imap_port: int, balanced_port: int) -> str:
    upstream = f"tls:127.0.0.1:{dovecot.imaps_port}"
    ca = dovecot.ca.cert_path
    return (
        f'[store]\nbackend = "postgresql"\ndsn = "{dsn}"\npath = "{workdir / "store"}"\n\n'
        + limits_toml(failures_before_delay=100, failures_before_lockout=FAILURES_BEFORE_LOCKOUT,
                      lockout_minutes=1)
        + listener_toml("imap", f"tcp:{imap_port}:interface=127.0.0.1", upstream, ca)
        + listener_toml("imap", f"haproxy:tcp:{balanced_port}:interface=127.0.0.1", upstream, ca,
                        allow_from=["127.0.0.0/8"], allow_plaintext=True,
                        proxy_protocol_from=["127.0.0.1/32"])
        + account_block(DANA, APP, "device_code", entra.authority)
    )


def make_instances(root: Path, count: int, dsn: str, dovecot: Dovecot,
                   entra: FakeEntra) -> list[Instance]:
    instances = []
    for n in range(1, count + 1):
        workdir = root / f"instance{n}"
        imap_port, balanced_port = free_port(), free_port()
        config = instance_config(workdir, dsn, dovecot, entra, imap_port, balanced_port)
        instances.append(Instance(ProxyProcess(workdir, config), imap_port, balanced_port))
    return instances


class ImapFrom(imaplib.IMAP4):
    """imaplib's client, connecting from a chosen loopback address (127.0.0.2, ...), so that
    a device can be told apart from HAProxy (127.0.0.1) on one machine."""

    def __init__(self, port: int, source: str, timeout: float = 30) -> None:
        self.source = source
        super().__init__("127.0.0.1", port, timeout=timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self.source, 0))


def login_answer(port: int, password: str = LOCAL_PASSWORD, source: str = "127.0.0.1",
                 user: str = DANA) -> str:
    """'OK' or the text of the NO a login gets."""
    client = ImapFrom(port, source)
    try:
        client.login(user, password)
    except imaplib.IMAP4.error as e:
        client.shutdown()
        text = e.args[0]
        return text.decode() if isinstance(text, bytes) else str(text)
    client.logout()
    return "OK"
