"""A second host for LAN tests: a network namespace joined to this one by a veth pair.

The proxy listens on this side's address; clients run inside the namespace with
`ip netns exec`, so they connect from another address, as a printer on the LAN would. The
addresses come from 198.18.0.0/15, the range set aside for testing network devices (RFC 2544),
and exist only between the two ends of the pair. Everything is removed on exit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class LanHost:
    namespace: str
    proxy_address: str  # this side of the pair, where the proxy listens
    device_address: str  # the namespace's side, where clients connect from

    def run(self, *command: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a command on the device host."""
        return subprocess.run(
            ["ip", "netns", "exec", self.namespace, *command],
            input=input, capture_output=True, text=True, timeout=timeout,
        )


def unavailable() -> str | None:
    """Why LAN hosts cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "ip (iproute2) is not installed"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=20)


@contextlib.contextmanager
def lan_host() -> Iterator[LanHost]:
    tag = f"{os.getpid() % 100000}"
    namespace, here, there = f"xp-lan-{tag}", f"xpl{tag}a", f"xpl{tag}b"
    octet = os.getpid() % 250 + 1  # separate subnets for concurrent runs
    host = LanHost(namespace, f"198.18.{octet}.1", f"198.18.{octet}.2")
    _ip("netns", "add", namespace)
    try:
        _ip("link", "add", here, "type", "veth", "peer", "name", there)
        _ip("link", "set", there, "netns", namespace)
        _ip("addr", "add", f"{host.proxy_address}/30", "dev", here)
        _ip("link", "set", here, "up")
        _ip("-n", namespace, "addr", "add", f"{host.device_address}/30", "dev", there)
        _ip("-n", namespace, "link", "set", there, "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        yield host
    finally:
        subprocess.run(["ip", "link", "del", here], capture_output=True, timeout=20)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=20)
