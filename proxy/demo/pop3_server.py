"""A minimal POP3 server standing in for outlook.office365.com:995, for `xoauth2-proxy demo` only.

Implicit TLS; sign-in only with `AUTH XOAUTH2` in two steps (`+`, then the base64 line), as
Microsoft documents; USER/PASS are refused like Office 365 refuses passwords. After sign-in:
STAT, LIST, UIDL, RETR, TOP, NOOP, RSET and QUIT on a snapshot of the demo INBOX. DELE is
refused: the demo mailbox keeps its messages.
"""

from __future__ import annotations

from twisted.internet.interfaces import IProtocolFactory
from twisted.logger import Logger

from .lineserver import LineServer, demo_factory
from .mailbox import DemoMailbox, Message

log = Logger(namespace="xoauth2-proxy.demo")


class Pop3Server(LineServer):
    def __init__(self, mailbox: DemoMailbox) -> None:
        self.mailbox = mailbox
        self.messages: list[Message] | None = None  # the maildrop, fixed at sign-in
        self.awaiting_response = False  # AUTH XOAUTH2 was sent; the next line is the response

    def connectionMade(self) -> None:
        self.send("+OK xoauth2-proxy demo POP3 server ready (stands in for "
                  "outlook.office365.com)")

    def lineReceived(self, line: bytes) -> None:
        if self.awaiting_response:
            self.awaiting_response = False
            self.finish_auth(line)
            return
        command, _, argument = line.decode("utf-8", "replace").partition(" ")
        command = command.upper()
        if command == "QUIT":
            self.send("+OK xoauth2-proxy demo POP3 server signing off")
            assert self.transport is not None
            self.transport.loseConnection()
        elif command == "CAPA":
            self.send("+OK Capability list follows")
            for capability in ("TOP", "UIDL", "SASL XOAUTH2", "."):
                self.send(capability)
        elif command == "NOOP":
            self.send("+OK")
        elif self.messages is None:
            self.before_sign_in(command, argument)
        else:
            self.transaction(command, argument.split(), self.messages)

    def before_sign_in(self, command: str, argument: str) -> None:
        if command == "AUTH" and argument.upper() == "XOAUTH2":
            self.awaiting_response = True
            self.send("+ ")
        elif command == "AUTH" and argument.upper().startswith("XOAUTH2 "):
            self.finish_auth(argument[len("XOAUTH2 "):].encode())
        elif command in ("USER", "PASS", "APOP"):
            # Like Office 365: passwords are refused; only OAuth2 (XOAUTH2) signs in.
            self.send("-ERR Authentication failure: unknown user name or bad password.")
        else:
            self.send(f"-ERR {command or 'An empty line'} is not allowed before signing in")

    def finish_auth(self, response: bytes) -> None:
        if response.strip() == b"*":
            self.send("-ERR Authentication cancelled")
        elif self.mailbox.accepts(response):
            self.messages = list(self.mailbox.messages)
            log.info("demo POP3 server: {mailbox} signed in with XOAUTH2",
                     mailbox=self.mailbox.address)
            self.send("+OK User successfully authenticated.")
        else:
            self.send("-ERR Authentication failure: unknown user name or bad password.")

    def transaction(self, command: str, args: list[str], messages: list[Message]) -> None:
        numbered = list(enumerate(messages, 1))
        if args:
            try:
                number = int(args[0])
                numbered = [numbered[number - 1]] if number >= 1 else []
            except (ValueError, IndexError):
                self.send("-ERR No such message")
                return
        if command == "STAT":
            self.send(f"+OK {len(messages)} {sum(len(m.data) for m in messages)}")
        elif command in ("LIST", "UIDL"):
            # Sequence numbers stand as UIDs: nothing is ever deleted and UIDs count from 1.
            values = [f"{n} {len(m.data) if command == 'LIST' else m.uid}" for n, m in numbered]
            if args:
                self.send(f"+OK {values[0]}")
            else:
                self.send(f"+OK {len(values)} messages")
                self.send_lines([v.encode() for v in values])
        elif command in ("RETR", "TOP"):
            if len(args) != (1 if command == "RETR" else 2) or not args[-1].isdigit():
                self.send(f"-ERR Syntax: {'RETR n' if command == 'RETR' else 'TOP n lines'}")
                return
            data = numbered[0][1].data
            if command == "TOP":
                head, _, body = data.partition(b"\r\n\r\n")
                data = head + b"\r\n\r\n" + b"\r\n".join(body.split(b"\r\n")[: int(args[1])])
            self.send(f"+OK {len(data)} octets")
            self.send_lines(data.split(b"\r\n"))
        elif command == "RSET":
            self.send("+OK")
        elif command == "DELE":
            self.send("-ERR The demo mailbox keeps its messages")
        else:
            self.send(f"-ERR {command} is not supported by the xoauth2-proxy demo server")

    def send_lines(self, lines: list[bytes]) -> None:
        """A multi-line answer: dot-stuffed, ended by a line with a single dot."""
        if lines and lines[-1] == b"":
            lines = lines[:-1]  # the message's final CRLF ends its last line
        for line in lines:
            self.send_line(b"." + line if line.startswith(b".") else line)
        self.send_line(b".")


def pop3_factory(mailbox: DemoMailbox) -> IProtocolFactory:
    return demo_factory(lambda: Pop3Server(mailbox), "demo POP3 server")
