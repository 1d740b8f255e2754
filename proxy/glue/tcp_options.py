"""Socket options the relay needs on both of its connections, and the listen queue a burst needs.

Mail protocols are request and answer: with Nagle's algorithm on, the last small segment of an
answer waits for the peer's delayed ACK (40 ms on Linux) whenever an earlier one is still
unacknowledged, which costs a small FETCH or a login several round trips' worth. Twisted already
gathers what is written in one pass of the reactor into one send, so nothing is lost by sending
at once.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address

from ..config import endpoint_parts
from .write_now import send_small_writes_at_once

# Connections the kernel holds for a listener until the proxy accepts them. Twisted's default
# of 50 overflows when a building's printers and mail programs reconnect at once (after a
# network outage, at 8 o'clock); Linux caps the value at net.core.somaxconn (4096 by default).
DEFAULT_BACKLOG = 1024
_TAKES_BACKLOG = ("tcp", "tcp6", "ssl", "unix")


def send_without_delay(transport: Any) -> None:
    """What is written to `transport` leaves without waiting: TCP_NODELAY on the socket under
    it (through TLS and PROXY-protocol wrappers, which pass unknown attributes on to the
    transport they wrap; not on UNIX sockets, which have no such option and for which Twisted
    would log the refusal), and small writes sent in the same pass of the reactor
    (proxy.glue.write_now)."""
    set_no_delay = getattr(transport, "setTcpNoDelay", None)
    if set_no_delay is not None and isinstance(transport.getHost(), (IPv4Address, IPv6Address)):
        set_no_delay(True)
    send_small_writes_at_once(transport)


def with_default_backlog(endpoint: str, backlog: int = DEFAULT_BACKLOG) -> str:
    """A server endpoint string with `backlog=` added when the listen string does not set one
    (an explicit `backlog=` is kept as it is)."""
    kind, _, kwargs = endpoint_parts(endpoint)
    if kind not in _TAKES_BACKLOG or "backlog" in kwargs:
        return endpoint
    return f"{endpoint}:backlog={backlog}"
