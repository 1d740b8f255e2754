"""Making action lists from the sans-I/O cores comparable across input splits."""

from __future__ import annotations

from collections.abc import Iterable

from proxy.actions import LoginRefused, Send


def merged(actions: Iterable[object]) -> list[object]:
    """Adjacent Sends joined (how writes are grouped depends on how input was split), and
    LoginRefused as (error class, message), since exceptions compare by identity."""
    result: list[object] = []
    for action in actions:
        if isinstance(action, LoginRefused):
            result.append((type(action.error), action.error.message))
        elif isinstance(action, Send) and result and isinstance(result[-1], Send):
            result[-1] = Send(result[-1].data + action.data)
        else:
            result.append(action)
    return result


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` cut at the given offsets (taken modulo its length): a random split of a stream."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
