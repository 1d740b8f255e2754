"""SMTP submission through the proxy subprocess to a real Dovecot (which relays to a sink), with
real clients."""

from __future__ import annotations

import base64
import os
import shutil
import smtplib
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.integration.conftest import ALICE, CAROL, CAROL_PASSWORD, PASSWORD, World
from tests.support.smtp_sink import SinkMessage

pytestmark = pytest.mark.integration

TIMEOUT = 15
RECIPIENT = "bob@example.net"


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (tests/run.sh installs it when run as root)")
    return path


def _arrived(world: World, marker: bytes, timeout: float = 10) -> SinkMessage:
    """The message holding `marker` that Dovecot relayed to the sink."""
    deadline = time.monotonic() + timeout
    while True:
        for message in world.dovecot.sink.messages:
            if marker in message.data:
                return message
        if time.monotonic() > deadline:
            raise AssertionError(f"no message with {marker!r} reached the sink in {timeout}s")
        with suppress(TimeoutError):
            world.dovecot.sink.wait_for_messages(len(world.dovecot.sink.messages) + 1, 0.2)


@contextmanager
def _smtp(world: World, port: str = "smtp") -> Iterator[smtplib.SMTP]:
    client = smtplib.SMTP("127.0.0.1", world.ports[port], timeout=TIMEOUT)
    try:
        client.ehlo("client.test")
        yield client
    finally:
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            client.close()


def _auth(client: smtplib.SMTP, mechanism: str, user: str, password: str,
          initial_response: bool = True) -> tuple[int, bytes]:
    """AUTH with exactly `mechanism` (smtplib.login would pick one itself)."""
    client.user, client.password = user, password
    method = {"PLAIN": client.auth_plain, "LOGIN": client.auth_login}[mechanism]
    return client.auth(mechanism, method, initial_response_ok=initial_response)


def _message(marker: bytes, body: bytes) -> bytes:
    headers = (
        b"From: " + ALICE.encode() + b"\r\nTo: " + RECIPIENT.encode() + b"\r\n"
        b"Subject: " + marker + b"\r\nMessage-ID: <" + marker + b"@client.test>\r\n\r\n"
    )
    return headers + body


def _big_body() -> bytes:
    """About 3 MB of short CRLF lines, some starting with "." to exercise dot-stuffing."""
    lines = []
    for i in range(40_000):
        lead = b"." if i % 97 == 0 else b""
        lines.append(lead + b"line %06d " % i + os.urandom(28).hex().encode() + b"\r\n")
    return b"".join(lines)


@pytest.mark.parametrize(
    ("mechanism", "initial_response"),
    [("PLAIN", True), ("PLAIN", False), ("LOGIN", False), ("LOGIN", True)],
    ids=["plain-ir", "plain-two-step", "login", "login-ir"],
)
def test_auth_and_sendmail(world: World, mechanism: str, initial_response: bool) -> None:
    """EHLO + AUTH (PLAIN or LOGIN, with or without initial response) then sendmail: the message
    reaches the upstream's relay with the body intact."""
    marker = uuid.uuid4().hex.encode()
    body = b"Hello from smtplib " + marker + b"\r\n.leading dot\r\n"
    with _smtp(world) as client:
        code, _ = _auth(client, mechanism, ALICE, PASSWORD, initial_response)
        assert code == 235
        assert client.sendmail(ALICE, [RECIPIENT], _message(marker, body)) == {}
    arrived = _arrived(world, marker)
    assert arrived.mail_from == ALICE and arrived.rcpt_tos == [RECIPIENT]
    assert arrived.data.endswith(b"\r\n\r\n" + body)


def test_multi_megabyte_message_arrives_byte_identical(world: World) -> None:
    """A 3 MB message sent through the proxy arrives with its body byte-identical."""
    marker = uuid.uuid4().hex.encode()
    body = _big_body()
    message = _message(marker, body)
    with _smtp(world) as client:
        assert _auth(client, "PLAIN", ALICE, PASSWORD)[0] == 235
        assert client.sendmail(ALICE, [RECIPIENT], message) == {}
    arrived = _arrived(world, marker, timeout=20)
    assert len(arrived.data) >= len(message)
    # Dovecot may prepend trace headers; the sender's own headers and body come through as sent.
    assert arrived.data.endswith(message)


def test_printer_helo_auth_login_raw(world: World) -> None:
    """A printer-like client (HELO, AUTH LOGIN in three steps, a small attachment) is delivered."""
    marker = uuid.uuid4().hex
    attachment = base64.encodebytes(os.urandom(3000)).replace(b"\n", b"\r\n")
    data = (
        f"From: scanner@office.test\r\nTo: {RECIPIENT}\r\nSubject: Scan {marker}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XYZ\r\n\r\n"
        "--XYZ\r\nContent-Type: text/plain\r\n\r\nScanned document.\r\n"
        "--XYZ\r\nContent-Type: application/pdf; name=scan.pdf\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode() + attachment + b"--XYZ--\r\n"
    with socket.create_connection(("127.0.0.1", world.ports["smtp"]), timeout=TIMEOUT) as s:
        f = s.makefile("rwb")

        def say(line: bytes) -> bytes:
            f.write(line + b"\r\n")
            f.flush()
            return f.readline()

        assert f.readline().startswith(b"220")
        assert say(b"HELO printer").startswith(b"250 ")
        prompt = say(b"AUTH LOGIN")
        assert prompt.startswith(b"334 ") and base64.b64decode(prompt[4:].strip()) == b"Username:"
        prompt = say(base64.b64encode(ALICE.encode()))
        assert prompt.startswith(b"334 ") and base64.b64decode(prompt[4:].strip()) == b"Password:"
        assert say(base64.b64encode(PASSWORD.encode())).startswith(b"235")
        assert say(f"MAIL FROM:<{ALICE}>".encode()).startswith(b"250")
        assert say(f"RCPT TO:<{RECIPIENT}>".encode()).startswith(b"250")
        assert say(b"DATA").startswith(b"354")
        f.write(data + b".\r\n")
        f.flush()
        assert f.readline().startswith(b"250")
        assert say(b"QUIT").startswith(b"221")
    arrived = _arrived(world, marker.encode())
    assert arrived.data.endswith(data)


def test_pipelined_transaction_after_auth(world: World) -> None:
    """EHLO, AUTH PLAIN with initial response, MAIL, RCPT and DATA in one write (EHLO offers
    PIPELINING): every reply comes back and the message is delivered."""
    marker = uuid.uuid4().hex.encode()
    ir = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode())
    commands = (
        b"EHLO client.test\r\nAUTH PLAIN " + ir + b"\r\n"
        b"MAIL FROM:<" + ALICE.encode() + b">\r\nRCPT TO:<" + RECIPIENT.encode() + b">\r\nDATA\r\n"
    )
    data = _message(marker, b"pipelined\r\n")
    with socket.create_connection(("127.0.0.1", world.ports["smtp"]), timeout=TIMEOUT) as s:
        f = s.makefile("rwb")
        f.write(commands)
        f.flush()
        codes = []
        while not codes or codes[-1] != b"354":
            line = f.readline()
            assert line, f"connection closed after {codes}"
            if line[3:4] != b"-":
                codes.append(line[:3])
        assert codes == [b"220", b"250", b"235", b"250", b"250", b"354"], codes
        f.write(data + b".\r\nQUIT\r\n")
        f.flush()
        assert f.readline().startswith(b"250")
        assert f.readline().startswith(b"221")
    assert _arrived(world, marker).data.endswith(data)


def test_bdat_after_auth(world: World) -> None:
    """CHUNKING is offered in EHLO, so BDAT after login must work against the upstream."""
    marker = uuid.uuid4().hex.encode()
    data = _message(marker, b"sent with BDAT\r\n")
    with _smtp(world) as client:
        assert "chunking" in client.esmtp_features
        assert _auth(client, "PLAIN", ALICE, PASSWORD)[0] == 235
        assert client.mail(ALICE)[0] == 250
        assert client.rcpt(RECIPIENT)[0] == 250
        half = len(data) // 2
        client.send(b"BDAT %d\r\n" % half + data[:half])
        assert client.getreply()[0] == 250
        client.send(b"BDAT %d LAST\r\n" % (len(data) - half) + data[half:])
        assert client.getreply()[0] == 250
    assert _arrived(world, marker).data.endswith(data)


def test_mail_from_before_auth_is_refused(world: World) -> None:
    """MAIL FROM before AUTH gets `530 5.7.0`, and nothing is relayed."""
    with _smtp(world) as client:
        code, text = client.mail(ALICE)
        assert code == 530 and text.startswith(b"5.7.0"), (code, text)


def test_wrong_password_is_535_and_a_retry_works(world: World) -> None:
    """A wrong password gets `535 5.7.8`; the same connection then logs in and sends."""
    marker = uuid.uuid4().hex.encode()
    with _smtp(world) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as failure:
            _auth(client, "PLAIN", ALICE, "not the password")
        assert failure.value.smtp_code == 535
        assert failure.value.smtp_error.startswith(b"5.7.8"), failure.value.smtp_error
        assert _auth(client, "LOGIN", ALICE, PASSWORD, initial_response=False)[0] == 235
        client.sendmail(ALICE, [RECIPIENT], _message(marker, b"after a retry\r\n"))
    _arrived(world, marker)


@pytest.mark.parametrize("kind", ["500", "reset"])
def test_token_endpoint_failure_is_454(world: World, kind: str) -> None:
    """Entra ID answering 500, or resetting the connection, gives `454 4.7.0`, never 535; the
    next login works."""
    world.entra.fail_next(1, kind)
    with _smtp(world) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as failure:
            _auth(client, "PLAIN", CAROL, CAROL_PASSWORD)
        assert failure.value.smtp_code == 454
        assert failure.value.smtp_error.startswith(b"4.7.0"), failure.value.smtp_error
    world.wait_out_token_backoff()
    with _smtp(world) as client:
        assert _auth(client, "PLAIN", CAROL, CAROL_PASSWORD)[0] == 235


def test_upstream_down_is_454(world: World) -> None:
    """An unreachable upstream gives `454 4.7.0`; the proxy keeps serving."""
    with _smtp(world, "smtp-dead") as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as failure:
            _auth(client, "LOGIN", ALICE, PASSWORD)
        assert failure.value.smtp_code == 454
        assert failure.value.smtp_error.startswith(b"4.7.0"), failure.value.smtp_error
    with _smtp(world) as client:
        assert _auth(client, "LOGIN", ALICE, PASSWORD)[0] == 235


def test_msmtp_sends_a_message(world: World, tmp_path: Path) -> None:
    """msmtp (AUTH PLAIN, no TLS, password with quotes and a backslash) sends through the proxy."""
    msmtp = _require("msmtp")
    marker = uuid.uuid4().hex.encode()
    config = tmp_path / "msmtprc"
    config.write_text(
        "account default\n"
        "host 127.0.0.1\n"
        f"port {world.ports['smtp']}\n"
        "auth plain\n"  # `auth on` never picks a cleartext method without TLS
        f"user {ALICE}\n"
        # msmtp has no escapes: the rest of the line is the password (quotes only strip at ends).
        f"password {PASSWORD}\n"
        "tls off\n"
        f"from {ALICE}\n"
        "timeout 15\n"
    )
    config.chmod(0o600)
    message = _message(marker, b"sent by msmtp\r\n")
    result = subprocess.run(
        [msmtp, "-C", str(config), "-t"],
        input=message, check=False, capture_output=True, timeout=30,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    arrived = _arrived(world, marker)
    assert arrived.rcpt_tos == [RECIPIENT]
    assert arrived.data.endswith(b"\r\n\r\nsent by msmtp\r\n")


def test_s_nail_sends_with_auth_login(world: World, tmp_path: Path) -> None:
    """s-nail (AUTH LOGIN, user and password URL-encoded in the mta URL) sends through the proxy."""
    s_nail = _require("s-nail")
    marker = uuid.uuid4().hex
    credentials = f"{quote(ALICE, safe='')}:{quote(PASSWORD, safe='')}"
    url = f"smtp://{credentials}@127.0.0.1:{world.ports['smtp']}"
    result = subprocess.run(
        [s_nail, "-v", "-#", "-:/", "-S", "v15-compat", "-S", f"mta={url}", "-S", "smtp-auth=login",
         "-S", "sendwait", "-S", f"DEAD={tmp_path / 'dead.letter'}", "-S", "ttycharset=utf-8",
         "-r", ALICE, "-s", f"s-nail {marker}", RECIPIENT],
        input=f"sent by s-nail {marker}\n".encode(), check=False, capture_output=True, timeout=30,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    arrived = _arrived(world, f"sent by s-nail {marker}".encode())
    assert arrived.rcpt_tos == [RECIPIENT]


def test_curl_sends_a_message(world: World, tmp_path: Path) -> None:
    """curl (which prefers AUTH PLAIN) uploads a message through the proxy."""
    curl = _require("curl")
    marker = uuid.uuid4().hex.encode()
    config = tmp_path / "curl.cfg"
    escaped = PASSWORD.replace("\\", "\\\\").replace('"', '\\"')
    config.write_text(f'user = "{ALICE}:{escaped}"\n')
    message = tmp_path / "message.eml"
    message.write_bytes(_message(marker, b"sent by curl\r\n"))
    result = subprocess.run(
        [curl, "-sS", "--max-time", "20", "-K", str(config),
         "--mail-from", ALICE, "--mail-rcpt", RECIPIENT, "--upload-file", str(message),
         f"smtp://127.0.0.1:{world.ports['smtp']}/client.test"],
        check=False, capture_output=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert _arrived(world, marker).data.endswith(b"\r\n\r\nsent by curl\r\n")


def test_no_secret_in_the_log(world: World) -> None:
    """After POP3 and SMTP sessions, failures included, the proxy's log holds no password,
    token or XOAUTH2 string."""
    with _smtp(world) as client:
        assert _auth(client, "LOGIN", ALICE, PASSWORD)[0] == 235
    log = world.proxy.log_text()
    for secret in (PASSWORD, CAROL_PASSWORD, "eyJ", "dXNlcj", "auth=Bearer",
                   base64.b64encode(PASSWORD.encode()).decode()):
        assert secret not in log, f"{secret!r} found in the proxy log"
