"""Rows measured one connection at a time, targets interleaved per repetition: bulk transfers
(MB/s, ratio to direct, the proxy's CPU per 100 MB), logins (median, p99) and a stalled reader."""

from __future__ import annotations

import functools
import os
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tests.bench import wire
from tests.bench.procfs import cpu_seconds, rss_bytes
from tests.bench.report import Row, failed, median, percentile, ratio_text
from tests.bench.world import DIRECT, BenchWorld, Target

MB = 1_000_000
LINE_LENGTH = 76  # base64 attachment lines, as mail mostly is


def message(size: int, label: str) -> bytes:
    """A message of exactly `size` bytes with CRLF lines no longer than 78 bytes, none starting
    with '.', so it needs no dot-stuffing."""
    head = f"From: <bench@contoso.example>\r\nSubject: bench {label}\r\n\r\n".encode()
    line_count, rest = divmod(size - len(head), LINE_LENGTH + 2)
    line = os.urandom(LINE_LENGTH // 2).hex().encode() + b"\r\n"
    tail = b"x" * (rest - 2) + b"\r\n" if rest >= 2 else b""
    body = line * line_count + tail
    if rest == 1:
        body = body[:-(LINE_LENGTH + 2)] + b"x" * (LINE_LENGTH + 1) + b"\r\n"
    raw = head + body
    assert len(raw) == size, (len(raw), size)
    return raw


def rotated(targets: Sequence[Target], repetition: int) -> list[Target]:
    """The targets in turn, each repetition starting with the next: drift hits all alike."""
    shift = repetition % len(targets)
    return list(targets[shift:]) + list(targets[:shift])


@dataclass
class Transfers:
    """Timings and the proxy CPU of one kind of transfer (e.g. IMAP FETCH of 28 MB)."""

    rates: dict[str, list[float]]
    cpu: dict[str, list[float]]  # CPU seconds of the target's process per transfer
    errors: dict[str, str]


def _closest(sizes: dict[int, int], size: int) -> int:
    return sizes[min(sizes, key=lambda found: abs(found - size))]


def bulk_rows(world: BenchWorld, sizes: Sequence[int], smtp_size: int, repetitions: int) -> list[Row]:
    kinds = [("IMAP FETCH", size) for size in sizes] + [("POP3 RETR", size) for size in sizes]
    kinds.append(("SMTP DATA", smtp_size))
    results = {kind: Transfers(defaultdict(list), defaultdict(list), {}) for kind in kinds}
    smtp_payload = message(smtp_size, "smtp")
    for repetition in range(repetitions):
        for target in rotated(world.targets, repetition):
            _imap_round(world, target, [k for k in kinds if k[0] == "IMAP FETCH"], results)
            _pop3_round(target, [k for k in kinds if k[0] == "POP3 RETR"], results)
            _smtp_round(world, target, ("SMTP DATA", smtp_size), smtp_payload, results)
    rows = []
    for kind in kinds:
        transfers = results[kind]
        row = Row(f"bulk: {kind[0]} of {kind[1] / MB:g} MB, MB/s (ratio to direct)")
        direct = median(transfers.rates[DIRECT]) if transfers.rates.get(DIRECT) else None
        for target in world.targets:
            rates = transfers.rates.get(target.name)
            if rates:
                row.cells[target.name] = f"{median(rates):.0f}{ratio_text(median(rates), direct)}"
            if target.name in transfers.errors:
                row.cells[target.name] = failed(RuntimeError(transfers.errors[target.name]))
        rows.append(row)
    for protocol in ("IMAP FETCH", "POP3 RETR", "SMTP DATA"):
        row = Row(f"bulk: CPU s per 100 MB relayed, {protocol} (all sizes)")
        for target in world.targets[1:]:
            cpu = sum(sum(results[k].cpu[target.name]) for k in kinds if k[0] == protocol)
            moved = sum(len(results[k].cpu[target.name]) * k[1] for k in kinds if k[0] == protocol)
            if moved:
                row.cells[target.name] = f"{cpu / moved * 100 * MB:.2f}"
        rows.append(row)
    return rows


def _timed(target: Target, transfers: Transfers, size: int, transfer: Callable[[], object]) -> None:
    pid = target.pid()
    cpu_before = cpu_seconds(pid) if pid else 0.0
    started = time.perf_counter()
    transfer()
    elapsed = time.perf_counter() - started
    if pid:
        transfers.cpu[target.name].append(cpu_seconds(pid) - cpu_before)
    transfers.rates[target.name].append(size / elapsed / MB)


def _imap_round(world: BenchWorld, target: Target, kinds: list[tuple[str, int]],
                results: dict[tuple[str, int], Transfers]) -> None:
    try:
        conn = wire.imap_login(target.imap)
        wire.imap_select(conn)
        uids = wire.imap_uids_by_size(conn)
        for kind in kinds:
            uid = _closest(uids, kind[1])
            _timed(target, results[kind], kind[1], functools.partial(wire.imap_fetch, conn, uid))
        wire.imap_logout(conn)
    except Exception as e:  # one failing target must not lose the others' figures
        for kind in kinds:
            results[kind].errors[target.name] = str(e)


def _pop3_round(target: Target, kinds: list[tuple[str, int]],
                results: dict[tuple[str, int], Transfers]) -> None:
    try:
        conn = wire.pop3_login(target.pop3)
        numbers = wire.pop3_numbers_by_size(conn)
        for kind in kinds:
            number = _closest(numbers, kind[1])
            _timed(target, results[kind], kind[1], functools.partial(wire.pop3_retr, conn, number))
        wire.pop3_quit(conn)
    except Exception as e:
        for kind in kinds:
            results[kind].errors[target.name] = str(e)


def _smtp_round(world: BenchWorld, target: Target, kind: tuple[str, int], payload: bytes,
                results: dict[tuple[str, int], Transfers]) -> None:
    try:
        conn = wire.smtp_login(target.smtp)
        _timed(target, results[kind], kind[1],
               lambda: wire.smtp_send(conn, target.smtp.user, "bob@example.org", payload))
        wire.smtp_quit(conn)
    except Exception as e:
        results[kind].errors[target.name] = str(e)
    finally:
        world.dovecot.sink.clear()  # the sink keeps every message in memory otherwise


LOGINS: dict[str, Callable[[wire.Access], None]] = {
    "IMAP": lambda access: wire.imap_logout(wire.imap_login(access)),
    "POP3": lambda access: wire.pop3_quit(wire.pop3_login(access)),
    "SMTP": lambda access: wire.smtp_quit(wire.smtp_login(access)),
}


def login_rows(world: BenchWorld, repetitions: int) -> list[Row]:
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    errors: dict[tuple[str, str], str] = {}
    for target in world.targets:  # the first login unlocks stores and fetches tokens
        for protocol, login in LOGINS.items():
            try:
                login(getattr(target, protocol.lower()))
            except Exception as e:
                errors[protocol, target.name] = f"first login: {e}"
    for repetition in range(repetitions):
        for target in rotated(world.targets, repetition):
            for protocol, login in LOGINS.items():
                if (protocol, target.name) in errors:
                    continue
                started = time.perf_counter()
                try:
                    login(getattr(target, protocol.lower()))
                except Exception as e:
                    errors[protocol, target.name] = str(e)
                    continue
                times[protocol, target.name].append((time.perf_counter() - started) * 1000)
    rows = []
    for protocol in LOGINS:
        row = Row(f"login: {protocol} connect + login + logout, token cached, ms: median / p99")
        direct = times.get((protocol, DIRECT))
        for target in world.targets:
            samples = times.get((protocol, target.name))
            if (protocol, target.name) in errors:
                row.cells[target.name] = failed(RuntimeError(errors[protocol, target.name]))
            elif samples:
                extra = f" (+{median(samples) - median(direct):.1f})" if direct and target.name != DIRECT else ""
                row.cells[target.name] = f"{median(samples):.1f}{extra} / {percentile(samples, 0.99):.1f}"
        rows.append(row)
    return rows


STALL_READ_FIRST = 1 * MB


def stall_rows(world: BenchWorld, size: int, seconds: float) -> list[Row]:
    growth = Row(f"stall: reader stops {STALL_READ_FIRST / MB:g} MB into a FETCH of {size / MB:g} MB "
                 f"for {seconds:g} s: RSS growth, MB")
    cpu = Row(f"stall: CPU s of the proxy while the reader waits {seconds:g} s")
    for target in world.targets[1:]:
        try:
            pid = target.pid()
            assert pid is not None
            conn = wire.imap_login(target.imap)
            wire.imap_select(conn)
            uid = _closest(wire.imap_uids_by_size(conn), size)
            rss_before = rss_bytes(pid)
            total = wire.imap_fetch(conn, uid, stop_after=STALL_READ_FIRST)
            cpu_before = cpu_seconds(pid)
            time.sleep(seconds)
            cpu.cells[target.name] = f"{cpu_seconds(pid) - cpu_before:.2f}"
            growth.cells[target.name] = f"{(rss_bytes(pid) - rss_before) / MB:+.1f}"
            wire.imap_finish_fetch(conn, total - STALL_READ_FIRST)
            wire.imap_logout(conn)
        except Exception as e:
            growth.cells[target.name] = cpu.cells[target.name] = failed(e)
    return [growth, cpu]
