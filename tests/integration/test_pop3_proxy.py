"""POP3 through the proxy subprocess to a real Dovecot, with real clients."""

from __future__ import annotations

import base64
import os
import poplib
import re
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from proxy.sasl import xoauth2
from tests.integration.conftest import ALICE, CAROL, CAROL_PASSWORD, PASSWORD, World

pytestmark = pytest.mark.integration

TIMEOUT = 15


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (tests/run.sh installs it when run as root)")
    return path


@contextmanager
def _direct(world: World, mailbox: str = ALICE) -> Iterator[poplib.POP3_SSL]:
    """A POP3S session straight to Dovecot, signed in with two-step AUTH XOAUTH2."""
    client = poplib.POP3_SSL(
        "127.0.0.1", world.dovecot.pop3s_port, context=world.ssl_context(), timeout=TIMEOUT
    )
    try:
        assert client._shortcmd("AUTH XOAUTH2").startswith(b"+")
        response = xoauth2(mailbox, world.dovecot.token(mailbox)).decode()
        assert client._shortcmd(response).startswith(b"+OK")
        yield client
    finally:
        _close(client)


@contextmanager
def _proxied(world: World, user: str = ALICE, password: str = PASSWORD,
             port: str = "pop3") -> Iterator[poplib.POP3]:
    """A POP3 session through the proxy, signed in with USER/PASS."""
    client = poplib.POP3("127.0.0.1", world.ports[port], timeout=TIMEOUT)
    try:
        client.user(user)
        assert client.pass_(password).startswith(b"+OK")
        yield client
    finally:
        _close(client)


def _close(client: poplib.POP3) -> None:
    try:
        client.quit()
    except (poplib.error_proto, OSError):
        client.close()


def _find(client: poplib.POP3, subject: bytes) -> int | None:
    """The number of the message whose headers hold `Subject: <subject>`, newest first."""
    count, _ = client.stat()
    for number in range(count, 0, -1):
        _, headers, _ = client.top(number, 0)
        if b"Subject: " + subject in headers:
            return number
    return None


def _big_message(subject: bytes) -> bytes:
    """About 3 MB of short CRLF lines, some starting with "." to exercise dot-stuffing."""
    lines = []
    for i in range(40_000):
        lead = b"." if i % 97 == 0 else b""
        lines.append(lead + b"line %06d " % i + os.urandom(28).hex().encode() + b"\r\n")
    return b"Subject: " + subject + b"\r\nFrom: a@b\r\n\r\n" + b"".join(lines)


class _Raw:
    """A line-at-a-time POP3 conversation over a plain socket."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.file = self.sock.makefile("rwb")
        self.greeting = self.file.readline()

    def send(self, line: bytes) -> bytes:
        self.file.write(line + b"\r\n")
        self.file.flush()
        return self.file.readline()

    def multiline(self, line: bytes) -> list[bytes]:
        first = self.send(line)
        assert first.startswith(b"+OK"), first
        lines = [first]
        while lines[-1] != b".\r\n":
            lines.append(self.file.readline())
            assert lines[-1], "connection closed inside a multi-line answer"
        return lines

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@contextmanager
def _raw(world: World, port: str = "pop3") -> Iterator[_Raw]:
    session = _Raw(world.ports[port])
    try:
        assert session.greeting.startswith(b"+OK"), session.greeting
        yield session
    finally:
        session.close()


def _b64(text: str) -> bytes:
    return base64.b64encode(text.encode())


def test_stat_and_list_equal_a_direct_session(world: World) -> None:
    """USER/PASS with a password needing no escaping in POP3 gives the upstream's STAT and LIST."""
    world.dovecot.deliver(ALICE, b"Subject: pop3 stat\r\nFrom: a@b\r\n\r\ncount me\r\n")
    with _direct(world) as direct, _proxied(world) as proxied:
        assert proxied.stat() == direct.stat()
        assert proxied.list()[1:] == direct.list()[1:]
        assert proxied.uidl()[1:] == direct.uidl()[1:]


def test_multi_megabyte_retr_is_byte_identical_to_a_direct_retr(world: World) -> None:
    """A 3 MB message (with dot-stuffed lines) RETRieved through the proxy equals the direct RETR
    and the delivered bytes."""
    subject = b"pop3 big " + uuid.uuid4().hex.encode()
    message = _big_message(subject)
    world.dovecot.deliver(ALICE, message)
    retrieved = []
    with _direct(world) as direct, _proxied(world) as proxied:
        for client in (direct, proxied):
            number = _find(client, subject)
            assert number is not None
            _, lines, octets = client.retr(number)
            retrieved.append((b"\r\n".join(lines) + b"\r\n", octets))
    assert retrieved[0][0] == message
    assert retrieved[1] == retrieved[0]


def test_dele_then_quit_deletes_upstream(world: World) -> None:
    """DELE then QUIT through the proxy expunges the message: a new session no longer has it."""
    subject = b"pop3 delete " + uuid.uuid4().hex.encode()
    world.dovecot.deliver(ALICE, b"Subject: " + subject + b"\r\nFrom: a@b\r\n\r\nbye\r\n")
    with _proxied(world) as proxied:
        number = _find(proxied, subject)
        assert number is not None
        assert proxied.dele(number).startswith(b"+OK")
    with _proxied(world) as proxied:
        assert _find(proxied, subject) is None
    with _direct(world) as direct:
        assert _find(direct, subject) is None


def test_capa_before_login_offers_user_and_sasl_plain_login(world: World) -> None:
    """CAPA before login lists USER and SASL PLAIN LOGIN, and never XOAUTH2."""
    with _raw(world) as session:
        capa = session.multiline(b"CAPA")
        session.send(b"QUIT")
    names = [line.rstrip(b"\r\n") for line in capa[1:-1]]
    assert b"USER" in names
    sasl = [line for line in names if line.upper().startswith(b"SASL ")]
    assert len(sasl) == 1 and set(sasl[0].split()[1:]) >= {b"PLAIN", b"LOGIN"}, names
    # (IMPLEMENTATION xoauth2-proxy names the product, not a mechanism.)
    assert not any(b"XOAUTH2" in line.upper().split() for line in names), names
    assert b"XOAUTH2" not in sasl[0].upper(), names


def test_auth_plain_with_initial_response(world: World) -> None:
    """AUTH PLAIN <initial response> logs in and STAT is answered by the upstream."""
    with _raw(world) as session:
        answer = session.send(b"AUTH PLAIN " + _b64(f"\0{ALICE}\0{PASSWORD}"))
        assert answer.startswith(b"+OK"), answer
        assert re.match(rb"\+OK \d+ \d+\r\n", session.send(b"STAT"))
        assert session.send(b"QUIT").startswith(b"+OK")


def test_auth_plain_two_step(world: World) -> None:
    """AUTH PLAIN, `+ `, then the response line logs in."""
    with _raw(world) as session:
        assert session.send(b"AUTH PLAIN").startswith(b"+")
        answer = session.send(_b64(f"\0{ALICE}\0{PASSWORD}"))
        assert answer.startswith(b"+OK"), answer
        assert re.match(rb"\+OK \d+ \d+\r\n", session.send(b"STAT"))
        assert session.send(b"QUIT").startswith(b"+OK")


def test_auth_login(world: World) -> None:
    """AUTH LOGIN answers Username:/Password: prompts and logs in with the two answers."""
    with _raw(world) as session:
        prompt = session.send(b"AUTH LOGIN")
        assert prompt.startswith(b"+ ") and base64.b64decode(prompt[2:].strip()) == b"Username:"
        prompt = session.send(_b64(ALICE))
        assert prompt.startswith(b"+ ") and base64.b64decode(prompt[2:].strip()) == b"Password:"
        answer = session.send(_b64(PASSWORD))
        assert answer.startswith(b"+OK"), answer
        assert re.match(rb"\+OK \d+ \d+\r\n", session.send(b"STAT"))
        assert session.send(b"QUIT").startswith(b"+OK")


def _assert_login_fails(world: World, user: str, password: str, code: bytes,
                        port: str = "pop3") -> None:
    client = poplib.POP3("127.0.0.1", world.ports[port], timeout=TIMEOUT)
    try:
        client.user(user)
        with pytest.raises(poplib.error_proto) as failure:
            client.pass_(password)
        assert failure.value.args[0].startswith(b"-ERR " + code), failure.value.args[0]
    finally:
        _close(client)


def test_wrong_password_is_an_auth_failure(world: World) -> None:
    """A wrong password gets `-ERR [AUTH]`; the next login works."""
    _assert_login_fails(world, ALICE, "not the password", b"[AUTH]")
    with _proxied(world) as proxied:
        assert proxied.stat()[0] >= 1


def test_wrong_password_then_retry_on_the_same_connection(world: World) -> None:
    """After `-ERR [AUTH]` the client may try again on the same connection (RFC 1939)."""
    with _raw(world) as session:
        assert session.send(b"USER " + ALICE.encode()).startswith(b"+OK")
        assert session.send(b"PASS wrong").startswith(b"-ERR [AUTH]")
        assert session.send(b"USER " + ALICE.encode()).startswith(b"+OK")
        answer = session.send(b"PASS " + PASSWORD.encode())
        assert answer.startswith(b"+OK"), answer
        assert re.match(rb"\+OK \d+ \d+\r\n", session.send(b"STAT"))
        assert session.send(b"QUIT").startswith(b"+OK")


def test_pipelined_login_and_commands(world: World) -> None:
    """USER, PASS, STAT, LIST and QUIT sent in one write (CAPA says PIPELINING) are all answered,
    the commands after PASS by the upstream."""
    data = (b"USER " + ALICE.encode() + b"\r\nPASS " + PASSWORD.encode()
            + b"\r\nSTAT\r\nLIST\r\nQUIT\r\n")
    with socket.create_connection(("127.0.0.1", world.ports["pop3"]), timeout=TIMEOUT) as s:
        s.sendall(data)
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    lines = received.split(b"\r\n")
    assert lines[0].startswith(b"+OK") and lines[1].startswith(b"+OK")  # greeting, USER
    assert lines[2].startswith(b"+OK"), received  # PASS
    stat = re.match(rb"\+OK (\d+) \d+$", lines[3])
    assert stat, received
    assert lines[4].startswith(b"+OK")  # LIST, then one line per message and "."
    count = int(stat.group(1))
    assert lines[5 + count] == b"." and lines[6 + count].startswith(b"+OK"), received


@pytest.mark.parametrize("kind", ["500", "reset"])
def test_token_endpoint_failure_is_temporary(world: World, kind: str) -> None:
    """Entra ID answering 500, or resetting the connection, gives `-ERR [SYS/TEMP]`, never
    [AUTH]; the next login works."""
    world.entra.fail_next(1, kind)
    _assert_login_fails(world, CAROL, CAROL_PASSWORD, b"[SYS/TEMP]")
    world.wait_out_token_backoff()
    with _proxied(world, CAROL, CAROL_PASSWORD) as proxied:
        proxied.stat()


def test_upstream_down_is_temporary(world: World) -> None:
    """An unreachable upstream gives `-ERR [SYS/TEMP]`; the proxy keeps serving."""
    _assert_login_fails(world, ALICE, PASSWORD, b"[SYS/TEMP]", port="pop3-dead")
    with _proxied(world) as proxied:
        proxied.stat()


def test_curl_lists_messages(world: World, tmp_path: Path) -> None:
    """curl lists the mailbox through the proxy, the same list as a direct session."""
    curl = _require("curl")
    config = tmp_path / "curl.cfg"
    escaped = PASSWORD.replace("\\", "\\\\").replace('"', '\\"')
    config.write_text(f'user = "{ALICE}:{escaped}"\n')
    result = subprocess.run(
        [curl, "-sS", "--max-time", "20", "-K", str(config),
         f"pop3://127.0.0.1:{world.ports['pop3']}/"],
        check=False, capture_output=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    with _direct(world) as direct:
        expected = direct.list()[1]
    assert result.stdout.splitlines() == expected


def test_fetchmail_downloads_and_deletes(world: World, tmp_path: Path) -> None:
    """fetchmail (POP3, USER/PASS, nokeep) fetches every message and deletes it upstream."""
    fetchmail = _require("fetchmail")
    marker = uuid.uuid4().hex
    message = f"Subject: pop3 fetchmail\r\nFrom: x@y\r\n\r\n{marker}\r\n"
    world.dovecot.deliver(CAROL, message.encode())
    out = tmp_path / "mbox"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f"poll 127.0.0.1 service {world.ports['pop3']} protocol POP3 auth password\n"
        f"  user \"{CAROL}\" password \"{CAROL_PASSWORD}\" is root here\n"
        f"  nokeep fetchall sslproto '' mda \"/bin/sh -c 'cat >> {out}'\"\n"
    )
    rc.chmod(0o600)
    result = subprocess.run(
        [fetchmail, "-v", "-v", "-f", str(rc), "--nosyslog", "-N",
         "--idfile", str(tmp_path / "ids")],
        check=False, capture_output=True, text=True, timeout=60,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert marker.encode() in out.read_bytes()
    with _direct(world, CAROL) as direct:
        assert direct.stat()[0] == 0
