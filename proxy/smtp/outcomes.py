"""What a device is told about a message the proxy handed to Microsoft Graph (RFC 3463 codes).

250 only after Graph's 202. A temporary failure is 451, so the device keeps the message and tries
again; a permanent one is 550, 552 (size, or the permission large messages need) or 554 (content),
so it does not send the same message again unchanged. The text is the outcome's reason in plain
words; proxy.smtp.replies bounds and cleans it.
"""

from __future__ import annotations

from ..graph.outcome import TOO_LARGE, Outcome, Permanent, Sent


def delivery_reply(outcome: Outcome) -> tuple[str, str]:
    """(code, text) of the SMTP answer to the end of a message."""
    if isinstance(outcome, Sent):
        return "250", f"2.0.0 OK, sent through Microsoft Graph (request-id {outcome.request_id or '-'})"
    if not isinstance(outcome, Permanent):
        return "451", f"{outcome.status} {outcome.reason}"
    if outcome.status == TOO_LARGE:
        return "552", f"{outcome.status} {outcome.reason}"
    code = "554" if outcome.status.startswith("5.6.") else "550"
    return code, f"{outcome.status} {outcome.reason}"
