"""tests.support.fake_graph: the fake checks what Graph checks and answers in Graph's shapes."""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any

import pytest
import requests

from tests.support.fake_entra import FakeEntra
from tests.support.fake_graph import REQUEST_LIMIT, UPLOAD_MINIMUM, FakeGraph
from tests.support.graph_setup import (  # noqa: F401 - fixtures
    MAILBOX,
    app_token,
    direct_session,
    entra_fixture,
    graph_fixture,
    text_message,
)
from tests.support.graph_tokens import mint_graph_token
from tests.support.jwt import mint_hs256

http = direct_session()


def send_mail(graph: FakeGraph, token: str, mime: bytes = b"", mailbox: str = MAILBOX,
              **headers: str) -> requests.Response:
    return http.post(f"{graph.url}/v1.0/users/{mailbox}/sendMail",
                     data=base64.b64encode(mime or text_message()), timeout=5,
                     headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain",
                              **headers})


def error_of(answer: requests.Response) -> dict[str, Any]:
    error: dict[str, Any] = answer.json()["error"]
    assert error["innerError"]["request-id"] == answer.headers["request-id"]
    return error


def graph_claims_token(key: bytes, **claims: Any) -> str:
    now = int(time.time())
    return mint_hs256(key, {"aud": "https://graph.microsoft.com", "exp": now + 600,
                            "roles": ["Mail.Send"], "appid": "x", "uti": "u", **claims})


def test_send_mail_records_the_mime_and_echoes_ids(entra: FakeEntra, graph: FakeGraph) -> None:
    """sendMail answers 202 with a request-id, echoes client-request-id, keeps the exact MIME."""
    answer = send_mail(graph, app_token(entra), **{"client-request-id": "abc"})
    assert answer.status_code == 202 and answer.headers["client-request-id"] == "abc"
    assert answer.headers["request-id"]
    assert graph.deliveries[0].mime == text_message()
    assert graph.sent_items(MAILBOX) == graph.deliveries


@pytest.mark.parametrize(("make_token", "message"), [
    (lambda key: graph_claims_token(secrets.token_bytes(32)), "signature"),
    (lambda key: graph_claims_token(key, exp=int(time.time()) - 1), "expired"),
    (lambda key: graph_claims_token(key, aud="https://outlook.office.com"), "audience"),
    (lambda key: "not-a-jwt", "not well formed"),
])
def test_bad_tokens_get_401(graph: FakeGraph, make_token: Any, message: str) -> None:
    """A wrong signature, an expired token, another audience or garbage is a 401."""
    answer = send_mail(graph, make_token(graph.token_key))
    assert answer.status_code == 401
    error = error_of(answer)
    assert error["code"] == "InvalidAuthenticationToken" and message in error["message"]


def test_revoked_token_gets_401_and_a_new_one_works(entra: FakeEntra, graph: FakeGraph) -> None:
    """revoke() makes that one token fail; a fresh token from Entra is accepted."""
    token = app_token(entra)
    graph.revoke(token)
    assert send_mail(graph, token).status_code == 401
    assert send_mail(graph, app_token(entra)).status_code == 202


def test_the_graph_app_id_is_an_accepted_audience(graph: FakeGraph) -> None:
    """Delegated tokens name Graph by its app id; that audience is accepted too."""
    token = graph_claims_token(graph.token_key, aud="00000003-0000-0000-c000-000000000000")
    assert send_mail(graph, token).status_code == 202


def test_permissions_and_mailboxes_are_checked(entra: FakeEntra, graph: FakeGraph) -> None:
    """No Mail.Send, a delegated token for someone else, or a mailbox outside the app's scope:
    403 ErrorAccessDenied; an unknown mailbox: 404."""
    assert error_of(send_mail(graph, app_token(entra, roles=("Mail.ReadWrite",))))["code"] == \
        "ErrorAccessDenied"
    other = mint_graph_token(graph.token_key, tenant="t", client_id="c", now=time.time(),
                             lifetime=600, mailbox="eve@contoso.com", scp=["Mail.Send"])
    assert send_mail(graph, other).status_code == 403
    graph.restrict_app("22222222-3333-4444-5555-666666666666", ["other@contoso.com"])
    assert send_mail(graph, app_token(entra)).status_code == 403
    unknown = send_mail(graph, app_token(entra), mailbox="ghost@contoso.com")
    assert unknown.status_code == 404 and error_of(unknown)["code"] == "ErrorInvalidUser"


def test_requests_over_4_mib_get_413(entra: FakeEntra, graph: FakeGraph) -> None:
    """A body over 4 MiB is refused with 413 whatever else is right; nothing is delivered."""
    mime = text_message("x" * (REQUEST_LIMIT * 3 // 4 + 10))
    answer = send_mail(graph, app_token(entra), mime)
    assert answer.status_code == 413 and graph.deliveries == []


def test_a_lower_send_mail_limit_refuses_smaller_send_mail_requests(
        entra: FakeEntra, graph: FakeGraph) -> None:
    """`send_mail_limit` gives 413 to sendMail bodies over it, and to nothing else."""
    graph.send_mail_limit = 1000
    answer = send_mail(graph, app_token(entra), text_message("x" * 1000))
    assert answer.status_code == 413 and error_of(answer)["code"] == "RequestEntityTooLarge"
    assert send_mail(graph, app_token(entra), text_message("short")).status_code == 202


def test_chunked_bodies_get_411(entra: FakeEntra, graph: FakeGraph) -> None:
    """A body without Content-Length (chunked) is refused: the client must say its length."""
    answer = http.post(f"{graph.url}/v1.0/users/{MAILBOX}/sendMail", timeout=5,
                       data=iter([base64.b64encode(text_message())]),
                       headers={"Authorization": f"Bearer {app_token(entra)}",
                                "Content-Type": "text/plain"})
    assert answer.status_code == 411


def test_json_send_mail_records_fields_and_attachments(entra: FakeEntra, graph: FakeGraph) -> None:
    """sendMail with a JSON message keeps its fields and decoded attachment bytes."""
    message = {"subject": "hi", "toRecipients": [{"emailAddress": {"address": "b@contoso.com"}}],
               "attachments": [{"@odata.type": "#microsoft.graph.fileAttachment",
                                "name": "a.txt", "contentBytes": base64.b64encode(b"A").decode()}]}
    answer = http.post(f"{graph.url}/v1.0/users/{MAILBOX}/sendMail", json={"message": message},
                       headers={"Authorization": f"Bearer {app_token(entra)}"}, timeout=5)
    assert answer.status_code == 202
    [sent] = graph.deliveries
    assert sent.fields["subject"] == "hi" and sent.attachments[0].content == b"A"
    assert sent.addresses("to") == ["b@contoso.com"]


class DraftCalls:
    def __init__(self, graph: FakeGraph, token: str, mailbox: str = MAILBOX) -> None:
        self.base = f"{graph.url}/v1.0/users/{mailbox}/messages"
        self.auth = {"Authorization": f"Bearer {token}"}

    def create(self) -> str:
        answer = http.post(self.base, json={"subject": "draft", "toRecipients": [
            {"emailAddress": {"address": "b@contoso.com"}}]}, headers=self.auth, timeout=5)
        assert answer.status_code == 201
        return str(answer.json()["id"])

    def session(self, draft: str, size: int) -> requests.Response:
        return http.post(f"{self.base}/{draft}/attachments/createUploadSession", timeout=5,
                         headers=self.auth, json={"AttachmentItem": {
                             "attachmentType": "file", "name": "big.bin", "size": size}})

    @staticmethod
    def put(url: str, data: bytes, first: int, total: int,
            extra: dict[str, str] | None = None) -> requests.Response:
        return http.put(url, data=data, timeout=5, headers={
            "Content-Range": f"bytes {first}-{first + len(data) - 1}/{total}", **(extra or {})})


def test_draft_get_delete_and_mail_read_write(entra: FakeEntra, graph: FakeGraph) -> None:
    """Drafts need Mail.ReadWrite; GET shows the draft, DELETE removes it, then GET is 404."""
    send_only = DraftCalls(graph, app_token(entra, roles=("Mail.Send",)))
    assert http.post(send_only.base, json={}, headers=send_only.auth, timeout=5).status_code == 403
    calls = DraftCalls(graph, app_token(entra))
    draft = calls.create()
    got = http.get(f"{calls.base}/{draft}", headers=calls.auth, timeout=5).json()
    assert got["subject"] == "draft" and got["isDraft"] is True
    assert http.delete(f"{calls.base}/{draft}", headers=calls.auth, timeout=5).status_code == 204
    assert http.get(f"{calls.base}/{draft}", headers=calls.auth, timeout=5).status_code == 404


def test_upload_url_checks_its_ranges(entra: FakeEntra, graph: FakeGraph) -> None:
    """The upload URL refuses an Authorization header, gaps, overlaps and pieces over 4 MiB;
    sequential pieces complete the attachment (201), which the sent message then carries."""
    calls = DraftCalls(graph, app_token(entra))
    draft = calls.create()
    small = calls.session(draft, UPLOAD_MINIMUM - 1)
    assert error_of(small)["code"] == "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize"
    content = secrets.token_bytes(REQUEST_LIMIT + 1000)
    started = calls.session(draft, len(content))
    assert started.status_code == 201 and started.json()["nextExpectedRanges"] == ["0-"]
    url, total = started.json()["uploadUrl"], len(content)
    assert calls.put(url, content[:1000], 0, total, calls.auth).status_code == 401
    assert calls.put(url, content[:1000], 10, total).status_code == 416  # a gap
    assert calls.put(url, content, 0, total).status_code == 413  # over 4 MiB
    middle = calls.put(url, content[:REQUEST_LIMIT], 0, total)
    assert middle.status_code == 200
    assert middle.json()["nextExpectedRanges"] == [f"{REQUEST_LIMIT}-"]
    assert calls.put(url, content[:1000], 0, total).status_code == 416  # an overlap
    done = calls.put(url, content[REQUEST_LIMIT:], REQUEST_LIMIT, total)
    assert done.status_code == 201 and "attachments(" in done.headers["Location"]
    sent = http.post(f"{calls.base}/{draft}/send", headers=calls.auth, timeout=5)
    assert sent.status_code == 202
    assert graph.deliveries[0].attachments[0].content == content
    assert graph.drafts(MAILBOX) == []


def test_fail_next_by_step_and_retry_after(entra: FakeEntra, graph: FakeGraph) -> None:
    """fail_next(step=...) spares other steps; 429 carries Retry-After; unknown names are refused."""
    token = app_token(entra)
    graph.fail_next(1, "429", step="send")
    assert send_mail(graph, token).status_code == 202
    calls = DraftCalls(graph, token)
    throttled = http.post(f"{calls.base}/{calls.create()}/send", headers=calls.auth, timeout=5)
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "7"
    assert json.loads(throttled.content)["error"]["code"] == "ApplicationThrottled"
    with pytest.raises(ValueError):
        graph.fail_next(1, "gremlins")
    with pytest.raises(ValueError):
        graph.fail_next(1, "503", step="nowhere")


SHARED = "shared@contoso.com"
ALICE = "alice@contoso.com"


def user_token(graph: FakeGraph, *scp: str, user: str = ALICE) -> str:
    return mint_graph_token(graph.token_key, tenant="t", client_id="c", now=time.time(),
                            lifetime=600, mailbox=user, scp=list(scp))


def test_a_user_sends_from_a_shared_mailbox_with_every_grant(graph: FakeGraph) -> None:
    """A delegated token for another's mailbox needs Mail.Send.Shared (Mail.Send is for the
    user's own) and Full Access there, else 403 ErrorAccessDenied; then Send As on the From
    address, else 403 ErrorSendAsDenied. With all three it lands in the shared Sent Items."""
    graph.add_mailbox(SHARED)
    mime = text_message(sender=SHARED)
    denied = send_mail(graph, user_token(graph, "Mail.Send"), mime, mailbox=SHARED)
    assert denied.status_code == 403 and error_of(denied)["code"] == "ErrorAccessDenied"
    token = user_token(graph, "Mail.Send.Shared")
    no_access = send_mail(graph, token, mime, mailbox=SHARED)
    assert no_access.status_code == 403 and error_of(no_access)["code"] == "ErrorAccessDenied"
    graph.grant_full_access(SHARED, ALICE.upper())
    no_send_as = send_mail(graph, token, mime, mailbox=SHARED)
    assert no_send_as.status_code == 403 and error_of(no_send_as)["code"] == "ErrorSendAsDenied"
    graph.grant_send_as(SHARED, ALICE)
    assert send_mail(graph, token, mime, mailbox=SHARED).status_code == 202
    assert graph.sent_items(SHARED) == graph.deliveries and graph.deliveries[0].mime == mime


def test_shared_permissions_cover_the_users_own_mailbox(graph: FakeGraph) -> None:
    """Mail.Send.Shared also sends from the user's own mailbox, as Graph documents."""
    graph.add_mailbox(ALICE)
    answer = send_mail(graph, user_token(graph, "Mail.Send.Shared"), text_message(sender=ALICE),
                       mailbox=ALICE)
    assert answer.status_code == 202


def test_drafts_in_a_shared_mailbox_need_mail_read_write_shared(graph: FakeGraph) -> None:
    """Drafts in another's mailbox need Mail.ReadWrite.Shared (Mail.ReadWrite is not enough)
    and Full Access; sending the draft (without a From: it is the mailbox's) needs Send As
    like sendMail."""
    graph.add_mailbox(SHARED)
    graph.grant_full_access(SHARED, ALICE)
    plain = DraftCalls(graph, user_token(graph, "Mail.Send.Shared", "Mail.ReadWrite"), SHARED)
    assert http.post(plain.base, json={}, headers=plain.auth, timeout=5).status_code == 403
    calls = DraftCalls(graph, user_token(graph, "Mail.Send.Shared", "Mail.ReadWrite.Shared"),
                       SHARED)
    draft = calls.create()
    refused = http.post(f"{calls.base}/{draft}/send", headers=calls.auth, timeout=5)
    assert refused.status_code == 403 and error_of(refused)["code"] == "ErrorSendAsDenied"
    graph.grant_send_as(SHARED, ALICE)
    sent = http.post(f"{calls.base}/{draft}/send", headers=calls.auth, timeout=5)
    assert sent.status_code == 202 and graph.sent_items(SHARED)
