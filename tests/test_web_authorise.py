"""The admin page's sign-in flows (proxy/web/authorise.py) without a browser or a subprocess: a
simulated clock drives the device code polling, Entra ID is the fake on 127.0.0.1, and the
record lands in a file store."""

from __future__ import annotations

import secrets
from collections.abc import Coroutine, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest
import requests
from twisted.internet import defer, task
from twisted.python.failure import Failure

from proxy.config import AccountConfig, load_config
from proxy.entra.answers import DeviceCode, TokenSet
from proxy.entra.client import EntraClient
from proxy.resources import GRAPH, GRAPH_SEND_SCOPES, OUTLOOK
from proxy.store import FileStore
from proxy.web.authorise import Authorisations, Flow
from proxy.web.flow_pages import device_code_page
from tests.support.fake_entra import FakeEntra
from tests.support.flows import account_block, imap_and_graph_config
from tests.support.world import TENANT

USER = "dana@contoso.example"
PASSWORD = "page local password"
T = TypeVar("T")


def now(coroutine: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never waits (blocking work runs at once here)."""
    results: list[Any] = []
    defer.Deferred.fromCoroutine(coroutine).addBoth(results.append)
    assert results, "the coroutine waited"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]  # type: ignore[no-any-return]


class RecordingClient(EntraClient):
    """The real client, keeping the tokens each device code sign-in gave."""

    signed_in: list[TokenSet]

    def poll_device_code(self, device: DeviceCode) -> TokenSet | None:
        tokens = super().poll_device_code(device)
        if tokens is not None:
            self.signed_in.append(tokens)
        return tokens


@pytest.fixture
def entra() -> Iterator[FakeEntra]:
    with FakeEntra(lambda mailbox, lifetime: f"outlook-{secrets.token_hex(4)}") as fake:
        fake.add_user(TENANT, "app-dana", USER)
        yield fake


def account(tmp_path: Path, entra: FakeEntra, flow: str) -> AccountConfig:
    """An account serving IMAP (Exchange Online) and an SMTP listener sending through Graph."""
    block = account_block(USER, "app-dana", flow, entra.authority)
    return load_config(imap_and_graph_config(tmp_path, block)).account(USER)


class Page:
    """Authorisations on a simulated clock, with blocking work run at once."""

    def __init__(self, tmp_path: Path) -> None:
        self.clock = task.Clock()
        self.store = FileStore(tmp_path / "store")
        self.clients: list[RecordingClient] = []
        runtime = SimpleNamespace(
            reactor=self.clock, store=self.store,
            run_blocking=lambda work: defer.maybeDeferred(work),
            broker=SimpleNamespace(forget_failures=lambda username: None))
        self.flows = Authorisations(runtime, self._client)  # type: ignore[arg-type]

    def _client(self, account: AccountConfig) -> RecordingClient:
        session = requests.Session()
        session.trust_env = False
        client = RecordingClient(account, session)
        client.signed_in = []
        self.clients.append(client)
        return client

    def start(self, account: AccountConfig) -> Flow:
        return now(self.flows.start(account, PASSWORD, "http://localhost:1/"))

    def sign_in(self, entra: FakeEntra, flow: Flow) -> None:
        """The user enters the code shown; the page's next poll finds the sign-in."""
        assert flow.device is not None
        entra.approve_device(flow.device.user_code, USER)
        self.clock.advance(flow.device.interval)


def test_device_code_goes_on_with_a_second_code_when_graph_needs_consent(
        tmp_path: Path, entra: FakeEntra) -> None:
    """Exchange's sign-in cannot be redeemed for Graph without consent: the flow shows a second
    device code for Graph, saying why, and stores nothing yet; once that sign-in is done the one
    record holds both tokens and the refresh token of the later sign-in."""
    page = Page(tmp_path)
    flow = page.start(account(tmp_path, entra, "device_code"))
    assert flow.device is not None
    first_code = flow.device.user_code
    page.sign_in(entra, flow)
    assert not flow.done, flow.outcome
    assert flow.consent_for == GRAPH and flow.device.user_code != first_code
    assert page.store.list_meta() == []
    html = now(device_code_page(flow, None)).decode()
    assert ("Microsoft Graph needs its own consent (an administrator can grant it for everyone "
            "under API permissions); sign in once more.") in html
    assert flow.device.user_code in html
    page.sign_in(entra, flow)
    assert flow.outcome is not None and flow.outcome.ok, flow.outcome
    first, second = page.clients[0].signed_in
    stored = page.store.load(USER, page.store.derive_key(USER, PASSWORD))
    outlook, graph = stored.token_for(OUTLOOK), stored.token_for(GRAPH)
    assert outlook is not None and outlook.token == first.access_token
    assert graph is not None and graph.token == second.access_token
    assert stored.refresh_token == second.refresh_token != first.refresh_token


def test_device_code_with_admin_consent_needs_one_code(tmp_path: Path, entra: FakeEntra) -> None:
    """With admin consent for Graph the first sign-in's refresh token gives the Graph token."""
    entra.add_app(TENANT, "app-dana", admin_consent=GRAPH_SEND_SCOPES)
    page = Page(tmp_path)
    flow = page.start(account(tmp_path, entra, "device_code"))
    page.sign_in(entra, flow)
    assert flow.outcome is not None and flow.outcome.ok, flow.outcome
    assert len(entra.user_codes) == 1
    stored = page.store.load(USER, page.store.derive_key(USER, PASSWORD))
    assert stored.token_for(GRAPH) is not None and stored.token_for(OUTLOOK) is not None
