"""Addresses in a message's header, and how they differ from the SMTP envelope.

Graph delivers to the recipients in the message (To, Cc, Bcc), not to an SMTP envelope, while
in SMTP the envelope alone decides who gets a message. A recipient given only in RCPT TO (a Bcc
the sending program kept out of the header, as SMTP allows) would be lost, so those are added as
Bcc. A header recipient the envelope leaves out (a message split into one transaction per
recipient, or resent to someone new) would get a copy it was not sent, once per transaction, so
those are left out of the message Graph gets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import getaddresses

RECIPIENT_FIELDS = ("To", "Cc", "Bcc")


def addresses(headers: EmailMessage, name: str) -> list[tuple[str, str]]:
    """(display name, address) of every mailbox in the header fields called `name`."""
    found: list[tuple[str, str]] = []
    for raw_name, raw_value in headers.raw_items():
        if raw_name.lower() != name.lower():
            continue
        try:
            value = headers.policy.header_fetch_parse(raw_name, raw_value)
            parsed = [(a.display_name, a.addr_spec) for a in getattr(value, "addresses", ())]
        except Exception:  # the header parser can trip on broken fields; fall back to the
            parsed = getaddresses([str(raw_value)])  # simpler parser, as mail readers do
        found += [(display, address) for display, address in parsed if "@" in address]
    return found


def first_address(headers: EmailMessage, name: str) -> str | None:
    found = addresses(headers, name)
    return found[0][1] if found else None


@dataclass(frozen=True)
class EnvelopeFit:
    """What to change in the message's recipients so that Graph delivers to the envelope."""

    extra_bcc: tuple[str, ...] = ()  # envelope recipients the header does not name
    left_out: frozenset[str] = frozenset()  # header recipients (lower case) not in the envelope

    @property
    def changes_nothing(self) -> bool:
        return not self.extra_bcc and not self.left_out

    def keeps(self, address: str) -> bool:
        return address.lower() not in self.left_out


def fit_to_envelope(headers: EmailMessage, recipients: Iterable[str]) -> EnvelopeFit:
    """Envelope recipients no To, Cc or Bcc field names (in envelope order, each once), and
    header recipients the envelope does not name; addresses compared without case."""
    named = {address.lower() for field in RECIPIENT_FIELDS
             for _, address in addresses(headers, field)}
    wanted: set[str] = set()
    extra: list[str] = []
    for recipient in recipients:
        key = recipient.lower()
        if key not in named and key not in wanted:
            extra.append(recipient)
        wanted.add(key)
    return EnvelopeFit(tuple(extra), frozenset(named - wanted))
