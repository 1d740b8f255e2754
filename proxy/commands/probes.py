"""The harmless command `account check` runs on each signed-in upstream, and how it reads the
answer."""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet import defer

from ..errors import UpstreamUnavailable


@dataclass(frozen=True)
class Probe:
    """A harmless command for `account check`, and how to read its answer."""

    name: str
    command: bytes
    goodbye: bytes
    success: str  # prefix of the answer line meaning success
    failure: tuple[str, ...]  # prefixes meaning failure

    def verdict(self, line: str) -> bool | None:
        """True on success, False on failure, None for a line that decides nothing."""
        if line.startswith(self.success):
            return True
        if line.startswith(self.failure):
            return False
        return None


PROBES = {
    "imap": Probe('LIST "" INBOX', b'C1 LIST "" INBOX\r\n', b"C2 LOGOUT\r\n", "C1 OK",
                  ("C1 ", "* BYE")),
    "pop3": Probe("STAT", b"STAT\r\n", b"QUIT\r\n", "+OK", ("-ERR",)),
    "smtp": Probe("NOOP", b"NOOP\r\n", b"QUIT\r\n", "250", ("4", "5")),
}


class ProbeReader:
    """Takes over a signed-in upstream (an UpstreamReader) and waits for the probe's answer."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.answer: defer.Deferred[str] = defer.Deferred()
        self._buffer = b""

    def from_upstream(self, data: bytes) -> None:
        self._buffer += data
        while b"\n" in self._buffer and not self.answer.called:
            line, self._buffer = self._buffer.split(b"\n", 1)
            text = line.decode("utf-8", "replace").strip()
            verdict = self.probe.verdict(text)
            if verdict is True:
                self.answer.callback(text)
            elif verdict is False:
                self.answer.errback(UpstreamUnavailable(f"{self.probe.name} failed: {text[:200]}"))

    def upstream_read_closed(self) -> None:
        self.upstream_lost()

    def upstream_lost(self) -> None:
        if not self.answer.called:
            self.answer.errback(UpstreamUnavailable("the server closed the connection"))
