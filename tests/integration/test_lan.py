"""Devices on another address: TLS required before login, generated certificates verified from
the LAN, allow_from enforced, plaintext only when allowed. The clients run in a network
namespace of their own (tests/support/netns.py)."""

from __future__ import annotations

import base64
import json
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import ALICE, ALICE_SECRET, PASSWORD, World
from tests.support.netns import LanHost, lan_host, unavailable
from tests.support.ports import free_port
from tests.support.proxy_config import alice_account_toml, listener_toml, store_toml
from tests.support.proxy_process import ProxyProcess

pytestmark = pytest.mark.integration

LISTENERS = {  # name: (protocol, tls, who may connect)
    "imap-starttls": ("imap", "starttls", "device"),
    "imaps": ("imap", "implicit", "device"),
    "smtp-starttls": ("smtp", "starttls", "device"),
    "imap-plain": ("imap", "none", "device"),  # with allow_plaintext = true
    "smtp-plain": ("smtp", "none", "device"),  # an old printer: no TLS at all
    "imap-loopback-only": ("imap", "starttls", "127.0.0.1/32"),
}


@dataclass
class Lan:
    host: LanHost
    proxy: ProxyProcess
    ports: dict[str, int]
    store: Path

    def certificate(self, name: str) -> str:
        protocol, _, _ = LISTENERS[name]
        (found,) = (self.store / "tls").glob(f"{protocol}-tcp_{self.ports[name]}_*.pem")
        return str(found)

    def client(self, script: str, **values: object) -> dict[str, object]:
        """Run a Python client on the device host; it prints one JSON object."""
        result = self.host.run(sys.executable, "-c", script, json.dumps(values))
        assert result.returncode == 0, result.stderr
        return dict(json.loads(result.stdout))


@pytest.fixture(scope="module")
def lan(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lan]:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("lan-proxy")
    with lan_host() as host:
        ports = {name: free_port() for name in LISTENERS}
        upstreams = {
            "imap": f"tls:127.0.0.1:{world.dovecot.imaps_port}",
            "smtp": f"tcp:127.0.0.1:{world.dovecot.submission_port}",
        }
        listeners = "".join(
            listener_toml(
                protocol, f"tcp:{ports[name]}:interface={host.proxy_address}", upstreams[protocol],
                world.dovecot.ca.cert_path, tls=tls,
                allow_plaintext=True if tls == "none" else None,
                allow_from=[host.device_address + "/32" if allowed == "device" else allowed],
            )
            for name, (protocol, tls, allowed) in LISTENERS.items()
        )
        config = store_toml(workdir / "store") + listeners + alice_account_toml(world.entra.authority)
        proxy = ProxyProcess(workdir, config)
        added = proxy.cli("account", "add", ALICE, "--password-stdin", stdin=PASSWORD + "\n")
        assert added.returncode == 0, added.stderr
        proxy.start(verbose=True)  # the log must hold no secret even at -v
        try:
            for port in ports.values():  # the proxy listens on the LAN side only
                probe = host.run(sys.executable, "-c", WAIT_FOR_PORT, host.proxy_address, str(port))
                assert probe.returncode == 0, proxy.log_text()
            yield Lan(host, proxy, ports, workdir / "store")
        finally:
            proxy.stop()


WAIT_FOR_PORT = """
import socket, sys, time
deadline = time.monotonic() + 15
while True:
    try:
        socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.05)
"""

IMAP_STARTTLS = """
import imaplib, json, ssl, sys
v = json.loads(sys.argv[1])
client = imaplib.IMAP4(v["host"], v["port"], timeout=20)
out = {"before": sorted(client.capabilities)}
try:
    client.login(v["user"], v["password"])
    out["login_before_tls"] = "OK"
except imaplib.IMAP4.error as e:
    out["login_before_tls"] = str(e)
client.starttls(ssl.create_default_context(cafile=v["ca"]))
out["after"] = sorted(client.capabilities)
out["login"] = client.login(v["user"], v["password"])[0]
out["select"] = client.select("INBOX")[0]
client.logout()
print(json.dumps(out))
"""

SMTP_STARTTLS = """
import json, smtplib, ssl, sys
v = json.loads(sys.argv[1])
with smtplib.SMTP(v["host"], v["port"], timeout=20) as client:
    client.ehlo("printer")
    out = {"auth_before_tls": client.has_extn("auth"), "starttls": client.has_extn("starttls")}
    client.starttls(context=ssl.create_default_context(cafile=v["ca"]))
    client.ehlo("printer")
    out["auth_after_tls"] = client.has_extn("auth")
    client.login(v["user"], v["password"])
    client.sendmail(v["user"], ["bob@example.net"], b"Subject: scan\\r\\n\\r\\nscanned from the LAN\\r\\n")
print(json.dumps(out))
"""

IMAP_PLAIN = """
import imaplib, json, sys
v = json.loads(sys.argv[1])
client = imaplib.IMAP4(v["host"], v["port"], timeout=20)
out = {"login": client.login(v["user"], v["password"])[0]}
client.logout()
print(json.dumps(out))
"""

PRINTER = """
import base64, json, socket, sys
v = json.loads(sys.argv[1])
b64 = lambda text: base64.b64encode(text.encode()) + b"\\r\\n"
with socket.create_connection((v["host"], v["port"]), timeout=20) as s:
    f = s.makefile("rwb")
    def say(line):
        f.write(line)
        f.flush()
        reply = f.readline()
        while reply[3:4] == b"-":
            reply = f.readline()
        return reply.decode().strip()
    replies = [f.readline().decode().strip()]
    for line in (b"HELO printer\\r\\n", b"AUTH LOGIN\\r\\n", b64(v["user"]), b64(v["password"]),
                 b"MAIL FROM:<" + v["user"].encode() + b">\\r\\n", b"RCPT TO:<bob@example.net>\\r\\n",
                 b"DATA\\r\\n",
                 b"Subject: scan 0001\\r\\n\\r\\nplain scan from an old printer\\r\\n.\\r\\n",
                 b"QUIT\\r\\n"):
        replies.append(say(line))
print(json.dumps({"codes": [r[:3] for r in replies]}))
"""

FIRST_BYTES = """
import json, socket, sys
v = json.loads(sys.argv[1])
with socket.create_connection((v["host"], v["port"]), timeout=10) as s:
    print(json.dumps({"received": s.recv(100).decode("latin-1")}))
"""


def _values(lan: Lan, name: str) -> dict[str, object]:
    return {"host": lan.host.proxy_address, "port": lan.ports[name], "user": ALICE,
            "password": PASSWORD, "ca": lan.certificate(name) if LISTENERS[name][1] != "none" else ""}


def test_starttls_is_required_before_login_from_the_lan(lan: Lan) -> None:
    """A LAN device sees LOGINDISABLED and gets NO [PRIVACYREQUIRED] before STARTTLS; after it,
    the generated certificate verifies for the proxy's address and the login works."""
    out = lan.client(IMAP_STARTTLS, **_values(lan, "imap-starttls"))
    assert "LOGINDISABLED" in out["before"] and "STARTTLS" in out["before"]  # type: ignore[operator]
    assert "PRIVACYREQUIRED" in str(out["login_before_tls"])
    assert "LOGINDISABLED" not in out["after"] and "AUTH=PLAIN" in out["after"]  # type: ignore[operator]
    assert out["login"] == "OK" and out["select"] == "OK"


def test_smtp_starttls_from_the_lan_sends_a_scan(lan: Lan, world: World) -> None:
    """A printer on the LAN sees no AUTH before STARTTLS, then authenticates and sends."""
    before = len(world.dovecot.sink.messages)
    out = lan.client(SMTP_STARTTLS, **_values(lan, "smtp-starttls"))
    assert out == {"auth_before_tls": False, "starttls": True, "auth_after_tls": True}
    messages = world.dovecot.sink.wait_for_messages(before + 1)
    assert b"scanned from the LAN" in messages[-1].data


def test_openssl_from_the_lan_verifies_the_implicit_tls_certificate(lan: Lan) -> None:
    """openssl s_client on the device host verifies the generated certificate for the
    proxy's LAN address (it is in the certificate's names)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    result = lan.host.run(
        "openssl", "s_client", "-connect", f"{lan.host.proxy_address}:{lan.ports['imaps']}",
        "-CAfile", lan.certificate("imaps"), "-verify_ip", lan.host.proxy_address,
        "-verify_return_error", "-brief", "-ign_eof", input="a1 LOGOUT\n", timeout=20,
    )
    assert "Verification: OK" in result.stderr, result.stderr
    assert "* OK [CAPABILITY" in result.stdout


def test_plaintext_lan_listener_works_only_because_it_is_allowed(lan: Lan) -> None:
    """tls = "none" off loopback serves because allow_plaintext = true, with a warning at
    start; the same listener without it stops the proxy from starting (exit code 2)."""
    out = lan.client(IMAP_PLAIN, **_values(lan, "imap-plain"))
    assert out == {"login": "OK"}
    assert "passwords from devices cross the network in the clear" in lan.proxy.log_text()
    refused = ProxyProcess(lan.proxy.workdir / "refused", lan.proxy.config.read_text().replace(
        "allow_plaintext = true\n", ""))
    result = refused.cli("serve", timeout=30)
    assert result.returncode == 2
    assert "passwords would cross the network in the clear" in result.stderr


def test_old_printer_sends_a_scan_over_plain_tcp(lan: Lan, world: World) -> None:
    """A printer with no TLS on the LAN (HELO, AUTH LOGIN) sends a scan through a listener that
    allows plaintext; it arrives at the upstream's relay."""
    before = len(world.dovecot.sink.messages)
    out = lan.client(PRINTER, **_values(lan, "smtp-plain"))
    assert out == {"codes": ["220", "250", "334", "334", "235", "250", "250", "354", "250", "221"]}
    messages = world.dovecot.sink.wait_for_messages(before + 1)
    assert b"plain scan from an old printer" in messages[-1].data


def test_verbose_log_holds_no_secret(lan: Lan) -> None:
    """After the LAN sessions above, the proxy's -v log has no password, secret, token or
    XOAUTH2 string in it."""
    log = lan.proxy.log_text()
    assert "DEBUG" in log and "logged in upstream" in log  # it was verbose, and saw logins
    for secret in (PASSWORD, ALICE_SECRET, "eyJ", "dXNlcj", "auth=Bearer",
                   base64.b64encode(PASSWORD.encode()).decode()):
        assert secret not in log, f"{secret!r} found in the proxy's verbose log"


def test_addresses_outside_allow_from_are_closed_before_a_byte(lan: Lan) -> None:
    """A listener that allows only 127.0.0.1 closes the LAN device's connection at once."""
    out = lan.client(FIRST_BYTES, **_values(lan, "imap-loopback-only"))
    assert out == {"received": ""}
    assert f"refused connection from {lan.host.device_address}: not in allow_from" in lan.proxy.log_text()
