"""The waiting of a device code sign-in, one poll at a time (RFC 8628 section 3.5), for a loop
that sleeps (`account add` in a terminal) or one that schedules (the admin page)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from ..config import AccountConfig
from ..errors import (
    AuthorisationExpired,
    SlowDown,
    TokenEndpointThrottled,
    TokenEndpointUnavailable,
)
from .answers import DeviceCode, TokenSet

log = logging.getLogger(__name__)

SLOW_DOWN_STEP = 5.0  # add 5 seconds to the interval on slow_down


class DevicePoller(Protocol):
    """What polls Entra ID (EntraClient)."""

    account: AccountConfig
    clock: Callable[[], float]

    def poll_device_code(self, device: DeviceCode) -> TokenSet | None: ...


class DevicePolling:
    """`next_pause()` says how long to wait before the next `poll()`, which blocks on one
    request. An outage or throttling while the user is still signing in does not end the wait
    (the next poll may well work); any other error does."""

    def __init__(self, client: DevicePoller, device: DeviceCode) -> None:
        self.client = client
        self.device = device
        self.interval = float(device.interval)
        self._pause = self.interval

    def next_pause(self) -> float:
        """Seconds to wait before polling again; AuthorisationExpired once the code expired."""
        if self.client.clock() >= self.device.expires_at:
            raise AuthorisationExpired()
        return self._pause

    def poll(self) -> TokenSet | None:
        """One poll: tokens once the user signed in, None while waiting; raises when it is over
        (AuthorisationDeclined, AuthorisationFailed, TokenRequestRefused, ...)."""
        self._pause = self.interval
        try:
            return self.client.poll_device_code(self.device)
        except SlowDown:
            self.interval += SLOW_DOWN_STEP
            self._pause = self.interval
        except (TokenEndpointUnavailable, TokenEndpointThrottled) as e:
            log.warning("%s: device code poll failed, trying again: %s",
                        self.client.account.username, e)
            retry_after = getattr(e, "retry_after", None)
            self._pause = max(self.interval, retry_after or 0.0, 1.0)
        return None
