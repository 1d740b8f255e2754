"""The admin page over plain HTTP against a proxy subprocess: who gets in, what a refusal shows,
CSRF, security headers, /healthz, and /metrics after real logins through the proxy to Dovecot."""

from __future__ import annotations

import re
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.integration.conftest import ALICE, CAROL, PASSWORD, World
from tests.support.admin import admin_toml, http, scrape, value
from tests.support.ports import free_port, wait_for_port
from tests.support.proxy_config import listener_toml
from tests.support.runtime_proxy import RuntimeProxy
from tests.support.world import CAROL_TOKEN_LIFETIME

pytestmark = pytest.mark.integration

IMAP = "imap tcp:{port}:interface=127.0.0.1"
PAGE_WORDS = ("Accounts", "Listeners", ALICE, "Locked out")


@dataclass
class Admin:
    proxy: RuntimeProxy
    base: str  # http://127.0.0.1:PORT/
    token: str
    dead_port: int  # an IMAP listener whose upstream refuses connections

    def listener(self, port: int | None = None) -> str:
        return IMAP.format(port=port or self.proxy.ports["imap"])


@pytest.fixture(scope="module")
def admin(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Admin]:
    workdir = tmp_path_factory.mktemp("admin-http")
    token = secrets.token_urlsafe(32)
    token_file = workdir / "admin-token"
    token_file.write_text(token + "\n")
    admin_port, dead_port = free_port(), free_port()
    dead = listener_toml("imap", f"tcp:{dead_port}:interface=127.0.0.1",
                         f"tls:127.0.0.1:{free_port()}", world.dovecot.ca.cert_path)
    world.entra.access_token_lifetime = CAROL_TOKEN_LIFETIME  # as the world left it
    own = RuntimeProxy(world, workdir)
    own.write_config({"imap": "imap"}, accounts=(ALICE, CAROL),
                     extra=admin_toml(admin_port, token_file) + dead)
    own.add_account(ALICE, PASSWORD)  # CAROL stays unauthorised: her logins are temporary failures
    own.start("imap")
    wait_for_port(admin_port)
    try:
        yield Admin(own, f"http://127.0.0.1:{admin_port}/", token, dead_port)
    finally:
        own.process.stop()


def _shows_nothing(text: str) -> bool:
    return not any(word in text for word in PAGE_WORDS + ("xoauth2_proxy_",))


def test_missing_or_wrong_token_is_refused_and_shows_nothing(admin: Admin) -> None:
    """No token: 401; a wrong token in the address, the header or a made-up cookie: 401/403;
    none of these answers shows anything of the page or the metrics."""
    client = http()
    cookie = {"Cookie": f"xoauth2-proxy-{admin.base.split(':')[2][:-1]}={'A' * 43}"}
    for path, headers, status in [
        ("", {}, 401), ("metrics", {}, 401), ("authorise?account=" + ALICE, {}, 401),
        ("?token=wrong", {}, 403), ("metrics?token=wrong", {}, 403),
        ("", {"Authorization": "Bearer wrong"}, 403), ("", {"Authorization": "Basic eDp5"}, 403),
        ("", cookie, 401),
    ]:
        answer = client.get(admin.base + path, headers=headers, allow_redirects=False, timeout=10)
        assert answer.status_code == status, (path, headers)
        assert _shows_nothing(answer.text), answer.text
        assert "set-cookie" not in answer.headers
    assert client.post(admin.base + "reload", timeout=10).status_code == 401
    assert "reloaded" not in admin.proxy.process.log_text()


def test_token_in_the_address_becomes_a_session_cookie_and_a_clean_address(admin: Admin) -> None:
    """?token= answers 303 to the same address without the token, with an HttpOnly,
    SameSite=Strict cookie for every path, which then opens the page (served with its
    security headers and never cached)."""
    client = http()
    answer = client.get(admin.base + f"?token={admin.token}", allow_redirects=False, timeout=10)
    assert answer.status_code == 303 and answer.headers["Location"] == "/"
    cookie = answer.headers["Set-Cookie"]
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= {part.strip() for part in cookie.split(";")}
    assert admin.token not in cookie
    deep = client.get(admin.base + f"authorise?account={ALICE}&token={admin.token}",
                      allow_redirects=False, timeout=10)
    assert deep.headers["Location"] == "/authorise?account=alice%40contoso.example"
    page = client.get(admin.base, timeout=10)
    assert page.status_code == 200 and all(word in page.text for word in PAGE_WORDS)
    assert admin.token not in page.text
    headers = page.headers
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Cache-Control"] == "no-store"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert client.get(admin.base, headers={"Authorization": f"Bearer {admin.token}"},
                      timeout=10).status_code == 200


def test_no_answer_names_the_server_software(admin: Admin) -> None:
    """No Server header (Twisted would send its name and version) on a page, a refusal, a
    redirect, /healthz or /metrics."""
    client = http()
    answers = [client.get(admin.base + path, allow_redirects=False, timeout=10)
               for path in ("", "healthz", f"?token={admin.token}", "metrics", "no-such-page")]
    assert [answer.status_code for answer in answers][:3] == [401, 200, 303]
    for answer in answers:
        assert "Server" not in answer.headers, answer.url


def test_a_form_posted_without_its_csrf_token_is_refused(admin: Admin) -> None:
    """POST /reload with the session cookie but without (or with a wrong) CSRF token: 403 and
    nothing reloaded; with the page's token it reloads."""
    client = http()
    client.get(admin.base + f"?token={admin.token}", timeout=10)
    page = client.get(admin.base, timeout=10).text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf is not None
    offset = admin.proxy.log_size()
    for form in ({}, {"csrf": "forged"}, {"csrf": csrf.group(1)[:-1]}):
        answer = client.post(admin.base + "reload", data=form, allow_redirects=False, timeout=10)
        assert answer.status_code == 403, form
    time.sleep(0.5)
    assert "reload" not in admin.proxy.process.log_text()[offset:]
    answer = client.post(admin.base + "reload", data={"csrf": csrf.group(1)},
                         allow_redirects=False, timeout=30)
    assert answer.status_code == 303
    admin.proxy.process.wait_for_log("reloaded", after=offset)
    assert "Reloaded: nothing changed" in client.get(admin.base, timeout=10).text


def test_healthz_needs_no_token_and_names_the_listeners(admin: Admin) -> None:
    """/healthz answers 200 and lists each listener as up, without a token."""
    answer = http().get(admin.base + "healthz", timeout=10)
    assert answer.status_code == 200
    assert f"up   {admin.listener()}" in answer.text
    assert f"up   {admin.listener(admin.dead_port)}" in answer.text


def _imap(port: int, password: str, commands: bytes, user: str = ALICE) -> tuple[bytes, int]:
    """Log in over a socket (the password as a literal), send `commands` after the login's
    answer, read up to the answer to the last one; (the login's answer, bytes received after
    it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        f = s.makefile("rwb")
        f.readline()
        secret = password.encode()
        f.write(f'a1 LOGIN "{user}" {{{len(secret)}+}}\r\n'.encode() + secret + b"\r\n")
        f.flush()
        answer = f.readline()
        if not answer.startswith(b"a1 OK"):
            return answer, 0
        f.write(commands)
        f.flush()
        last_tag, received = commands.split()[-2], 0
        while True:
            line = f.readline()
            received += len(line)
            if not line or line.startswith(last_tag + b" "):
                return answer, received


def _wait_until_no_session_is_open(admin: Admin) -> str:
    """The scrape once the proxy has seen every session of the IMAP listener end."""
    deadline = time.monotonic() + 20
    while True:
        metrics = scrape(admin.base, admin.token)
        if value(metrics, "xoauth2_proxy_sessions_open", listener=admin.listener()) == 0:
            return metrics
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_metrics_move_by_exactly_what_was_done(admin: Admin, world: World) -> None:
    """After real logins through the proxy: sessions, logins by result, token requests (as many
    as the fake Entra ID received), upstream timings and relayed bytes moved by exactly what the
    test did; the exposition parses with prometheus_client's parser and holds no secret."""
    imap, dead = admin.listener(), admin.listener(admin.dead_port)
    before = scrape(admin.base, admin.token)
    entra_before = world.entra.token_requests("client_credentials")
    port, commands, received = admin.proxy.ports["imap"], b"a2 NOOP\r\na3 LOGOUT\r\n", 0
    for _ in range(2):
        answer, down = _imap(port, PASSWORD, commands)
        assert answer.startswith(b"a1 OK")
        received += down
    assert _imap(port, "wrong", b"")[0].startswith(b"a1 NO [AUTHENTICATIONFAILED]")
    assert _imap(port, "any", b"", user=CAROL)[0].startswith(b"a1 NO [UNAVAILABLE]")
    assert _imap(admin.dead_port, PASSWORD, b"")[0].startswith(b"a1 NO [UNAVAILABLE]")
    after = _wait_until_no_session_is_open(admin)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("xoauth2_proxy_sessions_total", listener=imap) == 4
    assert moved("xoauth2_proxy_sessions_total", listener=dead) == 1
    assert moved("xoauth2_proxy_logins_total", listener=imap, result="ok") == 2
    assert moved("xoauth2_proxy_logins_total", listener=imap, result="wrong_password") == 1
    assert moved("xoauth2_proxy_logins_total", listener=imap, result="temporary") == 1
    assert moved("xoauth2_proxy_logins_total", listener=dead, result="temporary") == 1
    assert moved("xoauth2_proxy_logins_total", listener=imap, result="throttled") == 0
    requested = world.entra.token_requests("client_credentials") - entra_before
    assert requested == 3  # ALICE's tokens are too short-lived to be kept: one per login
    assert moved("xoauth2_proxy_token_requests_total", result="ok") == requested
    assert moved("xoauth2_proxy_upstream_connect_seconds_count", listener=imap) == 2
    assert moved("xoauth2_proxy_upstream_login_seconds_count", listener=imap) == 2
    assert moved("xoauth2_proxy_upstream_connect_seconds_count", listener=dead) == 0
    assert moved("xoauth2_proxy_relayed_bytes_total", listener=imap,
                 direction="to_upstream") == 2 * len(commands)
    assert moved("xoauth2_proxy_relayed_bytes_total", listener=imap, direction="to_client") == received
    assert value(after, "xoauth2_proxy_listener_up", listener=imap) == 1
    assert value(after, "xoauth2_proxy_accounts", state="needs_authorisation") == 1  # CAROL
    text = http().get(admin.base + f"metrics?token={admin.token}", timeout=10).text
    assert "xoauth2_proxy_logins_total" in text
    assert PASSWORD not in text and admin.token not in text


def test_relayed_bytes_of_an_open_session_show_before_it_ends(admin: Admin) -> None:
    """A long session (IDLE for hours, a big transfer) shows its bytes while it runs: the
    counter moves by exactly what was relayed so far, and by no more when the session ends."""
    imap = admin.listener()
    before = _wait_until_no_session_is_open(admin)
    with socket.create_connection(("127.0.0.1", admin.proxy.ports["imap"]), timeout=30) as s:
        f = s.makefile("rwb")
        f.readline()
        secret = PASSWORD.encode()
        f.write(f'a1 LOGIN "{ALICE}" {{{len(secret)}+}}\r\n'.encode() + secret + b"\r\n")
        f.flush()
        assert f.readline().startswith(b"a1 OK")
        command, answer = b"a2 NOOP\r\n", b""
        f.write(command)
        f.flush()
        line = b""
        while not line.startswith(b"a2 "):
            line = f.readline()
            assert line, "the proxy closed the session"
            answer += line
        assert line.startswith(b"a2 OK")
        during = scrape(admin.base, admin.token)
        f.write(b"a3 LOGOUT\r\n")
        f.flush()
        f.read()
    after = _wait_until_no_session_is_open(admin)

    def moved(metrics: str, direction: str) -> float:
        return (value(metrics, "xoauth2_proxy_relayed_bytes_total", listener=imap,
                      direction=direction)
                - value(before, "xoauth2_proxy_relayed_bytes_total", listener=imap,
                        direction=direction))

    assert value(during, "xoauth2_proxy_sessions_open", listener=imap) == 1
    assert moved(during, "to_upstream") == len(command)
    assert moved(during, "to_client") == len(answer)
    assert moved(after, "to_upstream") == len(command) + len(b"a3 LOGOUT\r\n")
    assert moved(after, "to_client") > len(answer)
