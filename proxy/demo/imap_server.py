"""A minimal IMAP4rev1 server standing in for outlook.office365.com, for `xoauth2-proxy demo` only.

It serves one in-memory INBOX over implicit TLS and accepts only AUTHENTICATE XOAUTH2 (with
SASL-IR or in two steps), like Office 365 today. After login it knows LIST, LSUB, SELECT,
EXAMINE, STATUS, FETCH and STORE (also as UID commands), CLOSE, UNSELECT, CHECK, NOOP and LOGOUT:
enough for imaplib, curl and simple mail programs. Anything else gets an honest BAD. It is
demonstration code, not a mail server: no literals from clients, no SEARCH, ENVELOPE,
BODYSTRUCTURE, APPEND or EXPUNGE.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable

from twisted.internet.interfaces import IProtocolFactory
from twisted.logger import Logger

from .imap_fetch import Unsupported, fetch
from .lineserver import LineServer, demo_factory
from .mailbox import DemoMailbox, Message

log = Logger(namespace="xoauth2-proxy.demo")

CAPABILITIES_BEFORE = "IMAP4rev1 AUTH=XOAUTH2 SASL-IR"
CAPABILITIES_AFTER = "IMAP4rev1 UNSELECT"
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
ARGUMENT = re.compile(r'"((?:[^"\\]|\\.)*)"|(\([^)]*\))|(\S+)')
FETCH_ITEM = re.compile(r"BODY(?:\.PEEK)?\[[^\]]*\](?:<\d+\.\d+>)?|[A-Za-z0-9.]+")
MACROS = {"FAST": "FLAGS INTERNALDATE RFC822.SIZE"}
LITERAL = re.compile(rb"\{\d+\+?\}$")

ANY_STATE = {"CAPABILITY", "NOOP", "LOGOUT"}
NOT_AUTHENTICATED = {"AUTHENTICATE", "LOGIN"}
AUTHENTICATED = {"LIST", "LSUB", "SELECT", "EXAMINE", "STATUS"}
SELECTED = {"FETCH", "STORE", "CLOSE", "UNSELECT", "CHECK"}


class ImapServer(LineServer):
    def __init__(self, mailbox: DemoMailbox) -> None:
        self.mailbox = mailbox
        self.authenticated = False
        self.selected = False
        self.writable = False  # SELECT (read-write) or EXAMINE (read-only)
        self.exists = 0  # messages the client has been told about in the selected INBOX
        self.pending_auth: str | None = None  # tag of a two-step AUTHENTICATE awaiting its line

    def connectionMade(self) -> None:
        self.send(f"* OK [CAPABILITY {CAPABILITIES_BEFORE}] xoauth2-proxy demo IMAP server "
                  "ready (stands in for outlook.office365.com)")

    def lineReceived(self, line: bytes) -> None:
        if self.pending_auth is not None:
            tag, self.pending_auth = self.pending_auth, None
            self.finish_authenticate(tag, line)
            return
        tag, _, rest = line.decode("utf-8", "replace").partition(" ")
        command, _, args = rest.partition(" ")
        command = command.upper()
        uid = command == "UID"
        if uid:
            command, _, args = args.partition(" ")
            command = command.upper()
        if not tag or not command:
            self.send(f"{tag or '*'} BAD Expected: tag command arguments")
        elif LITERAL.search(line):
            self.send(f"{tag} BAD The demo server does not take literals; use quoted strings")
        elif uid and command not in ("FETCH", "STORE"):
            self.send(f"{tag} BAD UID {command} is not supported by the demo server")
        elif command in self.allowed():
            handler: Callable[[str, str, bool], None] = getattr(self, "do_" + command)
            try:
                handler(tag, args, uid)
            except Unsupported as e:
                self.send(f"{tag} BAD {e}")
        elif command in NOT_AUTHENTICATED | AUTHENTICATED | SELECTED:
            self.send(f"{tag} BAD {command} is not allowed in this state")
        else:
            self.send(f"{tag} BAD {command} is not supported by the xoauth2-proxy demo server")

    def allowed(self) -> set[str]:
        """The commands of the session's state (RFC 3501, section 3)."""
        if not self.authenticated:
            return ANY_STATE | NOT_AUTHENTICATED
        return ANY_STATE | AUTHENTICATED | (SELECTED if self.selected else set())

    # -- any state --

    def do_CAPABILITY(self, tag: str, args: str, uid: bool) -> None:
        self.send(f"* CAPABILITY {CAPABILITIES_AFTER if self.authenticated else CAPABILITIES_BEFORE}")
        self.send(f"{tag} OK CAPABILITY completed.")

    def do_NOOP(self, tag: str, args: str, uid: bool) -> None:
        if self.selected and len(self.mailbox.messages) > self.exists:
            self.exists = len(self.mailbox.messages)  # a message arrived through SMTP
            self.send(f"* {self.exists} EXISTS")
        self.send(f"{tag} OK NOOP completed.")

    def do_LOGOUT(self, tag: str, args: str, uid: bool) -> None:
        self.send("* BYE xoauth2-proxy demo IMAP server logging out")
        self.send(f"{tag} OK LOGOUT completed.")
        self.close()

    # -- not authenticated --

    def do_LOGIN(self, tag: str, args: str, uid: bool) -> None:
        # Like Office 365: passwords are refused; only OAuth2 (XOAUTH2) signs in.
        self.send(f"{tag} NO LOGIN failed.")

    def do_AUTHENTICATE(self, tag: str, args: str, uid: bool) -> None:
        mechanism, _, initial = args.partition(" ")
        if mechanism.upper() != "XOAUTH2":
            self.send(f"{tag} NO Unsupported authentication mechanism.")
        elif initial:
            self.finish_authenticate(tag, initial.encode())
        else:
            self.pending_auth = tag
            self.send("+ ")

    def finish_authenticate(self, tag: str, response: bytes) -> None:
        if response.strip() == b"*":
            self.send(f"{tag} BAD AUTHENTICATE cancelled.")
        elif self.mailbox.accepts(response):
            self.authenticated = True
            log.info("demo IMAP server: {mailbox} signed in with XOAUTH2",
                     mailbox=self.mailbox.address)
            self.send(f"{tag} OK [CAPABILITY {CAPABILITIES_AFTER}] AUTHENTICATE completed.")
        else:
            self.send(f"{tag} NO AUTHENTICATE failed.")

    # -- authenticated --

    def do_LIST(self, tag: str, args: str, uid: bool, verb: str = "LIST") -> None:
        arguments = _arguments(args)
        if len(arguments) != 2:
            raise Unsupported(f"{verb} takes a reference and a mailbox pattern")
        pattern = arguments[1]
        if pattern == "":
            self.send(f'* {verb} (\\Noselect) "/" ""')  # the hierarchy delimiter
        elif fnmatch.fnmatchcase("INBOX", pattern.upper().replace("%", "*")):
            self.send(f'* {verb} ({"" if verb == "LSUB" else chr(92) + "HasNoChildren"}) "/" INBOX')
        self.send(f"{tag} OK {verb} completed.")

    def do_LSUB(self, tag: str, args: str, uid: bool) -> None:
        self.do_LIST(tag, args, uid, "LSUB")

    def do_SELECT(self, tag: str, args: str, uid: bool, access: str = "READ-WRITE") -> None:
        if [name.upper() for name in _arguments(args)] != ["INBOX"]:
            self.selected = False
            self.send(f"{tag} NO [NONEXISTENT] The demo server has only INBOX.")
            return
        self.selected = True
        self.writable = access == "READ-WRITE"
        self.exists = len(self.mailbox.messages)
        flags = " ".join(SYSTEM_FLAGS)
        self.send(f"* FLAGS ({flags})")
        self.send(f"* OK [PERMANENTFLAGS ({flags})] Flags permitted.")
        self.send(f"* {self.exists} EXISTS")
        self.send("* 0 RECENT")
        self.send("* OK [UIDVALIDITY 1] UIDs valid.")
        self.send(f"* OK [UIDNEXT {self.exists + 1}] The next unique identifier value.")
        verb = "SELECT" if access == "READ-WRITE" else "EXAMINE"
        self.send(f"{tag} OK [{access}] {verb} completed.")

    def do_EXAMINE(self, tag: str, args: str, uid: bool) -> None:
        self.do_SELECT(tag, args, uid, "READ-ONLY")

    def do_STATUS(self, tag: str, args: str, uid: bool) -> None:
        arguments = _arguments(args)
        if len(arguments) != 2 or arguments[0].upper() != "INBOX":
            self.send(f"{tag} NO [NONEXISTENT] The demo server has only INBOX.")
            return
        messages = self.mailbox.messages
        values = {"MESSAGES": len(messages), "RECENT": 0, "UIDNEXT": len(messages) + 1,
                  "UIDVALIDITY": 1,
                  "UNSEEN": sum("\\Seen" not in m.flags for m in messages)}
        wanted = arguments[1].strip("()").upper().split()
        if not set(wanted) <= set(values):
            raise Unsupported("STATUS items: " + " ".join(values))
        self.send(f"* STATUS INBOX ({' '.join(f'{w} {values[w]}' for w in wanted)})")
        self.send(f"{tag} OK STATUS completed.")

    # -- selected --

    def do_CHECK(self, tag: str, args: str, uid: bool) -> None:
        self.send(f"{tag} OK CHECK completed.")

    def do_CLOSE(self, tag: str, args: str, uid: bool) -> None:
        self.selected = False  # nothing is expunged: the demo mailbox keeps its messages
        self.send(f"{tag} OK CLOSE completed.")

    def do_UNSELECT(self, tag: str, args: str, uid: bool) -> None:
        self.selected = False
        self.send(f"{tag} OK UNSELECT completed.")

    def do_FETCH(self, tag: str, args: str, uid: bool) -> None:
        numbers, _, items = args.partition(" ")
        names = FETCH_ITEM.findall(MACROS.get(items.upper(), items))
        if not names:
            raise Unsupported("FETCH needs a message set and data items")
        for message in self.resolve(numbers):
            self.send_line(b"* %d FETCH (%s)" % (message.uid, fetch(message, names, uid)))
        self.send(f"{tag} OK {'UID ' if uid else ''}FETCH completed.")

    def do_STORE(self, tag: str, args: str, uid: bool) -> None:
        numbers, _, rest = args.partition(" ")
        operation, _, flag_list = rest.partition(" ")
        kind = operation.upper().removesuffix(".SILENT")
        if kind not in ("FLAGS", "+FLAGS", "-FLAGS"):
            raise Unsupported("STORE takes FLAGS, +FLAGS or -FLAGS")
        if not self.writable:
            self.send(f"{tag} NO [READ-ONLY] The mailbox was opened with EXAMINE.")
            return
        flags = {_normal_flag(f) for f in flag_list.strip("()").split()}
        for message in self.resolve(numbers):
            if kind == "FLAGS":
                message.flags = set(flags)
            elif kind == "+FLAGS":
                message.flags |= flags
            else:
                message.flags -= flags
            if not operation.upper().endswith(".SILENT"):
                self.send_line(b"* %d FETCH (%s)" % (message.uid, fetch(message, ["FLAGS"], uid)))
        self.send(f"{tag} OK STORE completed.")

    def resolve(self, numbers: str) -> list[Message]:
        """The messages of a sequence set. Nothing is ever expunged and UIDs count up from 1,
        so a message's sequence number and its UID are the same, and one resolver serves both."""
        visible = self.mailbox.messages[: self.exists]
        chosen: set[int] = set()
        for part in numbers.split(","):
            low, _, high = part.partition(":")
            try:
                first = len(visible) if low == "*" else int(low)
                last = first if not high else len(visible) if high == "*" else int(high)
            except ValueError:
                raise Unsupported(f"Not a message set: {numbers}") from None
            first, last = sorted((first, last))
            chosen.update(range(max(first, 1), min(last, len(visible)) + 1))
        return [visible[n - 1] for n in sorted(chosen)]


def _normal_flag(flag: str) -> str:
    """System flags compare case-insensitively; keep one spelling of each."""
    return next((f for f in SYSTEM_FLAGS if f.lower() == flag.lower()), flag)


def _arguments(text: str) -> list[str]:
    """Quoted strings (unescaped), parenthesised lists (kept whole) and atoms."""
    found = []
    for quoted, group, atom in ARGUMENT.findall(text):
        found.append(re.sub(r"\\(.)", r"\1", quoted) if not (group or atom) else group or atom)
    return found


def imap_factory(mailbox: DemoMailbox) -> IProtocolFactory:
    return demo_factory(lambda: ImapServer(mailbox), "demo IMAP server")
