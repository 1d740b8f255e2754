"""What a service manager and a log collector see: `xoauth2-proxy health`, the JSON log, and
the control endpoint behind `xoauth2-proxy reload`."""

from __future__ import annotations

import imaplib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.logs import JSON_KEYS
from tests.integration.conftest import ALICE, PASSWORD, World
from tests.support.ports import free_port
from tests.support.proxy_config import listener_toml
from tests.support.runtime_proxy import RuntimeProxy

pytestmark = pytest.mark.integration

LISTENERS = {"imap": "imap", "pop3": "pop3/starttls", "smtp": "smtp/implicit"}


@pytest.fixture(scope="module")
def proxy(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeProxy]:
    own = RuntimeProxy(world, tmp_path_factory.mktemp("service"))
    own.write_config(LISTENERS)
    own.add_account(ALICE, PASSWORD)
    own.start(*LISTENERS, options=("--log-format", "json"))
    try:
        yield own
    finally:
        own.process.stop()


def test_health_passes_when_every_listener_greets(proxy: RuntimeProxy) -> None:
    """`health` exits 0 and says each listener greets (through TLS on the implicit one)."""
    result = proxy.process.cli("health")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("greets") == len(LISTENERS)


def test_health_fails_for_a_listener_that_is_not_running(proxy: RuntimeProxy) -> None:
    """A listener in the file that the running proxy does not serve makes `health` exit 1."""
    proxy.write_config({**LISTENERS, "new": "imap"})
    try:
        result = proxy.process.cli("health")
    finally:
        proxy.write_config(LISTENERS)
    assert result.returncode == 1
    assert result.stdout.count("greets") == len(LISTENERS)
    assert "FAILED imap" in result.stdout


def test_health_reaches_balancer_and_unix_socket_listeners(
        proxy: RuntimeProxy, world: World, tmp_path: Path) -> None:
    """A `haproxy:` listener this machine balances for greets after a PROXY v2 LOCAL header
    (as HAProxy checks its servers); one that takes only another balancer is alive when it
    closes at once; a `unix:` listener greets on its socket."""
    ca, imaps = world.dovecot.ca.cert_path, f"tls:127.0.0.1:{world.dovecot.imaps_port}"
    ours, theirs, sock = free_port(), free_port(), tmp_path / "pop3.sock"
    extra = (
        listener_toml("imap", f"haproxy:tcp:{ours}:interface=127.0.0.1", imaps, ca,
                      proxy_protocol_from=["127.0.0.0/8"], allow_plaintext=True)
        + listener_toml("imap", f"haproxy:tcp:{theirs}:interface=127.0.0.1", imaps, ca,
                        proxy_protocol_from=["192.0.2.10/32"], allow_plaintext=True)
        + listener_toml("pop3", f"unix:{sock}",
                        f"tls:127.0.0.1:{world.dovecot.pop3s_port}", ca)
    )
    proxy.write_config(LISTENERS, extra=extra)
    try:
        reloaded = proxy.process.cli("reload")
        assert reloaded.returncode == 0, reloaded.stderr
        result = proxy.process.cli("health")
    finally:
        proxy.write_config(LISTENERS)
        proxy.process.cli("reload")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert f"ok     imap haproxy:tcp:{ours}:interface=127.0.0.1: greets (as its balancer)" in lines
    assert (f"ok     imap haproxy:tcp:{theirs}:interface=127.0.0.1: accepts connections (and "
            "closes them: proxy_protocol_from leaves out this machine)") in lines
    assert f"ok     pop3 unix:{sock}: greets" in lines
    assert result.stdout.count("greets") == len(LISTENERS) + 2


def test_json_log_lines_parse_and_carry_the_keys(proxy: RuntimeProxy) -> None:
    """Every log line is one JSON object with the stable keys; logins name the listener, the
    peer, the account and the event; no line carries the password."""
    client = imaplib.IMAP4("127.0.0.1", proxy.ports["imap"], timeout=30)
    client.login(ALICE, PASSWORD)
    client.logout()
    wrong = imaplib.IMAP4("127.0.0.1", proxy.ports["imap"], timeout=30)
    with pytest.raises(imaplib.IMAP4.error):
        wrong.login(ALICE, "not-the-password")
    wrong.shutdown()
    proxy.process.wait_for_log('"event": "login_failed"')
    text = proxy.process.log_text()
    records = [json.loads(line) for line in text.splitlines()]
    assert all(list(record)[:len(JSON_KEYS)] == list(JSON_KEYS) for record in records)
    events = {record["event"]: record for record in records}
    for event in ("listening", "started", "connected", "login", "login_failed", "closed"):
        assert event in events, event
    login = events["login"]
    assert login["account"] == ALICE and login["listener"].startswith("imap tcp:")
    assert login["peer"].startswith("127.0.0.1:") and login["level"] == "info"
    assert events["login_failed"]["reason"]
    assert PASSWORD not in text and "not-the-password" not in text
    assert "Starting factory" not in text


def test_control_endpoint_needs_the_token_and_shows_what_runs(proxy: RuntimeProxy) -> None:
    """The control endpoint refuses a request without the runtime file's token and shows the
    listeners, with their address and open sessions, to one that has it."""
    info = json.loads((proxy.workdir / "store" / "runtime.json").read_text())
    url = info["control_url"] + "runtime"
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10)
        assert refused.value.code == 403
    client = imaplib.IMAP4("127.0.0.1", proxy.ports["imap"], timeout=30)
    client.login(ALICE, PASSWORD)
    try:
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {info['token']}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            view = json.loads(answer.read())
    finally:
        client.logout()
    listeners = {listener["protocol"]: listener for listener in view["listeners"]}
    assert set(listeners) == set(LISTENERS)
    assert listeners["smtp"]["tls_fingerprint"] and listeners["imap"]["tls_fingerprint"] is None
    assert listeners["imap"]["address"] == f"127.0.0.1:{proxy.ports['imap']}"
    assert listeners["imap"]["sessions_open"] == 1
    assert view["accounts"] == [ALICE] and view["stopping"] is False
