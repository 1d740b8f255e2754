"""Memory of proxy.graph while it sends: bounded by its pieces, not by the message's size.

Each send runs in a fresh interpreter (tests.support.graph_probe) so that only the client's
allocations are measured, not the fake Graph's, which keeps every byte it receives.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import SMTP
from pathlib import Path

import pytest

from tests.support.fake_entra import FakeEntra
from tests.support.fake_graph import FakeGraph
from tests.support.graph_probe import run_probe
from tests.support.graph_setup import (  # noqa: F401 - fixtures
    MAILBOX,
    app_token,
    entra_fixture,
    graph_fixture,
    scan_message,
)

PEAK_BOUND = 2 * 1024 * 1024  # Python allocations during send(), whatever the message's size
RSS_BOUND_KB = 5 * 1024  # growth of the process's resident memory during send()


def pages(count: int, size: int) -> bytes:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = MAILBOX, "bob@contoso.com", "pages"
    message.set_content("Pages attached.\n")
    for number in range(count):
        message.add_attachment(secrets.token_bytes(size), maintype="image", subtype="jpeg",
                               filename=f"page-{number}.jpg")
    return message.as_bytes(policy=SMTP)


@pytest.mark.parametrize(("label", "build", "path"), [
    ("2.9 MB through sendMail", lambda: scan_message(secrets.token_bytes(2_100_000)), "sendMail"),
    ("40 MB PDF through an upload session", lambda: scan_message(secrets.token_bytes(30_000_000)),
     "draft"),
    ("ten 2 MB pages in the draft and posted", lambda: pages(10, 2_000_000), "draft"),
])
def test_memory_of_a_send_is_bounded(entra: FakeEntra, graph: FakeGraph, tmp_path: Path,
                                     label: str, build: Callable[[], bytes], path: str) -> None:
    """Sending peaks under 2 MB of allocations and 5 MB of RSS growth, for any size or path."""
    raw = build()
    message = tmp_path / "message.eml"
    message.write_bytes(raw)
    report = run_probe(graph.url, MAILBOX, message, "bob@contoso.com", app_token(entra))
    assert report["sent"] and f"path='{path}'" in report["outcome"], report
    assert report["peak_bytes"] < PEAK_BOUND, report
    assert report["rss_peak_kb"] - report["rss_before_kb"] < RSS_BOUND_KB, report
    [sent] = graph.deliveries
    if sent.mime is not None:
        assert sent.mime == raw
    else:
        parsed = BytesParser(policy=SMTP).parsebytes(raw)
        assert isinstance(parsed, EmailMessage)
        expected = [part.get_payload(decode=True) for part in parsed.iter_attachments()]
        assert sorted(a.content for a in sent.attachments) == sorted(expected)
