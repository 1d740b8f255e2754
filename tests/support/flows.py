"""Driving a small proxy of one's own from a test: its config (an IMAP listener to Dovecot and
[[account]] blocks), CLI commands as subprocesses read line by line, `account add` through the
device code flow at the fake Entra ID, and IMAP logins through the proxy.

Used by tests/integration/test_flows.py, test_token_safety.py, test_graph_accounts.py and
tests/test_web_authorise.py.
"""

from __future__ import annotations

import imaplib
import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.support.dovecot import Dovecot
from tests.support.fake_entra import FakeEntra
from tests.support.ports import free_port
from tests.support.world import TENANT

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "flows local password"


def proxy_env(**extra: str) -> dict[str, str]:
    """The environment ProxyProcess gives its children: this checkout's package first."""
    env = dict(os.environ)
    env.pop("XOAUTH2_PROXY_CONFIG", None)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def account_block(username: str, client_id: str, flow: str, authority: str, **extra: str) -> str:
    lines = ["[[account]]", f'username = "{username}"', f'tenant = "{TENANT}"',
             f'client_id = "{client_id}"', f'flow = "{flow}"', f'authority = "{authority}"']
    lines += [f'{key} = "{value}"' for key, value in extra.items()]
    return "\n".join(lines) + "\n"


def proxy_config(workdir: Path, dovecot: Dovecot, imap_port: int, accounts: list[str]) -> str:
    return f"""
[store]
path = "{workdir / 'store'}"

[[listener]]
protocol = "imap"
listen = "tcp:{imap_port}:interface=127.0.0.1"
upstream = "tls:127.0.0.1:{dovecot.imaps_port}"
upstream_ca = "{dovecot.ca.cert_path}"

""" + "\n".join(accounts)



def imap_and_graph_config(workdir: Path, account: str) -> Path:
    """A config file whose `account` block needs tokens for Exchange Online (an IMAP listener)
    and Microsoft Graph (an SMTP listener sending through Graph); nothing listens upstream."""
    dead = free_port()
    path = workdir / "config.toml"
    path.write_text(f"""
[store]
path = "{workdir / 'store'}"

[[listener]]
protocol = "imap"
listen = "tcp:{free_port()}"
upstream = "tls:127.0.0.1:{dead}"

[[listener]]
protocol = "smtp"
listen = "tcp:{free_port()}"
upstream = "graph"
graph_url = "http://127.0.0.1:{dead}"

""" + account)
    return path

class Command:
    """A CLI command running as a subprocess, its output read line by line as it comes."""

    def __init__(self, config: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "--config", str(config), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env or proxy_env(),
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stdout: list[str] = []
        self.stderr = ""
        self._readers = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.stdout.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        self.stderr = self.process.stderr.read()

    def write(self, text: str, close: bool = False) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text)
        self.process.stdin.flush()
        if close:
            self.process.stdin.close()

    def wait_for(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        """The first match of PATTERN in a line of output still to be read."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            if line is None or time.monotonic() > deadline:
                self.finish(timeout=5)
                raise AssertionError(f"no line matching {pattern!r}; stdout:\n"
                                     f"{''.join(self.stdout)}\nstderr:\n{self.stderr}")
            found = re.search(pattern, line)
            if found:
                return found

    def finish(self, timeout: float = 30) -> tuple[int, str, str]:
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        for reader in self._readers:
            reader.join(timeout=5)
        return code, "".join(self.stdout), self.stderr


def imap_login(port: int, user: str, password: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", port, timeout=20)
    client.login(user, password)
    return client


def login_refusal(port: int, user: str, password: str) -> str:
    """The text of the NO a login gets (fails the test if it succeeds)."""
    client = imaplib.IMAP4("127.0.0.1", port, timeout=20)
    try:
        client.login(user, password)
    except imaplib.IMAP4.error as e:
        text = e.args[0]
        return text.decode() if isinstance(text, bytes) else str(text)
    finally:
        client.shutdown()
    raise AssertionError(f"login as {user} succeeded")


def assert_lists(port: int, user: str, password: str) -> None:
    client = imap_login(port, user, password)
    try:
        status, folders = client.list()
        assert status == "OK" and any(b"INBOX" in f for f in folders if isinstance(f, bytes))
    finally:
        client.logout()


def device_code_add(config: Path, fake: FakeEntra, user: str, sign_in_as: str,
                    password: str = PASSWORD) -> str:
    """`account add USER` with the device code flow, the user signing in at the fake as
    SIGN_IN_AS; returns its output."""
    command = Command(config, "account", "add", user, "--password-stdin")
    command.write(password + "\n", close=True)
    code = command.wait_for(r"Enter code: (\w+)").group(1)
    assert code in fake.user_codes
    fake.approve_device(code, sign_in_as)
    status, out, err = command.finish()
    assert status == 0, f"stdout:\n{out}\nstderr:\n{err}"
    return out

