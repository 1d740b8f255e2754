"""What the interactive sign-ins of `account add` print, worded once for both flows.

Whatever the user must do is written on `out` and flushed at once, because `out` is often a pipe
(scripts, `docker exec`, the integration tests).
"""

from __future__ import annotations

from typing import TextIO

from ..config import AccountConfig
from ..resources import NAMES


def say(out: TextIO, text: str = "", end: str = "\n") -> None:
    out.write(text + end)
    out.flush()


def minutes(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds >= 90:
        return f"{round(seconds / 60)} minutes"
    return f"{seconds} seconds"


def who_signs_in(account: AccountConfig) -> str:
    if account.mailbox.lower() == account.username.lower():
        return f"Sign in to Microsoft as {account.mailbox}"
    return (f"Sign in to Microsoft as a user with access to the shared mailbox "
            f"{account.mailbox}")


def needs_own_consent(resource: str) -> str:
    """Why a device code account signs in once more: Entra ID refused to redeem its refresh
    token for `resource` (ConsentMissing)."""
    return (f"{NAMES[resource]} needs its own consent (an administrator can grant it for "
            "everyone under API permissions)")
