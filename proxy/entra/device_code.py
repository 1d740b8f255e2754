"""The device code sign-in of `account add` (people's mailboxes on headless machines).

Plain synchronous code (no Twisted): it runs once, in a terminal, over SSH or in a container, and
needs no TTY. It prints the verification address and the user code, Entra's own sentence and how
long the code stays valid; then it polls (EntraClient.wait_for_device_code honours the interval
and slow_down) with a remaining-time note now and then.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TextIO

from .answers import TokenSet
from .client import EntraClient
from .prompts import minutes, say, who_signs_in


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class _Countdown:
    """The `sleep` handed to wait_for_device_code: sleeps, and says how long is left. A terminal
    gets one line rewritten every second; a pipe gets a line a minute (logs stay readable)."""

    def __init__(
        self, out: TextIO, expires_at: float, clock: Callable[[], float],
        sleep: Callable[[float], None], every: float = 60.0,
    ) -> None:
        self.out = out
        self.expires_at = expires_at
        self.clock = clock
        self.tty = _isatty(out)
        self._sleep = sleep
        self._every = every
        self._next_note = clock() + every
        self._dirty = False

    def sleep(self, seconds: float) -> None:
        if not self.tty:
            self._sleep(seconds)
            now = self.clock()
            if now >= self._next_note and now < self.expires_at:
                say(self.out, f"Still waiting for the sign-in; the code is valid for "
                     f"{minutes(self.expires_at - now)} more.")
                self._next_note = now + self._every
            return
        deadline = self.clock() + seconds
        while True:
            left = max(0.0, self.expires_at - self.clock())
            say(self.out, f"\rWaiting for the sign-in: {int(left) // 60:d}:{int(left) % 60:02d} "
                 "left ", end="")
            self._dirty = True
            remaining = deadline - self.clock()
            if remaining <= 0:
                return
            self._sleep(min(1.0, remaining))

    def done(self) -> None:
        if self._dirty:
            say(self.out)  # end the rewritten line
            self._dirty = False


def device_code_flow(
    client: EntraClient,
    out: TextIO,
    *,
    sleep: Callable[[float], None] = time.sleep,
    resource: str | None = None,
) -> TokenSet:
    """Run a device code sign-in for `resource` (None: the account's first): print what the
    user must do, poll until they have done it. Raises AuthorisationDeclined,
    AuthorisationExpired or AuthorisationFailed with a sentence."""
    device = client.start_device_code(resource)
    clock = client.clock
    until = time.strftime("%H:%M", time.localtime(device.expires_at))
    say(out)
    say(out, device.message)
    say(out)
    say(out, f"  Open:       {device.verification_uri}")
    say(out, f"  Enter code: {device.user_code}")
    say(out)
    say(out, f"{who_signs_in(client.account)}, from any device with a browser. The code is valid "
         f"for {minutes(device.expires_at - clock())} (until {until}).")
    say(out, "Waiting for the sign-in to finish...")
    countdown = _Countdown(out, device.expires_at, clock, sleep)
    try:
        tokens = client.wait_for_device_code(device, sleep=countdown.sleep)
    finally:
        countdown.done()
    say(out, "Signed in.")
    return tokens

