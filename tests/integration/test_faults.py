"""Upstream faults through the proxy subprocess: what the client is told, and that the proxy goes
on serving others without leaking file descriptors or memory.

The proxy here is its own process (its own store and config), its upstreams behind fault
injectors (tests/support/faults.py) in front of the world's Dovecot. Its config sets
upstream_timeout_seconds in [limits] to UPSTREAM_TIMEOUT (30 s by default), so a silent upstream
can be tested quickly.
"""

from __future__ import annotations

import base64
import imaplib
import os
import random
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import ALICE, PASSWORD, World
from tests.support.certs import make_ca
from tests.support.faults import FaultInjector, TlsImpostor
from tests.support.ports import free_port
from tests.support.proxy_config import alice_account_toml, limits_toml, listener_toml, store_toml
from tests.support.proxy_process import ProxyProcess

pytestmark = pytest.mark.integration

UPSTREAM_TIMEOUT = 3  # seconds: upstream_timeout_seconds in the proxy's [limits]
BIG_SUBJECT = "faults: big message"
MEDIUM_SUBJECT = "faults: medium message"
UNAVAILABLE = {  # the temporary-failure answer each protocol gives during login
    "imap": rb"^a1 NO \[UNAVAILABLE\] ",
    "pop3": rb"^-ERR \[SYS/TEMP\] ",
    "smtp": rb"^454 4\.7\.0 ",
}


class FaultProxy(ProxyProcess):
    """The proxy, with its open descriptors and resident memory read from /proc."""

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        assert match is not None
        return int(match.group(1))


@dataclass
class Faulty:
    world: World
    proxy: FaultProxy
    ports: dict[str, int]  # proxy listeners
    injectors: dict[str, FaultInjector]  # "imap", "pop3", "smtp": switchable; "refused", "resets"
    impostor: TlsImpostor


@pytest.fixture(scope="module")
def faulty(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faulty]:
    workdir = tmp_path_factory.mktemp("faults")
    dovecot = world.dovecot
    injectors = {
        "imap": FaultInjector(dovecot.imaps_port),
        "pop3": FaultInjector(dovecot.pop3s_port),
        "smtp": FaultInjector(dovecot.submission_port),
        "refused": FaultInjector(dovecot.imaps_port, mode="refuse"),
        "resets": FaultInjector(dovecot.imaps_port),
    }
    # A certificate from the CA the proxy trusts, but for another host than the one it dials.
    cert, key = dovecot.ca.issue(workdir / "impostor", "other.example", ["other.example"])
    impostor = TlsImpostor(cert, key)
    other_ca = make_ca(workdir / "other-ca")
    ca = dovecot.ca.cert_path
    upstreams = {  # listener: (protocol, upstream, upstream_ca)
        "imap": ("imap", f"tls:127.0.0.1:{injectors['imap'].port}", ca),
        "pop3": ("pop3", f"tls:127.0.0.1:{injectors['pop3'].port}", ca),
        "smtp": ("smtp", f"tcp:127.0.0.1:{injectors['smtp'].port}", ca),
        "imap-refused": ("imap", f"tls:127.0.0.1:{injectors['refused'].port}", ca),
        "imap-resets": ("imap", f"tls:127.0.0.1:{injectors['resets'].port}", ca),
        "imap-impostor": ("imap", f"tls:127.0.0.1:{impostor.port}", ca),
        "imap-unknown-ca": ("imap", f"tls:127.0.0.1:{dovecot.imaps_port}", other_ca.cert_path),
    }
    ports = {name: free_port() for name in upstreams}
    listeners = "".join(
        listener_toml(protocol, f"tcp:{ports[name]}:interface=127.0.0.1", upstream, trusted)
        for name, (protocol, upstream, trusted) in upstreams.items()
    )
    config = (store_toml(workdir / "store") + limits_toml(upstream_timeout_seconds=UPSTREAM_TIMEOUT)
              + listeners + alice_account_toml(world.entra.authority))
    proxy = FaultProxy(workdir, config)
    lifetime = world.entra.access_token_lifetime
    world.entra.access_token_lifetime = 3600  # one token for the whole module
    try:
        added = proxy.cli("account", "add", ALICE, "--password-stdin", stdin=PASSWORD + "\n")
    finally:
        world.entra.access_token_lifetime = lifetime
    assert added.returncode == 0, added.stderr
    body = b"".join(b"line %07d " % i + os.urandom(30).hex().encode() + b"\r\n" for i in range(80_000))
    dovecot.deliver(ALICE, f"Subject: {BIG_SUBJECT}\r\n\r\n".encode() + body)
    dovecot.deliver(ALICE, f"Subject: {MEDIUM_SUBJECT}\r\n\r\n".encode() + body[:300_000])
    for injector in injectors.values():
        injector.start()
    impostor.start()
    try:
        proxy.start(*ports.values())
        yield Faulty(world, proxy, ports, injectors, impostor)
    finally:
        proxy.stop()
        impostor.stop()
        for injector in injectors.values():
            injector.stop()


# -- clients ------------------------------------------------------------------------------------


def _connect(port: int, timeout: float = 20) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def _read_line(s: socket.socket, buffer: bytearray) -> bytes:
    while b"\n" not in buffer:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed; had {bytes(buffer)!r}")
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line + b"\n"


def _read_until(s: socket.socket, buffer: bytearray, prefix: bytes) -> bytes:
    """Lines until one starting with `prefix`; returns that line."""
    while not (line := _read_line(s, buffer)).startswith(prefix):
        pass
    return line


def _imap_login_command(tag: bytes = b"a1") -> bytes:
    password = PASSWORD.encode()
    return tag + b' LOGIN "' + ALICE.encode() + b'" {%d+}\r\n' % len(password) + password + b"\r\n"


def _login_answer(protocol: str, port: int, timeout: float = 20) -> bytes:
    """Log in as ALICE with the protocol's plain login; returns the server's answer to it."""
    buffer = bytearray()
    with _connect(port, timeout) as s:
        _read_line(s, buffer)  # greeting
        if protocol == "imap":
            s.sendall(_imap_login_command())
            return _read_until(s, buffer, b"a1 ")
        if protocol == "pop3":
            s.sendall(f"USER {ALICE}\r\nPASS {PASSWORD}\r\n".encode())
            _read_line(s, buffer)  # +OK to USER
            return _read_line(s, buffer)
        plain = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode())
        s.sendall(b"EHLO faults.example\r\nAUTH PLAIN " + plain + b"\r\n")
        _read_until(s, buffer, b"250 ")
        return _read_line(s, buffer)


def _imap_session(port: int) -> tuple[socket.socket, bytearray]:
    """A raw IMAP session logged in as ALICE with INBOX selected."""
    s = _connect(port)
    buffer = bytearray()
    _read_line(s, buffer)
    s.sendall(_imap_login_command() + b"a2 SELECT INBOX\r\n")
    assert _read_until(s, buffer, b"a1 ").startswith(b"a1 OK")
    assert _read_until(s, buffer, b"a2 ").startswith(b"a2 OK")
    return s, buffer


def _message_number(port: int, subject: str) -> int:
    client = imaplib.IMAP4("127.0.0.1", port, timeout=20)
    try:
        client.login(ALICE, PASSWORD)
        client.select("INBOX", readonly=True)
        status, found = client.search(None, f'(SUBJECT "{subject}")')
        assert status == "OK" and found[0], found
        return int(found[0].split()[-1])
    finally:
        client.logout()


def _drain(s: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Read until the server closes (EOF or reset); returns the bytes and the seconds taken."""
    started = time.monotonic()
    s.settimeout(timeout)
    received = bytearray()
    try:
        while chunk := s.recv(1 << 20):
            received += chunk
    except ConnectionResetError:
        pass
    return bytes(received), time.monotonic() - started


def _reset(s: socket.socket) -> None:
    """Close with an RST instead of a FIN."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def _assert_serves(faulty: Faulty) -> None:
    """A normal IMAP login and SELECT work, promptly."""
    started = time.monotonic()
    client = imaplib.IMAP4("127.0.0.1", faulty.ports["imap"], timeout=10)
    try:
        assert client.login(ALICE, PASSWORD)[0] == "OK"
        assert client.select("INBOX")[0] == "OK"
    finally:
        client.logout()
    assert time.monotonic() - started < 5


@pytest.fixture
def injector_reset(faulty: Faulty) -> Iterator[None]:
    """Whatever a test switched, the switchable injectors pass traffic again afterwards."""
    yield
    for name in ("imap", "pop3", "smtp"):
        faulty.injectors[name].mode = "pass"


# -- faults during login ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["refuse", "reset"])
@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp"])
def test_upstream_closing_at_once_is_a_temporary_failure(
    faulty: Faulty, injector_reset: None, protocol: str, mode: str
) -> None:
    """An upstream that accepts and closes at once (FIN or RST) gives the protocol's temporary
    failure."""
    faulty.injectors[protocol].mode = mode
    answer = _login_answer(protocol, faulty.ports[protocol])
    assert re.match(UNAVAILABLE[protocol], answer), answer
    # An RST can land before the proxy's connect completes: then it "could not connect".
    assert b"closed the connection" in answer or b"Could not connect" in answer, answer
    faulty.injectors[protocol].mode = "pass"
    _assert_serves(faulty)


@pytest.mark.parametrize("protocol", ["imap", "pop3", "smtp"])
def test_upstream_stalling_during_login_is_answered_after_the_login_timeout(
    faulty: Faulty, injector_reset: None, protocol: str
) -> None:
    """An upstream that accepts and says nothing is given up after upstream_timeout_seconds,
    with a temporary failure naming the server; the proxy serves others meanwhile."""
    injector = faulty.injectors[protocol]
    injector.mode = "stall"
    stalled_links = injector.accepted
    answers: list[bytes] = []
    started = time.monotonic()
    waiting = threading.Thread(
        target=lambda: answers.append(_login_answer(protocol, faulty.ports[protocol]))
    )
    waiting.start()
    injector.wait_for_link(stalled_links)
    other = "pop3" if protocol == "imap" else "imap"
    assert _login_answer(other, faulty.ports[other], timeout=5).startswith((b"+OK", b"a1 OK"))
    waiting.join(timeout=UPSTREAM_TIMEOUT + 20)
    elapsed = time.monotonic() - started
    assert answers, "no answer"
    assert re.match(UNAVAILABLE[protocol], answers[0]), answers[0]
    assert b"did not answer in time" in answers[0]
    assert UPSTREAM_TIMEOUT - 0.5 < elapsed < UPSTREAM_TIMEOUT + 5, elapsed
    # The proxy gave up on the silent connection instead of keeping it.
    assert injector.links[stalled_links].proxy_closed.wait(5)
    injector.mode = "pass"
    _assert_serves(faulty)


def test_certificate_for_another_host_is_refused_before_any_xoauth2(faulty: Faulty) -> None:
    """An upstream presenting a certificate (from a trusted CA) for another host name gets no
    XOAUTH2: the TLS handshake never completes, and the client gets a temporary failure."""
    connections = faulty.impostor.connections
    answer = _login_answer("imap", faulty.ports["imap-impostor"])
    assert re.match(UNAVAILABLE["imap"], answer), answer
    assert faulty.impostor.connections == connections + 1
    assert faulty.impostor.handshakes == 0
    assert faulty.impostor.received == b""
    _assert_serves(faulty)


def test_certificate_for_another_host_is_named_in_the_answer(faulty: Faulty) -> None:
    """The answer to a login whose upstream shows a certificate for another host says the
    certificate could not be verified."""
    answer = _login_answer("imap", faulty.ports["imap-impostor"])
    assert b"certificate could not be verified" in answer, answer


def test_certificate_from_an_unknown_ca_is_refused(faulty: Faulty) -> None:
    """Dovecot's own certificate is refused when upstream_ca names another CA: the client is
    told the certificate could not be verified, and no upstream login happened."""
    answer = _login_answer("imap", faulty.ports["imap-unknown-ca"])
    assert re.match(UNAVAILABLE["imap"], answer), answer
    assert b"certificate could not be verified" in answer, answer
    upstream = f"127.0.0.1:{faulty.world.dovecot.imaps_port}"
    assert f"logged in upstream {upstream}" not in faulty.proxy.log_text()
    _assert_serves(faulty)


# -- faults after login ---------------------------------------------------------------------------


def test_reset_mid_fetch_closes_the_client_promptly(faulty: Faulty) -> None:
    """An upstream reset in the middle of a multi-megabyte FETCH closes the client's connection
    at once (it is not left hanging), and the proxy goes on serving."""
    number = _message_number(faulty.ports["imap"], BIG_SUBJECT)
    injector = faulty.injectors["imap"]
    index = injector.accepted
    s, _ = _imap_session(faulty.ports["imap"])
    with s:
        injector.wait_for_link(index).reset_after(1_000_000)
        s.sendall(b"f1 FETCH %d (BODY.PEEK[])\r\n" % number)
        received, elapsed = _drain(s, timeout=30)
    assert 0 < len(received) < 6_000_000, len(received)
    assert b"f1 OK" not in received
    assert elapsed < 5, elapsed
    _assert_serves(faulty)


def test_stalled_upstream_after_login_does_not_hold_up_others(faulty: Faulty) -> None:
    """A session whose upstream goes silent after login hangs alone: other IMAP and POP3
    logins through the same proxy are served promptly meanwhile."""
    injector = faulty.injectors["imap"]
    index = injector.accepted
    s, buffer = _imap_session(faulty.ports["imap"])
    with s:
        injector.wait_for_link(index).stall()
        s.sendall(b"s1 NOOP\r\n")
        s.settimeout(1)
        with pytest.raises(TimeoutError):
            _read_line(s, buffer)
        _assert_serves(faulty)
        assert _login_answer("pop3", faulty.ports["pop3"]).startswith(b"+OK")


def test_stalled_upstream_is_released_when_its_client_leaves(faulty: Faulty) -> None:
    """When the client of a session with a silent upstream disconnects, the proxy closes the
    upstream connection too, within seconds (no file descriptor is kept for ever)."""
    injector = faulty.injectors["imap"]
    index = injector.accepted
    s, _ = _imap_session(faulty.ports["imap"])
    link = injector.wait_for_link(index)
    link.stall()
    s.close()
    assert link.proxy_closed.wait(10)


# -- a thousand faulty sessions -------------------------------------------------------------------


class Sessions:
    """The kinds of faulty session the resource test mixes; each one returns when it is over."""

    def __init__(self, faulty: Faulty) -> None:
        self.faulty = faulty
        self.ports = faulty.ports
        self.medium = _message_number(faulty.ports["imap"], MEDIUM_SUBJECT)
        self._resets = threading.Lock()  # one upstream reset at a time: the newest link is ours

    def refused_upstream(self, i: int) -> None:
        answer = _login_answer("imap", self.ports["imap-refused"])
        assert answer.startswith(b"a1 NO [UNAVAILABLE]"), answer

    def garbage_then_disconnect(self, i: int) -> None:
        name = ("imap", "pop3", "smtp")[i % 3]
        with _connect(self.ports[name]) as s:
            s.sendall(random.randbytes(300) + b"\r\n")

    def client_gone_mid_login(self, i: int) -> None:
        with _connect(self.ports["imap"]) as s:
            s.sendall(_imap_login_command())

    def client_reset_mid_relay(self, i: int) -> None:
        s, buffer = _imap_session(self.ports["imap"])
        s.sendall(b"f1 FETCH %d (BODY.PEEK[])\r\n" % self.medium)
        _read_line(s, buffer)
        _reset(s)

    def upstream_reset_mid_relay(self, i: int) -> None:
        injector = self.faulty.injectors["resets"]
        with self._resets:
            index = injector.accepted
            s, _ = _imap_session(self.ports["imap-resets"])
            injector.wait_for_link(index).reset_after(20_000)
        with s:
            s.sendall(b"f1 FETCH %d (BODY.PEEK[])\r\n" % self.medium)
            received, elapsed = _drain(s, timeout=20)
        assert b"f1 OK" not in received and elapsed < 5, (len(received), elapsed)

    def wrong_password(self, i: int) -> None:
        with _connect(self.ports["imap"]) as s:
            buffer = bytearray()
            _read_line(s, buffer)
            s.sendall(f'a1 LOGIN "{ALICE}" "not the password"\r\n'.encode())
            assert _read_until(s, buffer, b"a1 ").startswith(b"a1 NO [AUTHENTICATIONFAILED]")

    def mix(self) -> list[Callable[[int], None]]:
        return [self.refused_upstream, self.garbage_then_disconnect, self.client_gone_mid_login,
                self.client_reset_mid_relay, self.upstream_reset_mid_relay]

    def run(self, count: int, wrong_passwords: int = 0) -> None:
        kinds = self.mix()
        plan = [kinds[i % len(kinds)] for i in range(count - wrong_passwords)]
        plan += [self.wrong_password] * wrong_passwords
        with ThreadPoolExecutor(max_workers=8) as pool:
            for future in [pool.submit(kind, i) for i, kind in enumerate(plan)]:
                future.result()


def _quiet_fds(proxy: FaultProxy) -> int:
    """The proxy's open descriptors once the count stops falling (sessions still closing)."""
    count = proxy.open_fds()
    while True:
        time.sleep(0.5)
        previous, count = count, proxy.open_fds()
        if count >= previous:
            return count


def _settled_fds(proxy: FaultProxy, at_most: int, timeout: float = 15) -> int:
    """The proxy's open descriptors once they are down to `at_most`, or the count at timeout."""
    deadline = time.monotonic() + timeout
    while (count := proxy.open_fds()) > at_most and time.monotonic() < deadline:
        time.sleep(0.2)
    return count


def test_a_thousand_faulty_sessions_leak_no_descriptors_or_memory(faulty: Faulty) -> None:
    """After 1000 sessions of refused upstreams, garbage, clients leaving mid-login, and resets
    mid-relay from either side, the proxy holds no more descriptors than after a warm-up, its
    memory grew by less than 10 MB, and a normal login works."""
    proxy, sessions = faulty.proxy, Sessions(faulty)
    sessions.run(100)
    baseline_fds = _quiet_fds(proxy)
    baseline_rss = proxy.rss_kib()
    started = time.monotonic()
    sessions.run(1000, wrong_passwords=3)
    elapsed = time.monotonic() - started
    fds = _settled_fds(proxy, at_most=baseline_fds + 3)
    rss = proxy.rss_kib()
    print(f"\n1000 faulty sessions in {elapsed:.1f} s: fds {baseline_fds} -> {fds}, "
          f"VmRSS {baseline_rss} kB -> {rss} kB ({(rss - baseline_rss) / 1024:+.1f} MB)")
    assert fds <= baseline_fds + 3, (baseline_fds, fds)
    assert rss - baseline_rss < 10 * 1024, (baseline_rss, rss)
    assert elapsed < 60
    _assert_serves(faulty)
    log = proxy.log_text()
    assert "Traceback" not in log and "Unhandled" not in log and "unexpected error" not in log
