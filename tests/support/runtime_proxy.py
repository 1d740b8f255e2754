"""A proxy subprocess of a test's own, whose configuration the test rewrites, reloads and stops:
listeners by name on free ports, upstreams on the world's Dovecot, accounts at its fake Entra."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from tests.support.ports import free_port
from tests.support.proxy_config import account_toml, limits_toml, listener_toml, store_toml
from tests.support.proxy_process import ProxyProcess
from tests.support.world import ALICE, ALICE_SECRET, CAROL, CAROL_SECRET, World

UPSTREAM_PORTS = {"imap": "imaps_port", "pop3": "pop3s_port", "smtp": "submission_port"}
APPS = {ALICE: ("app-alice", ALICE_SECRET), CAROL: ("app-carol", CAROL_SECRET)}


class RuntimeProxy:
    def __init__(self, world: World, workdir: Path) -> None:
        self.world = world
        self.workdir = workdir
        self.ports: dict[str, int] = {}
        self.process = ProxyProcess(workdir, "")

    def write_config(self, listeners: dict[str, str], accounts: tuple[str, ...] = (ALICE,),
                     extra: str = "", **limits: int) -> None:
        """`listeners`: name -> protocol, or protocol/tls ("smtp/implicit"); a name keeps its
        port across rewrites."""
        dovecot = self.world.dovecot
        text = store_toml(self.workdir / "store") + (limits_toml(**limits) if limits else "")
        for name, kind in listeners.items():
            protocol, _, tls = kind.partition("/")
            port = self.ports.setdefault(name, free_port())
            scheme = "tcp" if protocol == "smtp" else "tls"
            upstream = f"{scheme}:127.0.0.1:{getattr(dovecot, UPSTREAM_PORTS[protocol])}"
            text += listener_toml(protocol, f"tcp:{port}:interface=127.0.0.1", upstream,
                                  dovecot.ca.cert_path, tls=tls or None)
        for username in accounts:
            client_id, secret = APPS[username]
            text += account_toml(username, client_id, secret, self.world.entra.authority)
        self.process.config.write_text(text + extra)

    def add_account(self, username: str, password: str) -> None:
        added = self.process.cli("account", "add", username, "--password-stdin", stdin=password + "\n")
        assert added.returncode == 0, added.stderr

    def start(self, *names: str, options: tuple[str, ...] = ()) -> None:
        """Start and wait until the probes of the listeners `names` are seen closed, so that
        the sessions a test counts are its own."""
        self.process.start(*(self.ports[name] for name in names), options=options)
        deadline = time.monotonic() + 15
        while self.process.log_text().count("closed before login") < len(names):
            assert time.monotonic() < deadline, self.process.log_text()
            time.sleep(0.05)

    def greeting(self, name: str) -> bytes:
        """The first line a listener sends (ConnectionRefusedError when nothing listens)."""
        with socket.create_connection(("127.0.0.1", self.ports[name]), timeout=10) as s:
            return s.makefile("rb").readline()

    def log_size(self) -> int:
        return len(self.process.log_text())
