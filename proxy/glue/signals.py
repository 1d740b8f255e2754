"""The signals a service manager sends, on the platforms that have them.

Stop: SIGTERM (systemd, launchd, Docker), SIGINT (Ctrl-C; a Windows service wrapper's Ctrl+C
event) and SIGBREAK (Ctrl-Break, Windows only). A second one while the proxy waits for open
sessions closes them at once. Reload: SIGHUP where it exists; Windows has none, and
`xoauth2-proxy reload` works everywhere.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGBREAK")
RELOAD_SIGNALS = ("SIGHUP",)


def install_handlers(
    reactor: Any, on_stop: Callable[[str], None], on_reload: Callable[[str], None]
) -> list[str]:
    """Call `on_stop(name)` or `on_reload(name)` on the reactor thread when a signal arrives.
    Call when the reactor runs (after Twisted's own handlers, which this replaces). Returns
    the names of the signals handled here."""
    handled = []
    for names, action in ((STOP_SIGNALS, on_stop), (RELOAD_SIGNALS, on_reload)):
        for name in names:
            number = getattr(signal, name, None)
            if number is None:
                continue
            signal.signal(number, _handler(reactor, action, name))
            handled.append(name)
    return handled


def _handler(reactor: Any, action: Callable[[str], None], name: str) -> Callable[[int, FrameType | None], None]:
    def handle(number: int, frame: FrameType | None) -> None:
        # A signal interrupts whatever runs; the work itself waits for the reactor's next turn.
        reactor.callFromThread(action, name)

    return handle
