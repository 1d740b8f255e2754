"""The Twisted glue of a Graph listener after login: flow control while Graph has the message,
the spool's life, the 401 retry and the idle timeout, with the real Graph client against the
fake Graph and the broker over a real store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock, StringTransport

from proxy.glue.graph_sender import GraphSender
from proxy.glue.graph_session import IDLE_TIMEOUT, GraphSignedIn
from proxy.graph import GraphClient
from proxy.resources import GRAPH
from proxy.store import AccessToken
from tests.support.broker import NOW, PASSWORD, USER, make
from tests.support.fake_entra import FakeEntra
from tests.support.fake_graph import FakeGraph
from tests.support.graph_setup import (  # noqa: F401 - fixtures
    app_token,
    direct_session,
    entra_fixture,
    graph_fixture,
    text_message,
)

ENVELOPE = f"MAIL FROM:<{USER}>\r\nRCPT TO:<bob@contoso.com>\r\nDATA\r\n".encode()
SENT = b"250 2.0.0 OK, sent through Microsoft Graph"


class Rig:
    """A Graph session over a StringTransport whose blocking work (token renewals, sends)
    waits in `pending` until the test runs it."""

    def __init__(self, tmp_path: Path, entra: FakeEntra, graph: FakeGraph) -> None:
        self.graph = graph
        self.pending: list[tuple[Callable[[], Any], Deferred[Any]]] = []
        self.ended: list[tuple[int, int]] = []
        self.setup = make(tmp_path, run_blocking=self.queued)
        stored = self.setup.file_secrets()
        token = self.token = AccessToken(app_token(entra), NOW + 3600)
        self.setup.store.save(USER, self.setup.key,
                              stored.with_token(GRAPH, token, stored.refresh_token))
        granted: list[Any] = []
        Deferred.fromCoroutine(self.setup.broker.grant(USER, PASSWORD, GRAPH)).addBoth(
            granted.append)
        self.run_pending()
        sender = GraphSender(GraphClient(direct_session(), graph.url, timeout=(2.0, 10.0)),
                             self.setup.broker, self.queued)
        self.clock = MemoryReactorClock()
        self.client = StringTransport()
        signed_in = GraphSignedIn(granted[0], sender, 1_000_000, self.clock)
        self.session = signed_in.take_client(self.client, b"EHLO again\r\n",
                                             lambda up, down: self.ended.append((up, down)))
        assert self.said().startswith(b"250-xoauth2-proxy")

    def queued(self, work: Callable[[], Any]) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.pending.append((work, d))
        return d

    def run_pending(self) -> None:
        while self.pending:
            work, d = self.pending.pop(0)
            try:
                result = work()
            except Exception as e:  # noqa: BLE001 - handed on, as deferToThreadPool does
                d.errback(e)
            else:
                d.callback(result)

    def said(self) -> bytes:
        data = self.client.value()
        self.client.clear()
        return data

    def spool(self) -> Any:
        return self.session.core._spool


@pytest.fixture
def rig(tmp_path: Path, entra: FakeEntra, graph: FakeGraph) -> Iterator[Rig]:
    graph.add_mailbox(USER)
    yield Rig(tmp_path, entra, graph)


def test_client_is_paused_until_graph_answers(rig: Rig) -> None:
    """While Graph has the message the client is not read and gets no answer; after the 202 it
    gets 250, then the answers to what it pipelined, and is read again."""
    rig.session.from_client(ENVELOPE + text_message(sender=USER) + b".\r\nNOOP\r\n")
    assert rig.said().endswith(b"354 Start mail input; end with <CRLF>.<CRLF>\r\n")
    assert rig.client.producerState == "paused" and rig.graph.deliveries == []
    rig.run_pending()
    answer = rig.said()
    assert answer.startswith(SENT) and answer.endswith(b"\r\n250 2.0.0 OK\r\n")
    assert rig.client.producerState == "producing" and len(rig.graph.deliveries) == 1


def test_client_gone_mid_data_closes_the_spool(rig: Rig) -> None:
    """The client disappears halfway through DATA: the spool is closed at once, nothing is
    sent, and the session's end is reported."""
    rig.session.from_client(ENVELOPE + b"Subject: x\r\n\r\n" + b"x" * 300_000)
    spool = rig.spool()
    assert spool is not None and spool.on_disk
    rig.session.client_lost()
    assert spool.closed and rig.ended and rig.pending == []


def test_client_gone_while_graph_reads_the_spool(rig: Rig) -> None:
    """The client leaves while Graph is being sent the message: the spool stays open until the
    send is over (Graph is reading it), then it is closed and the end reported."""
    rig.session.from_client(ENVELOPE + text_message(sender=USER) + b".\r\n")
    spool = rig.spool()
    rig.session.client_lost()
    assert not spool.closed and rig.ended == []
    rig.run_pending()
    assert spool.closed and len(rig.ended) == 1 and len(rig.graph.deliveries) == 1
    assert rig.said().endswith(b"354 Start mail input; end with <CRLF>.<CRLF>\r\n")


def test_token_refused_twice_is_451(rig: Rig) -> None:
    """Graph refuses the token; the renewed one (the stub Entra ID's, not a Graph token) is
    refused too: 451 4.7.0, and the next message can be tried."""
    rig.graph.revoke(rig.token.token)
    rig.session.from_client(ENVELOPE + text_message(sender=USER) + b".\r\n")
    rig.run_pending()
    answer = rig.said().split(b"\r\n")[-2]
    assert answer.startswith(b"451 4.7.0 Microsoft Graph refused the access token even after")
    assert rig.setup.entra.resources == [GRAPH] and rig.graph.deliveries == []


def test_unexpected_error_is_451(rig: Rig) -> None:
    """A bug while sending (here a runner that fails) is a temporary failure, not a hang."""
    rig.session.from_client(ENVELOPE + text_message(sender=USER) + b".\r\n")
    work, d = rig.pending.pop(0)  # the token check before sending
    d.errback(RuntimeError("a bug"))
    assert rig.said().split(b"\r\n")[-2].startswith(b"451 ")


def test_half_close_while_sending_gets_its_answer(rig: Rig) -> None:
    """A client that stops sending after the message still gets the 250, then the close."""
    rig.session.from_client(ENVELOPE + text_message(sender=USER) + b".\r\n")
    rig.session.client_read_closed()
    assert not rig.client.disconnecting
    rig.run_pending()
    assert rig.said().split(b"\r\n")[-2].startswith(SENT) and rig.client.disconnecting


def test_idle_client_is_told_and_closed(rig: Rig) -> None:
    """A client silent for the idle timeout gets 421 4.4.2 and the connection closes; a
    delivery in progress does not count as idle."""
    rig.session.from_client(ENVELOPE + text_message(sender=USER) + b".\r\n")
    rig.clock.advance(IDLE_TIMEOUT * 2)
    assert not rig.client.disconnecting
    rig.run_pending()
    assert rig.said().split(b"\r\n")[-2].startswith(SENT)
    rig.clock.advance(IDLE_TIMEOUT - 1)
    assert not rig.client.disconnecting
    rig.clock.advance(2)
    assert rig.said().startswith(b"421 4.4.2") and rig.client.disconnecting
