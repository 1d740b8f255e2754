"""The fake Entra ID and the fake Graph side by side, and the messages the Graph tests send."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP

import pytest
import requests

from proxy.graph import GraphClient
from tests.support.fake_entra import FakeEntra
from tests.support.fake_graph import FakeGraph

TENANT = "contoso.onmicrosoft.com"
APP_ID = "22222222-3333-4444-5555-666666666666"
SECRET = "graph-app-secret"
MAILBOX = "scanner@contoso.com"
GRAPH_DEFAULT = "https://graph.microsoft.com/.default"
BOTH = ("Mail.Send", "Mail.ReadWrite")


def direct_session() -> requests.Session:
    """Straight to 127.0.0.1, whatever HTTP_PROXY or .netrc the environment has."""
    session = requests.Session()
    session.trust_env = False
    return session


def app_token(entra: FakeEntra, roles: tuple[str, ...] = BOTH, client_id: str = APP_ID) -> str:
    """A client-credentials Graph token from the fake Entra ID, with these application roles."""
    entra.add_app(TENANT, client_id, secret=SECRET, mailbox=MAILBOX, graph_roles=roles)
    answer = direct_session().post(entra.token_url(TENANT), timeout=5, data={
        "grant_type": "client_credentials", "client_id": client_id, "client_secret": SECRET,
        "scope": GRAPH_DEFAULT})
    answer.raise_for_status()
    return str(answer.json()["access_token"])


# Fixtures for the test modules that import them, named apart from the arguments they feed.
@pytest.fixture(name="entra")
def entra_fixture() -> Iterator[FakeEntra]:
    with FakeEntra(lambda mailbox, lifetime: f"outlook-token-{secrets.token_hex(4)}") as service:
        yield service


@pytest.fixture(name="graph")
def graph_fixture(entra: FakeEntra) -> Iterator[FakeGraph]:
    with FakeGraph(entra.graph_token_key, retry_after=7) as service:
        service.add_mailbox(MAILBOX)
        yield service


@pytest.fixture(name="client")
def client_fixture(graph: FakeGraph) -> GraphClient:
    return GraphClient(direct_session(), graph.url, timeout=(2.0, 10.0))


def text_message(body: str = "Hello.\n", sender: str = MAILBOX, to: str = "bob@contoso.com",
                 **headers: str) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = "Scan from the printer"
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(body)
    return message.as_bytes(policy=SMTP)


def scan_message(pdf: bytes, image: bytes | None = None, sender: str = MAILBOX,
                 to: str = "bob@contoso.com", cc: str | None = None) -> bytes:
    """What a scanner sends: text and HTML (with an inline logo, if given) and a PDF."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    if cc:
        message["Cc"] = cc
    message["Subject"] = "Scanned document ✓"
    message.set_content("Your scan is attached.\n")
    html = "<p>Your scan is attached.</p>" + ('<img src="cid:logo@printer">' if image else "")
    message.add_alternative(html, subtype="html")
    if image is not None:
        message.get_payload()[1].add_related(image, "image", "png", cid="<logo@printer>")
    message.add_attachment(pdf, maintype="application", subtype="pdf", filename="scan.pdf")
    return message.as_bytes(policy=SMTP)
