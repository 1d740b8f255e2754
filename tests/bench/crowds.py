"""Rows with many IMAP connections at once, driven by asyncio: a burst of simultaneous connects,
a crowd of idle sessions, and a storm of logins on an expired token."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from tests.bench import wire
from tests.bench.procfs import connections_to, cpu_seconds, rss_bytes
from tests.bench.report import Row, failed
from tests.bench.world import DIRECT, BenchWorld, Target

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
STREAM_LIMIT = 1 << 16


async def _open(access: wire.Access, timeout: float) -> Streams:
    return await asyncio.wait_for(asyncio.open_connection(
        "127.0.0.1", access.port, ssl=access.tls, limit=STREAM_LIMIT,
        server_hostname="127.0.0.1" if access.tls else None,
    ), timeout)


async def _tagged(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tag: bytes) -> None:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed by the server")
        if line.startswith(b"+"):
            writer.write(b"\r\n")  # a failure challenge
        elif line.startswith(tag + b" "):
            if not line.startswith(tag + b" OK"):
                raise wire.ServerSaidNo(line.decode("utf-8", "replace").strip())
            return


async def _login(streams: Streams, access: wire.Access) -> None:
    reader, writer = streams
    if access.direct:
        writer.write(b"a AUTHENTICATE XOAUTH2 " + access.xoauth2 + b"\r\n")
    else:
        writer.write(b"a LOGIN " + wire.imap_quote(access.user) + b" "
                     + wire.imap_quote(access.password) + b"\r\n")
    await _tagged(reader, writer, b"a")


async def _logout(streams: Streams) -> None:
    reader, writer = streams
    writer.write(b"z LOGOUT\r\n")
    await _tagged(reader, writer, b"z")


async def _close(streams: Streams) -> None:
    writer = streams[1]
    writer.close()
    # Gone already, or a TLS close the server never answered: either way it is closed here.
    with contextlib.suppress(OSError, asyncio.TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 5)


def _describe(errors: Counter[str]) -> str:
    return "; ".join(f"{count}x {text}" for text, count in errors.most_common(2))


def _error_text(error: BaseException) -> str:
    return " ".join(str(error).split())[:70] or type(error).__name__


async def _gather(count: int, client: Callable[[], Awaitable[object]]) -> tuple[list[object], Counter[str]]:
    outcomes = await asyncio.gather(*(client() for _ in range(count)), return_exceptions=True)
    errors = Counter(_error_text(o) for o in outcomes if isinstance(o, BaseException))
    return [o for o in outcomes if not isinstance(o, BaseException)], errors


# -- burst --

async def _burst(access: wire.Access, count: int, patience: float) -> tuple[list[float], int, Counter[str]]:
    """`count` clients connect at once, then each logs in and out: greeting times, logins done."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    greetings: list[float] = []

    async def client() -> None:
        streams = await _open(access, patience)
        try:
            greeting = await asyncio.wait_for(streams[0].readline(), patience)
            if not greeting.startswith(b"* OK"):
                raise wire.ServerSaidNo(greeting.decode("utf-8", "replace").strip() or "closed")
            greetings.append(loop.time() - started)
            await asyncio.wait_for(_login(streams, access), patience)
            await asyncio.wait_for(_logout(streams), patience)
        finally:
            await _close(streams)

    outcomes, errors = await _gather(count, client)
    return greetings, len(outcomes), errors


# When to count upstream connections after a burst: once the clients are gone, and again once
# an upstream login still pending then (upstream_timeout_seconds, 30 by default) has timed out.
LEFT_CHECKS = (5.0, 30.0)


def burst_rows(world: BenchWorld, count: int, window: float, patience: float,
               upstream_port: int) -> list[Row]:
    greeted = Row(f"burst: {count} simultaneous connects, greeted within {window:g} s (later; slowest s)")
    logins = Row(f"burst: of those, logged in and out within {patience:g} s")
    left = Row(f"burst: the proxy's connections still open upstream {LEFT_CHECKS[0]:g} s / "
               f"{sum(LEFT_CHECKS):g} s after the clients closed")
    for target in world.targets:
        try:
            times, done, errors = asyncio.run(_burst(target.imap, count, patience))
            within = sum(1 for t in times if t <= window)
            slowest = f"{max(times):.2f}" if times else "-"
            greeted.cells[target.name] = f"{within} ({len(times) - within}; {slowest})"
            logins.cells[target.name] = f"{done}" + (f" [{_describe(errors)}]" if errors else "")
            pid = target.pid()
            if pid is not None:
                counts = []
                for wait in LEFT_CHECKS:
                    time.sleep(wait)
                    counts.append(str(connections_to(pid, upstream_port)))
                left.cells[target.name] = " / ".join(counts)
        except Exception as e:
            greeted.cells[target.name] = failed(e)
    return [greeted, logins, left]


# -- crowd --

# Sessions opened at a time: fewer than any listen backlog (emailproxy's is 5), so that the
# crowd measures holding sessions, not taking a burst.
CROWD_OPENING = 4

async def _crowd(target: Target, count: int, ramp_limit: float, idle_seconds: float,
                 upstream_port: int) -> dict[str, str]:
    access = target.light
    pid = target.pid()
    assert access is not None and pid is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ramp_limit
    gate = asyncio.Semaphore(CROWD_OPENING)
    held: list[Streams] = []
    rss_before = rss_bytes(pid)
    started = loop.time()

    async def session() -> None:
        async with gate:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError("not started: ramp time over")
            streams = await _open(access, remaining)
            try:
                await asyncio.wait_for(streams[0].readline(), remaining)
                await asyncio.wait_for(_login(streams, access), remaining)
                streams[1].write(b"i IDLE\r\n")
                answer = await asyncio.wait_for(streams[0].readline(), remaining)
                if not answer.startswith(b"+"):
                    raise wire.ServerSaidNo(answer.decode("utf-8", "replace").strip())
            except BaseException:
                await _close(streams)
                raise
            held.append(streams)

    _, errors = await _gather(count, session)
    ramp = loop.time() - started
    try:
        await asyncio.sleep(2)  # let the last answers and buffers settle
        rss_after = rss_bytes(pid)
        cpu_before = cpu_seconds(pid)
        await asyncio.sleep(idle_seconds)
        idle_cpu = cpu_seconds(pid) - cpu_before
    finally:
        await asyncio.gather(*(_close(streams) for streams in held))
    cells = {
        "held": f"{len(held)} in {ramp:.0f} s" + (f" [{_describe(errors)}]" if errors else ""),
        "rss": f"{(rss_after - rss_before) / max(1, len(held)) / 1024:.1f}" if held else "-",
        "cpu": f"{idle_cpu:.2f}",
    }
    for _ in range(60):  # the proxy lets go of the upstream sessions
        if connections_to(pid, upstream_port) == 0:
            break
        await asyncio.sleep(0.5)
    return cells


def crowd_rows(world: BenchWorld, count: int, ramp_limit: float, idle_seconds: float) -> list[Row]:
    held = Row(f"crowd: logged-in IDLE sessions held at once (of {count}, ramp up to {ramp_limit:g} s)")
    rss = Row("crowd: RSS per IDLE session, KB")
    cpu = Row(f"crowd: CPU s of the proxy while they idle {idle_seconds:g} s")
    limit = Row("crowd: open-files limit the proxy started with (soft/hard; the benchmark raises it)")
    for target in world.targets:
        if target.name == DIRECT:
            continue
        if target.files_limit_at_start:
            limit.cells[target.name] = "{}/{}".format(*target.files_limit_at_start)
        try:
            cells = asyncio.run(_crowd(target, count, ramp_limit, idle_seconds, world.light.port))
            held.cells[target.name], rss.cells[target.name] = cells["held"], cells["rss"]
            cpu.cells[target.name] = cells["cpu"]
        except Exception as e:
            held.cells[target.name] = failed(e)
    return [held, rss, cpu, limit]


# -- storm --

async def _logins(access: wire.Access, count: int, patience: float) -> tuple[int, Counter[str]]:
    async def client() -> None:
        streams = await _open(access, patience)
        try:
            await asyncio.wait_for(streams[0].readline(), patience)
            await asyncio.wait_for(_login(streams, access), patience)
            await asyncio.wait_for(_logout(streams), patience)
        finally:
            await _close(streams)

    outcomes, errors = await _gather(count, client)
    return len(outcomes), errors


STORM_TOKEN_LIFETIME = 2


def storm_rows(world: BenchWorld, count: int, patience: float) -> list[Row]:
    row = Row(f"storm: {count} simultaneous logins on an expired token: token requests (logins ok)")
    for target in world.targets:
        if target.storm is None:
            continue
        try:
            # One login first unlocks the account and leaves it a token that soon expires.
            world.entra.access_token_lifetime = STORM_TOKEN_LIFETIME
            done, errors = asyncio.run(_logins(target.storm, 1, patience))
            if done != 1:
                raise RuntimeError(f"the first login failed: {_describe(errors)}")
            time.sleep(STORM_TOKEN_LIFETIME + 1.5)
            world.entra.access_token_lifetime = 3600
            before = world.entra.token_requests()
            done, errors = asyncio.run(_logins(target.storm, count, patience))
            requests = world.entra.token_requests() - before
            row.cells[target.name] = f"{requests} ({done} ok)" + (f" [{_describe(errors)}]" if errors else "")
        except Exception as e:
            row.cells[target.name] = failed(e)
        finally:
            world.entra.access_token_lifetime = 3600
    return [row]
