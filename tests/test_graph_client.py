"""proxy.graph.GraphClient against the fake Graph over loopback, with tokens from the fake Entra ID."""

from __future__ import annotations

import io
import json
import logging
import secrets
import tempfile

import pytest
import requests

from proxy.graph import (
    MIME_LIMIT,
    Envelope,
    GraphClient,
    Permanent,
    Sent,
    Temporary,
    TokenRefused,
    graph_base_url,
)
from proxy.graph.answers import request_too_large
from proxy.graph.client import MAX_MESSAGE
from tests.support.fake_entra import FakeEntra
from tests.support.fake_graph import REQUEST_LIMIT, FakeGraph
from tests.support.graph_setup import (  # noqa: F401 - fixtures
    MAILBOX,
    app_token,
    client_fixture,
    direct_session,
    entra_fixture,
    graph_fixture,
    scan_message,
    text_message,
)
from tests.support.ports import connect_hangs, free_port

BOB = "bob@contoso.com"
PNG = b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(2000)


def envelope(*recipients: str) -> Envelope:
    return Envelope(MAILBOX, recipients or (BOB,))


def test_small_message_goes_byte_identical_through_send_mail(
        entra: FakeEntra, graph: FakeGraph, client: GraphClient) -> None:
    """A 1 MB message reaches Graph in one sendMail, byte for byte, and lands in Sent Items."""
    raw = scan_message(secrets.token_bytes(700_000))
    assert 900_000 < len(raw) < MIME_LIMIT
    outcome = client.send(app_token(entra), MAILBOX, io.BytesIO(raw), envelope())
    assert isinstance(outcome, Sent) and outcome.path == "sendMail" and outcome.request_id
    assert graph.steps() == ["sendMail"]
    assert graph.deliveries[0].mime == raw
    assert [m.mime for m in graph.sent_items(MAILBOX)] == [raw]


def test_envelope_only_recipients_are_added_as_bcc(
        entra: FakeEntra, graph: FakeGraph, client: GraphClient) -> None:
    """Recipients named only in RCPT TO go as one Bcc field; the rest of the MIME is unchanged."""
    raw = text_message(cc="carol@contoso.com")
    outcome = client.send(app_token(entra), MAILBOX, io.BytesIO(raw),
                          envelope(BOB, "Carol@Contoso.com", "dave@contoso.com", "erin@contoso.com"))
    assert isinstance(outcome, Sent)
    assert graph.deliveries[0].mime == b"Bcc: dave@contoso.com,\r\n erin@contoso.com\r\n" + raw
    assert graph.deliveries[0].addresses("bcc") == ["dave@contoso.com", "erin@contoso.com"]


@pytest.mark.parametrize("size", [1000, 3_500_000])
def test_header_recipients_outside_the_envelope_get_nothing(
        entra: FakeEntra, graph: FakeGraph, client: GraphClient,
        caplog: pytest.LogCaptureFixture, size: int) -> None:
    """A message split into one transaction per recipient (To: bob, carol; RCPT TO bob, then
    carol) reaches each once, by sendMail and by the draft path alike; the log says how many
    header recipients were left out, not who."""
    raw = scan_message(secrets.token_bytes(size), to=f"{BOB}, carol@contoso.com")
    with caplog.at_level(logging.INFO, logger="proxy.graph"):
        for recipient in (BOB, "carol@contoso.com"):
            outcome = client.send(app_token(entra), MAILBOX, io.BytesIO(raw), envelope(recipient))
            assert isinstance(outcome, Sent)
    assert [d.addresses("to") for d in graph.deliveries] == [[BOB], ["carol@contoso.com"]]
    assert caplog.text.count("1 recipient(s) in the message's header are not in the SMTP") == 2
    assert "carol@contoso.com" not in caplog.text


def test_an_existing_bcc_field_is_merged_not_repeated(
        entra: FakeEntra, graph: FakeGraph, client: GraphClient) -> None:
    """A message with its own Bcc gets one Bcc field holding both its and the envelope's."""
    raw = text_message(bcc="Frank <frank@contoso.com>")
    client.send(app_token(entra), MAILBOX, io.BytesIO(raw),
                envelope(BOB, "frank@contoso.com", "gina@contoso.com"))
    delivered = graph.deliveries[0].mime
    assert delivered is not None and delivered.count(b"Bcc:") == 1
    assert graph.deliveries[0].addresses("bcc") == ["frank@contoso.com", "gina@contoso.com"]
    assert delivered.endswith(raw.split(b"\r\n\r\n", 1)[1])


def test_large_scan_goes_as_draft_with_upload_session(
        entra: FakeEntra, graph: FakeGraph, client: GraphClient) -> None:
    """A 10 MB PDF scan arrives with identical attachment bytes, subject, recipients and body."""
    pdf = b"%PDF-1.7\n" + secrets.token_bytes(10 * 1024 * 1024)
    raw = scan_message(pdf, PNG, cc="carol@contoso.com")
    outcome = client.send(app_token(entra), MAILBOX, io.BytesIO(raw),
                          envelope(BOB, "carol@contoso.com", "dave@contoso.com"))
    assert isinstance(outcome, Sent) and outcome.path == "draft"
    [sent] = graph.deliveries
    assert sent.fields["subject"] == "Scanned document ✓"
    assert sent.addresses("to") == [BOB] and sent.addresses("cc") == ["carol@contoso.com"]
    assert sent.addresses("bcc") == ["dave@contoso.com"]
    assert sent.addresses("from") == [MAILBOX]
    assert sent.fields["body"] == {"contentType": "html", "content":
                                   '<p>Your scan is attached.</p><img src="cid:logo@printer">\r\n'}
    attachments = {a.name: a for a in sent.attachments}
    assert attachments["scan.pdf"].content == pdf and attachments["scan.pdf"].uploaded
    assert attachments["scan.pdf"].content_type == "application/pdf"
    logo = next(a for a in sent.attachments if a.content_id == "logo@printer")
    assert logo.content == PNG and logo.is_inline and not logo.uploaded
    assert graph.sent_items(MAILBOX) == [sent] and graph.drafts(MAILBOX) == []


def test_uploads_are_sequential_pieces_of_at_most_4_mb_without_authorization(
        entra: FakeEntra, graph: FakeGraph, client: GraphClient) -> None:
    """Every PUT to the upload URL carries at most 4 MiB and no Authorization header."""
    pdf = secrets.token_bytes(9_000_000)
    client.send(app_token(entra), MAILBOX, io.BytesIO(scan_message(pdf)), envelope())
    uploads = [r for r in graph.requests if r.step == "upload"]
    assert len(uploads) >= 3 and not any(r.authorization for r in uploads)
    assert all(0 < size <= REQUEST_LIMIT for size in graph.upload_puts)
    assert sum(graph.upload_puts) == len(pdf)
    assert all(r.authorization for r in graph.requests if r.step != "upload")


def test_many_small_attachments_are_posted_once_the_create_request_is_full(
        entra: FakeEntra, graph: FakeGraph, client: GraphClient) -> None:
    """Attachments under 3 MB that do not fit the create request go one POST each."""
    from email.message import EmailMessage
    from email.policy import SMTP
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = MAILBOX, BOB, "pages"
    message.set_content("Five pages.\n")
    pages = [secrets.token_bytes(1_500_000) for _ in range(5)]
    for number, page in enumerate(pages):
        message.add_attachment(page, maintype="image", subtype="jpeg", filename=f"p{number}.jpg")
    outcome = client.send(app_token(entra), MAILBOX, io.BytesIO(message.as_bytes(policy=SMTP)),
                          envelope())
    assert isinstance(outcome, Sent)
    assert graph.steps().count("attachment") >= 2 and "uploadSession" not in graph.steps()
    assert sorted(a.content for a in graph.deliveries[0].attachments) == sorted(pages)
    assert max(r.length for r in graph.requests) <= REQUEST_LIMIT


@pytest.mark.parametrize(("kind", "outcome_type", "status"), [
    ("429", Temporary, "4.4.5"),
    ("503", Temporary, "4.3.0"),
    ("504", Temporary, "4.4.1"),
    ("500", Temporary, "4.3.0"),
    ("access_denied", Permanent, "5.7.1"),
])
def test_graph_failures_map_to_outcomes(entra: FakeEntra, graph: FakeGraph, client: GraphClient,
                                        kind: str, outcome_type: type, status: str) -> None:
    """Throttling and outages are temporary (4.x.x); a refusal is permanent (5.x.x)."""
    graph.fail_next(1, kind)
    outcome = client.send(app_token(entra), MAILBOX, io.BytesIO(text_message()), envelope())
    assert isinstance(outcome, outcome_type) and outcome.status == status
    assert outcome.request_id and graph.deliveries == []


def test_throttling_keeps_retry_after_and_the_retry_is_delivered_once(
        entra: FakeEntra, graph: FakeGraph, client: GraphClient) -> None:
    """429 carries Graph's Retry-After; sending again later delivers exactly one message."""
    token = app_token(entra)
    graph.fail_next(1, "429")
    first = client.send(token, MAILBOX, io.BytesIO(text_message()), envelope())
    assert isinstance(first, Temporary) and first.retry_after == 7
    assert first.code == "ApplicationThrottled"
    assert isinstance(client.send(token, MAILBOX, io.BytesIO(text_message()), envelope()), Sent)
    assert len(graph.deliveries) == 1


def test_missing_mail_send_names_the_permission(entra: FakeEntra, client: GraphClient) -> None:
    """Without Mail.Send the answer is 5.7.1 and says which permission to add."""
    outcome = client.send(app_token(entra, roles=("Mail.ReadWrite",)), MAILBOX,
                          io.BytesIO(text_message()), envelope())
    assert isinstance(outcome, Permanent) and outcome.status == "5.7.1"
    assert "Mail.Send" in outcome.reason and outcome.code == "ErrorAccessDenied"


def test_large_message_without_mail_read_write_is_5_3_4(
        entra: FakeEntra, graph: FakeGraph, client: GraphClient) -> None:
    """Mail.Send alone sends a small message, but a large one gets 5.3.4 naming Mail.ReadWrite."""
    token = app_token(entra, roles=("Mail.Send",))
    assert isinstance(client.send(token, MAILBOX, io.BytesIO(text_message()), envelope()), Sent)
    large = scan_message(secrets.token_bytes(4_000_000))
    outcome = client.send(token, MAILBOX, io.BytesIO(large), envelope())
    assert isinstance(outcome, Permanent) and outcome.status == "5.3.4"
    assert "Mail.ReadWrite" in outcome.reason and len(graph.deliveries) == 1


def test_large_message_without_mail_send_names_mail_send(
        entra: FakeEntra, graph: FakeGraph, client: GraphClient) -> None:
    """Mail.ReadWrite alone builds the draft, but sending it is refused naming Mail.Send."""
    large = scan_message(secrets.token_bytes(4_000_000))
    outcome = client.send(app_token(entra, roles=("Mail.ReadWrite",)), MAILBOX,
                          io.BytesIO(large), envelope())
    assert isinstance(outcome, Permanent) and outcome.status == "5.7.1"
    assert "Mail.Send" in outcome.reason and graph.drafts(MAILBOX) == []


def test_send_as_denied_says_which_from_to_set(entra: FakeEntra, client: GraphClient) -> None:
    """A From that is not the mailbox gets 5.7.60 naming the address to set instead."""
    raw = text_message(sender="Printer <printer@contoso.com>")
    outcome = client.send(app_token(entra), MAILBOX, io.BytesIO(raw), envelope())
    assert isinstance(outcome, Permanent) and outcome.status == "5.7.60"
    assert outcome.code == "ErrorSendAsDenied"
    assert f"sender (From) address to {MAILBOX}" in outcome.reason
    assert "printer@contoso.com" in outcome.reason


def test_send_as_denied_on_the_draft_path_deletes_the_draft(
        entra: FakeEntra, graph: FakeGraph, client: GraphClient) -> None:
    """The draft path checks From the same way, and leaves no draft behind."""
    raw = scan_message(secrets.token_bytes(3_500_000), sender="printer@contoso.com")
    outcome = client.send(app_token(entra), MAILBOX, io.BytesIO(raw), envelope())
    assert isinstance(outcome, Permanent) and outcome.status == "5.7.60"
    assert graph.drafts(MAILBOX) == [] and graph.steps()[-1] == "delete"


def test_invalid_recipients_are_5_1_1(entra: FakeEntra, client: GraphClient) -> None:
    """A recipient Exchange cannot resolve gets 5.1.1 with Graph's words."""
    outcome = client.send(app_token(entra), MAILBOX, io.BytesIO(text_message()),
                          envelope(BOB, "nobody@nowhere"))
    assert isinstance(outcome, Permanent) and outcome.status == "5.1.1"
    assert "nobody@nowhere" in outcome.reason


@pytest.mark.parametrize("rest_enabled", [True, False])
def test_unusable_sending_mailbox_is_5_1_8(entra: FakeEntra, graph: FakeGraph,
                                           client: GraphClient, rest_enabled: bool) -> None:
    """A mailbox Graph does not know, or one not on Exchange Online, gets 5.1.8."""
    mailbox = "old@contoso.com"
    if not rest_enabled:
        graph.add_mailbox(mailbox, rest_enabled=False)
    outcome = client.send(app_token(entra), mailbox, io.BytesIO(text_message(sender=mailbox)),
                          envelope())
    assert isinstance(outcome, Permanent) and outcome.status == "5.1.8"
    assert mailbox in outcome.reason


def test_refused_token_is_reported_once_and_a_fresh_token_sends(
        entra: FakeEntra, graph: FakeGraph, client: GraphClient) -> None:
    """A 401 comes back as TokenRefused without a retry; with a new token the same spool sends."""
    token = app_token(entra)
    graph.revoke(token)
    spool = io.BytesIO(text_message())
    refused = client.send(token, MAILBOX, spool, envelope())
    assert isinstance(refused, TokenRefused) and refused.status == "4.7.0"
    assert graph.steps() == ["sendMail"]
    assert isinstance(client.send(app_token(entra), MAILBOX, spool, envelope()), Sent)
    assert graph.deliveries[0].mime == text_message()


@pytest.mark.parametrize("step", ["uploadSession", "upload", "send"])
def test_a_failure_after_the_draft_deletes_it(
        entra: FakeEntra, graph: FakeGraph, client: GraphClient, step: str) -> None:
    """Whatever step fails after the draft exists, the draft is deleted and nothing is sent."""
    graph.fail_next(1, "503", step=step)
    raw = scan_message(secrets.token_bytes(5_000_000))
    outcome = client.send(app_token(entra), MAILBOX, io.BytesIO(raw), envelope())
    assert isinstance(outcome, Temporary)
    assert graph.drafts(MAILBOX) == [] and graph.deliveries == []
    assert graph.steps()[-1] == "delete"


def test_a_draft_that_cannot_be_deleted_is_logged(
        entra: FakeEntra, graph: FakeGraph, client: GraphClient,
        caplog: pytest.LogCaptureFixture) -> None:
    """If deleting the draft fails too, the outcome is unchanged and the log says so."""
    graph.fail_next(1, "503", step="send")
    graph.fail_next(1, "503", step="delete")
    raw = scan_message(secrets.token_bytes(3_500_000))
    with caplog.at_level(logging.WARNING, logger="proxy.graph"):
        outcome = client.send(app_token(entra), MAILBOX, io.BytesIO(raw), envelope())
    assert isinstance(outcome, Temporary) and len(graph.drafts(MAILBOX)) == 1
    assert "could not be deleted" in caplog.text


def test_log_names_code_and_request_id_never_the_token(
        entra: FakeEntra, graph: FakeGraph, client: GraphClient,
        caplog: pytest.LogCaptureFixture) -> None:
    """A failure's log line has Graph's error code and request-id, and no token or upload URL."""
    token = app_token(entra)
    graph.fail_next(1, "503", step="send")
    with caplog.at_level(logging.DEBUG, logger="proxy"):  # what the proxy's -v log shows
        outcome = client.send(token, MAILBOX, io.BytesIO(scan_message(secrets.token_bytes(
            3_500_000))), envelope())
    assert isinstance(outcome, Temporary) and outcome.request_id
    assert f"ServiceUnavailable, request-id {outcome.request_id}" in caplog.text
    assert token not in caplog.text and token.split(".")[2] not in caplog.text
    assert "authtoken" not in caplog.text and "/upload/" not in caplog.text


def test_timeout_and_refused_connection_are_temporary(entra: FakeEntra, graph: FakeGraph) -> None:
    """No answer in time, or nothing listening, is 4.4.1: the device tries again later."""
    token = app_token(entra)
    graph.hang_seconds = 3
    graph.fail_next(1, "timeout")
    slow = GraphClient(direct_session(), graph.url, timeout=(2.0, 0.3))
    timed_out = slow.send(token, MAILBOX, io.BytesIO(text_message()), envelope())
    down = GraphClient(direct_session(), f"http://127.0.0.1:{free_port()}")
    refused = down.send(token, MAILBOX, io.BytesIO(text_message()), envelope())
    for outcome in (timed_out, refused):
        assert isinstance(outcome, Temporary) and outcome.status == "4.4.1"
    assert isinstance(timed_out, Temporary) and "in time" in timed_out.reason


MAYBE_SENT = "may have sent the message all the same"


@pytest.mark.parametrize(("kind", "code"), [
    ("timeout", "ReadTimeout"), ("reset", "ConnectionError"), ("504", "GatewayTimeout")])
@pytest.mark.parametrize(("step", "size", "maybe_sent"), [
    ("sendMail", 1000, True), ("send", 3_500_000, True), ("create", 3_500_000, False)])
def test_no_answer_after_sending_says_the_message_may_arrive_twice(
        entra: FakeEntra, graph: FakeGraph, caplog: pytest.LogCaptureFixture,
        kind: str, code: str, step: str, size: int, maybe_sent: bool) -> None:
    """No answer to sendMail or to the draft's send (a timeout, a reset once the request was
    read, Graph's gateway timing out): the log says Graph may have sent it and the device's
    retry may deliver it twice; at a step that sends nothing, it does not say so."""
    token = app_token(entra)
    graph.hang_seconds = 1
    graph.fail_next(1, kind, step=step)
    slow = GraphClient(direct_session(), graph.url, timeout=(2.0, 0.3))
    with caplog.at_level(logging.DEBUG, logger="proxy"):
        outcome = slow.send(token, MAILBOX, io.BytesIO(scan_message(secrets.token_bytes(size))),
                            envelope())
    assert isinstance(outcome, Temporary) and outcome.code == code
    assert (MAYBE_SENT in caplog.text) is maybe_sent
    assert ("it may arrive twice" in caplog.text) is maybe_sent
    assert MAYBE_SENT not in outcome.reason  # the device is told what it always is: try again
    assert token.split(".")[2] not in caplog.text and "/upload/" not in caplog.text


def test_a_connection_not_made_does_not_say_the_message_may_arrive_twice(
        entra: FakeEntra, caplog: pytest.LogCaptureFixture) -> None:
    """Nothing went out when connecting timed out or was refused, so the log says nothing of a
    second copy."""
    with connect_hangs() as port, caplog.at_level(logging.WARNING, logger="proxy.graph"):
        client = GraphClient(direct_session(), f"http://127.0.0.1:{port}", timeout=(0.3, 5.0))
        outcome = client.send(app_token(entra), MAILBOX, io.BytesIO(text_message()), envelope())
    assert isinstance(outcome, Temporary) and outcome.code == "ConnectTimeout"
    assert "in time" in caplog.text and "twice" not in caplog.text
    refused = GraphClient(direct_session(), f"http://127.0.0.1:{free_port()}")
    with caplog.at_level(logging.WARNING, logger="proxy.graph"):
        outcome = refused.send(app_token(entra), MAILBOX, io.BytesIO(text_message()), envelope())
    assert isinstance(outcome, Temporary) and not outcome.maybe_sent
    assert "twice" not in caplog.text


def test_message_over_exchange_limit_is_refused_without_a_request(
        entra: FakeEntra, graph: FakeGraph, client: GraphClient) -> None:
    """Over 150 MB is 5.3.4 at once; over the mailbox's limit, 5.3.4 from Graph."""
    with tempfile.TemporaryFile() as huge:
        huge.write(text_message())
        huge.truncate(MAX_MESSAGE + 1)  # sparse: no disk space needed
        outcome = client.send(app_token(entra), MAILBOX, huge, envelope())
    assert isinstance(outcome, Permanent) and outcome.status == "5.3.4"
    assert graph.requests == []
    graph.max_message_size = 4_000_000
    outcome = client.send(app_token(entra), MAILBOX,
                          io.BytesIO(scan_message(secrets.token_bytes(4_500_000))), envelope())
    assert isinstance(outcome, Permanent) and outcome.status == "5.3.4"
    assert outcome.code == "ErrorMessageSizeExceeded" and graph.drafts(MAILBOX) == []


def near_the_limit() -> tuple[bytes, bytes]:
    """(the PDF, the scan): a message just under MIME_LIMIT, so it goes to sendMail."""
    pdf = secrets.token_bytes(2_150_000)
    raw = scan_message(pdf)
    assert MIME_LIMIT - 100_000 < len(raw) <= MIME_LIMIT
    return pdf, raw


@pytest.mark.parametrize("status", [413, 400])
def test_a_413_on_send_mail_sends_the_message_as_a_draft(
        entra: FakeEntra, graph: FakeGraph, client: GraphClient,
        caplog: pytest.LogCaptureFixture, status: int) -> None:
    """Graph refuses the sendMail request as too large (413, or its 400 "Maximum request
    length exceeded."): the same message goes once through the draft path, arrives whole, and
    the log says why."""
    graph.send_mail_limit = 3_900_000  # under the base64 of the message
    graph.too_large_as_400 = status == 400
    pdf, raw = near_the_limit()
    with caplog.at_level(logging.INFO, logger="proxy.graph"):
        outcome = client.send(app_token(entra), MAILBOX, io.BytesIO(raw), envelope())
    assert isinstance(outcome, Sent) and outcome.path == "draft"
    assert graph.steps() == ["sendMail", "create", "send"]
    [sent] = graph.deliveries
    assert [a.content for a in sent.attachments] == [pdf] and graph.drafts(MAILBOX) == []
    assert f"sendMail refused the request as too large (HTTP {status}" in caplog.text
    assert "as a draft instead" in caplog.text


def test_a_413_without_mail_read_write_is_5_3_4_naming_it(
        entra: FakeEntra, graph: FakeGraph, client: GraphClient) -> None:
    """The draft path a 413 falls back to needs Mail.ReadWrite: without it, 5.3.4 says so."""
    graph.send_mail_limit = 3_900_000
    outcome = client.send(app_token(entra, roles=("Mail.Send",)), MAILBOX,
                          io.BytesIO(near_the_limit()[1]), envelope())
    assert isinstance(outcome, Permanent) and outcome.status == "5.3.4"
    assert "Mail.ReadWrite" in outcome.reason
    assert graph.steps() == ["sendMail", "create"] and graph.deliveries == []


def test_the_mailbox_size_limit_on_send_mail_does_not_fall_back(
        entra: FakeEntra, graph: FakeGraph, client: GraphClient) -> None:
    """Exchange's own refusal (ErrorMessageSizeExceeded, the mailbox's send limit) is 5.3.4
    at once: a draft of the same message would be refused too."""
    graph.max_message_size = 1000
    outcome = client.send(app_token(entra), MAILBOX, io.BytesIO(text_message("x" * 2000)),
                          envelope())
    assert isinstance(outcome, Permanent) and outcome.status == "5.3.4"
    assert outcome.code == "ErrorMessageSizeExceeded" and graph.steps() == ["sendMail"]


@pytest.mark.parametrize(("status", "code", "message", "fall_back"), [
    (413, "RequestEntityTooLarge", "too large", True),
    (413, None, "", True),
    (413, "ErrorMessageSizeExceeded", "too large", False),
    (400, "BadRequest", "Maximum request length exceeded.", True),
    (400, "BadRequest", "The maximum request length supported is 4MB.", True),
    (400, "ErrorMessageSizeExceeded", "Maximum request length exceeded.", False),
    (400, "ErrorInvalidRecipients", "At least one recipient is not valid.", False),
    (400, None, "", False),
])
def test_which_answers_mean_the_request_was_too_large(
        status: int, code: str | None, message: str, fall_back: bool) -> None:
    """A 413 falls back whatever Graph calls it (or if it is not Graph's JSON at all), and so
    does the 400 Graph also answers for an oversized request; Exchange's size refusal and any
    other 400 do not."""
    answer = requests.Response()
    answer.status_code = status
    answer._content = (json.dumps({"error": {"code": code, "message": message}}).encode()
                       if code else b"<html>Request Entity Too Large</html>")
    assert request_too_large(answer) is fall_back


@pytest.mark.parametrize(("url", "expected"), [
    ("https://graph.microsoft.com", "https://graph.microsoft.com"),
    ("https://graph.microsoft.us/", "https://graph.microsoft.us"),
    ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
    ("http://localhost:8080/", "http://localhost:8080"),
    ("http://[::1]:8080", "http://[::1]:8080"),
])
def test_graph_url_accepted(url: str, expected: str) -> None:
    """https anywhere, plain http only to this machine; a trailing slash is dropped."""
    assert graph_base_url(url) == expected


@pytest.mark.parametrize("url", [
    "http://graph.microsoft.com", "http://127.0.0.1.example.com", "ftp://127.0.0.1",
    "https://graph.microsoft.com/v1.0", "graph.microsoft.com",
])
def test_graph_url_refused(url: str) -> None:
    """Plain http to another host, a path such as /v1.0, or no scheme are refused."""
    with pytest.raises(ValueError, match="graph_url"):
        graph_base_url(url)
