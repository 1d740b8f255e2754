"""The real-Dovecot harness, proven with Python's own clients talking straight to it.

No proxy is involved: these tests pin down what the upstream the proxy is tested against says,
so a failure here means the harness (or the installed Dovecot) changed, not the proxy.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import json
import poplib
import random
import smtplib
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.dovecot import Dovecot, dovecot_available, session_processes
from tests.support.smtp_sink import SmtpSink

pytestmark = pytest.mark.integration

# What Dovecot's XOAUTH2 sends before failing (RFC 7628-style error, base64 in the challenge).
FAILURE_CHALLENGE = {"status": "401", "schemes": "bearer", "scope": "mail"}
# Entra ID access tokens are 1.5-2.5 KB; this padding makes the test JWT about 2.2 KB.
REAL_SIZE = {"pad": "x" * 1500}


def _xoauth2(mailbox: str, token: str) -> bytes:
    """The unencoded SASL XOAUTH2 initial client response."""
    return f"user={mailbox}\x01auth=Bearer {token}\x01\x01".encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _context(dovecot: Dovecot) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(dovecot.ca.cert_path))


def _message(size: int, subject: str, seed: int) -> bytes:
    """A CRLF message of about SIZE bytes with 8-bit text and lines that start with a dot."""
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "Grüße", "naïve", "日本語", ".", "..", "From", "-"]
    lines = [
        f"From: sender@example.test\r\nTo: rcpt@example.test\r\nSubject: {subject}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n".encode()
    ]
    total = len(lines[0])
    while total < size:
        line = " ".join(rng.choice(words) for _ in range(rng.randint(0, 120))).encode()
        if rng.random() < 0.05:
            line = b"." + line  # must survive dot-stuffing on every hop
        lines.append(line[:990] + b"\r\n")
        total += len(lines[-1])
    # The header block ends with the first empty line, which random lines could provide early.
    return lines[0] + b"\r\n" + b"".join(lines[1:])


def _imaps(dovecot: Dovecot) -> imaplib.IMAP4_SSL:
    return imaplib.IMAP4_SSL("127.0.0.1", dovecot.imaps_port, ssl_context=_context(dovecot))


class _POP3S(poplib.POP3_SSL):
    def command(self, line: str) -> bytes:
        """Send LINE, return the single-line reply; raises error_proto on -ERR.

        poplib has no AUTH method, so XOAUTH2 goes through its line-level helper.
        """
        reply: bytes = self._shortcmd(line)  # type: ignore[attr-defined]
        return reply


@contextlib.contextmanager
def _pop3s(dovecot: Dovecot) -> Iterator[_POP3S]:
    """poplib has no context manager of its own; close the socket even when a test fails."""
    client = _POP3S("127.0.0.1", dovecot.pop3s_port, context=_context(dovecot))
    try:
        yield client
    finally:
        client.close()


def _submission(dovecot: Dovecot) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", dovecot.submission_port, local_hostname="client.test")
    client.starttls(context=_context(dovecot))
    client.ehlo()
    return client


def test_imaps_xoauth2_lists_folders_and_fetches_delivered_message(
    dovecot_server: Dovecot,
) -> None:
    """IMAPS AUTHENTICATE XOAUTH2 with a minted token logs in and sees delivered mail as is."""
    mailbox = "imap-fetch@example.test"
    raw = _message(200_000, "imap fetch", seed=1)
    dovecot_server.deliver(mailbox, raw)
    dovecot_server.deliver(mailbox, b"Subject: filed\r\n\r\nsent copy\r\n", folder="Sent")
    token = dovecot_server.token(mailbox)
    with _imaps(dovecot_server) as client:
        typ, data = client.authenticate("XOAUTH2", lambda _challenge: _xoauth2(mailbox, token))
        assert typ == "OK"
        assert isinstance(data[0], bytes) and data[0].endswith(b"Logged in")
        typ, listing = client.list()
        assert typ == "OK"
        folders = {line.rsplit(b" ", 1)[-1] for line in listing if isinstance(line, bytes)}
        assert folders == {b"INBOX", b"Sent"}
        typ, count = client.select("INBOX", readonly=True)
        assert count == [b"1"]
        typ, fetched = client.fetch("1", "(BODY.PEEK[])")
        assert typ == "OK"
        assert isinstance(fetched[0], tuple)
        assert fetched[0][1] == raw
        typ, count = client.select("Sent", readonly=True)
        assert count == [b"1"]


def test_imaps_bad_token_gets_json_challenge_then_no(dovecot_server: Dovecot) -> None:
    """A bad token gets `+ <base64 JSON>`; an empty reply then gets NO, and the session stays."""
    mailbox = "imap-bad@example.test"
    challenges: list[bytes] = []

    def respond(challenge: bytes) -> bytes:
        challenges.append(challenge)
        # First the credentials, then the empty line that acknowledges the error challenge.
        return _xoauth2(mailbox, "not-a-jwt") if len(challenges) == 1 else b""

    with _imaps(dovecot_server) as client:
        with pytest.raises(imaplib.IMAP4.error, match=r"\[AUTHENTICATIONFAILED\]"):
            client.authenticate("XOAUTH2", respond)
        assert challenges[0] == b""
        assert json.loads(challenges[1]) == FAILURE_CHALLENGE
        # The connection survives a failed AUTHENTICATE: a good token still works on it.
        token = dovecot_server.token(mailbox)
        typ, _ = client.authenticate("XOAUTH2", lambda _challenge: _xoauth2(mailbox, token))
        assert typ == "OK"


@pytest.mark.parametrize(
    ("case", "mailbox_in_token"),
    [("expired", "imap-reject@example.test"), ("other-mailbox", "someone@example.test")],
)
def test_imaps_rejects_expired_token_and_token_for_other_mailbox(
    dovecot_server: Dovecot, case: str, mailbox_in_token: str
) -> None:
    """Dovecot checks exp and that the token's email claim equals the XOAUTH2 user=."""
    mailbox = "imap-reject@example.test"
    lifetime = -60 if case == "expired" else 3600
    token = dovecot_server.token(mailbox_in_token, lifetime)
    answers = iter([_xoauth2(mailbox, token), b""])
    with (
        _imaps(dovecot_server) as client,
        pytest.raises(imaplib.IMAP4.error, match=r"\[AUTHENTICATIONFAILED\]"),
    ):
        client.authenticate("XOAUTH2", lambda _challenge: next(answers))


def test_imaps_transcript_greeting_and_sasl_ir_with_real_size_token(
    dovecot_server: Dovecot,
) -> None:
    """The exact IMAPS greeting, and one-line SASL-IR XOAUTH2 with a 2 KB token succeeding."""
    mailbox = "imap-sasl-ir@example.test"
    token = dovecot_server.token(mailbox, extra_claims=REAL_SIZE)
    assert len(token) > 2000
    raw = socket.create_connection(("127.0.0.1", dovecot_server.imaps_port), timeout=10)
    with _context(dovecot_server).wrap_socket(raw, server_hostname="127.0.0.1") as conn:
        reader = conn.makefile("rb")
        assert reader.readline() == (
            b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+"
            b" AUTH=PLAIN AUTH=LOGIN AUTH=XOAUTH2 AUTH=OAUTHBEARER] Dovecot (Debian) ready.\r\n"
        )
        conn.sendall(f"a1 AUTHENTICATE XOAUTH2 {_b64(_xoauth2(mailbox, token))}\r\n".encode())
        reply = reader.readline()
        assert reply.startswith(b"a1 OK [CAPABILITY IMAP4rev1 ")
        assert reply.endswith(b"] Logged in\r\n")
        conn.sendall(b"a2 LOGOUT\r\n")
        assert reader.readline() == b"* BYE Logging out\r\n"


def test_pop3s_xoauth2_two_step_and_retr_of_multi_megabyte_message(
    dovecot_server: Dovecot,
) -> None:
    """POP3S AUTH XOAUTH2 in two steps logs in; RETR returns a 3 MB message byte for byte."""
    mailbox = "pop-retr@example.test"
    raw = _message(3 * 1024 * 1024, "pop retr", seed=2)
    dovecot_server.deliver(mailbox, raw)
    token = dovecot_server.token(mailbox, extra_claims=REAL_SIZE)
    with _pop3s(dovecot_server) as client:
        assert client.getwelcome() == b"+OK Dovecot (Debian) ready."
        assert client.command("AUTH XOAUTH2") == b"+ "
        assert client.command(_b64(_xoauth2(mailbox, token))) == b"+OK Logged in."
        count, size = client.stat()
        assert (count, size) == (1, len(raw))
        _, lines, octets = client.retr(1)
        # poplib strips the CRLFs and undoes the dot-stuffing; put the line ends back.
        assert b"\r\n".join(lines) + b"\r\n" == raw
        assert octets >= len(raw)
        client.quit()


def test_pop3s_bad_token_gets_challenge_then_err(dovecot_server: Dovecot) -> None:
    """POP3 answers a bad token with `+ <base64 JSON>`, then `-ERR [AUTH] ...failed.`."""
    mailbox = "pop-bad@example.test"
    with _pop3s(dovecot_server) as client:
        assert client.command("AUTH XOAUTH2") == b"+ "
        challenge = client.command(_b64(_xoauth2(mailbox, "not-a-jwt")))
        assert challenge.startswith(b"+ ")
        assert json.loads(base64.b64decode(challenge[2:])) == FAILURE_CHALLENGE
        with pytest.raises(poplib.error_proto) as failure:
            client.command("")
        assert failure.value.args[0] == b"-ERR [AUTH] Authentication failed."
        client.quit()


def test_submission_starttls_xoauth2_two_step_relays_message_to_sink(
    dovecot_server: Dovecot,
) -> None:
    """Submission: STARTTLS, two-step XOAUTH2, then a 3 MB 8-bit message reaches the sink intact.

    Dovecot prepends one Received: header and relays with DATA (the sink offers no CHUNKING);
    everything after that header, headers and body, arrives byte for byte.
    """
    mailbox = "smtp-send@example.test"
    raw = _message(3 * 1024 * 1024, "submission", seed=3)
    token = dovecot_server.token(mailbox, extra_claims=REAL_SIZE)
    sink = dovecot_server.sink
    before = len(sink.messages)
    with _submission(dovecot_server) as client:
        # Two-step: Dovecot refuses command lines over ~1 KB, so no initial response.
        client.auth(
            "XOAUTH2",
            lambda _challenge=None: _xoauth2(mailbox, token).decode(),
            initial_response_ok=False,
        )
        refused = client.sendmail(
            mailbox, ["rcpt@example.test", "cc@example.test"], raw, mail_options=["BODY=8BITMIME"]
        )
        assert refused == {}
    message = sink.wait_for_messages(before + 1, timeout=20)[before]
    assert message.mail_from == mailbox
    assert message.rcpt_tos == ["rcpt@example.test", "cc@example.test"]
    assert message.data.endswith(raw)
    added = message.data[: -len(raw)].split(b"\r\n")[:-1]
    assert added[0].startswith(b"Received: from client.test ([127.0.0.1])")
    assert all(line.startswith((b"\t", b" ")) for line in added[1:])
    assert "DATA" in sink.commands and not any(c.startswith("BDAT") for c in sink.commands)


def test_submission_transcript_ehlo_and_failures(dovecot_server: Dovecot) -> None:
    """Submission's EHLO lists, its 535 after the JSON challenge, and its ~1 KB line limit."""
    mailbox = "smtp-bad@example.test"
    with socket.create_connection(("127.0.0.1", dovecot_server.submission_port)) as raw:
        assert raw.makefile("rb").readline() == b"220 localhost Dovecot (Debian) ready.\r\n"
    client = smtplib.SMTP("127.0.0.1", dovecot_server.submission_port, local_hostname="client.test")
    try:
        code, features = client.ehlo()
        assert code == 250
        assert features.split(b"\n") == [
            b"localhost",
            b"8BITMIME",
            b"AUTH PLAIN LOGIN XOAUTH2 OAUTHBEARER",
            b"BURL imap",
            b"CHUNKING",
            b"ENHANCEDSTATUSCODES",
            b"SIZE",
            b"STARTTLS",
            b"PIPELINING",
        ]
        client.starttls(context=_context(dovecot_server))
        code, features = client.ehlo()
        assert b"STARTTLS" not in features.split(b"\n")
        assert b"AUTH PLAIN LOGIN XOAUTH2 OAUTHBEARER" in features.split(b"\n")

        assert client.docmd("AUTH", "XOAUTH2") == (334, b"")
        code, challenge = client.docmd(_b64(_xoauth2(mailbox, "not-a-jwt")))
        assert code == 334
        assert json.loads(base64.b64decode(challenge)) == FAILURE_CHALLENGE
        assert client.docmd("") == (535, b"5.7.8 Authentication failed.")

        # A real-size token in the one-line form exceeds the command line limit.
        token = dovecot_server.token(mailbox, extra_claims=REAL_SIZE)
        code, reply = client.docmd("AUTH", "XOAUTH2 " + _b64(_xoauth2(mailbox, token)))
        assert (code, reply) == (500, b"5.5.2 Line too long")
    finally:
        client.close()


def test_deliver_into_folder_is_visible_over_plain_imap(dovecot_server: Dovecot) -> None:
    """deliver() to a maildir++ folder shows up; the plain port offers STARTTLS and XOAUTH2."""
    mailbox = "imap-plain@example.test"
    dovecot_server.deliver(mailbox, b"Subject: one\r\n\r\n1\r\n", folder="Archive/2024")
    dovecot_server.deliver(mailbox, b"Subject: two\r\n\r\n2\r\n", folder="Archive/2024")
    token = dovecot_server.token(mailbox)
    with imaplib.IMAP4("127.0.0.1", dovecot_server.imap_port) as client:
        assert {"STARTTLS", "AUTH=XOAUTH2", "SASL-IR"} <= set(client.capabilities)
        # Loopback counts as secure to Dovecot, so auth works here without TLS.
        client.authenticate("XOAUTH2", lambda _challenge: _xoauth2(mailbox, token))
        typ, count = client.select('"Archive.2024"', readonly=True)
        assert (typ, count) == ("OK", [b"2"])


def test_smtp_sink_unstuffs_dots_keeps_8bit_and_stops_with_open_session() -> None:
    """The sink stores the message exactly as meant and stop() cuts a session left open."""
    raw = b"Subject: dots\r\n\r\n.starts with dot\r\n..two\r\n\xc3\xa9t\xc3\xa9\r\n.\r\nlast\r\n"
    sink = SmtpSink()
    sink.start()
    try:
        with smtplib.SMTP("127.0.0.1", sink.port) as client:
            client.sendmail("a@example.test", ["b@example.test"], raw)
        idle = smtplib.SMTP("127.0.0.1", sink.port)
        idle.ehlo()
        assert sink.wait_for_messages(1, timeout=5)[0] == (
            "a@example.test",
            ["b@example.test"],
            raw,
        )
    finally:
        sink.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", sink.port), timeout=2).close()
    idle.close()


def test_start_and_stop_leave_no_process_or_listener_behind(tmp_path: Path) -> None:
    """stop() ends the master and every child of a private Dovecot, and frees its ports."""
    reason = dovecot_available()
    if reason is not None:
        pytest.skip(reason)
    server = Dovecot(tmp_path / "own", jwt_key=b"k" * 32)
    server.start()
    try:
        session = server.master_pid
        assert session is not None and len(session_processes(session)) >= 4
        ports = (server.imaps_port, server.imap_port, server.pop3s_port, server.submission_port)
    finally:
        server.stop()
    assert session_processes(session) == []
    for port in ports:
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
