"""What became of one message handed to Microsoft Graph.

Four kinds, because the SMTP side answers each differently: `Sent` (Graph's 202: answer 250),
`Temporary` (answer 4xx: the device keeps the message and tries again), `TokenRefused` (refresh the
access token once and send once more; if that is refused too, it is temporary) and `Permanent`
(answer 5xx: the device must not send the same message again unchanged). Each carries the
enhanced status code (RFC 3463) it suggests and a reason in plain words, one line, with no secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

# RFC 3463 codes the outcomes suggest.
CONGESTION = "4.4.5"  # Graph throttles (429)
NO_ANSWER = "4.4.1"  # timeout, connection refused or reset, 504
SYSTEM_TEMPORARY = "4.3.0"  # 5xx, other temporary trouble
TOKEN_TEMPORARY = "4.7.0"  # the access token was refused even after a refresh
NOT_AUTHORISED = "5.7.1"  # no permission for the mailbox (ErrorAccessDenied)
SEND_AS_DENIED = "5.7.60"  # Exchange Online's code for "not allowed to send as this From"
BAD_RECIPIENT = "5.1.1"  # ErrorInvalidRecipients
BAD_SENDER_MAILBOX = "5.1.8"  # the account's mailbox is unknown to Graph or not REST-enabled
TOO_LARGE = "5.3.4"  # over a size limit, or the large-message path is not permitted
BAD_CONTENT = "5.6.0"  # Graph could not read the message


@dataclass(frozen=True)
class Sent:
    """Graph accepted the message (HTTP 202): it goes out and lands in Sent Items."""

    request_id: str | None = None
    path: str = "sendMail"  # "sendMail" (one MIME request) or "draft" (draft, uploads, send)


@dataclass(frozen=True)
class Temporary:
    """Graph cannot take the message now; the device keeps it and tries again later."""

    reason: str
    status: str = SYSTEM_TEMPORARY
    retry_after: float | None = None  # seconds Graph asked us to wait; for the log
    code: str | None = None  # Graph's error code, or "HTTP 503"
    request_id: str | None = None
    maybe_sent: bool = False  # the request to send went out but no answer came back


@dataclass(frozen=True)
class TokenRefused:
    """Graph refused the access token (HTTP 401): refresh it once and send once more."""

    reason: str
    status: str = TOKEN_TEMPORARY
    code: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class Permanent:
    """Graph refused the message for good; sending it again unchanged cannot work."""

    reason: str
    status: str
    code: str | None = None
    request_id: str | None = None


Outcome: TypeAlias = Sent | Temporary | TokenRefused | Permanent


def describe(outcome: Outcome) -> str:
    """One log line's worth: the kind, the status, Graph's code and request-id, the reason."""
    if isinstance(outcome, Sent):
        return f"sent through {outcome.path} (request-id {outcome.request_id or '-'})"
    kind = {Temporary: "temporary failure", TokenRefused: "access token refused",
            Permanent: "refused"}[type(outcome)]
    extra = after = ""
    if isinstance(outcome, Temporary) and outcome.retry_after is not None:
        extra = f", Retry-After {outcome.retry_after:g}s"
    if isinstance(outcome, Temporary) and outcome.maybe_sent:
        after = (" (the request to send had gone out, so Microsoft Graph may have sent the "
                 "message all the same: the device will send it again, and it may arrive twice)")
    return (f"{kind} {outcome.status} ({outcome.code or '-'}, request-id "
            f"{outcome.request_id or '-'}{extra}): {outcome.reason}{after}")
