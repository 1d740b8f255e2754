"""Lean blocking mail clients for timing: the same code drives a direct session and a proxied one.

Direct means what a device would do without a proxy: TLS (implicit for IMAP and POP3, STARTTLS
for SMTP) and SASL XOAUTH2 with a cached token. Through a proxy it is a plain connection and
the local password (IMAP LOGIN, POP3 USER/PASS, SMTP AUTH PLAIN). Bulk data is read into one
reused buffer and dropped, so the client itself copies as little as it can.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

READ_SIZE = 1 << 18


@dataclass(frozen=True)
class Access:
    """How a client reaches one protocol of one target and logs in there."""

    port: int
    user: str
    password: str = ""  # through a proxy: log in with this
    xoauth2: bytes = b""  # direct: the base64 XOAUTH2 initial response (cached token)
    tls: ssl.SSLContext | None = None  # direct: verify the server with this

    @property
    def direct(self) -> bool:
        return self.tls is not None


class ServerSaidNo(Exception):
    """The server refused a command; the message holds its answer."""


class Conn:
    def __init__(self, port: int, tls: ssl.SSLContext | None = None, timeout: float = 120) -> None:
        self.sock: socket.socket = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls is not None:
            self.start_tls(tls)
        self.buffer = bytearray()
        self._scratch = memoryview(bytearray(READ_SIZE))

    def start_tls(self, tls: ssl.SSLContext) -> None:
        self.sock = tls.wrap_socket(self.sock, server_hostname="127.0.0.1")

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        """The next line, without its CRLF."""
        while True:
            end = self.buffer.find(b"\r\n")
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 2]
                return line
            chunk = self.sock.recv(READ_SIZE)
            if not chunk:
                raise ConnectionError(f"closed by the server after {bytes(self.buffer[:200])!r}")
            self.buffer += chunk

    def skip(self, count: int) -> None:
        """Read and drop exactly `count` bytes."""
        held = min(count, len(self.buffer))
        del self.buffer[:held]
        count -= held
        while count > 0:
            got = self.sock.recv_into(self._scratch, min(count, READ_SIZE))
            if got == 0:
                raise ConnectionError(f"closed by the server with {count} bytes still owed")
            count -= got

    def skip_through(self, terminator: bytes) -> int:
        """Read and drop everything up to and including `terminator`; how many bytes came before it."""
        window, before = self.buffer, 0
        while (found := window.find(terminator)) < 0:
            cut = max(0, len(window) - len(terminator) + 1)
            before += cut
            del window[:cut]
            chunk = self.sock.recv(READ_SIZE)
            if not chunk:
                raise ConnectionError("closed by the server before the end of the data")
            window += chunk
        self.buffer = window[found + len(terminator) :]
        return before + found


@contextlib.contextmanager
def closed_on_failure(conn: Conn) -> Iterator[None]:
    """A login that fails leaves no connection behind."""
    try:
        yield
    except BaseException:
        conn.close()
        raise


# -- IMAP --

def _imap_until_tagged(conn: Conn, tag: bytes) -> bytes:
    """Read up to the tagged answer to `tag`; answer a failure challenge with an empty line."""
    while True:
        line = conn.line()
        if line.startswith(b"+"):
            conn.send(b"\r\n")
        elif line.startswith(tag + b" "):
            if line[len(tag) + 1 :].startswith(b"OK"):
                return line
            raise ServerSaidNo(line.decode("utf-8", "replace"))


def imap_quote(text: str) -> bytes:
    return b'"' + text.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"'


def imap_login(access: Access, timeout: float = 120) -> Conn:
    conn = Conn(access.port, access.tls, timeout)
    with closed_on_failure(conn):
        greeting = conn.line()
        if not greeting.startswith(b"* OK"):
            raise ServerSaidNo(greeting.decode("utf-8", "replace"))
        if access.direct:
            conn.send(b"a AUTHENTICATE XOAUTH2 " + access.xoauth2 + b"\r\n")
        else:
            conn.send(b"a LOGIN " + imap_quote(access.user) + b" " + imap_quote(access.password) + b"\r\n")
        _imap_until_tagged(conn, b"a")
    return conn


def imap_logout(conn: Conn) -> None:
    conn.send(b"z LOGOUT\r\n")
    _imap_until_tagged(conn, b"z")
    conn.close()


def imap_select(conn: Conn) -> None:
    conn.send(b"s EXAMINE INBOX\r\n")
    _imap_until_tagged(conn, b"s")


def imap_uids_by_size(conn: Conn) -> dict[int, int]:
    """{size: uid} of the messages in the selected mailbox."""
    conn.send(b"u UID FETCH 1:* (RFC822.SIZE)\r\n")
    sizes = {}
    while not (line := conn.line()).startswith(b"u "):
        words = line.replace(b"(", b" ").replace(b")", b" ").split()
        if b"RFC822.SIZE" in words and b"UID" in words:
            sizes[int(words[words.index(b"RFC822.SIZE") + 1])] = int(words[words.index(b"UID") + 1])
    return sizes


def imap_fetch(conn: Conn, uid: int, stop_after: int | None = None) -> int:
    """FETCH a whole message and drop it; its size. With `stop_after`, return once that many
    bytes of it are read, leaving the rest unread (see `imap_finish_fetch`)."""
    conn.send(b"f UID FETCH %d BODY.PEEK[]\r\n" % uid)
    while True:
        line = conn.line()
        if line.endswith(b"}") and b"{" in line:
            size = int(line[line.rindex(b"{") + 1 : -1])
            if stop_after is not None:
                conn.skip(stop_after)
                return size
            conn.skip(size)
        elif line.startswith(b"f "):
            if not line.startswith(b"f OK"):
                raise ServerSaidNo(line.decode("utf-8", "replace"))
            return 0


def imap_finish_fetch(conn: Conn, remaining: int) -> None:
    conn.skip(remaining)
    _imap_until_tagged(conn, b"f")


# -- POP3 --

def _pop3_ok(conn: Conn) -> bytes:
    while (line := conn.line()).startswith(b"+ "):
        conn.send(b"\r\n")  # a failure challenge
    if not line.startswith(b"+OK"):
        raise ServerSaidNo(line.decode("utf-8", "replace"))
    return line


def pop3_login(access: Access, timeout: float = 120) -> Conn:
    conn = Conn(access.port, access.tls, timeout)
    with closed_on_failure(conn):
        _pop3_ok(conn)
        if access.direct:
            conn.send(b"AUTH XOAUTH2 " + access.xoauth2 + b"\r\n")
        else:
            conn.send(b"USER " + access.user.encode() + b"\r\n")
            _pop3_ok(conn)
            conn.send(b"PASS " + access.password.encode() + b"\r\n")
        _pop3_ok(conn)
    return conn


def pop3_quit(conn: Conn) -> None:
    conn.send(b"QUIT\r\n")
    _pop3_ok(conn)
    conn.close()


def pop3_numbers_by_size(conn: Conn) -> dict[int, int]:
    """{size: message number} from LIST."""
    conn.send(b"LIST\r\n")
    _pop3_ok(conn)
    sizes = {}
    while (line := conn.line()) != b".":
        number, size = line.split()[:2]
        sizes[int(size)] = int(number)
    return sizes


def pop3_retr(conn: Conn, number: int) -> int:
    """RETR a message and drop it; the bytes received (dot-stuffed, CRLF line ends)."""
    conn.send(b"RETR %d\r\n" % number)
    _pop3_ok(conn)
    return conn.skip_through(b"\r\n.\r\n") + 2


# -- SMTP --

def _smtp_reply(conn: Conn, expected: bytes) -> bytes:
    """The whole (possibly multi-line) reply; ServerSaidNo unless its code starts with `expected`."""
    while True:
        line = conn.line()
        if line[3:4] != b"-":
            break
    if line.startswith(b"334"):  # a failure challenge: answer empty, the refusal follows
        conn.send(b"\r\n")
        return _smtp_reply(conn, expected)
    if not line.startswith(expected):
        raise ServerSaidNo(line.decode("utf-8", "replace"))
    return line


def smtp_login(access: Access, timeout: float = 120) -> Conn:
    conn = Conn(access.port, None, timeout)
    with closed_on_failure(conn):
        _smtp_reply(conn, b"220")
        conn.send(b"EHLO bench.example\r\n")
        _smtp_reply(conn, b"250")
        if access.tls is not None:
            conn.send(b"STARTTLS\r\n")
            _smtp_reply(conn, b"220")
            conn.start_tls(access.tls)
            conn.send(b"EHLO bench.example\r\n")
            _smtp_reply(conn, b"250")
            conn.send(b"AUTH XOAUTH2 " + access.xoauth2 + b"\r\n")
        else:
            plain = base64.b64encode(f"\0{access.user}\0{access.password}".encode())
            conn.send(b"AUTH PLAIN " + plain + b"\r\n")
        _smtp_reply(conn, b"235")
    return conn


def smtp_send(conn: Conn, sender: str, recipient: str, dot_stuffed: bytes) -> None:
    """One message: `dot_stuffed` is the DATA payload with its final CRLF, without the '.' line."""
    for command, expected in ((f"MAIL FROM:<{sender}>", b"250"), (f"RCPT TO:<{recipient}>", b"250"),
                              ("DATA", b"354")):
        conn.send(command.encode() + b"\r\n")
        _smtp_reply(conn, expected)
    conn.send(dot_stuffed)
    conn.send(b".\r\n")
    _smtp_reply(conn, b"250")


def smtp_quit(conn: Conn) -> None:
    conn.send(b"QUIT\r\n")
    _smtp_reply(conn, b"221")
    conn.close()
