"""Checking the Twisted endpoint strings of the configuration: a listen address (loopback when
no interface is named) and an upstream."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ConfigError
from .model import BALANCER_PREFIX

Fail = Callable[[str, str], ConfigError]  # (where, message) -> the error naming the file


def server_endpoint(fail: Fail, where: str, listen: str, allow_ssl: bool = False) -> str:
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    if listen.removeprefix(BALANCER_PREFIX).startswith("ssl:") and not allow_ssl:
        raise fail(where, f'listen = {listen!r}: use tcp: with tls = "implicit" (and '
                        "tls_cert, or a generated certificate) for TLS from the first byte")
    listen = default_interface(listen)
    try:
        serverFromString(reactor, listen)
    except Exception as e:  # each endpoint type raises its own kinds for bad arguments
        raise fail(
            where, f"listen = {listen!r} is not a Twisted server endpoint "
            f"(expected e.g. \"tcp:1143:interface=127.0.0.1\"): {e}"
        ) from None
    return listen


def client_endpoint(fail: Fail, where: str, upstream: str) -> str:
    from twisted.internet import reactor
    from twisted.internet.endpoints import clientFromString

    try:
        clientFromString(reactor, upstream)
    except Exception as e:  # each endpoint type raises its own kinds for bad arguments
        raise fail(
            where, f"upstream = {upstream!r} is not a Twisted client endpoint "
            f"(expected e.g. \"tls:outlook.office365.com:993\"): {e}"
        ) from None
    if not upstream.startswith(("tls:", "tcp:")):
        raise fail(where, f"upstream = {upstream!r}: expected tls:HOST:PORT or tcp:HOST:PORT")
    return upstream


def default_interface(listen: str) -> str:
    """A tcp listener without interface= would bind every address; bind loopback instead."""
    kind, _, _ = listen.removeprefix(BALANCER_PREFIX).partition(":")
    if kind in ("tcp", "tcp6", "ssl") and "interface=" not in listen:
        # Colons in an endpoint string's value are escaped with a backslash.
        return listen + ":interface=" + ("\\:\\:1" if kind == "tcp6" else "127.0.0.1")
    return listen
