"""A world for the Graph listener's integration tests: the fake Entra ID and the fake Graph on
127.0.0.1, and the proxy as a subprocess with Graph listeners and app-only accounts.

Accounts (client credentials, each its own app and mailbox):
  SCANNER  Mail.Send and Mail.ReadWrite: any message
  SMALL    Mail.Send only: messages that fit one sendMail request
  NOSEND   no Graph permission at all
Listeners: "graph" (the 35 MB default), "graph-big" (max_message_mb = 60), "graph-dead"
(graph_url where nothing listens). The proxy's TMPDIR is `tmp`, so a test can see its spool files.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.fake_entra import FakeEntra
from tests.support.fake_graph import FakeGraph
from tests.support.ports import free_port
from tests.support.proxy_config import store_toml
from tests.support.proxy_process import ProxyProcess

TENANT = "contoso.example"
SCANNER = "scanner@contoso.example"
SMALL = "small@contoso.example"
NOSEND = "nosend@contoso.example"
PASSWORD = 'printer "pass" \\ word'
ROLES = {SCANNER: ("Mail.Send", "Mail.ReadWrite"), SMALL: ("Mail.Send",), NOSEND: ()}
LISTENERS = ("graph", "graph-big", "graph-dead")


@dataclass
class GraphWorld:
    entra: FakeEntra
    graph: FakeGraph
    proxy: ProxyProcess
    ports: dict[str, int]
    tmp: Path  # the proxy's TMPDIR


def _listener(port: int, graph_url: str, **extra: int) -> str:
    lines = ["[[listener]]", 'protocol = "smtp"', f'listen = "tcp:{port}:interface=127.0.0.1"',
             'upstream = "graph"', f'graph_url = "{graph_url}"']
    lines += [f"{key} = {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n\n"


def _account(user: str, authority: str, secret: str) -> str:
    return (f'[[account]]\nusername = "{user}"\ntenant = "{TENANT}"\nclient_id = "app-{user}"\n'
            f'flow = "client_credentials"\nclient_secret = "{secret}"\n'
            f'authority = "{authority}"\n\n')


@contextlib.contextmanager
def open_graph_world(folder: Path) -> Iterator[GraphWorld]:
    """Start the fakes and the proxy with its accounts added; stop them all on exit."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "tmp"
    tmp.mkdir(exist_ok=True)
    entra = FakeEntra(lambda mailbox, lifetime: f"outlook-token-{secrets.token_hex(4)}")
    entra.start()
    graph = FakeGraph(entra.graph_token_key, retry_after=1)
    graph.start()
    proxy = None
    try:
        ports = {name: free_port() for name in (*LISTENERS, "dead")}
        text = store_toml(folder / "store")
        text += _listener(ports["graph"], graph.url)
        text += _listener(ports["graph-big"], graph.url, max_message_mb=60)
        text += _listener(ports["graph-dead"], f"http://127.0.0.1:{ports['dead']}")
        for user, roles in ROLES.items():
            secret = secrets.token_urlsafe(12)
            entra.add_app(TENANT, f"app-{user}", secret=secret, mailbox=user, graph_roles=roles)
            graph.add_mailbox(user)
            text += _account(user, entra.authority, secret)
        proxy = ProxyProcess(folder, text, env={"TMPDIR": str(tmp)})
        for user in ROLES:
            added = proxy.cli("account", "add", user, "--password-stdin", stdin=PASSWORD + "\n")
            if added.returncode != 0:
                raise RuntimeError(f"account add {user} failed: {added.stdout}{added.stderr}")
        proxy.start(*(ports[name] for name in LISTENERS))
        yield GraphWorld(entra, graph, proxy, ports, tmp)
    finally:
        if proxy is not None:
            proxy.stop()
        graph.stop()
        entra.stop()
