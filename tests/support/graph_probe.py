"""Send one message file through proxy.graph in a process of its own, and report what it cost.

    python -m tests.support.graph_probe GRAPH_URL MAILBOX FILE RECIPIENT < token

Prints one JSON line: the outcome, the seconds send() took, the peak of Python allocations
during send() (tracemalloc), and the process's resident memory before send() and at its peak
(VmRSS, VmHWM). A process of its own, so the fake Graph's buffers (it keeps every upload) do not
count.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from proxy.graph import Envelope, GraphClient, Sent
from tests.support.graph_setup import direct_session


def memory_kb(field: str) -> int:
    """A VmRSS / VmHWM figure of this process (VmHWM restarts at exec, unlike ru_maxrss)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def main(argv: list[str]) -> None:
    graph_url, mailbox, path, recipient = argv
    token = sys.stdin.readline().strip()
    client = GraphClient(direct_session(), graph_url)
    with open(path, "rb") as message:
        rss_before = memory_kb("VmRSS")
        tracemalloc.start()
        started = time.perf_counter()
        outcome = client.send(token, mailbox, message, Envelope(mailbox, (recipient,)))
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    print(json.dumps({
        "sent": isinstance(outcome, Sent), "outcome": repr(outcome), "seconds": seconds,
        "peak_bytes": peak, "rss_before_kb": rss_before, "rss_peak_kb": memory_kb("VmHWM"),
    }))



def run_probe(graph_url: str, mailbox: str, path: Path, recipient: str,
              token: str) -> dict[str, Any]:
    """Run main() in a fresh interpreter; its JSON report."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.graph_probe", graph_url, mailbox, str(path),
         recipient], input=token + "\n", capture_output=True, text=True, timeout=300,
        cwd=Path(__file__).resolve().parent.parent.parent, check=True,
    )
    report: dict[str, Any] = json.loads(done.stdout)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
