"""A minimal real SMTP server on 127.0.0.1 that keeps every message it is given.

Dovecot's submission service relays to it. It deliberately does not advertise CHUNKING, so relays
must use DATA, whose dot-stuffing it undoes; the stored bytes are the message exactly as the
sender meant it (CRLF line ends, final CRLF included, terminating "." line excluded).
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from typing import NamedTuple

# Larger than any message a test sends, advertised so relays can pass SIZE= through.
MAX_SIZE = 200 * 1024 * 1024
# Command lines are short; data lines are read in chunks of this size so a huge line is harmless.
_MAX_COMMAND = 4096
_DATA_CHUNK = 65536


class SinkMessage(NamedTuple):
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


def _address(argument: str) -> str:
    """The address inside <...> of a MAIL FROM / RCPT TO argument (parameters ignored)."""
    start = argument.find("<")
    end = argument.find(">", start + 1)
    if start == -1 or end == -1:
        return argument.split(" ", 1)[0]
    return argument[start + 1 : end]


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.sink._track(self.request, add=True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):  # the peer or stop() already closed the socket
            super().finish()
        self.server.sink._track(self.request, add=False)

    def _reply(self, text: str) -> None:
        self.wfile.write(text.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self) -> None:
        sink = self.server.sink
        self._reply("220 sink.test ESMTP test sink ready")
        mail_from: str | None = None
        rcpt_tos: list[str] = []
        while True:
            line = self.rfile.readline(_MAX_COMMAND)
            if not line:
                return
            if not line.endswith(b"\n"):
                self._reply("500 5.5.2 Line too long")
                return
            command = line.rstrip(b"\r\n").decode("utf-8", "replace")
            sink._log_command(command)
            verb, _, argument = command.partition(" ")
            verb = verb.upper()
            if verb == "EHLO":
                self.wfile.write(
                    b"250-sink.test\r\n"
                    b"250-PIPELINING\r\n"
                    b"250-8BITMIME\r\n"
                    b"250-ENHANCEDSTATUSCODES\r\n" + f"250 SIZE {MAX_SIZE}\r\n".encode()
                )
                self.wfile.flush()
                mail_from, rcpt_tos = None, []
            elif verb == "HELO":
                self._reply("250 sink.test")
                mail_from, rcpt_tos = None, []
            elif verb == "MAIL" and argument.upper().startswith("FROM:"):
                mail_from, rcpt_tos = _address(argument[5:].strip()), []
                self._reply("250 2.1.0 Ok")
            elif verb == "RCPT" and argument.upper().startswith("TO:"):
                if mail_from is None:
                    self._reply("503 5.5.1 MAIL first")
                    continue
                rcpt_tos.append(_address(argument[3:].strip()))
                self._reply("250 2.1.5 Ok")
            elif verb == "DATA":
                if mail_from is None or not rcpt_tos:
                    self._reply("503 5.5.1 RCPT first")
                    continue
                self._reply("354 End data with <CR><LF>.<CR><LF>")
                data = self._read_data()
                if data is None:
                    return
                sink._store(SinkMessage(mail_from, rcpt_tos, data))
                self._reply("250 2.0.0 Ok: queued")
                mail_from, rcpt_tos = None, []
            elif verb == "RSET":
                mail_from, rcpt_tos = None, []
                self._reply("250 2.0.0 Ok")
            elif verb == "NOOP":
                self._reply("250 2.0.0 Ok")
            elif verb == "QUIT":
                self._reply("221 2.0.0 Bye")
                return
            else:
                self._reply("502 5.5.2 Command not implemented")

    def _read_data(self) -> bytes | None:
        """Read up to the lone "." line, undoing dot-stuffing; None if the peer went away."""
        parts: list[bytes] = []
        at_line_start = True
        while True:
            chunk = self.rfile.readline(_DATA_CHUNK)
            if not chunk:
                return None
            if at_line_start:
                if chunk == b".\r\n" or chunk == b".\n":
                    return b"".join(parts)
                if chunk.startswith(b"."):
                    chunk = chunk[1:]
            parts.append(chunk)
            at_line_start = chunk.endswith(b"\n")


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink
        super().__init__(("127.0.0.1", 0), _Handler)


class SmtpSink:
    """SMTP server on 127.0.0.1:port recording (mail_from, rcpt_tos, data) for each message."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._messages: list[SinkMessage] = []
        self._commands: list[str] = []
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> None:
        self._server = _Server(self)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"smtp-sink-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, cut open sessions and join every thread the sink started."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        server.server_close()  # joins the handler threads (block_on_close)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def messages(self) -> list[SinkMessage]:
        with self._lock:
            return list(self._messages)

    @property
    def commands(self) -> list[str]:
        """Every command line received so far (not message data), to see what a relay sends."""
        with self._lock:
            return list(self._commands)

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()
            self._commands.clear()

    def wait_for_messages(self, n: int, timeout: float = 10.0) -> list[SinkMessage]:
        """Block until at least N messages arrived; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._messages) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"SMTP sink got {len(self._messages)} of {n} messages in {timeout}s"
                    )
                self._lock.wait(remaining)
            return list(self._messages)

    def _store(self, message: SinkMessage) -> None:
        with self._lock:
            self._messages.append(message)
            self._lock.notify_all()

    def _log_command(self, command: str) -> None:
        with self._lock:
            self._commands.append(command)

    def _track(self, connection: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)
