"""What a Graph listener costs: the proxy as a subprocess between smtplib and the local fakes.

    .venv/bin/python -m tests.benchmark_graph_smtp [--runs 5]

For a 1 MB message (one sendMail) and a 10 MB scan (a draft with an upload session): the time
from the end of DATA (the client's ".") to the 250, which is what the device waits for, and the
proxy's resident memory: before the session and at its peak while receiving and sending
(VmHWM, reset before each message through /proc/PID/clear_refs).
"""

from __future__ import annotations

import argparse
import os
import smtplib
import statistics
import tempfile
import time
from pathlib import Path

from tests.support.graph_setup import scan_message
from tests.support.graph_world import PASSWORD, SCANNER, open_graph_world

SIZES = {"1 MB": 700_000, "10 MB": 7_400_000}  # PDF bytes: base64 makes the MIME a third larger


def memory_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def send_once(port: int, pid: int, data: bytes) -> tuple[float, int, int]:
    """(seconds from the end of DATA to 250, RSS before, peak RSS) for one message."""
    with smtplib.SMTP("127.0.0.1", port, timeout=120) as client:
        client.ehlo("bench")
        client.login(SCANNER, PASSWORD)
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        before = memory_kb(pid, "VmRSS")
        client.mail(SCANNER)
        client.rcpt("bob@contoso.example")
        client.putcmd("data")
        assert client.getreply()[0] == 354
        client.send(data.replace(b"\r\n.", b"\r\n.."))
        started = time.perf_counter()
        client.send(b".\r\n")
        code, text = client.getreply()
        seconds = time.perf_counter() - started
        assert code == 250, text
        return seconds, before, memory_kb(pid, "VmHWM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as folder, open_graph_world(Path(folder)) as world:
        port, pid = world.ports["graph"], world.proxy.pid
        send_once(port, pid, scan_message(os.urandom(1000), sender=SCANNER))  # warm-up
        for label, size in SIZES.items():
            data = scan_message(os.urandom(size), sender=SCANNER, to="bob@contoso.example")
            results = [send_once(port, pid, data) for _ in range(runs)]
            kind = "draft" if len(data) > 3_000_000 else "sendMail"
            seconds = statistics.median(r[0] for r in results)
            before = max(r[1] for r in results)
            peak = max(r[2] for r in results)
            grown = max(r[2] - r[1] for r in results)
            print(f"{label:>6} ({len(data):>10,} bytes, {kind:8}): end of DATA to 250 median "
                  f"{seconds * 1000:7.1f} ms (min {min(r[0] for r in results) * 1000:.1f}, max "
                  f"{max(r[0] for r in results) * 1000:.1f}); proxy RSS {before / 1024:.1f} MiB "
                  f"before, peak {peak / 1024:.1f} MiB (+{grown} KiB)  ({runs} runs)")


if __name__ == "__main__":
    main()
