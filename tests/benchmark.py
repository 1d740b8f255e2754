"""Side by side: a direct connection, email-oauth2-proxy and this proxy, on one table.

    tests/benchmark.sh [options]          (as root on a fresh machine: installs what it needs)
    .venv/bin/python -m tests.benchmark [options]

Starts a real Dovecot 2.3, the fake Entra ID, a light XOAUTH2 IMAP upstream (for the crowd and
the storm: Dovecot forks a process per session), this proxy and emailproxy (from .venv-bench,
run with --no-gui, client credentials against the same fake Entra ID, trusting the test CA
through SSL_CERT_FILE), all on 127.0.0.1, and prints one table. Every row is measured in this
run with the targets taking turns (direct, emailproxy, with --before an earlier version of this
proxy, this proxy; rotating per repetition):
  bulk   IMAP FETCH and POP3 RETR of 1, 28 and 100 MB, SMTP DATA of 28 MB: MB/s, ratio to
         direct, and the proxy's CPU seconds per 100 MB relayed (/proc/PID/stat);
  login  connect + login + logout, token cached: median and p99 (IMAP, POP3, SMTP);
  burst  1000 simultaneous connects: greeted within 5 s, then logged in and out; the proxy's
         upstream connections still open afterwards;
  crowd  5000 logged-in IDLE sessions at once: RSS per session, CPU while idle;
  stall  a reader stops 1 MB into a FETCH of 100 MB for 10 s: the proxy's RSS growth and CPU;
  storm  200 simultaneous logins on an expired token: token requests the fake Entra ID saw.
Direct means TLS and XOAUTH2 with a cached token straight to Dovecot, as a device would do
without a proxy; through a proxy it is a plain connection on 127.0.0.1 and the local password.
The proxies' session limits are raised above the crowd and their open-files limits to 65536.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.bench.bulk import MB, bulk_rows, login_rows, message, stall_rows
from tests.bench.crowds import burst_rows, crowd_rows, storm_rows
from tests.bench.profile import profiled, summary
from tests.bench.report import Row, failed, load_average, machine_line, table
from tests.bench.servers import ROOT, emailproxy_version
from tests.bench.world import BenchWorld, bench_world
from tests.support.dovecot import dovecot_available

BENCH_VENV = ROOT / ".venv-bench" / "bin"
ROWS = ("bulk", "login", "burst", "crowd", "stall", "storm")


def _options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default=",".join(ROWS), help="which rows, comma-separated (default: all)")
    parser.add_argument("--repetitions", type=int, default=5, help="bulk transfers of each kind per target")
    parser.add_argument("--sizes", default="1,28,100", help="IMAP and POP3 message sizes, MB")
    parser.add_argument("--smtp-size", type=float, default=28, help="SMTP message size, MB")
    parser.add_argument("--logins", type=int, default=100, help="logins per protocol and target")
    parser.add_argument("--burst", type=int, default=1000, help="simultaneous connects")
    parser.add_argument("--crowd", type=int, default=5000, help="IDLE sessions to hold at once")
    parser.add_argument("--crowd-ramp", type=float, default=120, help="seconds to open them, at most")
    parser.add_argument("--idle", type=float, default=10, help="seconds the crowd idles while measured")
    parser.add_argument("--stall", type=float, default=10, help="seconds the stalled reader waits")
    parser.add_argument("--storm", type=int, default=200, help="simultaneous logins on an expired token")
    parser.add_argument("--emailproxy", type=Path, default=BENCH_VENV / "emailproxy",
                        help="emailproxy executable (default: .venv-bench/bin/emailproxy)")
    parser.add_argument("--before", type=Path, metavar="SRC",
                        help="also run an earlier version of this proxy from the source folder SRC "
                             "(e.g. one made with `git worktree add`), as one more target")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="record this proxy with py-spy during each row into DIR and summarise")
    return parser.parse_args()


def _row_runners(world: BenchWorld, args: argparse.Namespace) -> dict[str, Callable[[], list[Row]]]:
    sizes = [int(float(size) * MB) for size in args.sizes.split(",")]
    imaps = world.dovecot.imaps_port
    return {
        "bulk": lambda: bulk_rows(world, sizes, int(args.smtp_size * MB), args.repetitions),
        "login": lambda: login_rows(world, args.logins),
        "burst": lambda: burst_rows(world, args.burst, 5.0, 30.0, imaps),
        "crowd": lambda: crowd_rows(world, args.crowd, args.crowd_ramp, args.idle),
        "stall": lambda: stall_rows(world, max(sizes), args.stall),
        "storm": lambda: storm_rows(world, args.storm, 60.0),
    }


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    args = _options()
    chosen = [row for row in args.rows.split(",") if row]
    if unknown := set(chosen) - set(ROWS):
        raise SystemExit(f"unknown rows: {', '.join(sorted(unknown))} (choose from {', '.join(ROWS)})")
    if reason := dovecot_available():
        raise SystemExit(f"the benchmark needs Dovecot: {reason}")
    signal.signal(signal.SIGTERM, _interrupted)  # stop everything on the way out, as on Ctrl-C
    command = os.environ.get("BENCH_COMMAND") or shlex.join(["python", "-m", "tests.benchmark", *sys.argv[1:]])
    emailproxy = args.emailproxy if args.emailproxy.exists() else None
    py_spy = BENCH_VENV / "py-spy" if args.profile else None
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    started, load_before = time.monotonic(), load_average()
    sizes = sorted({int(float(size) * MB) for size in args.sizes.split(",")})
    messages = [message(size, f"{size // MB} MB") for size in sizes]
    print(f"benchmark: starting Dovecot, the fake Entra ID, the light upstream and the proxies "
          f"(load {load_before})", file=sys.stderr, flush=True)
    rows: list[Row] = []
    profiles: list[str] = []
    row_loads: list[str] = []  # the 1-minute load as each row started: was the machine busy?
    with tempfile.TemporaryDirectory(prefix="xoauth2-bench-") as tmp, \
            bench_world(Path(tmp), emailproxy, messages, args.before) as world:
        columns = [target.name for target in world.targets]
        runners = _row_runners(world, args)
        for name in chosen:
            row_loads.append(f"{name} {load_average().split()[0]}")
            print(f"benchmark: {name} ({time.monotonic() - started:.0f} s in)", file=sys.stderr, flush=True)
            output = (args.profile / f"{name}.txt") if args.profile else Path(os.devnull)
            try:
                with profiled(py_spy, world.targets[-1].pid(), output):
                    rows += runners[name]()
            except Exception as e:  # a failing row must not take the table with it
                rows.append(Row(name, {column: failed(e) for column in columns}))
            if args.profile:
                profiles.append(summary(output))
        notes = world.notes
        version = emailproxy_version(emailproxy) if emailproxy else "not run"
    load_after = load_average()
    print(table(rows, columns))
    print()
    print(f"Machine: {machine_line(version)}")
    print(f"Command: {command}")
    print(f"Load average (1, 5, 15 min): {load_before} before, {load_after} after; "
          f"took {time.monotonic() - started:.0f} s")
    print(f"Load (1 min) as each row started: {', '.join(row_loads)}")
    for note in notes:
        print(f"Note: {note}")
    for profile in profiles:
        print()
        print(profile)


if __name__ == "__main__":
    main()
