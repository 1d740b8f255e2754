"""The benchmark's light IMAP upstream, driven by imaplib over verified TLS: it must take exactly
the tokens Dovecot takes, and hold an IDLE until DONE, or the crowd figures mean nothing."""

from __future__ import annotations

import base64
import imaplib
import os
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.sasl import xoauth2
from tests.bench.servers import LightImap
from tests.support.certs import TestCA, make_ca
from tests.support.jwt import mint_hs256

USER = "alice@contoso.example"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return make_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def key() -> bytes:
    return os.urandom(32)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, ca: TestCA, key: bytes) -> Iterator[LightImap]:
    light = LightImap(tmp_path_factory.mktemp("light"), ca, key)
    light.start()
    try:
        yield light
    finally:
        light.stop()


def _token(key: bytes, email: str = USER, lifetime: int = 600) -> str:
    now = int(time.time())
    return mint_hs256(key, {"sub": email, "email": email, "iat": now - 300, "exp": now + lifetime})


def _client(server: LightImap, ca: TestCA) -> imaplib.IMAP4_SSL:
    context = ssl.create_default_context(cafile=str(ca.cert_path))
    return imaplib.IMAP4_SSL("127.0.0.1", server.port, ssl_context=context)


def _authenticate(client: imaplib.IMAP4_SSL, token: str, user: str = USER) -> None:
    raw = base64.b64decode(xoauth2(user, token))
    client.authenticate("XOAUTH2", lambda _: raw)


def test_valid_token_logs_in_and_idle_waits_for_done(server: LightImap, ca: TestCA, key: bytes) -> None:
    """A token signed with the shared key logs in; IDLE answers '+' and ends with OK at DONE."""
    client = _client(server, ca)
    assert "AUTH=XOAUTH2" in client.capabilities and "IDLE" in client.capabilities
    _authenticate(client, _token(key))
    assert client.state == "AUTH"
    client.send(b"t1 IDLE\r\n")
    assert client.readline().startswith(b"+ ")
    client.send(b"DONE\r\n")
    assert client.readline() == b"t1 OK IDLE terminated\r\n"
    client.logout()


@pytest.mark.parametrize(
    ("case", "user"),
    [("other key", USER), ("expired", USER), ("other mailbox", "bob@contoso.example")],
)
def test_refuses_a_token_dovecot_would_refuse(
    server: LightImap, ca: TestCA, key: bytes, case: str, user: str
) -> None:
    """A token with the wrong signature, expired, or naming another mailbox gets NO."""
    token = {
        "other key": _token(os.urandom(32)),
        "expired": _token(key, lifetime=-1),
        "other mailbox": _token(key),
    }[case]
    client = _client(server, ca)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        _authenticate(client, token, user)
    client.logout()


def test_stops_with_sigterm(tmp_path: Path, ca: TestCA, key: bytes) -> None:
    """stop() ends the server process: nothing is left listening."""
    light = LightImap(tmp_path, ca, key)
    light.start()
    port = light.port
    light.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
