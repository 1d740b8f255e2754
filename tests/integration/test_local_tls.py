"""TLS on the device side: implicit TLS and STARTTLS on every protocol, generated certificates."""

from __future__ import annotations

import imaplib
import poplib
import re
import shutil
import smtplib
import ssl
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import ALICE, PASSWORD, World
from tests.support.ports import free_port
from tests.support.proxy_config import alice_account_toml, listener_toml, store_toml
from tests.support.proxy_process import ProxyProcess

pytestmark = pytest.mark.integration

LISTENERS = {  # name: (protocol, tls)
    "imaps": ("imap", "implicit"),
    "imaps-legacy": ("imap", "implicit"),  # tls_minimum = "1.0", for old printers
    "imap-starttls": ("imap", "starttls"),
    "pop3s": ("pop3", "implicit"),
    "pop3-stls": ("pop3", "starttls"),
    "smtps": ("smtp", "implicit"),
    "smtp-starttls": ("smtp", "starttls"),
}


@dataclass
class TlsProxy:
    proxy: ProxyProcess
    ports: dict[str, int]
    store: Path

    def certificate(self, name: str) -> Path:
        protocol, _ = LISTENERS[name]
        (found,) = (self.store / "tls").glob(f"{protocol}-tcp_{self.ports[name]}_*.pem")
        return found

    def context(self, name: str) -> ssl.SSLContext:
        """Trusts exactly the listener's generated certificate and checks it names 127.0.0.1."""
        context = ssl.create_default_context(cafile=str(self.certificate(name)))
        return context


@pytest.fixture(scope="module")
def tls_proxy(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsProxy]:
    workdir = tmp_path_factory.mktemp("tls-proxy")
    ports = {name: free_port() for name in LISTENERS}
    ca = world.dovecot.ca.cert_path
    upstreams = {
        "imap": f"tls:127.0.0.1:{world.dovecot.imaps_port}",
        "pop3": f"tls:127.0.0.1:{world.dovecot.pop3s_port}",
        "smtp": f"tcp:127.0.0.1:{world.dovecot.submission_port}",
    }
    listeners = "".join(
        listener_toml(protocol, f"tcp:{ports[name]}:interface=127.0.0.1", upstreams[protocol], ca,
                      tls=tls, tls_minimum="1.0" if name.endswith("-legacy") else None)
        for name, (protocol, tls) in LISTENERS.items()
    )
    config = store_toml(workdir / "store") + listeners + alice_account_toml(world.entra.authority)
    proxy = ProxyProcess(workdir, config)
    added = proxy.cli("account", "add", ALICE, "--password-stdin", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    proxy.start(*ports.values())
    try:
        yield TlsProxy(proxy, ports, workdir / "store")
    finally:
        proxy.stop()


def test_generated_certificates_are_private_and_fingerprinted_in_the_log(tls_proxy: TlsProxy) -> None:
    """Each TLS listener gets a generated certificate (mode 0600) whose SHA-256 fingerprint the
    log prints, so devices can pin it."""
    log = tls_proxy.proxy.log_text()
    for name in LISTENERS:
        path = tls_proxy.certificate(name)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert re.search(rf"{re.escape(str(path))} \(generated\), SHA-256 fingerprint ([0-9A-F]{{2}}:){{31}}[0-9A-F]{{2}}", log)


def test_imap_implicit_tls(tls_proxy: TlsProxy) -> None:
    """imaplib over implicit TLS verifies the generated certificate for 127.0.0.1 and logs in."""
    client = imaplib.IMAP4_SSL("127.0.0.1", tls_proxy.ports["imaps"], ssl_context=tls_proxy.context("imaps"))
    client.login(ALICE, PASSWORD)
    assert client.select("INBOX")[0] == "OK"
    client.logout()


def test_imap_starttls(tls_proxy: TlsProxy) -> None:
    """imaplib sees STARTTLS, upgrades, and logs in over TLS."""
    client = imaplib.IMAP4("127.0.0.1", tls_proxy.ports["imap-starttls"])
    assert "STARTTLS" in client.capabilities
    client.starttls(tls_proxy.context("imap-starttls"))
    assert "STARTTLS" not in client.capabilities
    client.login(ALICE, PASSWORD)
    assert client.select("INBOX")[0] == "OK"
    client.logout()


def test_pop3_implicit_tls_and_stls(tls_proxy: TlsProxy) -> None:
    """poplib logs in over implicit TLS and after STLS."""
    implicit = poplib.POP3_SSL("127.0.0.1", tls_proxy.ports["pop3s"], context=tls_proxy.context("pop3s"))
    implicit.user(ALICE)
    implicit.pass_(PASSWORD)
    assert implicit.stat()[0] >= 1
    implicit.quit()
    upgraded = poplib.POP3("127.0.0.1", tls_proxy.ports["pop3-stls"])
    upgraded.stls(tls_proxy.context("pop3-stls"))
    upgraded.user(ALICE)
    upgraded.pass_(PASSWORD)
    assert upgraded.stat()[0] >= 1
    upgraded.quit()


def test_smtp_implicit_tls_and_starttls(tls_proxy: TlsProxy, world: World) -> None:
    """smtplib sends over implicit TLS and after STARTTLS; AUTH is offered only as it should be."""
    before = len(world.dovecot.sink.messages)
    with smtplib.SMTP_SSL("127.0.0.1", tls_proxy.ports["smtps"], context=tls_proxy.context("smtps")) as client:
        client.login(ALICE, PASSWORD)
        client.sendmail(ALICE, ["bob@example.net"], b"Subject: implicit\r\n\r\nover smtps\r\n")
    with smtplib.SMTP("127.0.0.1", tls_proxy.ports["smtp-starttls"]) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        client.starttls(context=tls_proxy.context("smtp-starttls"))
        client.ehlo()
        assert not client.has_extn("starttls")
        client.login(ALICE, PASSWORD)
        client.sendmail(ALICE, ["bob@example.net"], b"Subject: upgraded\r\n\r\nafter starttls\r\n")
    messages = world.dovecot.sink.wait_for_messages(before + 2)
    bodies = b"".join(m.data for m in messages[before:])
    assert b"over smtps" in bodies and b"after starttls" in bodies


def test_openssl_s_client_sees_the_generated_certificate(tls_proxy: TlsProxy) -> None:
    """openssl s_client verifies the implicit-TLS listener against its generated certificate."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    result = subprocess.run(
        [openssl, "s_client", "-connect", f"127.0.0.1:{tls_proxy.ports['imaps']}",
         "-CAfile", str(tls_proxy.certificate("imaps")), "-verify_ip", "127.0.0.1",
         "-verify_return_error", "-brief", "-ign_eof"],
        input="a1 LOGOUT\n", capture_output=True, text=True, timeout=20,
    )
    assert "Verification: OK" in result.stderr, result.stderr
    assert "* OK [CAPABILITY" in result.stdout


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_tls_1_1_only_where_explicitly_allowed(tls_proxy: TlsProxy) -> None:
    """A TLS 1.1-only device is refused by default (tls_minimum = "1.2") and served where the
    config says tls_minimum = "1.0"."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        imaplib.IMAP4_SSL("127.0.0.1", tls_proxy.ports["imaps"], ssl_context=context, timeout=10)
    legacy = imaplib.IMAP4_SSL("127.0.0.1", tls_proxy.ports["imaps-legacy"], ssl_context=context, timeout=10)
    assert legacy.sock.version() == "TLSv1.1"  # type: ignore[attr-defined]
    legacy.login(ALICE, PASSWORD)
    legacy.logout()
    assert "accepts TLS 1.0, which is obsolete" in tls_proxy.proxy.log_text()
