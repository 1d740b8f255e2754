"""The mechanisms that keep the proxy as fast as a direct connection, each bounded, none timed:
the listen queue, a burst, TCP_NODELAY, flow control, TLS session resumption, open-file limits."""

from __future__ import annotations

import ctypes
import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.glue.tcp_options import DEFAULT_BACKLOG
from tests.bench.procfs import cpu_seconds, open_files_limit
from tests.integration.conftest import ALICE, ALICE_SECRET, PASSWORD, World
from tests.support.ports import free_port
from tests.support.proxy_config import account_toml, limits_toml, listener_toml, store_toml
from tests.support.proxy_process import ProxyProcess

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform != "linux", reason="reads sockets through /proc and ss"),
]
ROOT = Path(__file__).resolve().parents[2]
BURST = 300
ESTABLISHED = "01"  # the state column of /proc/net/tcp


class Speedy:
    """A proxy of this module's own: IMAP on Dovecot with the default listen queue ("imap"),
    one with `backlog=200` in its listen string ("imap-200"), POP3, and session limits above
    the burst."""

    def __init__(self, world: World, workdir: Path) -> None:
        self.world = world
        self.ports = {name: free_port() for name in ("imap", "imap-200", "pop3")}
        dovecot, ca = world.dovecot, world.dovecot.ca.cert_path
        imaps = f"tls:127.0.0.1:{dovecot.imaps_port}"
        config = (
            store_toml(workdir / "store")
            + limits_toml(max_sessions=2 * BURST, max_sessions_per_address=2 * BURST)
            + listener_toml("imap", f"tcp:{self.ports['imap']}:interface=127.0.0.1", imaps, ca)
            + listener_toml("imap", f"tcp:{self.ports['imap-200']}:interface=127.0.0.1:backlog=200",
                            imaps, ca)
            + listener_toml("pop3", f"tcp:{self.ports['pop3']}:interface=127.0.0.1",
                            f"tls:127.0.0.1:{dovecot.pop3s_port}", ca)
            + account_toml(ALICE, "app-alice", ALICE_SECRET, world.entra.authority)
        )
        self.process = ProxyProcess(workdir, config)
        added = self.process.cli("account", "add", ALICE, "--password-stdin", stdin=PASSWORD + "\n")
        assert added.returncode == 0, added.stderr


@pytest.fixture(scope="module")
def speedy(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Speedy]:
    proxy = Speedy(world, tmp_path_factory.mktemp("speed"))
    proxy.process.start(*proxy.ports.values())
    try:
        yield proxy
    finally:
        proxy.process.stop()


def _listen_queue(port: int) -> int:
    """The backlog of the socket listening on `port`, as the kernel reports it (ss's Send-Q)."""
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True,
                         check=True).stdout.split()
    return int(out[2])


def _imap_login(port: int) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", port), timeout=30)
    reader = conn.makefile("rb")
    assert reader.readline().startswith(b"* OK")
    conn.sendall(b'a LOGIN "%s" "%s"\r\n' % (ALICE.encode(), PASSWORD.replace("\\", "\\\\")
                                            .replace('"', '\\"').encode()))
    while not (line := reader.readline()).startswith(b"a "):
        assert line, "closed during login"
    assert line.startswith(b"a OK"), line
    return conn


def _connections(pid: int, local: int | None = None,
                 remote: int | None = None) -> dict[str, tuple[int, int]]:
    """`pid`'s established TCP connections with that local or remote port: socket inode ->
    (descriptor, bytes in its receive queue), from /proc/PID/fd and /proc/net/tcp."""
    descriptors = {}
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            descriptors[target[8:-1]] = int(fd.name)
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            local_port, remote_port = (int(f.rsplit(":", 1)[1], 16) for f in fields[1:3])
            if (fields[9] in descriptors and fields[3] == ESTABLISHED and local in (None, local_port)
                    and remote in (None, remote_port)):
                found[fields[9]] = (descriptors[fields[9]], int(fields[4].split(":")[1], 16))
    return found


def _new_connection(pid: int, before: dict[str, tuple[int, int]], **ports: int) -> str:
    """The inode of the one connection with those ports that was not there `before`."""
    new = set(_connections(pid, **ports)) - set(before)
    assert len(new) == 1, new
    return new.pop()


def _no_delay(pid: int, fd: int) -> bool:
    """TCP_NODELAY of another process's socket, read through a duplicate (pidfd_getfd)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        duplicate = libc.syscall(438, pidfd, fd, 0)  # pidfd_getfd, the same number everywhere
        if duplicate < 0:
            pytest.fail(f"pidfd_getfd: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(pidfd)
    with socket.socket(fileno=duplicate) as copy:
        return bool(copy.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def test_listeners_hold_a_burst_by_default_and_keep_a_backlog_set_in_the_listen_string(
    speedy: Speedy,
) -> None:
    """The kernel's listen queue is 1024 (within somaxconn) by default, 200 when `backlog=200`."""
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    assert _listen_queue(speedy.ports["imap"]) == min(DEFAULT_BACKLOG, somaxconn)
    assert _listen_queue(speedy.ports["imap-200"]) == 200


def test_a_burst_of_simultaneous_connects_is_all_greeted(speedy: Speedy) -> None:
    """300 clients connecting at once all get the greeting (none lost to a full listen queue)."""
    import asyncio

    async def client() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", speedy.ports["imap"])
        try:
            return await asyncio.wait_for(reader.readline(), 20)
        finally:
            writer.close()

    async def burst() -> list[bytes | BaseException]:
        return await asyncio.gather(*(client() for _ in range(BURST)), return_exceptions=True)

    greetings = asyncio.run(burst())
    assert [g for g in greetings if not (isinstance(g, bytes) and g.startswith(b"* OK"))] == []


def test_both_sockets_of_a_session_send_without_delay(speedy: Speedy, world: World) -> None:
    """TCP_NODELAY is set on the device's socket and on the upstream's."""
    pid = speedy.process.pid
    before = _connections(pid)
    conn = _imap_login(speedy.ports["imap"])
    try:
        client = _new_connection(pid, before, local=speedy.ports["imap"])
        upstream = _new_connection(pid, before, remote=world.dovecot.imaps_port)
        for inode in (client, upstream):
            assert _no_delay(pid, _connections(pid)[inode][0]), inode
    finally:
        conn.close()


def test_a_reader_that_stops_pauses_the_upstream(speedy: Speedy, world: World) -> None:
    """While the client reads nothing of a large FETCH, the proxy stops reading the upstream:
    the upstream socket's receive queue fills and stays as it is, and the proxy stays idle."""
    world.dovecot.deliver(ALICE, b"Subject: large\r\n\r\n" + (b"y" * 998 + b"\r\n") * 20_000,
                          folder="Stalled")  # 20 MB, far more than the socket buffers hold
    pid = speedy.process.pid
    before = _connections(pid)
    conn = _imap_login(speedy.ports["imap"])
    try:
        upstream = _new_connection(pid, before, remote=world.dovecot.imaps_port)
        conn.sendall(b"s EXAMINE Stalled\r\nf FETCH 1 BODY.PEEK[]\r\n")  # then read nothing
        queues = []
        for _ in range(3):
            time.sleep(1.0)
            queues.append(_connections(pid)[upstream][1])
        cpu = cpu_seconds(pid)
        time.sleep(1.0)
        assert cpu_seconds(pid) - cpu < 0.2  # waiting, not spinning
        assert queues[0] > 0 and queues[1] == queues[2], queues
    finally:
        conn.close()


def _probe(world: World, *names: str, smtp: bool = False) -> list[dict[str, object]]:
    """Logins by tests/support/upstream_probe.py (the proxy's upstream code), one per name:
    IMAP over implicit TLS, or SMTP submission with STARTTLS."""
    port = world.dovecot.submission_port if smtp else world.dovecot.imaps_port
    result = subprocess.run(
        [sys.executable, "-m", "tests.support.upstream_probe", *(["--smtp"] if smtp else []),
         "--port", str(port), "--ca", str(world.dovecot.ca.cert_path),
         "--mailbox", ALICE, *names],
        input=world.dovecot.token(ALICE) + "\n", capture_output=True, text=True, timeout=60,
        cwd=ROOT, check=False,
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_the_second_login_resumes_the_tls_session_of_the_first(world: World) -> None:
    """The session the first login left is offered and taken at the next: no new handshake."""
    first, second, third = _probe(world, "127.0.0.1", "127.0.0.1", "127.0.0.1")
    assert first == {"ok": True, "resumed": False}
    assert second == {"ok": True, "resumed": True}
    assert third == {"ok": True, "resumed": True}


@pytest.mark.parametrize("smtp", [False, True], ids=["imap-tls", "smtp-starttls"])
def test_a_resumed_session_is_still_refused_for_a_certificate_naming_another_host(
    world: World, smtp: bool,
) -> None:
    """The certificate's name is checked on a resumed handshake too (OpenSSL's verification,
    where Twisted checks it, does not run then), after STARTTLS as on implicit TLS: a name it
    lacks fails the login, before any token is sent."""
    first, second = _probe(world, "127.0.0.1", "mail.wrong.example", smtp=smtp)
    assert first == {"ok": True, "resumed": False}
    assert second["ok"] is False and second["resumed"] is True
    assert "certificate could not be verified" in str(second["error"])


def test_open_files_soft_limit_is_raised_to_the_hard_limit_at_start(speedy: Speedy) -> None:
    """serve raises its soft RLIMIT_NOFILE to the hard limit and says so in its log."""
    soft, hard = open_files_limit(speedy.process.pid)
    assert soft == hard
    assert "open files: limit" in speedy.process.log_text()


def test_out_of_descriptors_tells_devices_to_come_back_later_and_logs_it_once(
    world: World, tmp_path: Path,
) -> None:
    """With the open-file limit reached, new devices get the busy answer in their protocol's
    words, the proxy does not spin, the log says why once, and room again serves as before."""
    proxy = Speedy(world, tmp_path)
    limit = 128
    proxy.process.start(*proxy.ports.values())
    held: list[socket.socket] = []
    try:
        pid = proxy.process.pid
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, limit))
        answers = []
        for _ in range(limit):
            conn = socket.create_connection(("127.0.0.1", proxy.ports["imap"]), timeout=10)
            held.append(conn)
            answers.append(conn.makefile("rb").readline())
        busy = [a for a in answers if a.startswith(b"* BYE [UNAVAILABLE]")]
        assert busy and all(a.startswith(b"* OK") for a in answers[: len(answers) - len(busy)])
        cpu = cpu_seconds(pid)
        time.sleep(1.0)
        assert cpu_seconds(pid) - cpu < 0.2
        for conn in held:
            conn.close()
        held.clear()
        time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", proxy.ports["imap"]), timeout=10) as conn:
            assert conn.makefile("rb").readline().startswith(b"* OK")
        assert proxy.process.log_text().count("open files: ") == 2  # the start and the shortage
    finally:
        for conn in held:
            conn.close()
        proxy.process.stop()
