"""Graph's error answers, and network failures, read into outcomes with plain-language reasons.

Graph answers errors as `{"error": {"code": ..., "message": ..., "innerError": {"request-id":
..., "date": ...}}}`. What the device is told depends on the code, the HTTP status and the step
that failed: a 403 on sendMail means the app lacks Mail.Send, while a 403 while creating a draft
or an upload session means it lacks Mail.ReadWrite, which only messages over about 3 MB need. A
user signed in for another's (shared) mailbox needs their .Shared forms, and Exchange's Full
Access and Send As on that mailbox: the reason then names the user.
"""

from __future__ import annotations

from dataclasses import dataclass
from http.client import RemoteDisconnected
from typing import Any

import requests

from ..entra.answers import retry_after_seconds
from .outcome import (
    BAD_CONTENT,
    BAD_RECIPIENT,
    BAD_SENDER_MAILBOX,
    CONGESTION,
    NO_ANSWER,
    NOT_AUTHORISED,
    SEND_AS_DENIED,
    SYSTEM_TEMPORARY,
    TOO_LARGE,
    Outcome,
    Permanent,
    Temporary,
    TokenRefused,
)

# The steps of a submission, as named in logs. Only sendMail and send need Mail.Send; the
# draft steps need Mail.ReadWrite.
SEND_MAIL = "sendMail"
CREATE_DRAFT = "create draft"
ADD_ATTACHMENT = "add attachment"
UPLOAD_SESSION = "create upload session"
UPLOAD = "upload"
SEND_DRAFT = "send draft"
DRAFT_STEPS = frozenset({CREATE_DRAFT, ADD_ATTACHMENT, UPLOAD_SESSION})
# The steps that send: without an answer to one, the message may have gone, and the device's
# retry may deliver it twice.
SENDING_STEPS = frozenset({SEND_MAIL, SEND_DRAFT})
MESSAGE_LIMIT = 200  # characters of Graph's own message quoted in a reason


@dataclass(frozen=True)
class Context:
    """What a reason names: the account's mailbox, the message's From address, and the user
    who signs in for that mailbox when it is not the user's own (a shared mailbox)."""

    mailbox: str
    from_address: str | None = None
    delegate: str | None = None


def graph_error(response: requests.Response) -> tuple[str | None, str, str | None]:
    """(code, message, request-id) of an answer; the code is None when it is not Graph's JSON."""
    request_id = response.headers.get("request-id")
    try:
        payload: Any = response.json()
    except ValueError:
        return None, "", request_id
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return None, "", request_id
    code, message = error.get("code"), error.get("message")
    code = code if isinstance(code, str) else None
    message = message if isinstance(message, str) else ""
    inner = error.get("innerError")
    if isinstance(inner, dict) and isinstance(inner.get("request-id"), str):
        request_id = inner["request-id"]
    return code, one_line(message), request_id


def request_too_large(response: requests.Response) -> bool:
    """Whether Graph refused the size of the request, not the size of the message: a 413, or
    the 400 BadRequest it also answers ("Maximum request length exceeded.", "The maximum request
    length supported is 4MB."). The mailbox's own limit (ErrorMessageSizeExceeded) would refuse
    a draft of the message just the same."""
    code, message, _ = graph_error(response)
    if code == "ErrorMessageSizeExceeded":
        return False
    return response.status_code == 413 or (
        response.status_code == 400 and "maximum request length" in message.lower())


def one_line(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """Whitespace (line breaks included) folded, cut to `limit` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def answer_outcome(response: requests.Response, step: str, context: Context,
                   now: float) -> Outcome:
    """The outcome of a non-2xx answer to `step`."""
    status = response.status_code
    code, message, request_id = graph_error(response)
    label = code or f"HTTP {status}"
    mailbox = context.mailbox
    said = f" ({message})" if message else ""

    def temporary(reason: str, enhanced: str = SYSTEM_TEMPORARY,
                  retry_after: float | None = None, maybe_sent: bool = False) -> Temporary:
        return Temporary(reason, enhanced, retry_after, label, request_id, maybe_sent)

    def permanent(reason: str, enhanced: str) -> Permanent:
        return Permanent(reason, enhanced, label, request_id)

    if status == 401:
        if step == UPLOAD:  # the upload URL carries its own credential, not our token
            return temporary("the attachment upload session was refused; try again later")
        return TokenRefused("Microsoft Graph refused the access token", code=label,
                            request_id=request_id)
    if status == 429:
        retry_after = retry_after_seconds(response.headers.get("Retry-After"), now)
        return temporary(f"Microsoft Graph is throttling requests for {mailbox}; try again "
                         "later", CONGESTION, retry_after)
    if status == 413 or code == "ErrorMessageSizeExceeded":
        return permanent(f"the message is larger than Microsoft 365 accepts for {mailbox}",
                         TOO_LARGE)
    if code == "ErrorSendAsDenied":
        return permanent(_send_as_denied(context), SEND_AS_DENIED)
    if code == "ErrorInvalidRecipients":
        return permanent(f"Microsoft 365 refused the recipients{said}", BAD_RECIPIENT)
    if code in ("MailboxNotEnabledForRESTAPI", "MailboxNotSupportedForRESTAPI"):
        return permanent(f"the mailbox {mailbox} cannot be used through Microsoft Graph (it "
                         "may be on-premises, inactive or without an Exchange Online licence)",
                         BAD_SENDER_MAILBOX)
    if status == 403 or code == "ErrorAccessDenied":
        user = context.delegate
        if step in DRAFT_STEPS and user:
            return permanent(f"messages over about 3 MB from {mailbox} need the delegated "
                             "Microsoft Graph permission Mail.ReadWrite.Shared and Full Access "
                             f"to {mailbox} for {user} (smaller messages need only "
                             "Mail.Send.Shared)", TOO_LARGE)
        if step in DRAFT_STEPS:
            return permanent(f"messages over about 3 MB need the Microsoft Graph permission "
                             f"Mail.ReadWrite for {mailbox}, which the app lacks: add it (smaller "
                             "messages need only Mail.Send)", TOO_LARGE)
        if user:
            return permanent(f"{user} may not send from {mailbox}: the app needs the delegated "
                             "Microsoft Graph permission Mail.Send.Shared (admin consent), and "
                             f"{user} Full Access and Send As on {mailbox} in Exchange "
                             f"(Add-RecipientPermission -Identity {mailbox} -Trustee {user} "
                             "-AccessRights SendAs)", NOT_AUTHORISED)
        return permanent(f"the app may not send mail as {mailbox}: grant it the Microsoft "
                         "Graph permission Mail.Send (Mail.Send.Shared when a signed-in user "
                         "sends from a shared mailbox; for app-only access, also include the "
                         "mailbox in its Exchange RBAC scope or application access policy)",
                         NOT_AUTHORISED)
    if status == 404 and step in (SEND_MAIL, CREATE_DRAFT):
        return permanent(f"Microsoft Graph does not know the mailbox {mailbox}{said}: check "
                         "the account's mailbox setting", BAD_SENDER_MAILBOX)
    if status == 504:  # Graph's gateway gave up waiting: what it waited for may still be done
        return temporary(f"Microsoft Graph did not answer in time (HTTP 504) at {step}; try "
                         "again later", NO_ANSWER, maybe_sent=step in SENDING_STEPS)
    if status >= 500:
        return temporary(f"Microsoft Graph answered HTTP {status} at {step}; try again later")
    if status == 400:
        detail = f"{label}: {message}" if message else label
        return permanent(f"Microsoft Graph refused the message ({detail})", BAD_CONTENT)
    # Anything else (a redirect, 404 half-way, 409) is not the message's fault: nothing is lost
    # by having the device try again.
    return temporary(f"Microsoft Graph answered HTTP {status} at {step}{said}; try again later")


def _send_as_denied(context: Context) -> str:
    """Who may not send as whom: the signed-in user, when sending from another's mailbox (Send
    As is granted to that user), else the account's mailbox."""
    mailbox, user = context.mailbox, context.delegate
    sender = context.from_address or "the From address"
    if user is None:
        return (f"Microsoft 365 does not let {mailbox} send as {sender}: set the device's "
                f"sender (From) address to {mailbox}, or grant {mailbox} Send As permission on "
                f"{sender}")
    identity = context.from_address or mailbox
    other = ("" if identity.lower() == mailbox.lower()
             else f" (or set the From address to {mailbox})")
    return (f"Microsoft 365 does not let {user} send as {identity}: grant {user} Send As on "
            f"it in Exchange (Add-RecipientPermission -Identity {identity} -Trustee {user} "
            f"-AccessRights SendAs){other}")


def network_outcome(error: requests.RequestException, step: str, host: str) -> Temporary:
    """A request that got no answer: timeout, refused or reset connection, TLS failure."""
    if isinstance(error, requests.exceptions.SSLError):
        what = ("its TLS certificate could not be verified (a TLS-inspecting network needs its "
                "CA in the system store or REQUESTS_CA_BUNDLE)")
    elif isinstance(error, requests.Timeout):
        what = "it did not answer in time"
    elif isinstance(error, requests.ConnectionError):
        what = "the connection failed or was closed"
    else:
        what = "the request failed"
    maybe_sent = step in SENDING_STEPS and _after_the_request(error)
    return Temporary(f"Microsoft Graph ({host}) could not be reached at {step}: {what}; try "
                     "again later", NO_ANSWER, code=type(error).__name__, maybe_sent=maybe_sent)


def _after_the_request(error: requests.RequestException) -> bool:
    """Whether `error` came once the request had gone out, so Graph may have acted on it: no
    answer in time, or the connection closed or reset while the answer was awaited (not a
    connection that could not be made)."""
    if isinstance(error, requests.ReadTimeout):
        return True
    if isinstance(error, requests.ConnectTimeout):
        return False  # nothing went out
    if not isinstance(error, requests.ConnectionError):
        return False
    # requests wraps urllib3's ProtocolError("Connection aborted.", why); a connection that
    # could not be made comes as a MaxRetryError naming another reason.
    aborted = error.args[0] if error.args else None
    return any(isinstance(why, (RemoteDisconnected, ConnectionResetError))
               for why in getattr(aborted, "args", ()))
