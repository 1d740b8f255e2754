"""A user's (delegated, device code) account whose `mailbox` is a shared one, sending through a
Graph SMTP listener: the proxy asks Entra ID for Mail.Send.Shared by itself, Graph sends from the
shared mailbox once Exchange grants the user Send As, and until then the device gets 550 naming
the grant. The proxy runs as a subprocess between smtplib and the fakes of Entra ID and Graph."""

from __future__ import annotations

import secrets
import smtplib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest

from tests.support.fake_entra import FakeEntra
from tests.support.fake_graph import FakeGraph
from tests.support.flows import PASSWORD, Command, account_block
from tests.support.ports import free_port
from tests.support.proxy_config import listener_toml, store_toml
from tests.support.proxy_process import ProxyProcess
from tests.support.world import TENANT

pytestmark = pytest.mark.integration

USER = "dana@contoso.example"
SHARED = "scans@contoso.example"
BOB = "bob@contoso.example"


@dataclass
class SharedWorld:
    graph: FakeGraph
    proxy: ProxyProcess
    port: int


@pytest.fixture
def world(tmp_path: Path) -> Iterator[SharedWorld]:
    """Dana may open the shared mailbox (Full Access) but has no Send As on it yet."""
    with FakeEntra(lambda mailbox, lifetime: f"outlook-{secrets.token_hex(4)}",
                   device_interval=0.1) as entra, FakeGraph(entra.graph_token_key) as graph:
        entra.add_user(TENANT, "app-dana", USER)
        graph.add_mailbox(SHARED)
        graph.grant_full_access(SHARED, USER)
        port = free_port()
        proxy = ProxyProcess(tmp_path, store_toml(tmp_path / "store") + listener_toml(
            "smtp", f"tcp:{port}:interface=127.0.0.1", "graph", None, graph_url=graph.url)
            + account_block(USER, "app-dana", "device_code", entra.authority, mailbox=SHARED))
        add = Command(proxy.config, "account", "add", USER, "--password-stdin")
        add.write(PASSWORD + "\n", close=True)
        entra.approve_device(add.wait_for(r"Enter code: (\w+)").group(1), USER)
        status, out, err = add.finish()
        assert status == 0, out + err
        proxy.start(port)
        try:
            yield SharedWorld(graph, proxy, port)
        finally:
            proxy.stop()


def send(world: SharedWorld, raw: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", world.port, timeout=30) as client:
        client.login(USER, PASSWORD)
        assert client.mail(SHARED)[0] == 250 and client.rcpt(BOB)[0] == 250
        return client.data(raw)


def test_a_users_account_sends_from_its_shared_mailbox(world: SharedWorld) -> None:
    """Without Send As: 550 5.7.60 naming Dana and the Add-RecipientPermission line, nothing
    sent. With it: 250, and the message leaves from the shared mailbox, byte for byte.
    `account check` reads Mail.Send.Shared in the token."""
    message = EmailMessage()
    message["From"], message["To"] = SHARED, BOB
    message["Subject"] = f"Scan {uuid.uuid4().hex}"
    message.set_content("Scanned.\n")
    raw = message.as_bytes(policy=SMTP)
    code, text = send(world, raw)
    assert code == 550 and text.startswith(b"5.7.60"), text
    assert (f"Add-RecipientPermission -Identity {SHARED} -Trustee {USER} -AccessRights SendAs"
            .encode() in text), text
    assert world.graph.deliveries == []
    world.graph.grant_send_as(SHARED, USER)
    code, text = send(world, raw)
    assert code == 250, text
    assert [m.mime for m in world.graph.sent_items(SHARED)] == [raw]
    check = world.proxy.cli("account", "check", USER, "--password-stdin", stdin=PASSWORD + "\n")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "The token has Mail.Send.Shared and Mail.ReadWrite.Shared" in check.stdout
