"""Small writes sent at once on a real socket pair, large ones and later ones queued as Twisted
queues them: fails when the Twisted internals proxy.glue.write_now relies on change."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor

from proxy.glue.write_now import SMALL_WRITE, send_small_writes_at_once


class Pair:
    def __init__(self) -> None:
        ours, self.peer = socket.socketpair()
        ours.setblocking(False)
        self.peer.settimeout(0)
        self.reactor = MemoryReactor()
        self.connection = tcp.Connection(ours, Protocol(), self.reactor)
        self.connection.connected = 1
        send_small_writes_at_once(self.connection)

    def received(self) -> bytes:
        chunks = []
        while True:
            try:
                chunk = self.peer.recv(1 << 20)
            except BlockingIOError:
                return b"".join(chunks)
            chunks.append(chunk)


@pytest.fixture
def pair() -> Iterator[Pair]:
    made = Pair()
    yield made
    made.connection.socket.close()
    made.peer.close()


def test_a_small_write_leaves_at_once_without_watching_the_socket(pair: Pair) -> None:
    """A protocol line with nothing queued is on the wire before the reactor runs again."""
    pair.connection.write(b"a OK LOGIN completed\r\n")
    assert pair.received() == b"a OK LOGIN completed\r\n"
    assert pair.connection not in pair.reactor.getWriters()


def test_large_writes_and_what_follows_them_keep_their_order_in_the_queue(pair: Pair) -> None:
    """A bulk piece is queued for the next pass; a small write after it waits behind it."""
    big = b"x" * (SMALL_WRITE + 1)
    pair.connection.write(big)
    pair.connection.write(b"f OK\r\n")
    assert pair.received() == b""
    assert pair.connection in pair.reactor.getWriters()
    pair.connection.doWrite()
    assert pair.received() == big + b"f OK\r\n"


def test_a_socket_with_tls_started_in_place_keeps_twisteds_write(pair: Pair) -> None:
    """After STARTTLS the bytes must go through TLS: the write is not sent raw."""
    pair.connection.TLS = True
    pair.connection.protocol = Protocol()
    pair.connection.protocol.write = lambda data: None  # type: ignore[attr-defined]
    pair.connection.write(b"secret\r\n")
    assert pair.received() == b""

