"""Open files: as many as the system lets the proxy have, and a clear refusal when they run out.

Every session holds two sockets (the device's and the upstream's). Many systems start a
service with a soft limit of 1024 open files, about 500 sessions, while the hard limit is far
higher; the soft limit is raised to the hard one at start. When descriptors still run short, a
new device is told to come back later in its protocol's words (a session accepted now would
fail at its upstream connection), and the log says so once until there is room again.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.logger import Logger

log = Logger(namespace="xoauth2-proxy")

# Descriptors kept free for what is not a session: listening ports, the store's files, TLS
# certificates, name lookups, database connections, the admin page.
HEADROOM = 64
# macOS refuses a soft limit above OPEN_MAX even when the hard limit is "unlimited".
MACOS_OPEN_MAX = 10240


def raise_open_files_limit() -> int | None:
    """Raise the soft RLIMIT_NOFILE to the hard limit (POSIX only) and log the outcome; the
    limit in force, or None where there is none to read (Windows)."""
    if sys.platform == "win32":
        return None
    import resource  # POSIX only

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard
    if sys.platform == "darwin" or hard == resource.RLIM_INFINITY:
        wanted = min(hard, MACOS_OPEN_MAX) if hard != resource.RLIM_INFINITY else MACOS_OPEN_MAX
    if wanted > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as e:
            log.warn("open files: could not raise the limit from {soft} to {wanted}: {error}",
                     soft=soft, wanted=wanted, error=e, event="open_files_limit")
            return soft
        log.info("open files: limit raised from {soft} to {wanted} (about {sessions} sessions)",
                 soft=soft, wanted=wanted, sessions=(wanted - HEADROOM) // 2,
                 event="open_files_limit")
        return wanted
    log.info("open files: limit {soft} (about {sessions} sessions)", soft=soft,
             sessions=max(0, soft - HEADROOM) // 2, event="open_files_limit")
    return soft


def _soft_limit() -> int:
    import resource  # POSIX only: called where raise_open_files_limit found a limit

    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class DescriptorBudget:
    """Whether a newly accepted connection leaves room for its session (its upstream socket
    and the headroom). Descriptors are numbered lowest free first, so the accepted socket's
    number is a free lower bound of how many are open. The limit is read at each connection
    (one system call): an administrator may change it while the proxy runs (prlimit)."""

    def __init__(self, headroom: int = HEADROOM) -> None:
        self.enabled = False  # where there is a limit to read: see raise_open_files_limit
        self.headroom = headroom
        self._short = False  # said so in the log, not yet room again

    def has_room(self, transport: Any) -> bool:
        fileno = getattr(transport, "fileno", None)
        if not self.enabled or fileno is None:
            return True
        number, limit = fileno(), _soft_limit()
        if number < limit - self.headroom:
            self._short = False
            return True
        if not self._short:
            self._short = True
            log.error(
                "open files: {number} of {limit} in use; new connections are told to come back "
                "later until sessions end (raise the limit: LimitNOFILE= in systemd, ulimit -n)",
                number=number, limit=limit, event="out_of_descriptors",
                reason="out of file descriptors")
        return False


# One per process, as the limit is; the runtime enables it at start.
BUDGET = DescriptorBudget()
