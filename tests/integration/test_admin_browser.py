"""The admin page in a real headless Chromium, against proxy subprocesses, the real Dovecot and
the fake Entra ID: first-run setup from an empty folder to an IMAP login, logging in with the
token, authorising device code and authorisation code accounts (a device code account also
sending through Graph signs in twice without admin consent), lifting a lockout, reloading."""

from __future__ import annotations

import imaplib
import signal
import smtplib
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from proxy.config import load_config
from proxy.resources import GRAPH, OUTLOOK
from proxy.store import FileStore
from tests.integration.conftest import ALICE, PASSWORD, TENANT, World
from tests.support.admin import admin_toml, printed_url
from tests.support.browser import Browser
from tests.support.fake_graph import FakeGraph
from tests.support.flows import account_block, proxy_env
from tests.support.ports import free_port, wait_for_port
from tests.support.proxy_config import limits_toml, listener_toml
from tests.support.runtime_proxy import RuntimeProxy

pytestmark = pytest.mark.integration

FIONA = "fiona@contoso.example"  # set up on the first run: client credentials
DANA = "dana@contoso.example"  # device code
AUBREY = "aubrey.page@contoso.example"  # authorisation code
GINA = "gina@contoso.example"  # device code, IMAP and Graph, no admin consent
NEW_PASSWORD = "page-set local password"


def _imap_lists(port: int, user: str, password: str) -> None:
    client = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    try:
        client.login(user, password)
        status, _ = client.list()
        assert status == "OK"
    finally:
        client.logout()


def _authorise_with_password(browser: Browser, user: str) -> None:
    browser.click(f'a[href="/authorise?account={user.replace("@", "%40")}"]')
    browser.fill("password", NEW_PASSWORD)
    browser.fill("password_again", NEW_PASSWORD)
    browser.button("Authorise")


def test_first_run_sets_up_a_listener_and_account_that_serve_an_imap_login(
        world: World, browser: Browser, tmp_path: Path) -> None:
    """`serve` with no configuration prints the page's address; the page writes the config
    (0600, commented, valid), starts the listener without a restart and authorises the account;
    a real IMAP login through the new listener then reaches Dovecot."""
    world.entra.add_app(TENANT, "app-fiona", secret="fiona-secret", mailbox=FIONA)
    home = tmp_path / "empty"
    home.mkdir()
    env = proxy_env(XDG_CONFIG_HOME=str(home / "config"), XDG_DATA_HOME=str(home / "data"),
                    HOME=str(home))
    output = tmp_path / "serve.log"
    with open(output, "wb") as out:
        serve = subprocess.Popen([sys.executable, "-m", "proxy", "serve"], stdout=out,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        url, token = printed_url(lambda: output.read_text(errors="replace"))
        assert token is not None
        browser.open(f"{url}?token={token}")
        assert browser.path == "/"
        browser.wait_for_text("set up the first listener")
        browser.screenshot("first-run-setup")
        port = free_port()
        for name, value in [("protocol", "imap"), ("port", str(port)), ("username", FIONA),
                            ("tenant", TENANT), ("client_id", "app-fiona"),
                            ("flow", "client_credentials"), ("client_secret", "fiona-secret")]:
            browser.fill(name, value)
        browser.click("details summary")
        browser.fill("upstream", f"tls:127.0.0.1:{world.dovecot.imaps_port}")
        browser.fill("upstream_ca", str(world.dovecot.ca.cert_path))
        browser.fill("authority", world.entra.authority)
        browser.button("Write the configuration and start")
        browser.wait_for_text(f"Authorise {FIONA}")
        assert "listener on port" in browser.text
        browser.screenshot("first-run-authorise")
        browser.fill("password", NEW_PASSWORD)
        browser.fill("password_again", NEW_PASSWORD)
        browser.button("Authorise")
        browser.wait_for_text(f"{FIONA} is authorised")
        assert "valid until" in browser.text
        browser.screenshot("first-run-done")
        _imap_lists(port, FIONA, NEW_PASSWORD)
        config_file = home / "config" / "xoauth2-proxy" / "config.toml"
        assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
        text = config_file.read_text()
        assert text.startswith("# xoauth2-proxy configuration") and "[admin]" in text
        assert NEW_PASSWORD not in text
        assert load_config(config_file).account(FIONA).flow == "client_credentials"
        log = output.read_text()
        assert NEW_PASSWORD not in log and "fiona-secret" not in log
        # The [admin] written is the address the page runs on: no restart is asked for.
        assert "1 listener added" in log and "[admin] changed" not in log
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=30) == 0


def test_serve_with_a_named_config_that_is_missing_still_exits_2(tmp_path: Path) -> None:
    """--config or $XOAUTH2_PROXY_CONFIG naming a missing file is a config error, not a first
    run: scripts are not surprised by a page."""
    missing = tmp_path / "missing.toml"
    env = proxy_env(XDG_CONFIG_HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path))
    for args, extra in [(["--config", str(missing)], {}), ([], {"XOAUTH2_PROXY_CONFIG": str(missing)})]:
        done = subprocess.run([sys.executable, "-m", "proxy", *args, "serve"], capture_output=True,
                              text=True, timeout=60, env={**env, **extra})
        assert done.returncode == 2 and "no such file" in done.stderr


@dataclass
class Running:
    proxy: RuntimeProxy
    url: str
    token: str

    def open(self, browser: Browser) -> None:
        browser.open(f"{self.url}?token={self.token}")
        browser.wait_for_text("Accounts")


@pytest.fixture(scope="module")
def running(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A proxy with [admin] (random token), ALICE authorised, DANA (device code) and AUBREY
    (authorisation code) not yet; two wrong passwords lock an address out."""
    for user, client_id in ((DANA, "app-dana"), (AUBREY, "app-aubrey")):
        world.entra.add_user(TENANT, client_id, user)
    authority = world.entra.authority
    own = RuntimeProxy(world, tmp_path_factory.mktemp("admin-browser"))
    admin_port = free_port()
    extra = (admin_toml(admin_port) + limits_toml(failures_before_delay=5, failures_before_lockout=2)
             + account_block(DANA, "app-dana", "device_code", authority)
             + account_block(AUBREY, "app-aubrey", "auth_code", authority))
    own.write_config({"imap": "imap"}, extra=extra)
    own.add_account(ALICE, PASSWORD)
    own.start("imap")
    wait_for_port(admin_port)
    try:
        url, token = printed_url(own.process.log_text)
        assert token is not None
        yield Running(own, url, token)
    finally:
        own.process.stop()


def test_token_login_then_a_device_code_account_is_authorised_end_to_end(
        running: Running, world: World, browser: Browser) -> None:
    """The printed address opens the overview; the device code and its countdown are shown;
    once the user signs in at the fake Entra ID the page moves on by itself, the account is
    valid, and an IMAP login with the password set on the page works."""
    running.open(browser)
    assert "token=" not in browser.driver.current_url
    assert "needs authorisation (not authorised yet)" in browser.text
    browser.screenshot("overview")
    _authorise_with_password(browser, DANA)
    browser.wait_for_text("enter this code")
    code = browser.find("#user-code").text
    assert code in world.entra.user_codes
    countdown = browser.find("#countdown")
    assert countdown.get_attribute("data-expires") and ":" in countdown.text
    browser.screenshot("device-code")
    world.entra.approve_device(code, DANA)
    browser.wait_for_text(f"{DANA} is authorised")
    assert browser.path == "/"
    browser.screenshot("device-code-authorised")
    _imap_lists(running.proxy.ports["imap"], DANA, NEW_PASSWORD)
    assert NEW_PASSWORD not in running.proxy.process.log_text()


def test_a_device_code_account_signs_in_again_when_graph_needs_its_own_consent(
        world: World, browser: Browser, tmp_path: Path) -> None:
    """An account serving IMAP and a Graph SMTP listener, without admin consent for Graph: after
    the first code the page shows a second one for Graph, saying why; once both sign-ins are
    done the record holds both tokens, and IMAP (Dovecot) and a Graph send both work."""
    world.entra.add_user(TENANT, "app-gina", GINA)
    admin_port, smtp_port = free_port(), free_port()
    with FakeGraph(world.entra.graph_token_key) as graph:
        graph.add_mailbox(GINA)
        own = RuntimeProxy(world, tmp_path)
        own.write_config({"imap": "imap"}, accounts=(), extra=admin_toml(admin_port) + listener_toml(
            "smtp", f"tcp:{smtp_port}:interface=127.0.0.1", "graph", None, graph_url=graph.url)
            + account_block(GINA, "app-gina", "device_code", world.entra.authority))
        own.start("imap")
        try:
            wait_for_port(admin_port)
            url, token = printed_url(own.process.log_text)
            assert token is not None
            Running(own, url, token).open(browser)
            _authorise_with_password(browser, GINA)
            browser.wait_for_text("enter this code")
            first = browser.find("#user-code").text
            world.entra.approve_device(first, GINA)
            browser.wait_for_text("Microsoft Graph needs its own consent (an administrator can "
                                  "grant it for everyone under API permissions); sign in once more.")
            second = browser.find("#user-code").text
            assert second != first and second in world.entra.user_codes
            assert ":" in browser.find("#countdown").text
            browser.screenshot("device-code-consent")
            world.entra.approve_device(second, GINA)
            browser.wait_for_text(f"{GINA} is authorised")
            assert browser.path == "/"
            store = FileStore(own.workdir / "store")
            stored = store.load(GINA, store.derive_key(GINA, NEW_PASSWORD))
            assert stored.token_for(OUTLOOK) is not None and stored.token_for(GRAPH) is not None
            _imap_lists(own.ports["imap"], GINA, NEW_PASSWORD)
            with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
                client.login(GINA, NEW_PASSWORD)
                raw = b"From: gina@contoso.example\r\nTo: bob@contoso.example\r\n" \
                      b"Subject: consent\r\n\r\nSent through Graph.\r\n"
                client.sendmail(GINA, ["bob@contoso.example"], raw)
            assert [m.mime for m in graph.sent_items(GINA)] == [raw]
        finally:
            own.process.stop()


def test_an_authorisation_code_account_comes_back_to_the_page(
        running: Running, browser: Browser) -> None:
    """The sign-in link goes to the fake Entra ID, whose redirect lands on the page, which
    redeems the code; the account then logs in."""
    running.open(browser)
    _authorise_with_password(browser, AUBREY)
    browser.wait_for_text("Sign in at Microsoft")
    browser.screenshot("auth-code")
    browser.click("#sign-in")
    browser.wait_for_text(f"{AUBREY} is authorised")
    assert browser.path.startswith("/?code=")
    browser.button("Back to the admin page")
    browser.wait_for_text("Accounts")
    _imap_lists(running.proxy.ports["imap"], AUBREY, NEW_PASSWORD)


def test_a_lockout_is_shown_and_lifted(running: Running, browser: Browser) -> None:
    """Two wrong passwords lock 127.0.0.1 out; the page lists it; Lift ends it and the right
    password logs in again at once."""
    port = running.proxy.ports["imap"]
    for _ in range(2):
        client = imaplib.IMAP4("127.0.0.1", port, timeout=30)
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.login(ALICE, "wrong")
        client.shutdown()
    client = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    with pytest.raises(imaplib.IMAP4.error, match="Too many failed logins"):
        client.login(ALICE, PASSWORD)
    client.shutdown()
    running.open(browser)
    assert "127.0.0.1" in browser.find("section:last-of-type table").text
    assert "throttled 1" in browser.text
    browser.screenshot("lockout")
    browser.button("Lift")
    browser.wait_for_text("The lockout of address 127.0.0.1 is lifted")
    assert "No address or account is locked out." in browser.text
    _imap_lists(port, ALICE, PASSWORD)


def test_the_reload_button_applies_the_edited_file(running: Running, browser: Browser) -> None:
    """After the file gains a listener, Reload applies it and says what changed; the listener
    then greets. A broken file is refused with the reason, and the old configuration kept."""
    config = running.proxy.process.config
    original = config.read_text()
    running.open(browser)
    try:
        config.write_text(original.replace("[[listener]]", _second_listener(running) + "[[listener]]", 1))
        browser.button("Reload configuration")
        browser.wait_for_text("Reloaded: 1 listener added")
        browser.screenshot("reloaded")
        assert running.proxy.greeting("imap2").startswith(b"* OK")
        config.write_text(original + "\n[nonsense]\n")
        browser.button("Reload configuration")
        browser.wait_for_text("Reload refused; the running configuration is kept")
        assert "unknown key 'nonsense'" in browser.text
    finally:
        config.write_text(original)


def _second_listener(running: Running) -> str:
    port = running.proxy.ports.setdefault("imap2", free_port())
    dovecot = running.proxy.world.dovecot
    return (f'[[listener]]\nprotocol = "imap"\nlisten = "tcp:{port}:interface=127.0.0.1"\n'
            f'upstream = "tls:127.0.0.1:{dovecot.imaps_port}"\n'
            f'upstream_ca = "{dovecot.ca.cert_path}"\n\n')
