"""Every Entra ID flow end to end: `account add` as a real subprocess against the fake Entra ID,
then logins through a proxy subprocess to the real Dovecot; password changes, shared
mailboxes, a revoked sign-in and an outage during refresh.

These tests run their own small proxy (own config, store and IMAP listener) next to the shared
world's, because they need accounts of every flow; the world's Dovecot and fake Entra ID are
shared. The helpers they share with test_token_safety.py are in tests/support/flows.py.
"""

from __future__ import annotations

import datetime
import io
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from proxy.config import AccountConfig
from proxy.entra.auth_code import auth_code_flow
from proxy.entra.client import EntraClient
from proxy.errors import AuthorisationExpired, AuthorisationFailed
from tests.integration.conftest import TENANT, World
from tests.support.fake_entra import FakeEntra
from tests.support.flows import (
    PASSWORD,
    Command,
    account_block,
    assert_lists,
    device_code_add,
    imap_login,
    login_refusal,
    proxy_config,
    proxy_env,
)
from tests.support.ports import free_port
from tests.support.proxy_process import ProxyProcess

pytestmark = pytest.mark.integration

# One account per test, each with its own app registration at the fake.
DEVICE = "devin@contoso.example"
AUTH_LISTENER = "aubrey@contoso.example"
AUTH_PASTE = "paisley@contoso.example"
AUTH_BROWSER = "brody@contoso.example"
DELEGATE = "frank@contoso.example"  # signs in for the shared mailbox
SHARED = "shared-sales@contoso.example"
CERT = "erin@contoso.example"
PASSWD = "gina@contoso.example"
DECLINED = "dora@contoso.example"
EXPIRED = "eli@contoso.example"
REVOKED = "rhea@contoso.example"
OUTAGE = "otto@contoso.example"
CERT_SECRET_LIKE = "-----BEGIN PRIVATE KEY-----"


def self_signed_pem(common_name: str) -> tuple[bytes, bytes]:
    """(certificate PEM, certificate + unencrypted private key PEM) of a new RSA 2048 pair."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert_pem, cert_pem + key_pem


# -- the proxy these tests share --


@dataclass
class Flows:
    world: World
    proxy: ProxyProcess
    port: int
    redirect_port: int

    @property
    def config(self) -> Path:
        return self.proxy.config

    def cli(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return self.proxy.cli(*args, stdin=stdin)


@pytest.fixture(scope="module")
def flows(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flows]:
    entra, authority = world.entra, world.entra.authority
    workdir = tmp_path_factory.mktemp("flows")
    port, redirect_port = free_port(), free_port()
    cert_pem, cert_and_key = self_signed_pem("xoauth2-proxy test app")
    (workdir / "app.pem").write_bytes(cert_and_key)
    os.chmod(workdir / "app.pem", 0o600)
    accounts = []
    for user in (DEVICE, DECLINED, EXPIRED, REVOKED, OUTAGE):
        accounts.append(account_block(user, f"app-{user}", "device_code", authority))
        entra.add_user(TENANT, f"app-{user}", user)
    accounts.append(account_block(AUTH_LISTENER, "app-auth-listener", "auth_code", authority,
                                  redirect_uri=f"http://localhost:{redirect_port}/"))
    entra.add_user(TENANT, "app-auth-listener", AUTH_LISTENER)
    for user in (AUTH_PASTE, AUTH_BROWSER):
        accounts.append(account_block(user, f"app-{user}", "auth_code", authority))
        entra.add_user(TENANT, f"app-{user}", user)
    # A shared mailbox: DELEGATE logs in, the XOAUTH2 user= is SHARED. In Office 365 the token
    # is DELEGATE's and Exchange checks DELEGATE's FullAccess permission on SHARED. Dovecot
    # cannot model delegation: it wants the token's email claim to equal user=. So (test
    # scaffolding) the fake's user who signs in *is* SHARED, and the token names SHARED; what
    # is real is that the proxy sends user=SHARED, which the login as SHARED proves.
    accounts.append(account_block(DELEGATE, "app-shared", "device_code", authority,
                                  mailbox=SHARED))
    entra.add_user(TENANT, "app-shared", SHARED)
    accounts.append(account_block(CERT, "app-cert", "client_credentials", authority,
                                  certificate="app.pem"))
    entra.add_app(TENANT, "app-cert", certificate_pem=cert_pem, mailbox=CERT)
    accounts.append(account_block(PASSWD, "app-passwd", "client_credentials", authority,
                                  client_secret="passwd-app-secret"))
    entra.add_app(TENANT, "app-passwd", secret="passwd-app-secret", mailbox=PASSWD)
    proxy = ProxyProcess(workdir, proxy_config(workdir, world.dovecot, port, accounts))
    proxy.start(port)
    try:
        yield Flows(world, proxy, port, redirect_port)
    finally:
        proxy.stop()


# -- device code --


def test_device_code_add_then_login_through_the_proxy(flows: Flows) -> None:
    """`account add` prints the address, the code and the time left, completes once the user
    signs in, and the device then logs in through the proxy and lists folders."""
    out = device_code_add(flows.config, flows.world.entra, DEVICE, DEVICE)
    assert f"{flows.world.entra.authority}/devicelogin" in out
    assert re.search(r"valid for \d+ minutes", out), out
    assert "Signed in." in out and f"{DEVICE}: authorised (device_code)" in out
    assert_lists(flows.port, DEVICE, PASSWORD)


@pytest.mark.parametrize("user, act, words", [
    (DECLINED, "decline_device", "declined"),
    (EXPIRED, "expire_device", "expired"),
])
def test_device_code_declined_or_expired(flows: Flows, user: str, act: str, words: str) -> None:
    """A declined or expired device code ends `account add` with exit 1 and one plain sentence,
    and nothing is stored."""
    command = Command(flows.config, "account", "add", user, "--password-stdin")
    command.write(PASSWORD + "\n", close=True)
    code = command.wait_for(r"Enter code: (\w+)").group(1)
    getattr(flows.world.entra, act)(code)
    status, out, err = command.finish()
    assert status == 1, out + err
    assert "Traceback" not in err, err
    sentence = err.strip().splitlines()[-1]  # after any log lines
    assert sentence.startswith("xoauth2-proxy: ") and words in sentence.lower(), err
    row = next(line for line in flows.cli("account", "list").stdout.splitlines()
               if line.startswith(user))
    assert row.endswith("not added  -"), row


def test_shared_mailbox_puts_the_shared_address_in_user(flows: Flows) -> None:
    """An account whose mailbox differs from its username logs in upstream as the mailbox."""
    device_code_add(flows.config, flows.world.entra, DELEGATE, SHARED)
    flows.world.dovecot.deliver(SHARED, b"Subject: for the sales team\r\n\r\nShared.\r\n")
    client = imap_login(flows.port, DELEGATE, PASSWORD)
    try:
        client.select("INBOX")
        status, found = client.search(None, '(SUBJECT "for the sales team")')
        assert status == "OK" and found[0].split(), "the shared mailbox's message is not there"
    finally:
        client.logout()
    listing = flows.cli("account", "list").stdout
    assert re.search(rf"{re.escape(DELEGATE)}\s+device_code\s+{re.escape(SHARED)}\s+ok", listing)


# -- authorisation code --


def test_auth_code_redirect_reaches_the_listener(flows: Flows) -> None:
    """auth_code with a configured redirect_uri: the printed URL, followed by a "browser",
    lands on the one-shot listener, which answers with a closing page; the login works."""
    command = Command(flows.config, "account", "add", AUTH_LISTENER, "--password-stdin",
                      "--no-browser")
    command.write(PASSWORD + "\n", close=True)  # stdin ends: the listener must still be waited for
    url = command.wait_for(r"(http://\S+/oauth2/v2\.0/authorize\?\S+)").group(1)
    assert "code_challenge_method=S256" in url and "state=" in url
    assert f"redirect_uri=http%3A%2F%2Flocalhost%3A{flows.redirect_port}%2F" in url
    page = requests.get(url, timeout=30)  # follows the 302 into the listener
    assert page.status_code == 200 and "close this window" in page.text
    status, out, err = command.finish()
    assert status == 0, out + err
    with pytest.raises(OSError):  # the listener is closed
        socket.create_connection(("127.0.0.1", flows.redirect_port), timeout=2).close()
    assert_lists(flows.port, AUTH_LISTENER, PASSWORD)


def test_auth_code_pasted_redirect_url(flows: Flows) -> None:
    """auth_code with --no-browser and no redirect_uri: a free port is used, and the final
    redirect URL pasted on standard input (after a mistaken paste) completes the sign-in."""
    command = Command(flows.config, "account", "add", AUTH_PASTE, "--password-stdin",
                      "--no-browser")
    command.write(PASSWORD + "\n")
    url = command.wait_for(r"(http://\S+/oauth2/v2\.0/authorize\?\S+)").group(1)
    assert re.search(r"redirect_uri=http%3A%2F%2Flocalhost%3A\d+%2F", url)
    command.wait_for(r"paste it here")
    answer = requests.get(url, allow_redirects=False, timeout=10)
    assert answer.status_code == 302
    command.write("http://localhost:1/?code=abc&state=wrong\n")
    command.wait_for(r"does not belong to this sign-in")
    command.write(answer.headers["Location"] + "\n", close=True)
    status, out, err = command.finish()
    assert status == 0, out + err
    assert_lists(flows.port, AUTH_PASTE, PASSWORD)


def test_auth_code_opens_the_browser(flows: Flows, tmp_path: Path) -> None:
    """Without --no-browser and with a browser available ($BROWSER), `account add` opens the
    authorisation URL itself and finishes when the browser reaches the listener."""
    browser = tmp_path / "fake-browser"
    browser.write_text(f"#!{sys.executable}\nimport sys, requests\n"
                       "requests.get(sys.argv[1], timeout=30)\n")
    browser.chmod(0o755)
    command = Command(flows.config, "account", "add", AUTH_BROWSER, "--password-stdin",
                      env=proxy_env(BROWSER=str(browser)))
    command.write(PASSWORD + "\n", close=True)
    status, out, err = command.finish(timeout=60)
    assert status == 0, out + err
    assert "/oauth2/v2.0/authorize?" in out and "browser window should open" in out
    assert_lists(flows.port, AUTH_BROWSER, PASSWORD)


# -- client credentials with a certificate --


def test_client_credentials_with_a_certificate(flows: Flows) -> None:
    """An app-only account with `certificate = "app.pem"` gets a token with a signed assertion
    and logs in through the proxy; no key material reaches the output."""
    added = flows.cli("account", "add", CERT, "--password-stdin", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    assert CERT_SECRET_LIKE not in added.stdout + added.stderr
    assert_lists(flows.port, CERT, PASSWORD)
    assert flows.world.entra.requests  # the fake verified the assertion against app.pem's cert


# -- local password, list, revocation, outage --


def test_passwd_takes_effect_in_the_running_proxy(flows: Flows) -> None:
    """After `account passwd`, the running proxy refuses the old password as a wrong password
    and accepts the new one, without a restart."""
    added = flows.cli("account", "add", PASSWD, "--password-stdin", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    assert_lists(flows.port, PASSWD, PASSWORD)  # the proxy now holds the old password's key
    wrong = flows.cli("account", "passwd", PASSWD, "--password-stdin", stdin="nope\nnew\n")
    assert wrong.returncode == 1 and "wrong current password" in wrong.stderr
    changed = flows.cli("account", "passwd", PASSWD, "--password-stdin",
                        stdin=f"{PASSWORD}\nnew local password\n")
    assert changed.returncode == 0, changed.stderr
    assert "[AUTHENTICATIONFAILED]" in login_refusal(flows.port, PASSWD, PASSWORD)
    assert_lists(flows.port, PASSWD, "new local password")


def test_account_list_shows_flow_state_and_expiry(flows: Flows) -> None:
    """`account list` shows each account's flow, mailbox, state and token expiry, no secret."""
    added = flows.cli("account", "add", CERT, "--password-stdin", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    listing = flows.cli("account", "list")
    assert listing.returncode == 0, listing.stderr
    row = next(line for line in listing.stdout.splitlines() if line.startswith(CERT))
    assert re.search(r"client_credentials\s+\S+\s+ok\s+(valid until|expired)", row), row
    assert listing.stdout.splitlines()[0].split() == ["USER", "FLOW", "MAILBOX", "STATE",
                                                      "ACCESS", "TOKEN"]
    for secret in (PASSWORD, "passwd-app-secret", "eyJ", CERT_SECRET_LIKE):
        assert secret not in listing.stdout


def test_revoked_refresh_token_asks_for_account_add(flows: Flows) -> None:
    """invalid_grant on refresh gives the device NO [AUTHENTICATIONFAILED] naming the command
    to run, `account list` shows the account needs re-authorisation, and `account add` fixes it
    for the running proxy."""
    entra = flows.world.entra
    device_code_add(flows.config, entra, REVOKED, REVOKED)
    assert_lists(flows.port, REVOKED, PASSWORD)
    entra.revoke_refresh_tokens(REVOKED)
    refused = login_refusal(flows.port, REVOKED, PASSWORD)
    assert refused.startswith("[AUTHENTICATIONFAILED]"), refused
    assert f"run: xoauth2-proxy account add {REVOKED}" in refused
    row = next(line for line in flows.cli("account", "list").stdout.splitlines()
               if line.startswith(REVOKED))
    assert "needs re-authorisation" in row, row
    before = entra.token_requests("refresh_token")
    assert "[AUTHENTICATIONFAILED]" in login_refusal(flows.port, REVOKED, PASSWORD)
    assert entra.token_requests("refresh_token") == before  # a dead token is not tried again
    device_code_add(flows.config, entra, REVOKED, REVOKED)
    assert_lists(flows.port, REVOKED, PASSWORD)


def test_outage_during_refresh_keeps_the_stored_tokens(flows: Flows) -> None:
    """A 500 from the token endpoint while the access token is expired gives NO [UNAVAILABLE],
    leaves the account file byte for byte as it was, and a later login works."""
    entra = flows.world.entra
    lifetime = entra.access_token_lifetime
    entra.access_token_lifetime = 1
    try:
        device_code_add(flows.config, entra, OUTAGE, OUTAGE)
    finally:
        entra.access_token_lifetime = lifetime
    time.sleep(1.1)  # the stored access token has expired: no fallback to it
    from proxy.store import FileStore

    path = FileStore(flows.proxy.workdir / "store").path(OUTAGE)
    before = path.read_bytes()
    entra.fail_next(1, "500")
    refused = login_refusal(flows.port, OUTAGE, PASSWORD)
    assert refused.startswith("[UNAVAILABLE]"), refused
    assert path.read_bytes() == before
    time.sleep(1.1)  # past the first retry backoff, should the proxy have it turned on
    assert_lists(flows.port, OUTAGE, PASSWORD)
    assert path.read_bytes() != before  # refreshed and saved


# -- auth_code_flow in-process: the edges the subprocess tests do not reach --


def _client(fake: FakeEntra, redirect_uri: str | None = None) -> tuple[EntraClient, AccountConfig]:
    account = AccountConfig(username=AUTH_PASTE, tenant=TENANT, client_id="app-edge",
                            flow="auth_code", mailbox=AUTH_PASTE,
                            scopes=("https://outlook.office.com/IMAP.AccessAsUser.All",
                                    "offline_access"),
                            authority=fake.authority, redirect_uri=redirect_uri)
    return EntraClient(account, requests.Session()), account


@pytest.fixture
def edge_fake(world: World) -> FakeEntra:
    world.entra.add_user(TENANT, "app-edge", AUTH_PASTE)
    return world.entra


def test_auth_code_wait_is_bounded_and_closes_the_listener(edge_fake: FakeEntra) -> None:
    """With nobody signing in, the flow gives up after its timeout with a sentence naming the
    command, and its listener port is free again."""
    port = free_port()
    client, account = _client(edge_fake, f"http://localhost:{port}/")
    out = io.StringIO()
    with pytest.raises(AuthorisationExpired, match=f"account add {AUTH_PASTE}"):
        auth_code_flow(client, account, out, io.StringIO(""), open_browser=False, timeout=0.5)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # would fail if the listener were still open


def test_auth_code_port_in_use_is_a_plain_error(edge_fake: FakeEntra) -> None:
    """A redirect_uri port already taken gives one sentence saying so, not a traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        client, account = _client(edge_fake, f"http://localhost:{port}/")
        with pytest.raises(AuthorisationFailed, match=f"port {port}"):
            auth_code_flow(client, account, io.StringIO(), io.StringIO(""), open_browser=False)


def test_auth_code_non_loopback_redirect_needs_a_paste(edge_fake: FakeEntra) -> None:
    """A redirect_uri no local listener can receive (e.g. nativeclient) is completed by
    pasting; standard input ending first is a plain error."""
    client, account = _client(edge_fake, "https://login.example/common/oauth2/nativeclient")
    with pytest.raises(AuthorisationFailed, match="Standard input ended"):
        auth_code_flow(client, account, io.StringIO(), io.StringIO(""), open_browser=True)


def test_auth_code_declined_in_the_browser(edge_fake: FakeEntra) -> None:
    """An access_denied redirect reaching the listener ends the flow as declined, and the
    browser is told so."""
    client, account = _client(edge_fake)
    edge_fake.set_authorize_result(error="access_denied")
    pages: list[Any] = []

    class Out(io.StringIO):
        def write(self, text: str) -> int:
            found = re.search(r"(http://\S+/oauth2/v2\.0/authorize\?\S+)", text)
            if found:
                threading.Thread(target=lambda: pages.append(
                    requests.get(found.group(1), timeout=30)), daemon=True).start()
            return super().write(text)

    try:
        with pytest.raises(AuthorisationFailed, match="declined"):
            auth_code_flow(client, account, Out(), io.StringIO(""), open_browser=False,
                           timeout=20)
    finally:
        edge_fake.set_authorize_result()
    deadline = time.monotonic() + 10
    while not pages and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pages and "failed" in pages[0].text
