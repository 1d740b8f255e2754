"""A TCP fault injector on 127.0.0.1, placed between the proxy and Dovecot (in the spirit of
tests/support/forwarder.py), and a TLS impostor that presents somebody else's certificate.

`FaultInjector.mode` decides what happens to *new* connections and can be switched at any time:
  - "pass": forward both ways untouched;
  - "refuse": accept and close at once, without a byte;
  - "reset": forward, then reset the proxy's connection (TCP RST) once `reset_after` bytes came
    from the upstream (0: at once);
  - "stall": accept and never answer (no upstream connection is made).
Each accepted connection is a `Link`; `Link.stall()`, `Link.reset()` and `Link.reset_after()` act on
a connection that is already flowing (after a login, say). `stop()` ends every socket and thread.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
import time
from pathlib import Path

from .ports import free_port

MODES = ("pass", "refuse", "reset", "stall")
_DOWN, _UP = "to proxy", "to upstream"  # directions of a link's two pumps


def _close(sock: socket.socket, *, reset: bool = False) -> None:
    """Close `sock`, waking any thread blocked reading it; with `reset`, the peer gets an RST."""
    try:
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.shutdown(socket.SHUT_RD)  # wakes a blocked recv() without sending anything
        else:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class _Threads:
    """Daemon threads that are joined on stop; finished ones are forgotten as we go."""

    def __init__(self) -> None:
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def join(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))


class _Server:
    """A listening socket on 127.0.0.1 whose accept loop hands each connection to `_accepted`;
    `stop` closes it, then `_close_connections`, then joins every thread it started."""

    def __init__(self) -> None:
        self.port = free_port()
        self._server: socket.socket | None = None
        self._threads = _Threads()

    def start(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(128)
        self._server = server
        self._threads.spawn(self._accept_loop, server)

    def stop(self) -> None:
        if self._server is not None:
            _close(self._server)
            self._server = None
        self._close_connections()
        self._threads.join()

    def _accept_loop(self, server: socket.socket) -> None:
        while True:
            try:
                sock, _ = server.accept()
            except OSError:
                return
            self._accepted(sock)

    def _accepted(self, sock: socket.socket) -> None:
        raise NotImplementedError

    def _close_connections(self) -> None:
        raise NotImplementedError


class Link:
    """One connection from the proxy, and (unless stalled from the start) its upstream."""

    def __init__(self, proxy_side: socket.socket, upstream: socket.socket | None) -> None:
        self.proxy_side = proxy_side
        self.upstream = upstream
        self.bytes_to_proxy = 0
        self.bytes_to_upstream = 0
        self.proxy_closed = threading.Event()  # the proxy closed (or reset) its side
        self._lock = threading.Lock()
        self._stalled = upstream is None
        self._reset_budget: int | None = None
        self._ended = False

    def stall(self) -> None:
        """From now on forward nothing either way (a black hole); the sockets stay open."""
        with self._lock:
            self._stalled = True

    def reset_after(self, count: int) -> None:
        """Reset the proxy's connection once `count` more bytes came from the upstream."""
        with self._lock:
            self._reset_budget = count
        if count == 0:
            self.reset()

    def reset(self) -> None:
        """RST to the proxy now; the upstream connection is closed."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
        _close(self.proxy_side, reset=True)
        if self.upstream is not None:
            _close(self.upstream)

    def close(self) -> None:
        with self._lock:
            if self._ended:
                return
            self._ended = True
        for sock in (self.proxy_side, self.upstream):
            if sock is not None:
                _close(sock)
        self.proxy_closed.set()

    # -- used by the pumps --

    def _deliver(self, direction: str, data: bytes) -> None:
        with self._lock:
            if self._stalled or self._ended:
                return
            reset_now = False
            if direction == _DOWN and self._reset_budget is not None:
                if len(data) >= self._reset_budget:
                    data, reset_now = data[: self._reset_budget], True
                else:
                    self._reset_budget -= len(data)
            destination = self.proxy_side if direction == _DOWN else self.upstream
        assert destination is not None
        with contextlib.suppress(OSError):
            destination.sendall(data)
        if direction == _DOWN:
            self.bytes_to_proxy += len(data)
        else:
            self.bytes_to_upstream += len(data)
        if reset_now:
            self.reset()

    def _source_ended(self, direction: str) -> None:
        if direction == _UP:
            self.proxy_closed.set()
        with self._lock:
            forward = not (self._stalled or self._ended)
            destination = self.upstream if direction == _UP else self.proxy_side
        if forward and destination is not None:
            with contextlib.suppress(OSError):
                destination.shutdown(socket.SHUT_WR)


class FaultInjector(_Server):
    def __init__(self, target_port: int, mode: str = "pass", reset_after: int = 0) -> None:
        super().__init__()
        self.target_port = target_port
        self.reset_after = reset_after
        self.links: list[Link] = []
        self._mode = ""
        self.mode = mode
        self._lock = threading.Lock()

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {MODES}")
        self._mode = mode

    @property
    def accepted(self) -> int:
        return len(self.links)

    def open_links(self) -> list[Link]:
        """Links whose proxy side is still open."""
        with self._lock:
            return [link for link in self.links if not link.proxy_closed.is_set()]

    def wait_for_link(self, index: int, timeout: float = 10.0) -> Link:
        """The index-th accepted connection (0 is the first), once it exists."""
        deadline = time.monotonic() + timeout
        while len(self.links) <= index:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no connection #{index} within {timeout} s")
            time.sleep(0.01)
        return self.links[index]

    def _close_connections(self) -> None:
        with self._lock:
            links = list(self.links)
        for link in links:
            link.close()

    def _accepted(self, proxy_side: socket.socket) -> None:
        mode = self._mode
        if mode == "refuse":
            _close(proxy_side)
            return
        upstream = None
        if mode != "stall":
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                _close(proxy_side)
                return
            upstream.settimeout(None)
        link = Link(proxy_side, upstream)
        with self._lock:
            self.links.append(link)
        if mode == "reset":
            link.reset_after(self.reset_after)
        self._threads.spawn(self._pump, link, proxy_side, _UP)
        if upstream is not None:
            self._threads.spawn(self._pump, link, upstream, _DOWN)

    def _pump(self, link: Link, source: socket.socket, direction: str) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            link._deliver(direction, data)
        link._source_ended(direction)


class TlsImpostor(_Server):
    """A TLS server on 127.0.0.1 presenting a given certificate, greeting like an IMAP server.

    It records whether any handshake completed and every byte it decrypted, so a test can prove
    that a client which should have refused the certificate sent nothing (no XOAUTH2)."""

    GREETING = b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] impostor ready\r\n"

    def __init__(self, cert_path: Path, key_path: Path) -> None:
        super().__init__()
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(cert_path), str(key_path))
        self.connections = 0
        self.handshakes = 0
        self.received = b""
        self._sockets: list[socket.socket] = []

    def _close_connections(self) -> None:
        for sock in self._sockets:
            _close(sock)

    def _accepted(self, raw: socket.socket) -> None:
        self.connections += 1
        self._sockets.append(raw)
        self._threads.spawn(self._serve, raw)

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(30)
        try:
            with self.context.wrap_socket(raw, server_side=True) as tls:
                self.handshakes += 1
                tls.sendall(self.GREETING)
                while data := tls.recv(65536):
                    self.received += data
        except (OSError, ssl.SSLError):
            pass
