"""IMAP through the proxy subprocess to a real Dovecot, with real clients."""

from __future__ import annotations

import imaplib
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.conftest import (
    ALICE,
    ALICE_SECRET,
    CAROL,
    CAROL_PASSWORD,
    CAROL_SECRET,
    PASSWORD,
    World,
)

pytestmark = pytest.mark.integration


def _raw_session(port: int, data: bytes, until: bytes, timeout: float = 10) -> bytes:
    """Send `data` right after connecting (before the greeting is read) and read until `until`."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        received = b""
        deadline = time.monotonic() + timeout
        while until not in received and time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


def _folders(client: imaplib.IMAP4) -> list[bytes]:
    status, listing = client.list()
    assert status == "OK"
    return sorted(line for line in listing if isinstance(line, bytes))


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (tests/run.sh installs it when run as root)")
    return path


def test_login_lists_the_same_folders_as_a_direct_session(world: World) -> None:
    """LOGIN with a password needing quotes and escapes gives the upstream's folder list."""
    proxied = world.proxied_imap()
    direct = world.direct_imap(ALICE)
    try:
        assert _folders(proxied) == _folders(direct)
    finally:
        proxied.logout()
        direct.logout()


def test_login_answer_carries_upstream_capabilities_without_auth(world: World) -> None:
    """The LOGIN OK names the upstream's post-login capabilities, with no AUTH= or LOGINDISABLED."""
    client = imaplib.IMAP4("127.0.0.1", world.ports["imap"])
    try:
        status, data = client.login(ALICE, PASSWORD)
        assert status == "OK"
        answer = client.untagged_responses.get("CAPABILITY") or data
        line = client._get_tagged_response  # noqa: B018 - only to prove imaplib is talking
        assert line is not None
        caps = " ".join(c.decode() if isinstance(c, bytes) else str(c) for c in answer)
        assert "AUTH=" not in caps and "LOGINDISABLED" not in caps
    finally:
        client.logout()


def test_login_with_a_synchronising_literal_password(world: World) -> None:
    """A password sent as a {n} literal after the `+` continuation logs in."""
    client = imaplib.IMAP4("127.0.0.1", world.ports["imap"])
    try:
        client.literal = PASSWORD.encode()
        status, _ = client._simple_command("LOGIN", ALICE)
        assert status == "OK"
        client.state = "AUTH"
        assert client.select("INBOX")[0] == "OK"
    finally:
        client.logout()


def test_authenticate_plain_two_step(world: World) -> None:
    """AUTHENTICATE PLAIN with the response after the continuation logs in."""
    client = imaplib.IMAP4("127.0.0.1", world.ports["imap"])
    try:
        status, _ = client.authenticate("PLAIN", lambda _: f"\0{ALICE}\0{PASSWORD}".encode())
        assert status == "OK"
        assert client.select("INBOX")[0] == "OK"
    finally:
        client.logout()


def test_pipelined_sasl_ir_login_before_the_greeting(world: World) -> None:
    """A client that sends AUTHENTICATE PLAIN (SASL-IR) and more commands before reading the
    greeting gets every answer, the later commands answered by the upstream."""
    import base64

    ir = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode())
    data = b"a1 AUTHENTICATE PLAIN " + ir + b"\r\na2 SELECT INBOX\r\na3 LOGOUT\r\n"
    received = _raw_session(world.ports["imap"], data, b"a3 OK")
    assert re.search(rb"a1 OK \[CAPABILITY [^\]]+\]", received), received
    assert b"a2 OK" in received and b"EXISTS" in received
    assert b"a3 OK" in received


def test_multi_megabyte_fetch_is_byte_identical_to_a_direct_fetch(world: World) -> None:
    """A 6 MB message fetched through the proxy equals the same fetch made directly."""
    body = b"".join(b"line %07d " % i + os.urandom(30).hex().encode() + b"\r\n" for i in range(80_000))
    message = b"Subject: big one\r\nFrom: a@b\r\n\r\n" + body
    world.dovecot.deliver(ALICE, message)
    direct = world.direct_imap(ALICE)
    proxied = world.proxied_imap()
    try:
        fetched = []
        for client in (direct, proxied):
            client.select("INBOX")
            status, found = client.search(None, '(SUBJECT "big one")')
            number = found[0].split()[-1]
            status, data = client.fetch(number, "(BODY.PEEK[])")
            assert status == "OK"
            fetched.append(data[0][1])
        assert len(fetched[0]) >= len(body)
        assert fetched[0] == fetched[1]
    finally:
        direct.logout()
        proxied.logout()


def test_idle_reports_a_new_message(world: World) -> None:
    """IDLE through the proxy wakes up when a message arrives upstream."""
    with socket.create_connection(("127.0.0.1", world.ports["imap"]), timeout=15) as s:
        f = s.makefile("rwb")
        f.readline()  # greeting
        f.write(b'i1 LOGIN "' + ALICE.encode() + b'" {' + str(len(PASSWORD.encode())).encode() + b"+}\r\n")
        f.write(PASSWORD.encode() + b"\r\ni2 SELECT INBOX\r\ni3 IDLE\r\n")
        f.flush()
        lines = []
        while not (lines and lines[-1].startswith(b"+")):
            lines.append(f.readline())
        world.dovecot.deliver(ALICE, b"Subject: while idle\r\n\r\nwake up\r\n")
        line = f.readline()
        while b"EXISTS" not in line:
            line = f.readline()
            assert line, "connection closed during IDLE"
        f.write(b"DONE\r\ni4 LOGOUT\r\n")
        f.flush()
        rest = b"".join(iter(f.readline, b""))
        assert b"i3 OK" in rest and b"i4 OK" in rest


def test_wrong_password_opens_no_upstream_connection_and_asks_no_token(world: World) -> None:
    """A wrong password gets NO [AUTHENTICATIONFAILED]; no upstream connection, no token request."""
    port = world.ports["imap-counted"]
    client = imaplib.IMAP4("127.0.0.1", port)
    client.login(ALICE, PASSWORD)  # proves the count works: a right password connects
    client.logout()
    connections, tokens = world.forwarder.connections, world.entra.token_requests()
    assert connections >= 1
    client = imaplib.IMAP4("127.0.0.1", port)
    with pytest.raises(imaplib.IMAP4.error, match=r"\[AUTHENTICATIONFAILED\]"):
        client.login(ALICE, "not the password")
    client.shutdown()
    received = _raw_session(port, b"u1 LOGIN nobody@contoso.example secret\r\n", b"u1 ")
    assert b"u1 NO [AUTHENTICATIONFAILED]" in received
    assert world.forwarder.connections == connections
    assert world.entra.token_requests() == tokens


@pytest.mark.parametrize("kind", ["500", "429", "reset", "timeout"])
def test_token_endpoint_down_is_a_temporary_failure(world: World, kind: str) -> None:
    """Entra ID answering 500 or 429, or not at all, gives NO [UNAVAILABLE], never a password
    failure; the next login works once it is back."""
    world.entra.fail_next(1, kind)
    client = imaplib.IMAP4("127.0.0.1", world.ports["imap"])
    with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
        client.login(CAROL, CAROL_PASSWORD)
    client.shutdown()
    world.wait_out_token_backoff()
    client = world.proxied_imap(CAROL, CAROL_PASSWORD)
    client.logout()


def test_upstream_down_is_a_temporary_failure(world: World) -> None:
    """An unreachable upstream gives NO [UNAVAILABLE] naming the server."""
    client = imaplib.IMAP4("127.0.0.1", world.ports["imap-dead"])
    with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\] Could not connect to the mail server"):
        client.login(ALICE, PASSWORD)
    client.shutdown()


def test_client_half_close_still_gets_its_answers(world: World) -> None:
    """A client that sends LOGOUT and shuts down its sending side (as `nc -N` does) still
    receives the upstream's answer before the connection ends."""
    with socket.create_connection(("127.0.0.1", world.ports["imap"]), timeout=15) as s:
        f = s.makefile("rb")
        f.readline()
        s.sendall(b'h1 LOGIN "' + ALICE.encode() + b'" {' + str(len(PASSWORD)).encode() + b"+}\r\n"
                  + PASSWORD.encode() + b"\r\n")
        assert f.readline().startswith(b"h1 OK")
        s.sendall(b"h2 SELECT INBOX\r\nh3 LOGOUT\r\n")
        s.shutdown(socket.SHUT_WR)
        rest = b"".join(iter(f.readline, b""))
    assert b"h2 OK" in rest and b"h3 OK" in rest


def test_garbage_before_login_gets_bad_and_the_session_goes_on(world: World) -> None:
    """Garbage, unknown and post-login commands get BAD without closing the connection."""
    data = b"\x00\xff garbage\r\nx1 SELECT INBOX\r\nx2 FOO\r\nx3 NOOP\r\nx4 LOGOUT\r\n"
    received = _raw_session(world.ports["imap"], data, b"x4 OK")
    assert b"x1 BAD" in received and b"x2 BAD" in received
    assert b"x3 OK" in received and b"x4 OK" in received


def test_overlong_line_closes_with_bye(world: World) -> None:
    """A line past the cap gets `* BYE`, the connection closes and the log names the peer;
    the proxy keeps serving."""
    received = _raw_session(world.ports["imap"], b"x1 LOGIN " + b"a" * 100_000 + b"\r\n", b"BYE")
    assert b"* BYE" in received
    client = world.proxied_imap()
    client.logout()
    assert re.search(r"WARN +imap 127\.0\.0\.1:\d+ closing: line too long", world.proxy.log_text())


def test_curl_lists_folders(world: World, tmp_path: Path) -> None:
    """curl (which prefers AUTHENTICATE PLAIN) lists the mailbox through the proxy."""
    curl = _require("curl")
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login {ALICE} password {PASSWORD.replace(' ', '_')}\n")
    # curl's --user splits at the first colon, so pass the password through a config file.
    config = tmp_path / "curl.cfg"
    escaped = PASSWORD.replace("\\", "\\\\").replace('"', '\\"')
    config.write_text(f'user = "{ALICE}:{escaped}"\n')
    result = subprocess.run(
        [curl, "-sS", "--max-time", "20", "-K", str(config), f"imap://127.0.0.1:{world.ports['imap']}/"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "INBOX" in result.stdout


def test_fetchmail_downloads_a_message(world: World, tmp_path: Path) -> None:
    """fetchmail (IMAP LOGIN) fetches a message through the proxy, keeping it on the server."""
    fetchmail = _require("fetchmail")
    world.dovecot.deliver(CAROL, b"Subject: for fetchmail\r\nFrom: x@y\r\n\r\nfetched body\r\n")
    out = tmp_path / "mbox"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f"poll 127.0.0.1 service {world.ports['imap']} protocol IMAP auth password\n"
        f"  user \"{CAROL}\" password \"{CAROL_PASSWORD}\" is root here\n"
        f"  keep fetchall sslproto '' mda \"/bin/sh -c 'cat >> {out}'\"\n"
    )
    rc.chmod(0o600)
    result = subprocess.run(
        [fetchmail, "-v", "-v", "-f", str(rc), "--nosyslog", "-N", "--idfile", str(tmp_path / "ids")],
        capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert b"fetched body" in out.read_bytes()


def test_account_check_passes_end_to_end(world: World) -> None:
    """`account check` gets a token, signs in on every listener, and reports per step."""
    result = world.proxy.cli("account", "check", ALICE, "--password-stdin", stdin=PASSWORD + "\n")
    assert "token: ok" in result.stdout
    assert result.stdout.count(": ok") >= 4, result.stdout  # imap twice, pop3, smtp
    for line in (r"imap tls:127\.0\.0\.1:\d+: ok", r"pop3 tls:127\.0\.0\.1:\d+: ok", r"smtp tcp:127\.0\.0\.1:\d+: ok"):
        assert re.search(line, result.stdout), result.stdout
    # The second listener's upstream is down on purpose: the verdict must say so.
    assert "FAILED" in result.stdout and result.returncode == 1


def test_account_list_shows_state_without_secrets(world: World) -> None:
    """`account list` shows flow, mailbox and token state, and no secret."""
    result = world.proxy.cli("account", "list")
    assert result.returncode == 0, result.stderr
    assert ALICE in result.stdout and "client_credentials" in result.stdout
    assert "valid until" in result.stdout
    for secret in (ALICE_SECRET, CAROL_SECRET, PASSWORD, "eyJ"):
        assert secret not in result.stdout


def test_no_secret_in_the_log(world: World) -> None:
    """After all of the above, the proxy's log holds no password, secret, token or XOAUTH2."""
    world.proxied_imap().logout()
    log = world.proxy.log_text()
    assert "logged in upstream" in log
    for secret in (PASSWORD, CAROL_PASSWORD, ALICE_SECRET, CAROL_SECRET, "eyJ", "dXNlcj", "auth=Bearer"):
        assert secret not in log, f"{secret!r} found in the proxy log"
