"""What sending through Microsoft Graph costs the proxy, against the local fake Graph.

    .venv/bin/python -m tests.benchmark_graph [--runs 5]

For a 1 MB message (one sendMail) and a 10 MB scan (a draft with an upload session), each sent
by a fresh interpreter (tests.support.graph_probe): the time send() takes, the peak of Python
allocations during it, and how much the process's resident memory grew.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
from pathlib import Path

from tests.support.fake_entra import FakeEntra
from tests.support.fake_graph import FakeGraph
from tests.support.graph_probe import run_probe
from tests.support.graph_setup import MAILBOX, app_token, scan_message

SIZES = {"1 MB": 700_000, "10 MB": 7_400_000}  # PDF bytes: base64 makes the MIME a third larger


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    with FakeEntra(lambda mailbox, lifetime: "unused") as entra, \
            FakeGraph(entra.graph_token_key) as graph, tempfile.TemporaryDirectory() as folder:
        graph.add_mailbox(MAILBOX)
        token = app_token(entra)
        for label, size in SIZES.items():
            path = Path(folder) / "message.eml"
            path.write_bytes(scan_message(secrets.token_bytes(size)))
            reports = [run_probe(graph.url, MAILBOX, path, "bob@contoso.com", token)
                       for _ in range(runs)]
            assert all(report["sent"] for report in reports), reports
            seconds = statistics.median(report["seconds"] for report in reports)
            peak = max(report["peak_bytes"] for report in reports)
            rss = max(report["rss_peak_kb"] - report["rss_before_kb"] for report in reports)
            kind = "draft" if "path='draft'" in reports[0]["outcome"] else "sendMail"
            print(f"{label:>6} ({path.stat().st_size:>10,} bytes, {kind:8}): median "
                  f"{seconds * 1000:7.1f} ms, peak allocations {peak / 1024:7.0f} KiB, "
                  f"RSS growth {rss:5d} KiB  ({runs} runs)")


if __name__ == "__main__":
    main()
