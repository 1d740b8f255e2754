"""Stopping a running proxy: SIGTERM lets open sessions finish within the grace period, then
closes the rest and exits 0; and what `serve` leaves behind for other commands."""

from __future__ import annotations

import imaplib
import json
import signal
import socket
from collections.abc import Iterator

import pytest

from tests.integration.conftest import ALICE, PASSWORD, World
from tests.support.runtime_proxy import RuntimeProxy

pytestmark = pytest.mark.integration


@pytest.fixture
def proxy(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeProxy]:
    own = RuntimeProxy(world, tmp_path_factory.mktemp("stop"))
    own.write_config({"imap": "imap"})
    own.add_account(ALICE, PASSWORD)
    try:
        yield own
    finally:
        own.process.stop()


def _stop(proxy: RuntimeProxy) -> str:
    offset = proxy.log_size()
    proxy.process.send_signal(signal.SIGTERM)
    return proxy.process.wait_for_log("no longer accepting", after=offset)


def test_sigterm_without_sessions_exits_0_at_once(proxy: RuntimeProxy) -> None:
    """With no session open the proxy stops without waiting, exits 0 and removes its
    runtime file."""
    proxy.start("imap")
    runtime_file = proxy.workdir / "store" / "runtime.json"
    assert json.loads(runtime_file.read_text())["pid"] == proxy.process.pid
    log = _stop(proxy)
    assert proxy.process.wait_for_exit(timeout=30) == 0
    log = proxy.process.log_text()
    assert "0 open sessions get up to 10 s to end" in log
    assert "every open session ended" not in log and "still open at the end" not in log
    assert not runtime_file.exists()


def test_sigterm_lets_an_open_session_finish_within_the_grace(proxy: RuntimeProxy) -> None:
    """A logged-in session keeps working after SIGTERM while no new connection is accepted;
    when it logs out the proxy exits 0 without waiting out the grace period."""
    proxy.write_config({"imap": "imap"}, shutdown_grace_seconds=120)
    proxy.start("imap")
    client = imaplib.IMAP4("127.0.0.1", proxy.ports["imap"], timeout=30)
    client.login(ALICE, PASSWORD)
    _stop(proxy)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.ports["imap"]), timeout=5)
    assert client.select("INBOX")[0] == "OK"
    assert client.noop()[0] == "OK"
    client.logout()
    assert proxy.process.wait_for_exit(timeout=60) == 0
    log = proxy.process.log_text()
    assert "1 open sessions get up to 120 s to end" in log
    assert "every open session ended" in log and "still open at the end" not in log


def test_a_session_open_at_the_end_of_the_grace_is_closed(proxy: RuntimeProxy) -> None:
    """A session still open when the grace period is over is closed, and the proxy exits 0."""
    proxy.write_config({"imap": "imap"}, shutdown_grace_seconds=1)
    proxy.start("imap")
    with socket.create_connection(("127.0.0.1", proxy.ports["imap"]), timeout=30) as s:
        f = s.makefile("rwb")
        f.readline()
        f.write(b'a1 LOGIN "' + ALICE.encode() + b'" {' + str(len(PASSWORD.encode())).encode()
                + b"+}\r\n" + PASSWORD.encode() + b"\r\n")
        f.flush()
        while not f.readline().startswith(b"a1 OK"):
            pass
        _stop(proxy)
        assert proxy.process.wait_for_exit(timeout=60) == 0
        assert f.read() == b""  # closed by the proxy, with nothing more
    assert "closed 1 sessions still open at the end of the grace period" in proxy.process.log_text()


def test_a_second_sigterm_closes_open_sessions_at_once(proxy: RuntimeProxy) -> None:
    """A second SIGTERM during the grace period closes the open sessions; exit code 0."""
    proxy.write_config({"imap": "imap"}, shutdown_grace_seconds=600)
    proxy.start("imap")
    client = imaplib.IMAP4("127.0.0.1", proxy.ports["imap"], timeout=30)
    client.login(ALICE, PASSWORD)
    _stop(proxy)
    offset = proxy.log_size()
    proxy.process.send_signal(signal.SIGTERM)
    proxy.process.wait_for_log("closing open sessions now", after=offset)
    assert proxy.process.wait_for_exit(timeout=60) == 0
    with pytest.raises((imaplib.IMAP4.abort, OSError)):
        client.noop()
    assert "closed 1 sessions still open" in proxy.process.log_text()
