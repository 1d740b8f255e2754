"""What a running process costs, read from /proc: CPU seconds, resident memory, descriptor
limits, and its TCP connections to a given port."""

from __future__ import annotations

import os
import resource
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process (all its threads) so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2 :].split()
    # Fields 14 and 15 of stat (utime, stime), counted from the state field as 3.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def open_files_limit(pid: int) -> tuple[int, int]:
    """(soft, hard) RLIMIT_NOFILE of the process."""
    return resource.prlimit(pid, resource.RLIMIT_NOFILE)


def raise_open_files_limit(pid: int, wanted: int) -> tuple[int, int]:
    """Raise the RLIMIT_NOFILE of PID to `wanted`, or to its hard limit where raising that is
    not allowed (no CAP_SYS_RESOURCE); returns the limits now in force."""
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    if soft < wanted:
        try:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
        except (PermissionError, ValueError):
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (max(soft, min(wanted, hard)), hard))
    return resource.prlimit(pid, resource.RLIMIT_NOFILE)


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def connections_to(pid: int, port: int) -> int:
    """How many TCP sockets of PID have PORT as their remote port (any state)."""
    inodes = _socket_inodes(pid)
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if remote_port == port and fields[9] in inodes:
                    count += 1
    return count
