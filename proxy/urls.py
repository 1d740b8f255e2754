"""The one rule for URLs of Microsoft's services (authority, graph_url, upload URLs): https, or
http to this machine only (a local stand-in: the demo, the tests).

"This machine" is decided on the parsed host name, never on a prefix of the text, so
http://127.0.0.1.evil.example or http://localhost@evil.example do not pass.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def secure_or_loopback(url: str) -> bool:
    """https with a host, or http to localhost or a loopback address."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return False
    if not host or parts.username is not None or parts.password is not None:
        return False
    if parts.scheme == "https":
        return True
    if parts.scheme != "http":
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def service_base_url(url: str, key: str, example: str) -> str:
    """`url` checked as a service's base (scheme and host, no path, query or fragment), without
    a trailing slash; ValueError naming `key` and `example` otherwise."""
    text = url.strip()
    if not secure_or_loopback(text):
        raise ValueError(f"{key} = {url!r}: expected an https:// URL (http only to 127.0.0.1 "
                         "or localhost)")
    parts = urlsplit(text)
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise ValueError(f"{key} = {url!r}: expected a URL without a path, such as {example}")
    return f"{parts.scheme}://{parts.netloc}"
