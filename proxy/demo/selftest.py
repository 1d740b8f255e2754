"""`xoauth2-proxy demo --self-test`: scripted legacy clients against the running demo.

Python's own imaplib, poplib and smtplib log in to the proxy with the local password, exactly
as an old mail program or a printer would; the proxy signs in to the demo servers with XOAUTH2.
These functions block: the runner calls them in a thread so the reactor keeps serving.
"""

from __future__ import annotations

import imaplib
import poplib
import secrets
import smtplib
from collections.abc import Callable
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default

from .mailbox import WELCOME, Submission

CLIENT_TIMEOUT = 10.0  # seconds per socket operation; a hung check must not hang shutdown

Report = Callable[[str, str], None]  # (protocol, what worked)


class CheckFailed(Exception):
    pass


@dataclass(frozen=True)
class Target:
    host: str
    imap: int
    pop3: int
    smtp: int
    graph: int  # the SMTP listener that sends through Microsoft Graph
    user: str
    password: str
    submissions: Callable[[], list[Submission]]  # what the demo SMTP server and Graph stored


def run_checks(target: Target, say: Callable[[str], None]) -> bool:
    """Run every check, one line each; True when all passed."""
    failed = 0

    def ok(protocol: str, text: str) -> None:
        say(f"ok    {protocol:<4}  {text}")

    for protocol, check in (("IMAP", check_imap), ("IMAP", check_wrong_password),
                            ("POP3", check_pop3), ("SMTP", check_smtp),
                            ("SCAN", check_scan_through_graph)):
        try:
            check(target, ok)
        except Exception as e:  # any client error is a failed check, reported with its text
            failed += 1
            say(f"FAIL  {protocol:<4}  {e.__class__.__name__}: {e}")
    if failed:
        say(f"self-test FAILED: {failed} check group(s) failed")
    else:
        say("self-test passed: the proxy served IMAP, POP3 and SMTP with XOAUTH2 upstream, "
            "and sent a scan through Microsoft Graph")
    return not failed


def _expect(condition: bool, problem: str) -> None:
    if not condition:
        raise CheckFailed(problem)


def check_imap(t: Target, ok: Report) -> None:
    with imaplib.IMAP4(t.host, t.imap, timeout=CLIENT_TIMEOUT) as imap:
        imap.login(t.user, t.password)
        ok("IMAP", f"LOGIN {t.user} with the local password; the proxy signed in upstream "
           "with AUTHENTICATE XOAUTH2 over verified TLS")
        status, listing = imap.list()
        _expect(status == "OK" and any(isinstance(line, bytes) and b"INBOX" in line for line in listing),
                f"LIST answered {status} {listing!r}")
        ok("IMAP", "LIST shows INBOX")
        status, data = imap.select("INBOX")
        _expect(status == "OK", f"SELECT INBOX answered {status} {data!r}")
        count = int(data[0] or 0)
        status, fetched = imap.fetch("1", "(RFC822)")
        first = fetched[0]
        _expect(status == "OK" and isinstance(first, tuple) and WELCOME.encode() in first[1],
                f"FETCH 1 answered {status} without the welcome message")
        ok("IMAP", f'SELECT INBOX: {count} messages; FETCH 1 (RFC822) is "{WELCOME}"')
        imap.logout()


def check_wrong_password(t: Target, ok: Report) -> None:
    with imaplib.IMAP4(t.host, t.imap, timeout=CLIENT_TIMEOUT) as imap:
        try:
            imap.login(t.user, "wrong-" + t.password)
        except imaplib.IMAP4.error as e:
            _expect("AUTHENTICATIONFAILED" in str(e), f"refused, but with: {e}")
            ok("IMAP", "a wrong local password is refused ([AUTHENTICATIONFAILED]); "
               "nothing was sent upstream")
            return
    raise CheckFailed("a wrong local password was accepted")


def check_pop3(t: Target, ok: Report) -> None:
    pop = poplib.POP3(t.host, t.pop3, timeout=CLIENT_TIMEOUT)
    try:
        pop.user(t.user)
        pop.pass_(t.password)
        ok("POP3", f"USER/PASS {t.user}; the proxy signed in upstream with AUTH XOAUTH2")
        count, size = pop.stat()
        _expect(count >= 1, f"STAT says {count} messages")
        _, lines, _ = pop.retr(1)
        _expect(any(WELCOME.encode() in line for line in lines), "RETR 1 lacks the welcome")
        ok("POP3", f'STAT: {count} messages, {size} bytes; RETR 1 is "{WELCOME}"')
        pop.quit()
    finally:
        pop.close()


def check_smtp(t: Target, ok: Report) -> None:
    subject = f"Sent by the demo self-test {secrets.token_hex(4)}"
    with smtplib.SMTP(t.host, t.smtp, timeout=CLIENT_TIMEOUT) as smtp:
        smtp.ehlo("self-test.invalid")
        # AUTH LOGIN, step by step, as the scan-to-mail printers this proxy is for do it.
        smtp.user, smtp.password = t.user, t.password
        code, _ = smtp.auth("LOGIN", smtp.auth_login, initial_response_ok=False)
        ok("SMTP", f"AUTH LOGIN {t.user} ({code}); the proxy did STARTTLS and AUTH XOAUTH2 "
           "upstream")
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = t.user, t.user, subject
        message.set_content("Sent through xoauth2-proxy by `xoauth2-proxy demo --self-test`.\n")
        refused = smtp.send_message(message)
        _expect(not refused, f"recipients refused: {refused}")
        ok("SMTP", "MAIL FROM, RCPT TO, DATA accepted")
    stored = [s for s in t.submissions() if subject.encode() in s.data]
    _expect(len(stored) == 1, "the demo mail server did not store the message")
    ok("SMTP", f'the demo mail server stored "{subject}" for {", ".join(stored[0].recipients)}')


def check_scan_through_graph(t: Target, ok: Report) -> None:
    subject = f"Scan from the demo self-test {secrets.token_hex(4)}"
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = t.user, t.user, subject
    message.set_content("Scanned document attached.\n")
    pdf = b"%PDF-1.4\n% a page from the demo scanner\n" + secrets.token_bytes(20_000)
    message.add_attachment(pdf, maintype="application", subtype="pdf", filename="scan.pdf")
    with smtplib.SMTP(t.host, t.graph, timeout=CLIENT_TIMEOUT) as smtp:
        smtp.ehlo("scanner.invalid")
        smtp.user, smtp.password = t.user, t.password
        smtp.auth("LOGIN", smtp.auth_login, initial_response_ok=False)
        ok("SCAN", f"AUTH LOGIN {t.user} on the Graph listener; the proxy took a Microsoft "
           "Graph token for the account")
        refused = smtp.send_message(message)
        _expect(not refused, f"recipients refused: {refused}")
    stored = [s for s in t.submissions() if s.through_graph and subject.encode() in s.data]
    _expect(len(stored) == 1, "the demo Microsoft Graph did not receive the scan")
    parsed = message_from_bytes(stored[0].data, policy=default)
    attached = [part.get_content() for part in parsed.walk() if part.get_filename() == "scan.pdf"]
    _expect(attached == [pdf], "the scan arrived without its PDF, or with other bytes")
    ok("SCAN", f'the scan "{subject}" arrived through Graph\'s sendMail, PDF attached, for '
       f'{", ".join(stored[0].recipients)}')
