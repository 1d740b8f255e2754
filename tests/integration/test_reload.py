"""Reloading a running proxy: SIGHUP and `xoauth2-proxy reload`, against the real Dovecot."""

from __future__ import annotations

import imaplib
import signal
import socket
from collections.abc import Iterator

import pytest

from tests.integration.conftest import ALICE, CAROL, CAROL_PASSWORD, PASSWORD, World
from tests.support.admin import admin_toml
from tests.support.ports import free_port
from tests.support.runtime_proxy import RuntimeProxy

pytestmark = pytest.mark.integration


@pytest.fixture
def proxy(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeProxy]:
    own = RuntimeProxy(world, tmp_path_factory.mktemp("reload"))
    own.write_config({"imap": "imap", "pop3": "pop3"})
    own.add_account(ALICE, PASSWORD)
    own.start("imap", "pop3")
    try:
        yield own
    finally:
        own.process.stop()


def _login(port: int, username: str = ALICE, password: str = PASSWORD) -> str:
    client = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    try:
        client.login(username, password)
    except imaplib.IMAP4.error as e:
        client.shutdown()
        return str(e)
    client.logout()
    return "OK"


def _sighup(proxy: RuntimeProxy, expect: str) -> str:
    offset = proxy.log_size()
    proxy.process.send_signal(signal.SIGHUP)
    return proxy.process.wait_for_log(expect, after=offset)


def test_idle_session_goes_on_across_a_reload_that_adds_and_removes_listeners(
    proxy: RuntimeProxy, world: World
) -> None:
    """An IMAP IDLE session open during a reload keeps working through Dovecot; the listener
    added greets and the one removed no longer accepts."""
    with socket.create_connection(("127.0.0.1", proxy.ports["imap"]), timeout=30) as s:
        f = s.makefile("rwb")
        f.readline()
        f.write(b'i1 LOGIN "' + ALICE.encode() + b'" {' + str(len(PASSWORD.encode())).encode()
                + b"+}\r\n" + PASSWORD.encode() + b"\r\ni2 SELECT INBOX\r\ni3 IDLE\r\n")
        f.flush()
        line = b""
        while not line.startswith(b"+"):
            line = f.readline()
            assert line, "closed before IDLE started"

        proxy.write_config({"imap": "imap", "smtp": "smtp"})
        log = _sighup(proxy, "reloaded")
        assert "1 listener added: smtp" in log and "1 listener removed: pop3" in log
        assert proxy.greeting("smtp").startswith(b"220 ")
        with pytest.raises(ConnectionRefusedError):
            proxy.greeting("pop3")

        world.dovecot.deliver(ALICE, b"Subject: after the reload\r\n\r\nstill here\r\n")
        line = f.readline()
        while b"EXISTS" not in line:
            line = f.readline()
            assert line, "the IDLE session was closed by the reload"
        f.write(b"DONE\r\ni4 NOOP\r\ni5 LOGOUT\r\n")
        f.flush()
        rest = b"".join(iter(f.readline, b""))
    assert b"i3 OK" in rest and b"i4 OK" in rest and b"i5 OK" in rest


def test_accounts_added_and_removed_by_reload_take_effect(proxy: RuntimeProxy) -> None:
    """An account added to the file can log in only after the reload; one removed no longer can."""
    proxy.write_config({"imap": "imap", "pop3": "pop3"}, accounts=(CAROL,))
    proxy.add_account(CAROL, CAROL_PASSWORD)
    assert "AUTHENTICATIONFAILED" in _login(proxy.ports["imap"], CAROL, CAROL_PASSWORD)
    assert _login(proxy.ports["imap"]) == "OK"
    log = _sighup(proxy, "reloaded")
    assert f"1 account added: {CAROL}" in log and f"1 account removed: {ALICE}" in log
    assert _login(proxy.ports["imap"], CAROL, CAROL_PASSWORD) == "OK"
    assert "AUTHENTICATIONFAILED" in _login(proxy.ports["imap"])


def test_a_broken_config_on_sighup_is_refused_and_the_old_one_kept(proxy: RuntimeProxy) -> None:
    """SIGHUP with an unknown key in the file: the log names the file and the key, the proxy
    keeps its listeners and logins work."""
    proxy.write_config({"imap": "imap", "smtp": "smtp"}, extra="[limits]\nmax_sesions = 5\n")
    log = _sighup(proxy, "reload refused")
    assert str(proxy.process.config) in log and "unknown key 'max_sesions'" in log
    assert _login(proxy.ports["imap"]) == "OK"
    assert proxy.greeting("pop3").startswith(b"+OK")
    with pytest.raises(ConnectionRefusedError):
        proxy.greeting("smtp")


def test_a_port_that_cannot_be_bound_rolls_the_reload_back(proxy: RuntimeProxy) -> None:
    """A reload adding two listeners, one on a port already taken, binds neither: the error
    names the listener, and the running ones go on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proxy.ports["busy"] = taken.getsockname()[1]
        proxy.write_config({"imap": "imap", "smtp": "smtp", "busy": "pop3"})
        reloaded = proxy.process.cli("reload")
        assert reloaded.returncode == 2, reloaded.stdout + reloaded.stderr
        assert "[[listener]] #3" in reloaded.stderr and "cannot listen there" in reloaded.stderr
    with pytest.raises(ConnectionRefusedError):
        proxy.greeting("smtp")
    assert proxy.greeting("pop3").startswith(b"+OK")
    assert _login(proxy.ports["imap"]) == "OK"


def test_reload_command_applies_the_file_and_reports_what_changed(proxy: RuntimeProxy) -> None:
    """`xoauth2-proxy reload` applies the file and prints the changes (exit 0); a broken file
    gives exit 2 with the reason; with no proxy running it exits 1."""
    proxy.write_config({"imap": "imap", "pop3": "pop3", "smtp": "smtp"})
    reloaded = proxy.process.cli("reload")
    assert reloaded.returncode == 0, reloaded.stderr
    assert "1 listener added: smtp" in reloaded.stdout
    assert proxy.greeting("smtp").startswith(b"220 ")

    proxy.write_config({"imap": "imap"}, shutdown_grace_seconds=-1)
    refused = proxy.process.cli("reload")
    assert refused.returncode == 2
    assert "shutdown_grace_seconds must be a whole number of at least 0" in refused.stderr
    assert proxy.greeting("smtp").startswith(b"220 ")

    proxy.process.stop()
    proxy.write_config({"imap": "imap"})
    stopped = proxy.process.cli("reload")
    assert stopped.returncode == 1
    assert "no running xoauth2-proxy" in stopped.stderr


def test_a_reload_says_that_admin_changes_wait_for_a_restart(proxy: RuntimeProxy) -> None:
    """An [admin] table added by a reload is not started under the running proxy (a reload
    from the page must not cut the page off): the summary says a restart applies it, as long
    as it differs from what runs, and the rest of the file is applied."""
    admin_port = free_port()
    proxy.write_config({"imap": "imap", "pop3": "pop3", "smtp": "smtp"},
                       extra=admin_toml(admin_port))
    for _ in range(2):
        reloaded = proxy.process.cli("reload")
        assert reloaded.returncode == 0, reloaded.stderr
        assert "[admin] changed: restart the proxy to apply it" in reloaded.stdout
    assert "1 listener added: smtp" not in reloaded.stdout  # the second time, only [admin]
    assert proxy.greeting("smtp").startswith(b"220 ")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", admin_port), timeout=5).close()
    proxy.write_config({"imap": "imap", "pop3": "pop3", "smtp": "smtp"})
    unchanged = proxy.process.cli("reload")
    assert "nothing changed" in unchanged.stdout, unchanged.stdout


def test_a_changed_listener_keeps_its_port_and_counts_sessions_of_both_settings(
    proxy: RuntimeProxy,
) -> None:
    """New [limits] change every listener: the port stays open, a session opened before goes
    on, and the new per-address limit counts it, so a second connection is turned away."""
    client = imaplib.IMAP4("127.0.0.1", proxy.ports["imap"], timeout=30)
    client.login(ALICE, PASSWORD)
    proxy.write_config({"imap": "imap", "pop3": "pop3"}, max_sessions_per_address=1)
    log = _sighup(proxy, "reloaded")
    assert "2 listeners changed" in log
    assert proxy.greeting("imap") == b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n"
    assert client.select("INBOX")[0] == "OK"
    client.logout()
    proxy.process.wait_for_log("bytes to client")  # the proxy has seen the session end
    assert proxy.greeting("imap").startswith(b"* OK")
