"""GraphClient sending from a shared mailbox with a user's (delegated) token, against the fake
Graph: what Graph refuses, and that each refusal names what the administrator must grant."""

from __future__ import annotations

import io
import secrets
import time

import pytest

from proxy.graph import Envelope, GraphClient, Permanent, Sent
from tests.support.fake_graph import FakeGraph
from tests.support.graph_setup import (  # noqa: F401 - fixtures
    client_fixture,
    entra_fixture,
    graph_fixture,
    scan_message,
    text_message,
)
from tests.support.graph_tokens import mint_graph_token

SHARED = "shared@contoso.com"
ALICE = "alice@contoso.com"
SEND_AS = f"Add-RecipientPermission -Identity {SHARED} -Trustee {ALICE} -AccessRights SendAs"
ENVELOPE = Envelope(SHARED, ("bob@contoso.com",))


def alice_token(graph: FakeGraph, *scp: str) -> str:
    """What Entra ID gives Alice: `scp` lists the delegated permissions she consented to."""
    return mint_graph_token(graph.token_key, tenant="t", client_id="c", now=time.time(),
                            lifetime=600, mailbox=ALICE, scp=list(scp))


def send(client: GraphClient, token: str, raw: bytes, delegate: str | None = ALICE) -> object:
    return client.send(token, SHARED, io.BytesIO(raw), ENVELOPE, delegate)


@pytest.fixture(autouse=True)
def shared_mailbox(graph: FakeGraph) -> None:
    graph.add_mailbox(SHARED)


def test_without_mail_send_shared_the_refusal_names_it_and_send_as(
        graph: FakeGraph, client: GraphClient) -> None:
    """A delegated Mail.Send covers Alice's own mailbox only: 550 5.7.1 names Alice, the
    delegated Mail.Send.Shared and the Send As grant to make."""
    outcome = send(client, alice_token(graph, "Mail.Send"), text_message(sender=SHARED))
    assert isinstance(outcome, Permanent) and outcome.status == "5.7.1"
    assert outcome.code == "ErrorAccessDenied"
    assert outcome.reason.startswith(f"{ALICE} may not send from {SHARED}")
    assert "delegated Microsoft Graph permission Mail.Send.Shared" in outcome.reason
    assert SEND_AS in outcome.reason and graph.deliveries == []


def test_without_a_delegate_the_refusal_still_mentions_mail_send_shared(
        graph: FakeGraph, client: GraphClient) -> None:
    """Where the caller does not say who signed in, the generic words are still right for a
    shared mailbox."""
    outcome = send(client, alice_token(graph, "Mail.Send"), text_message(sender=SHARED), None)
    assert isinstance(outcome, Permanent) and outcome.status == "5.7.1"
    assert "Mail.Send (Mail.Send.Shared when a signed-in user sends from a shared mailbox" \
        in outcome.reason


def test_without_send_as_the_refusal_names_the_user_not_the_mailbox(
        graph: FakeGraph, client: GraphClient) -> None:
    """With Mail.Send.Shared and Full Access but no Send As, Exchange refuses the From: 5.7.60
    says Alice needs Send As on the shared mailbox. With the grant, it is sent from there."""
    token = alice_token(graph, "Mail.Send.Shared")
    graph.grant_full_access(SHARED, ALICE)
    outcome = send(client, token, text_message(sender=SHARED))
    assert isinstance(outcome, Permanent) and outcome.status == "5.7.60"
    assert outcome.reason.startswith(f"Microsoft 365 does not let {ALICE} send as {SHARED}")
    assert SEND_AS in outcome.reason and "set the From" not in outcome.reason
    graph.grant_send_as(SHARED, ALICE)
    assert isinstance(send(client, token, text_message(sender=SHARED)), Sent)
    assert [m.mailbox for m in graph.sent_items(SHARED)] == [SHARED]


def test_a_from_of_a_third_address_says_which_to_set(graph: FakeGraph,
                                                      client: GraphClient) -> None:
    """A From Alice may not send as, other than the shared mailbox: the grant to make names
    that address, or the device sets the shared address."""
    graph.grant_full_access(SHARED, ALICE)
    graph.grant_send_as(SHARED, ALICE)
    outcome = send(client, alice_token(graph, "Mail.Send.Shared"),
                   text_message(sender="printer@contoso.com"))
    assert isinstance(outcome, Permanent) and outcome.status == "5.7.60"
    assert ("-Identity printer@contoso.com -Trustee alice@contoso.com" in outcome.reason
            and f"(or set the From address to {SHARED})" in outcome.reason)


def test_large_message_needs_mail_read_write_shared(graph: FakeGraph,
                                                     client: GraphClient) -> None:
    """Over about 3 MB the draft in the shared mailbox needs Mail.ReadWrite.Shared: 552 5.3.4
    names it; with it the draft is sent from the shared mailbox."""
    graph.grant_full_access(SHARED, ALICE)
    graph.grant_send_as(SHARED, ALICE)
    large = scan_message(secrets.token_bytes(4_000_000), sender=SHARED)
    outcome = send(client, alice_token(graph, "Mail.Send.Shared", "Mail.ReadWrite"), large)
    assert isinstance(outcome, Permanent) and outcome.status == "5.3.4"
    assert "Mail.ReadWrite.Shared" in outcome.reason and ALICE in outcome.reason
    token = alice_token(graph, "Mail.Send.Shared", "Mail.ReadWrite.Shared")
    sent = send(client, token, large)
    assert isinstance(sent, Sent) and sent.path == "draft" and graph.drafts(SHARED) == []
