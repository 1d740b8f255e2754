"""What the proxy costs over a direct connection: login time and FETCH throughput.

    sudo .venv/bin/python -m tests.benchmark [--logins 50] [--fetches 5] [--megabytes 20]

Runs a real Dovecot (root needed, as for the integration tests), the fake Entra ID and the proxy
as a subprocess, all on 127.0.0.1, and compares, with the same client code:
  - login: connect, greeting, login, tagged OK. Direct: TLS + AUTHENTICATE XOAUTH2 to Dovecot.
    Proxied: plain LOGIN to the proxy, which (token cached) connects over TLS and does the same.
  - FETCH of one large message, direct over TLS vs through the proxy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.dovecot import Dovecot, dovecot_available
from tests.support.world import ALICE, World, open_world


def _timed(action: Callable[[], object], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return times


def _summary(times: list[float], unit: float = 1000.0) -> str:
    ordered = sorted(times)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return f"median {statistics.median(times) * unit:7.2f}  p90 {p90 * unit:7.2f}"


def bench_logins(world: World, runs: int) -> None:
    def direct() -> None:
        world.direct_imap(ALICE).logout()

    def proxied() -> None:
        world.proxied_imap().logout()

    proxied()  # the first login unlocks the store (one KDF); measure the steady state
    direct_times, proxied_times = _timed(direct, runs), _timed(proxied, runs)
    print(f"login+logout, ms over {runs} runs")
    print(f"  direct XOAUTH2 over TLS     {_summary(direct_times)}")
    print(f"  proxied LOGIN (cached token) {_summary(proxied_times)}")
    extra = statistics.median(proxied_times) - statistics.median(direct_times)
    print(f"  proxy overhead (median)     {extra * 1000:+7.2f} ms")


def bench_fetch(world: World, runs: int, megabytes: int) -> None:
    line = os.urandom(38).hex().encode() + b"\r\n"
    body = line * (megabytes * 1024 * 1024 // len(line))
    world.dovecot.deliver(ALICE, b"Subject: benchmark\r\n\r\n" + body)
    results = {}
    for name, connect in (("direct ", lambda: world.direct_imap(ALICE)), ("proxied", world.proxied_imap)):
        client = connect()
        client.select("INBOX", readonly=True)
        number = client.search(None, '(SUBJECT "benchmark")')[1][0].split()[-1]
        size = len(client.fetch(number, "(BODY.PEEK[])")[1][0][1])  # also warms up
        times = _timed(lambda c=client, n=number: c.fetch(n, "(BODY.PEEK[])"), runs)
        client.logout()
        results[name] = [size / t / 1e6 for t in times]
    print(f"FETCH of a {megabytes} MB message, MB/s over {runs} runs (higher is better)")
    for name, rates in results.items():
        print(f"  {name}  median {statistics.median(rates):8.1f}  min {min(rates):8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logins", type=int, default=50)
    parser.add_argument("--fetches", type=int, default=5)
    parser.add_argument("--megabytes", type=int, default=20)
    args = parser.parse_args()
    reason = dovecot_available()
    if reason:
        raise SystemExit(f"benchmark needs Dovecot: {reason}")
    with tempfile.TemporaryDirectory(prefix="xoauth2-bench-") as tmp:
        dovecot = Dovecot(Path(tmp) / "dovecot", jwt_key=os.urandom(32))
        dovecot.start()
        try:
            with open_world(Path(tmp) / "world", dovecot) as world:
                bench_logins(world, args.logins)
                bench_fetch(world, args.fetches, args.megabytes)
        finally:
            dovecot.stop()


if __name__ == "__main__":
    main()
