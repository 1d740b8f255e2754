"""Small writes that go to the socket at once when nothing is queued before them.

Twisted's FileDescriptor.write only queues: it asks the reactor to watch the socket for
writability (an epoll_ctl), sends on the next pass of the loop, and stops watching (another
epoll_ctl). A login is a dozen small writes in turn (greeting, TLS handshake, AUTHENTICATE,
the answer, LOGOUT), each of which then waits a pass of the loop; sending them at once takes
about 0.3 ms off a login. Larger writes keep Twisted's way: in a big FETCH, gathering what one
pass decrypted into one send wakes the client far less often (Dovecot's TLS records carry 4 KB:
sent one by one they made twenty times as many sends, and the transfer slower).

This relies on Twisted internals (FileDescriptor's queue, dataBuffer, offset and
_tempDataBuffer, and writeSomeData), which is why it is here alone; tests/test_write_now.py
fails when they change. Only the proxy's own TCP connections are changed, one by one; a socket
whose TLS was started in place (STARTTLS) keeps Twisted's write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import tcp

# Protocol lines, answers and handshake messages (a ClientHello with a post-quantum key share
# is 1.8 KB); not the 4 to 16 KB records of a bulk transfer.
SMALL_WRITE = 2048


def send_small_writes_at_once(transport: Any) -> None:
    """From now on, a write of at most SMALL_WRITE bytes to the TCP connection
    under `transport` (itself, or under TLS and PROXY-protocol wrappers) is sent at once when
    nothing is queued; anything else is queued as Twisted does."""
    connection = _tcp_under(transport)
    if connection is None:
        return  # not TCP (a UNIX socket, a test's transport): Twisted's own write
    queued_write: Callable[[bytes], None] = connection.write

    def write(data: bytes) -> None:
        if (len(data) <= SMALL_WRITE and type(data) is bytes and not connection.TLS
                and not connection._tempDataBuffer and connection.offset == len(connection.dataBuffer)
                and connection.connected and not connection.disconnecting
                and not connection._writeDisconnected):
            sent = connection.writeSomeData(data)
            if isinstance(sent, int):  # else a lost connection, which the queued path reports
                if sent == len(data):
                    return
                data = data[sent:]
        queued_write(data)

    connection.write = write  # type: ignore[method-assign]


def _tcp_under(transport: Any) -> tcp.Connection | None:
    while not isinstance(transport, tcp.Connection):
        transport = getattr(transport, "transport", None)  # a TLS or PROXY-protocol wrapper
        if transport is None:
            return None
    return transport
