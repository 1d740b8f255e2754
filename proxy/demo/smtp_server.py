"""A minimal SMTP submission server standing in for smtp.office365.com:587, for
`xoauth2-proxy demo` only.

Plain TCP with STARTTLS, as on port 587: before TLS, EHLO offers STARTTLS and no AUTH; after it,
`AUTH XOAUTH2` (two-step or with an initial response) is the only way to sign in. Then MAIL,
RCPT and DATA; each accepted message is kept in memory (DemoMailbox.submit), and one addressed to
the demo mailbox also lands in its INBOX. Nothing is ever relayed anywhere.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IProtocolFactory
from twisted.logger import Logger

from .lineserver import LineServer, demo_factory
from .mailbox import DemoMailbox

log = Logger(namespace="xoauth2-proxy.demo")

HOST = "127.0.0.1"
EXTENSIONS_BEFORE_TLS = ("STARTTLS", "ENHANCEDSTATUSCODES")
EXTENSIONS_AFTER_TLS = ("SIZE 35882577", "8BITMIME", "AUTH XOAUTH2", "ENHANCEDSTATUSCODES")


class SmtpServer(LineServer):
    MAX_LENGTH = 65536

    def __init__(self, mailbox: DemoMailbox, tls_options: Any) -> None:
        self.mailbox = mailbox
        self.tls_options = tls_options
        self.tls = False
        self.greeted = False  # EHLO/HELO seen since the connection or STARTTLS began
        self.signed_in = False
        self.awaiting_response = False  # AUTH XOAUTH2 was sent; the next line is the response
        self.mail_from: str | None = None
        self.recipients: list[str] = []
        self.data: list[bytes] | None = None  # lines of a message being received

    def connectionMade(self) -> None:
        self.send(f"220 {HOST} xoauth2-proxy demo ESMTP service ready (stands in for "
                  "smtp.office365.com)")

    def lineReceived(self, line: bytes) -> None:
        if self.data is not None:
            self.message_line(line)
            return
        if self.awaiting_response:
            self.awaiting_response = False
            self.finish_auth(line)
            return
        verb, _, argument = line.decode("utf-8", "replace").partition(" ")
        verb = verb.upper()
        handler = getattr(self, "do_" + verb, None) if verb.isalpha() else None
        if handler is None:
            self.send(f"502 5.5.2 {verb or 'An empty line'} is not implemented by the demo server")
        else:
            handler(argument.strip())

    def do_EHLO(self, argument: str) -> None:
        self.greeted = True
        self.reset()
        extensions = EXTENSIONS_AFTER_TLS if self.tls else EXTENSIONS_BEFORE_TLS
        lines = [f"{HOST} Hello {argument}", *extensions]
        for line in lines[:-1]:
            self.send(f"250-{line}")
        self.send(f"250 {lines[-1]}")

    def do_HELO(self, argument: str) -> None:
        self.greeted = True
        self.reset()
        self.send(f"250 {HOST} Hello {argument}")

    def do_STARTTLS(self, argument: str) -> None:
        if self.tls:
            self.send("503 5.5.1 TLS is already active")
            return
        self.send("220 2.0.0 SMTP server ready")
        # What the client sent after STARTTLS in clear must not count as sent over TLS.
        self.discard_buffered()
        assert self.transport is not None
        self.transport.startTLS(self.tls_options)  # type: ignore[attr-defined]
        self.tls, self.greeted, self.signed_in = True, False, False
        self.reset()

    def do_AUTH(self, argument: str) -> None:
        mechanism, _, initial = argument.partition(" ")
        if not self.tls:
            self.send("530 5.7.0 Must issue a STARTTLS command first")
        elif not self.greeted:
            self.send("503 5.5.1 Send EHLO first")  # RFC 3207: again after STARTTLS
        elif self.signed_in:
            self.send("503 5.5.1 Already authenticated")
        elif mechanism.upper() != "XOAUTH2":
            self.send("504 5.7.4 Unrecognized authentication type")
        elif initial:
            self.finish_auth(initial.encode())
        else:
            self.awaiting_response = True
            self.send("334 ")

    def finish_auth(self, response: bytes) -> None:
        if response.strip() == b"*":
            self.send("501 5.7.0 Authentication cancelled")
        elif self.mailbox.accepts(response):
            self.signed_in = True
            log.info("demo SMTP server: {mailbox} signed in with XOAUTH2",
                     mailbox=self.mailbox.address)
            self.send("235 2.7.0 Authentication successful")
        else:
            self.send("535 5.7.3 Authentication unsuccessful")

    def do_MAIL(self, argument: str) -> None:
        if not self.signed_in:
            self.send("530 5.7.57 Client not authenticated to send mail")
        elif not argument.upper().startswith("FROM:"):
            self.send("501 5.5.4 Syntax: MAIL FROM:<address>")
        else:
            self.reset()
            self.mail_from = _address(argument[len("FROM:"):])
            self.send("250 2.1.0 Sender OK")

    def do_RCPT(self, argument: str) -> None:
        if self.mail_from is None:
            self.send("503 5.5.1 Need MAIL command first")
        elif not argument.upper().startswith("TO:") or not _address(argument[len("TO:"):]):
            self.send("501 5.5.4 Syntax: RCPT TO:<address>")
        else:
            self.recipients.append(_address(argument[len("TO:"):]))
            self.send("250 2.1.5 Recipient OK")

    def do_DATA(self, argument: str) -> None:
        if not self.recipients:
            self.send("503 5.5.1 Need RCPT command first")
            return
        self.data = []
        self.send("354 Start mail input; end with <CRLF>.<CRLF>")

    def message_line(self, line: bytes) -> None:
        assert self.data is not None and self.mail_from is not None
        if line != b".":
            self.data.append(line[1:] if line.startswith(b".") else line)  # undo dot-stuffing
            return
        body = b"".join(part + b"\r\n" for part in self.data)
        self.mailbox.submit(self.mail_from, tuple(self.recipients), body)
        log.info("demo SMTP server: accepted a message of {size} bytes for {count} recipient(s)",
                 size=len(body), count=len(self.recipients))
        self.data = None
        self.reset()
        self.send("250 2.6.0 Queued mail for delivery")

    def do_RSET(self, argument: str) -> None:
        self.reset()
        self.send("250 2.0.0 Resetting")

    def do_NOOP(self, argument: str) -> None:
        self.send("250 2.0.0 OK")

    def do_QUIT(self, argument: str) -> None:
        self.send("221 2.0.0 Service closing transmission channel")
        self.close()

    def reset(self) -> None:
        self.mail_from, self.recipients = None, []


def _address(text: str) -> str:
    """The address in `<a@b> PARAMS` (parameters such as SIZE= and BODY= are ignored)."""
    text = text.strip()
    if text.startswith("<"):
        return text[1: text.find(">")] if ">" in text else ""
    return text.split(" ", 1)[0]


def smtp_factory(mailbox: DemoMailbox, tls_options: Any) -> IProtocolFactory:
    return demo_factory(lambda: SmtpServer(mailbox, tls_options), "demo SMTP server")
