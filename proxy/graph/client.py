"""Sending one message through Microsoft Graph, with no Twisted in it.

`GraphClient.send` is blocking and meant for a thread pool, like `proxy.entra.client`: it takes an
injected `requests.Session`, an access token for https://graph.microsoft.com, the account's
mailbox, the message as a readable, seekable spool and its SMTP envelope, and returns an
`Outcome`; it raises nothing for anything Graph or the network does. A message that fits one
request (MIME_LIMIT) goes as base64 MIME to sendMail, byte for byte; a larger one as a draft,
its large attachments through upload sessions, then `send`. If Graph refuses the sendMail
request as too large (413, or its 400 "Maximum request length exceeded."), the message goes the
draft way instead. A draft left by a failure is deleted. No token, upload URL or message
content reaches a log line or an outcome.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import IO, Any
from urllib.parse import quote, urlsplit

import requests

from ..resources import GRAPH_URL
from ..urls import secure_or_loopback, service_base_url
from .addresses import EnvelopeFit, first_address, fit_to_envelope
from .answers import (
    ADD_ATTACHMENT,
    CREATE_DRAFT,
    SEND_DRAFT,
    SEND_MAIL,
    UPLOAD,
    UPLOAD_SESSION,
    Context,
    answer_outcome,
    graph_error,
    network_outcome,
    request_too_large,
)
from .draft import BodyTooLarge, DraftPlan, FilePart, plan_draft
from .mime import Head, MimeError, decoded, leaves, read_head
from .mime_body import mime_size, send_mail_body
from .outcome import BAD_CONTENT, TOO_LARGE, Outcome, Permanent, Sent, Temporary, describe
from .streams import StreamBody

log = logging.getLogger(__name__)

DEFAULT_GRAPH_URL = GRAPH_URL
MIME_LIMIT = 3_000_000  # bytes of MIME per sendMail: its base64 stays under 4 MB
MAX_MESSAGE = 150 * 1024 * 1024  # Exchange Online's highest message size limit
UPLOAD_PIECE = 10 * 320 * 1024  # bytes per PUT: under Graph's 4 MB, in 320 KiB multiples


@dataclass(frozen=True)
class Envelope:
    """The SMTP envelope: MAIL FROM (empty for a null sender) and the RCPT TO addresses."""

    sender: str
    recipients: tuple[str, ...]


def graph_base_url(url: str) -> str:
    """`url` checked and without a trailing slash: https, or http to this machine only (a
    local stand-in in tests), with no path (the client adds /v1.0)."""
    return service_base_url(url, "graph_url", DEFAULT_GRAPH_URL)


class GraphClient:
    """Sends messages for any number of mailboxes; holds no state between calls."""

    def __init__(
        self,
        session: requests.Session,
        graph_url: str = DEFAULT_GRAPH_URL,
        clock: Callable[[], float] = time.time,
        timeout: tuple[float, float] = (10.0, 120.0),  # connect, then each read
    ) -> None:
        self.session = session
        self.base = graph_base_url(graph_url)
        self.clock = clock
        self.timeout = timeout

    def send(self, access_token: str, mailbox: str, message: IO[bytes],
             envelope: Envelope, delegate: str | None = None) -> Outcome:
        """Submit the message for `mailbox`; `delegate` is the signed-in user when that is not
        the user's own mailbox (it names who lacks what in a refusal). The spool is read from
        its start, so after a TokenRefused the caller refreshes the token and calls send again
        with the same spool."""
        message.seek(0, 2)
        size = message.tell()
        submission = _Submission(self, access_token, Context(mailbox, delegate=delegate),
                                 message, size)
        try:
            outcome = submission.run(envelope)
        except (MimeError, BodyTooLarge) as e:
            outcome = Permanent(f"the message cannot be sent through Microsoft Graph: {e}",
                                TOO_LARGE if isinstance(e, BodyTooLarge) else BAD_CONTENT)
        report = log.info if isinstance(outcome, Sent) else log.warning
        report("graph: %s: %d bytes for %d recipients (client-request-id %s): %s", mailbox,
               size, len(envelope.recipients), submission.request_id, describe(outcome))
        return outcome


class _Submission:
    """One call of GraphClient.send."""

    def __init__(self, client: GraphClient, token: str, context: Context, message: IO[bytes],
                 size: int) -> None:
        self.client = client
        self.token = token
        self.mailbox = context.mailbox
        self.message = message
        self.size = size
        self.request_id = str(uuid.uuid4())  # sent as client-request-id: Graph logs it too
        self.user_url = f"{client.base}/v1.0/users/{quote(self.mailbox, safe='@')}"
        self.context = context

    def run(self, envelope: Envelope) -> Outcome:
        if self.size > MAX_MESSAGE:
            return Permanent(f"the message is over the {MAX_MESSAGE // 2**20} MB Microsoft 365 "
                             "accepts", TOO_LARGE)
        head = read_head(self.message)
        self.context = replace(self.context, from_address=first_address(head.headers, "From"))
        fit = fit_to_envelope(head.headers, envelope.recipients)
        if fit.left_out:
            log.info("graph: %s: %d recipient(s) in the message's header are not in the SMTP "
                     "envelope; they are left out, so that only the envelope's recipients get "
                     "it", self.mailbox, len(fit.left_out))
        if mime_size(head, fit, self.size) <= MIME_LIMIT:
            outcome = self.send_mime(head, fit)
            if outcome is not None:
                return outcome
        plan = plan_draft(self.message, head, leaves(self.message), fit)
        return self.send_draft(plan)

    def send_mime(self, head: Head, fit: EnvelopeFit) -> Outcome | None:
        """sendMail with the MIME; None if Graph refused the request as too large.
        MIME_LIMIT keeps the base64 under 4 MB, but Graph's limit is not documented to the byte
        and may be lower where it is counted; the draft's requests are each smaller."""
        body = send_mail_body(head, fit, self.message, self.size)
        answer = self.request("POST", f"{self.user_url}/sendMail", SEND_MAIL, data=body,
                              content_type="text/plain", expect=(202, 400, 413))
        if not isinstance(answer, requests.Response):
            return answer
        if answer.status_code == 202:
            return self.sent(answer)
        if not request_too_large(answer):
            return answer_outcome(answer, SEND_MAIL, self.context, self.client.clock())
        log.info("graph: %s: sendMail refused the request as too large (HTTP %d, request-id "
                 "%s); sending the message as a draft instead", self.mailbox,
                 answer.status_code, graph_error(answer)[2] or "-")
        return None

    def sent(self, answer: requests.Response, path: str = "sendMail") -> Sent:
        return Sent(answer.headers.get("request-id"), path)

    # -- the draft path --

    def send_draft(self, plan: DraftPlan) -> Outcome:
        answer = self.request("POST", f"{self.user_url}/messages", CREATE_DRAFT,
                              data=plan.create_request(self.message),
                              content_type="application/json", expect=(201,))
        if not isinstance(answer, requests.Response):
            return answer
        draft_id = _json(answer).get("id")
        if not isinstance(draft_id, str) or not draft_id:
            return Temporary("Microsoft Graph created the draft without saying its id",
                             code="no id", request_id=answer.headers.get("request-id"))
        draft_url = f"{self.user_url}/messages/{quote(draft_id, safe='')}"
        try:
            outcome = self.fill_and_send(plan, draft_url)
        except BaseException:
            self.delete_draft(draft_url)
            raise
        if not isinstance(outcome, Sent):
            self.delete_draft(draft_url)
        return outcome

    def fill_and_send(self, plan: DraftPlan, draft_url: str) -> Outcome:
        for part in plan.posted:
            answer = self.request("POST", f"{draft_url}/attachments", ADD_ATTACHMENT,
                                  data=part.request(self.message), content_type="application/json",
                                  expect=(201,))
            if not isinstance(answer, requests.Response):
                return answer
        for part in plan.uploaded:
            failed = self.upload(part, draft_url)
            if failed is not None:
                return failed
        answer = self.request("POST", f"{draft_url}/send", SEND_DRAFT, expect=(202,))
        return answer if not isinstance(answer, requests.Response) else self.sent(answer, "draft")

    def upload(self, part: FilePart, draft_url: str) -> Outcome | None:
        """Attach `part` through an upload session; None when done, else what went wrong."""
        item = {"attachmentType": "file", "size": part.size, **part.metadata()}
        answer = self.request("POST", f"{draft_url}/attachments/createUploadSession",
                              UPLOAD_SESSION, json={"AttachmentItem": item}, expect=(200, 201))
        if not isinstance(answer, requests.Response):
            return answer
        upload_url = _json(answer).get("uploadUrl")
        if not isinstance(upload_url, str) or not secure_or_loopback(upload_url):
            return Temporary("Microsoft Graph gave no usable upload URL for an attachment",
                             code="no uploadUrl", request_id=answer.headers.get("request-id"))
        content = StreamBody(decoded(self.message, part.leaf), part.size)
        for offset in range(0, part.size, UPLOAD_PIECE):
            length = min(UPLOAD_PIECE, part.size - offset)
            answer = self.request(
                "PUT", upload_url, UPLOAD, data=StreamBody(content.take(length), length),
                content_type="application/octet-stream", authorise=False, expect=(200, 201),
                headers={"Content-Range": f"bytes {offset}-{offset + length - 1}/{part.size}"},
            )
            if not isinstance(answer, requests.Response):
                return answer
        return None

    def delete_draft(self, draft_url: str) -> None:
        """Best effort: a draft that stays is only clutter in the Drafts folder."""
        answer = self.request("DELETE", draft_url, "delete draft", expect=(204, 404))
        if not isinstance(answer, requests.Response):
            log.warning("graph: %s: a draft of an unsent message could not be deleted and "
                        "stays in Drafts: %s", self.mailbox, describe(answer))

    # -- plumbing --

    def request(
        self, method: str, url: str, step: str, *, expect: tuple[int, ...],
        data: StreamBody | None = None, json: Any = None,
        content_type: str | None = None, authorise: bool = True,
        headers: dict[str, str] | None = None,
    ) -> requests.Response | Outcome:
        """The answer if its status is expected, else the outcome it means."""
        sent = {"Accept": "application/json", **(headers or {})}
        if authorise:
            sent["Authorization"] = f"Bearer {self.token}"
            sent["client-request-id"] = self.request_id
        if content_type:
            sent["Content-Type"] = content_type
        log.debug("graph: %s: %s %s", self.mailbox, method, step)
        try:
            answer = self.client.session.request(
                method, url, data=data, json=json, headers=sent, timeout=self.client.timeout,
                allow_redirects=False, auth=_as_given,
            )
        except requests.RequestException as e:
            return network_outcome(e, step, urlsplit(self.client.base).netloc)
        if answer.status_code in expect:
            return answer
        return answer_outcome(answer, step, self.context, self.client.clock())


def _as_given(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """Explicit auth that changes nothing: requests would otherwise put credentials from
    ~/.netrc over the bearer token, or onto the pre-authenticated upload URL."""
    return request


def _json(answer: requests.Response) -> dict[str, Any]:
    try:
        payload = answer.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}
