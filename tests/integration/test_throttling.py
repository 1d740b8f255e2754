"""Brute force and connection floods against a proxy with tight [limits]."""

from __future__ import annotations

import imaplib
import socket
import time
from collections.abc import Iterator

import pytest

from tests.integration.conftest import ALICE, PASSWORD, World
from tests.support.ports import free_port
from tests.support.proxy_config import alice_account_toml, limits_toml, listener_toml, store_toml
from tests.support.proxy_process import ProxyProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tight(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ProxyProcess, int]]:
    workdir = tmp_path_factory.mktemp("tight-proxy")
    port = free_port()
    config = (
        store_toml(workdir / "store")
        + limits_toml(max_sessions_per_address=3, failures_before_delay=2,
                      failures_before_lockout=4, lockout_minutes=1)
        + listener_toml("imap", f"tcp:{port}:interface=127.0.0.1",
                        f"tls:127.0.0.1:{world.dovecot.imaps_port}", world.dovecot.ca.cert_path)
        + alice_account_toml(world.entra.authority)
    )
    proxy = ProxyProcess(workdir, config)
    added = proxy.cli("account", "add", ALICE, "--password-stdin", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    proxy.start(port)
    try:
        yield proxy, port
    finally:
        proxy.stop()


def _attempt(port: int, password: str) -> tuple[str, float]:
    """One login on a fresh connection: the server's answer and how long it took."""
    client = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    started = time.monotonic()
    try:
        client.login(ALICE, password)
        answer = "OK"
        client.logout()
    except imaplib.IMAP4.error as e:
        answer = str(e)
        client.shutdown()
    return answer, time.monotonic() - started


def test_session_limit_per_address(tight: tuple[ProxyProcess, int]) -> None:
    """A fourth simultaneous connection from one address is told to come back later."""
    _, port = tight
    time.sleep(0.5)  # earlier connections (the start-up probe) are seen closed
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    try:
        for s in held:
            assert s.recv(200).startswith(b"* OK")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as extra:
            assert extra.recv(200) == b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n"
    finally:
        for s in held:
            s.close()
    time.sleep(0.3)  # the proxy sees the closes
    answer, _ = _attempt(port, PASSWORD)
    assert answer == "OK"


def test_brute_force_is_slowed_then_refused_without_reaching_entra(
    tight: tuple[ProxyProcess, int], world: World
) -> None:
    """Wrong passwords: two free, then 1 s and 2 s delays, then a temporary refusal even for
    the right password (so a guesser learns nothing); Entra ID never hears of it."""
    _, port = tight
    tokens = world.entra.token_requests()
    results = [_attempt(port, f"guess-{n}") for n in range(4)]
    assert all("[AUTHENTICATIONFAILED]" in answer for answer, _ in results)
    assert results[0][1] < 1 and results[1][1] < 1
    assert results[2][1] >= 1 and results[3][1] >= 2
    locked, took = _attempt(port, PASSWORD)
    assert "[UNAVAILABLE] Too many failed logins; try again in 1 minute" in locked
    assert took < 1
    assert world.entra.token_requests() == tokens
    log = tight[0].log_text()
    assert "login failed (temporary): Too many failed logins" in log
