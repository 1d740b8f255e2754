"""Scan to e-mail through Microsoft Graph: the proxy as a subprocess between real SMTP clients
and the local fakes of Graph and Entra ID (tests/support/graph_world.py)."""

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
from contextlib import contextmanager
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import quote

import pytest

from proxy.tokens.broker import BACKOFF_FIRST
from tests.support.fake_graph import REQUEST_LIMIT, Message
from tests.support.graph_setup import scan_message
from tests.support.graph_world import NOSEND, PASSWORD, SCANNER, SMALL, GraphWorld, open_graph_world

pytestmark = pytest.mark.integration

TIMEOUT = 30
BOB = "bob@contoso.example"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GraphWorld]:
    with open_graph_world(tmp_path_factory.mktemp("graph-world")) as opened:
        yield opened


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (tests/run.sh installs it when run as root)")
    return path


@contextmanager
def _smtp(world: GraphWorld, user: str = SCANNER, listener: str = "graph") -> Iterator[smtplib.SMTP]:
    client = smtplib.SMTP("127.0.0.1", world.ports[listener], timeout=TIMEOUT)
    try:
        client.ehlo("printer.test")
        client.login(user, PASSWORD)
        yield client
    finally:
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            client.close()


def _message(marker: str, sender: str = SCANNER, body: str = "Scanned.\n") -> bytes:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, BOB, f"Scan {marker}"
    message.set_content(body)
    return message.as_bytes(policy=policy.SMTP)


def _delivered(world: GraphWorld, marker: str, timeout: float = 10) -> list[Message]:
    """The deliveries to the fake Graph whose subject holds `marker`."""
    deadline = time.monotonic() + timeout
    while True:
        found = [m for m in world.graph.deliveries if marker in _subject(m)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _subject(message: Message) -> str:
    if message.mime is not None:
        return str(message_from_bytes(message.mime, policy=policy.default)["Subject"])
    return str(message.fields.get("subject", ""))


def test_ehlo_offers_what_a_graph_listener_does(world: GraphWorld) -> None:
    """EHLO offers SIZE (35 MB by default), 8BITMIME, PIPELINING, CHUNKING,
    ENHANCEDSTATUSCODES and AUTH PLAIN LOGIN."""
    with smtplib.SMTP("127.0.0.1", world.ports["graph"], timeout=TIMEOUT) as client:
        client.ehlo("printer.test")
        features = client.esmtp_features
    assert features["size"] == str(35 * 1024 * 1024)
    for keyword in ("8bitmime", "pipelining", "chunking", "enhancedstatuscodes"):
        assert keyword in features
    assert "PLAIN" in features["auth"] and "LOGIN" in features["auth"]


def test_smtplib_message_arrives_byte_identical(world: GraphWorld) -> None:
    """A message whose recipients are all in To/Cc reaches Graph's sendMail byte for byte;
    250 comes only after Graph accepted it."""
    marker = uuid.uuid4().hex
    raw = _message(marker)
    with _smtp(world) as client:
        assert client.sendmail(SCANNER, [BOB], raw) == {}
    [sent] = _delivered(world, marker)
    assert sent.mime == raw and sent.mailbox == SCANNER


def test_envelope_only_recipient_goes_as_bcc(world: GraphWorld) -> None:
    """A recipient given only in RCPT TO is delivered as Bcc."""
    marker = uuid.uuid4().hex
    with _smtp(world) as client:
        client.sendmail(SCANNER, [BOB, "carol@contoso.example"], _message(marker))
    [sent] = _delivered(world, marker)
    assert sent.addresses("to") == [BOB] and sent.addresses("bcc") == ["carol@contoso.example"]


def test_one_transaction_per_recipient_delivers_each_once(world: GraphWorld) -> None:
    """A message whose To names two people, sent as one transaction for each (as a relaying
    MTA may), reaches each of them once: the envelope, not the header, decides."""
    marker = uuid.uuid4().hex
    message = EmailMessage()
    message["From"], message["To"] = SCANNER, f"{BOB}, carol@contoso.example"
    message["Subject"] = f"Scan {marker}"
    message.set_content("Scanned.\n")
    raw = message.as_bytes(policy=policy.SMTP)
    with _smtp(world) as client:
        for recipient in (BOB, "carol@contoso.example"):
            assert client.sendmail(SCANNER, [recipient], raw) == {}
    sent = _delivered(world, marker)
    assert sorted(tuple(m.addresses("to") + m.addresses("cc") + m.addresses("bcc"))
                  for m in sent) == [(BOB,), ("carol@contoso.example",)]


def test_pipelined_transaction(world: GraphWorld) -> None:
    """EHLO, AUTH PLAIN, MAIL, RCPT and DATA in one write, then the message and QUIT in
    another: every answer comes back in order, 250 after Graph's 202."""
    marker = uuid.uuid4().hex
    ir = base64.b64encode(f"\0{SCANNER}\0{PASSWORD}".encode())
    with socket.create_connection(("127.0.0.1", world.ports["graph"]), timeout=TIMEOUT) as s:
        f = s.makefile("rwb")
        f.write(b"EHLO printer\r\nAUTH PLAIN " + ir + b"\r\nMAIL FROM:<" + SCANNER.encode() +
                b">\r\nRCPT TO:<" + BOB.encode() + b">\r\nDATA\r\n")
        f.flush()
        codes: list[bytes] = []
        while not codes or codes[-1] != b"354":
            line = f.readline()
            assert line, codes
            if line[3:4] != b"-":
                codes.append(line[:3])
        assert codes == [b"220", b"250", b"235", b"250", b"250", b"354"]
        f.write(_message(marker) + b".\r\nQUIT\r\n")
        f.flush()
        assert f.readline().startswith(b"250 2.0.0")
        assert f.readline().startswith(b"221")
    assert len(_delivered(world, marker)) == 1


def test_bdat_chunks(world: GraphWorld) -> None:
    """CHUNKING: a message in two BDAT chunks reaches Graph as the two joined."""
    marker = uuid.uuid4().hex
    raw = _message(marker, body="sent with BDAT\n.\n")
    with _smtp(world) as client:
        assert client.mail(SCANNER)[0] == 250 and client.rcpt(BOB)[0] == 250
        half = len(raw) // 2
        client.send(b"BDAT %d\r\n" % half + raw[:half])
        assert client.getreply()[0] == 250
        client.send(b"BDAT %d LAST\r\n" % (len(raw) - half) + raw[half:])
        assert client.getreply()[0] == 250
    [sent] = _delivered(world, marker)
    assert sent.mime == raw


def test_printer_sends_a_10_mb_scan(world: GraphWorld) -> None:
    """A printer's HELO, AUTH LOGIN step by step and a 10 MB PDF: the draft Graph sends carries
    the PDF's exact bytes, the subject and the recipients."""
    pdf = b"%PDF-1.4\n" + os.urandom(10 * 1024 * 1024)
    data = scan_message(pdf, sender=SCANNER, to=BOB, cc="carol@contoso.example")
    with socket.create_connection(("127.0.0.1", world.ports["graph"]), timeout=TIMEOUT) as s:
        f = s.makefile("rwb")

        def say(line: bytes) -> bytes:
            f.write(line + b"\r\n")
            f.flush()
            return f.readline()

        assert f.readline().startswith(b"220")
        assert say(b"HELO printer").startswith(b"250 ")
        assert say(b"AUTH LOGIN").startswith(b"334 ")
        assert say(base64.b64encode(SCANNER.encode())).startswith(b"334 ")
        assert say(base64.b64encode(PASSWORD.encode())).startswith(b"235")
        assert say(f"MAIL FROM:<{SCANNER}>".encode()).startswith(b"250")
        assert say(f"RCPT TO:<{BOB}>".encode()).startswith(b"250")
        assert say(b"RCPT TO:<carol@contoso.example>").startswith(b"250")
        assert say(b"DATA").startswith(b"354")
        f.write(data.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        f.flush()
        assert f.readline().startswith(b"250 2.0.0"), "no 250 after the scan"
        assert say(b"QUIT").startswith(b"221")
    [sent] = [m for m in world.graph.deliveries if m.fields.get("subject") == "Scanned document ✓"]
    assert [a.content for a in sent.attachments if a.name == "scan.pdf"] == [pdf]
    assert sent.addresses("to") == [BOB] and sent.addresses("cc") == ["carol@contoso.example"]


def test_msmtp(world: GraphWorld, tmp_path: Path) -> None:
    """msmtp (AUTH PLAIN, no TLS) sends through the Graph listener."""
    msmtp = _require("msmtp")
    marker = uuid.uuid4().hex
    config = tmp_path / "msmtprc"
    config.write_text(f"account default\nhost 127.0.0.1\nport {world.ports['graph']}\n"
                      f"auth plain\nuser {SCANNER}\npassword {PASSWORD}\ntls off\n"
                      f"from {SCANNER}\ntimeout 20\n")
    config.chmod(0o600)
    result = subprocess.run([msmtp, "-C", str(config), "-t"], input=_message(marker),
                            capture_output=True, timeout=60, check=False,
                            env={**os.environ, "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(_delivered(world, marker)) == 1


def test_s_nail(world: GraphWorld, tmp_path: Path) -> None:
    """s-nail (AUTH LOGIN) sends through the Graph listener."""
    s_nail = _require("s-nail")
    marker = uuid.uuid4().hex
    credentials = f"{quote(SCANNER, safe='')}:{quote(PASSWORD, safe='')}"
    result = subprocess.run(
        [s_nail, "-#", "-:/", "-S", "v15-compat", "-S",
         f"mta=smtp://{credentials}@127.0.0.1:{world.ports['graph']}", "-S", "smtp-auth=login",
         "-S", "sendwait", "-S", f"DEAD={tmp_path / 'dead.letter'}", "-S", "ttycharset=utf-8",
         "-r", SCANNER, "-s", f"Scan {marker}", BOB],
        input=b"sent by s-nail\n", capture_output=True, timeout=60, check=False,
        env={**os.environ, "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(_delivered(world, marker)) == 1


def test_curl(world: GraphWorld, tmp_path: Path) -> None:
    """curl uploads a message through the Graph listener; Graph gets it byte for byte."""
    curl = _require("curl")
    marker = uuid.uuid4().hex
    config = tmp_path / "curl.cfg"
    escaped = PASSWORD.replace("\\", "\\\\").replace('"', '\\"')
    config.write_text(f'user = "{SCANNER}:{escaped}"\n')
    raw = _message(marker)
    (tmp_path / "message.eml").write_bytes(raw)
    result = subprocess.run(
        [curl, "-sS", "--max-time", "30", "-K", str(config), "--mail-from", SCANNER,
         "--mail-rcpt", BOB, "--upload-file", str(tmp_path / "message.eml"),
         f"smtp://127.0.0.1:{world.ports['graph']}/printer.test"],
        capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    [sent] = _delivered(world, marker)
    assert sent.mime == raw


def _send_expecting(world: GraphWorld, marker: str, user: str = SCANNER,
                    listener: str = "graph", raw: bytes | None = None) -> tuple[int, bytes]:
    """Send one message; the SMTP code and text of the answer to its end."""
    with _smtp(world, user, listener) as client:
        assert client.mail(user)[0] == 250 and client.rcpt(BOB)[0] == 250
        return client.data(raw or _message(marker, sender=user))


def test_throttled_then_sent_once(world: GraphWorld) -> None:
    """Graph's 429: the device gets 451 4.4.5 and retries; the retry is delivered, once."""
    marker = uuid.uuid4().hex
    world.graph.fail_next(1, "429", step="sendMail")
    code, text = _send_expecting(world, marker)
    assert (code, text[:5]) == (451, b"4.4.5"), text
    assert _delivered(world, marker, timeout=0) == []
    assert _send_expecting(world, marker)[0] == 250
    assert len(_delivered(world, marker)) == 1
    assert "Retry-After 1s" in world.proxy.log_text()


def test_access_denied_is_550_and_nothing_is_sent(world: GraphWorld) -> None:
    """Graph's 403 ErrorAccessDenied: 550 5.7.1 naming Mail.Send; nothing is delivered."""
    marker = uuid.uuid4().hex
    code, text = _send_expecting(world, marker, user=NOSEND)
    assert code == 550 and text.startswith(b"5.7.1") and b"Mail.Send" in text, text
    assert _delivered(world, marker, timeout=0) == []


def test_large_message_without_mail_readwrite_is_552(world: GraphWorld) -> None:
    """Over about 3 MB the draft path needs Mail.ReadWrite: an app with Mail.Send alone gets
    552 5.3.4 naming the permission, and no draft is left behind."""
    marker = uuid.uuid4().hex
    raw = _message(marker, sender=SMALL, body="x" * 70 + "\n") + b"".join(
        b"%070d\r\n" % i for i in range(50_000))
    code, text = _send_expecting(world, marker, user=SMALL, raw=raw)
    assert code == 552 and text.startswith(b"5.3.4") and b"Mail.ReadWrite" in text, text
    assert world.graph.drafts(SMALL) == []


def test_send_mail_413_goes_as_a_draft(world: GraphWorld) -> None:
    """Graph refuses a sendMail request as too large (413): the message goes through the draft
    path and the device gets 250; an app without Mail.ReadWrite gets 552 5.3.4 naming it."""
    marker = uuid.uuid4().hex
    raw = _message(marker, body="x" * 70 + "\n") + b"".join(b"%070d\r\n" % i for i in range(300))
    world.graph.send_mail_limit = 10_000
    try:
        assert _send_expecting(world, marker, raw=raw)[0] == 250
        code, text = _send_expecting(world, marker, user=SMALL,
                                     raw=raw.replace(SCANNER.encode(), SMALL.encode()))
    finally:
        world.graph.send_mail_limit = REQUEST_LIMIT
    [sent] = _delivered(world, marker)
    assert sent.mime is None and sent.mailbox == SCANNER  # a draft, not sendMail's MIME
    assert code == 552 and text.startswith(b"5.3.4") and b"Mail.ReadWrite" in text, text
    assert "as a draft instead" in world.proxy.log_text()


def test_graph_down_is_451(world: GraphWorld) -> None:
    """Nothing listening at graph_url: 451 4.4.1; the proxy keeps serving."""
    code, text = _send_expecting(world, uuid.uuid4().hex, listener="graph-dead")
    assert code == 451 and text.startswith(b"4.4.1"), text
    assert _send_expecting(world, uuid.uuid4().hex)[0] == 250


def test_refused_token_is_refreshed_once(world: GraphWorld) -> None:
    """Graph answers 401 to the token it knows: the proxy gets a new one, without the device's
    password, and sends again; the device sees 250."""
    marker = uuid.uuid4().hex
    before = world.entra.token_requests()
    with _smtp(world) as client:
        world.graph.revoke_seen()
        assert client.sendmail(SCANNER, [BOB], _message(marker)) == {}
    assert world.entra.token_requests() == before + 1
    assert len(_delivered(world, marker)) == 1


def test_token_endpoint_down_is_451_then_works(world: GraphWorld) -> None:
    """Graph refuses the token and Entra ID is down: 451 4.7.0 (never a 5xx); once Entra ID is
    back, the device's retry goes through."""
    marker = uuid.uuid4().hex
    world.graph.revoke_seen()
    world.entra.fail_next(1, "500")
    code, text = _send_expecting(world, marker)
    assert code == 451 and text.startswith(b"4.7.0"), text
    time.sleep(BACKOFF_FIRST + 0.2)
    assert _send_expecting(world, marker)[0] == 250
    assert len(_delivered(world, marker)) == 1


def _spool_files(world: GraphWorld) -> list[str]:
    """The proxy's open files in its TMPDIR (the spool of a message being received)."""
    fds = Path(f"/proc/{world.proxy.pid}/fd")
    found = []
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(world.tmp)):
            found.append(target)
    return found


def test_client_gone_mid_data_removes_the_spool(world: GraphWorld) -> None:
    """A message past the in-memory part is in a deleted temporary file of the proxy's own;
    when the client disappears mid-DATA that file is closed and nothing is sent."""
    marker = uuid.uuid4().hex
    client = smtplib.SMTP("127.0.0.1", world.ports["graph"], timeout=TIMEOUT)
    client.ehlo("printer.test")
    client.login(SCANNER, PASSWORD)
    client.mail(SCANNER)
    client.rcpt(BOB)
    client.putcmd("data")
    assert client.getreply()[0] == 354
    client.send(_message(marker) + b"x" * 1_000_000 + b"\r\n")
    deadline = time.monotonic() + 10
    while not (files := _spool_files(world)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert files and all(f.endswith("(deleted)") for f in files), files
    client.close()
    while _spool_files(world) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _spool_files(world) == []
    assert _delivered(world, marker, timeout=0) == []


def test_account_check_reads_the_graph_permissions(world: GraphWorld) -> None:
    """`account check` says what the Graph token allows: exit 0 with Mail.Send and
    Mail.ReadWrite; for an app-only token without Mail.Send (RBAC for Applications may grant
    it outside the token) a note on how to verify that, and exit 0 too."""
    good = world.proxy.cli("account", "check", SCANNER, "--password-stdin", stdin=PASSWORD + "\n")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "Mail.Send and Mail.ReadWrite" in good.stdout and "graph" in good.stdout
    app = world.proxy.cli("account", "check", NOSEND, "--password-stdin", stdin=PASSWORD + "\n")
    assert app.returncode == 0, app.stdout + app.stderr
    assert "note: Mail.Send is not in the token" in app.stdout
    assert (f"Test-ServicePrincipalAuthorization -Identity app-{NOSEND} -Resource {NOSEND}"
            in app.stdout)


def test_no_secret_in_the_log(world: GraphWorld) -> None:
    """After all of the above, the log holds no password, token or bearer header."""
    log = world.proxy.log_text()
    assert "sent through sendMail" in log and "request-id" in log
    for secret in (PASSWORD, "eyJ", "Bearer", base64.b64encode(PASSWORD.encode()).decode()):
        assert secret not in log, secret


def _memory_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def test_receiving_50_mb_keeps_memory_bounded(world: GraphWorld) -> None:
    """A session that receives and sends a 50 MB scan raises the proxy's resident memory by
    less than 5 MB: the message goes through a spool file and Graph in pieces."""
    pid = world.proxy.pid
    _send_expecting(world, uuid.uuid4().hex, listener="graph-big")  # warm the code paths up
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM starts again from VmRSS
    before = _memory_kb(pid, "VmRSS")
    pdf = os.urandom(36 * 1024 * 1024)  # 50 MB once base64 encoded
    data = scan_message(pdf, sender=SCANNER, to=BOB)
    assert len(data) > 50_000_000
    with _smtp(world, listener="graph-big") as client:
        assert client.mail(SCANNER, [f"SIZE={len(data)}"])[0] == 250
        assert client.rcpt(BOB)[0] == 250
        client.putcmd("data")
        assert client.getreply()[0] == 354
        for start in range(0, len(data), 1 << 20):
            client.send(data[start : start + (1 << 20)])
        client.send(b".\r\n")
        code, text = client.getreply()
    assert code == 250, text
    grown = _memory_kb(pid, "VmHWM") - before
    assert grown < 5 * 1024, f"resident memory grew by {grown} kB"
    [sent] = [m for m in world.graph.deliveries if any(a.content == pdf for a in m.attachments)]
    assert sent.mailbox == SCANNER
