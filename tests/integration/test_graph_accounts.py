"""`account add` for an account that serves IMAP and sends through Microsoft Graph: consent for
both resources, and a token for each stored from the one refresh token."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from proxy.resources import GRAPH, GRAPH_SEND_SCOPES, OUTLOOK
from proxy.store import FileStore, Secrets
from tests.support.fake_entra import FakeEntra
from tests.support.flows import PASSWORD, Command, account_block, imap_and_graph_config
from tests.support.ports import free_port
from tests.support.world import TENANT

pytestmark = pytest.mark.integration

USER = "dana@contoso.example"
IMAP_SCOPE = "https://outlook.office.com/IMAP.AccessAsUser.All"


@pytest.fixture
def entra() -> Iterator[FakeEntra]:
    with FakeEntra(lambda mailbox, lifetime: f"outlook-{secrets.token_hex(4)}",
                   device_interval=0.1) as fake:
        fake.add_user(TENANT, "app-dana", USER)
        yield fake


def config(tmp_path: Path, entra: FakeEntra, flow: str, **extra: str) -> Path:
    return imap_and_graph_config(
        tmp_path, account_block(USER, "app-dana", flow, entra.authority, **extra))


def stored(tmp_path: Path) -> Secrets:
    store = FileStore(tmp_path / "store")
    return store.load(USER, store.derive_key(USER, PASSWORD))


def graph_scopes(token: str) -> list[str]:
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["aud"] == "https://graph.microsoft.com"
    return str(claims["scp"]).split()


def approve_next_code(command: Command, entra: FakeEntra) -> str:
    code = command.wait_for(r"Enter code: (\w+)").group(1)
    entra.approve_device(code, USER)
    return code


def test_device_code_asks_a_second_sign_in_for_graph(tmp_path: Path, entra: FakeEntra) -> None:
    """Without admin consent, a device code sign-in for Exchange cannot be redeemed for Graph:
    `account add` says why and shows a second code; both tokens are stored."""
    command = Command(config(tmp_path, entra, "device_code"), "account", "add", USER,
                      "--password-stdin")
    command.write(PASSWORD + "\n", close=True)
    approve_next_code(command, entra)
    command.wait_for("Microsoft Graph needs its own consent")
    approve_next_code(command, entra)
    status, out, err = command.finish()
    assert status == 0, out + err
    assert "for Exchange Online (IMAP, POP3, SMTP) and Microsoft Graph" in out
    secrets_ = stored(tmp_path)
    outlook, graph = secrets_.token_for(OUTLOOK), secrets_.token_for(GRAPH)
    assert outlook is not None and outlook.token.startswith("outlook-")
    assert graph is not None and graph_scopes(graph.token) == ["Mail.Send", "Mail.ReadWrite"]
    assert secrets_.refresh_token


def test_device_code_with_admin_consent_needs_one_sign_in(tmp_path: Path,
                                                           entra: FakeEntra) -> None:
    """With admin consent for Graph's permissions, one device code sign-in gives both tokens."""
    entra.add_app(TENANT, "app-dana", admin_consent=GRAPH_SEND_SCOPES)
    command = Command(config(tmp_path, entra, "device_code"), "account", "add", USER,
                      "--password-stdin")
    command.write(PASSWORD + "\n", close=True)
    approve_next_code(command, entra)
    status, out, err = command.finish()
    assert status == 0, out + err
    assert out.count("Enter code:") == 1 and "its own consent" not in out
    graph = stored(tmp_path).token_for(GRAPH)
    assert graph is not None and "Mail.Send" in graph_scopes(graph.token)


def test_auth_code_consents_to_both_in_one_sign_in(tmp_path: Path, entra: FakeEntra) -> None:
    """The authorisation request names Exchange's and Graph's scopes, so one sign-in consents
    to both; the code is redeemed for Exchange and the refresh token for Graph."""
    port = free_port()
    command = Command(config(tmp_path, entra, "auth_code",
                             redirect_uri=f"http://localhost:{port}/"),
                      "account", "add", USER, "--password-stdin", "--no-browser")
    command.write(PASSWORD + "\n", close=True)
    url = command.wait_for(r"(http://\S+/oauth2/v2\.0/authorize\?\S+)").group(1)
    scope = parse_qs(urlsplit(url).query)["scope"][0].split()
    assert {IMAP_SCOPE, *GRAPH_SEND_SCOPES, "offline_access"} <= set(scope)
    assert requests.get(url, timeout=30).status_code == 200
    status, out, err = command.finish()
    assert status == 0, out + err
    token_forms = [grant for path, grant in entra.requests if path.endswith("/token")]
    assert token_forms == ["authorization_code", "refresh_token"]
    graph = stored(tmp_path).token_for(GRAPH)
    assert graph is not None and graph_scopes(graph.token) == ["Mail.Send", "Mail.ReadWrite"]
