"""Driving the sans-I/O cores in tests: Playbook scripts and the helpers every core test shares.

A Playbook reads as the conversation it checks, in the spirit of mitmproxy's: `>>` an event
(bytes from the peer, a login outcome), `<<` an action the core must take in answer to it.

    assert (
        Playbook(ImapSession)
        >> Received(b"a1 LOGIN alice s3cret\\r\\na2 NOOP\\r\\n")
        << Login("alice", "s3cret")
        >> Succeeded(LoggedIn(("IMAP4rev1",)))
        << line("a1 OK [CAPABILITY IMAP4rev1] LOGIN completed")
        << Relay()
        >> Unparsed(b"a2 NOOP\\r\\n")
    )

`assert playbook` plays it on a fresh core with each Received event in one piece, and each
event's actions must be exactly those listed after it (adjacent Sends compare joined: how writes
are grouped is not the point). `byte_by_byte()` and `split(cuts)` play it again with every
Received event cut into pieces, answering a Login with the script's outcome as soon as it
appears, as the glue would, and require the same actions in the same order. A script ends by
checking that nothing is left unparsed, unless its last event says what is (`Unparsed`).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.actions import LoggedIn, Login, LoginRefused, Send
from proxy.errors import ProxyError


@dataclass(frozen=True)
class Started:
    """The connection is made: a session greets (`start`)."""


@dataclass(frozen=True)
class Received:
    """Bytes from the peer (`receive_data`): the client's for a session, the server's for a
    login."""

    data: bytes


@dataclass(frozen=True)
class Succeeded:
    """The upstream login worked (`login_succeeded`)."""

    upstream: LoggedIn = field(default_factory=LoggedIn)


@dataclass(frozen=True)
class Failed:
    """The login failed (`login_failed`)."""

    error: ProxyError


@dataclass(frozen=True)
class Unparsed:
    """Not an event but a check: `take_unparsed()` gives exactly these bytes."""

    data: bytes


Event = Started | Received | Succeeded | Failed | Unparsed
Cut = Callable[[bytes], list[bytes]]


class Playbook:
    """A script for a fresh core made by `make(**options)` each time it is played."""

    def __init__(self, make: Callable[..., Any], **options: Any) -> None:
        self.make = make
        self.options = options
        self.script: list[tuple[Event, list[object]]] = []

    def __rshift__(self, event: Event) -> Playbook:
        self.script.append((event, []))
        return self

    def __lshift__(self, action: object) -> Playbook:
        assert self.script, "an action before any event"
        self.script[-1][1].append(action)
        return self

    def __bool__(self) -> bool:
        self.play()
        return True

    def __repr__(self) -> str:
        lines = [f"Playbook({getattr(self.make, '__name__', self.make)}, {self.options})"]
        for event, actions in self.script:
            lines += [f"  >> {event!r}", *(f"  << {action!r}" for action in actions)]
        return "\n".join(lines)

    @property
    def received(self) -> bytes:
        """Every byte the peer sends in the script."""
        return b"".join(e.data for e, _ in self.script if isinstance(e, Received))

    def play(self) -> list[object]:
        """Play with each Received in one piece, checking each event's actions; returns them
        all (merged)."""
        core = self.make(**self.options)
        everything: list[object] = []
        for number, (event, expected) in enumerate(self.script, 1):
            if isinstance(event, Unparsed):
                self._check_unparsed(core, event.data)
                continue
            actions = merged(_apply(core, event))
            if actions != merged(expected):
                raise AssertionError(_mismatch(self, number, event, expected, actions))
            everything += actions
        self._check_leftover(core)
        return merged(everything)

    def byte_by_byte(self) -> None:
        self.play_cut(lambda data: [data[i : i + 1] for i in range(len(data))])

    def split(self, cuts: list[int]) -> None:
        self.play_cut(lambda data: split(data, cuts))

    def play_cut(self, cut: Cut) -> None:
        """Play with each Received cut by `cut`, an outcome given as soon as its Login is out;
        the actions of the whole script must be those listed, in order."""
        core = self.make(**self.options)
        actions: list[object] = []
        events = [event for event, _ in self.script]
        while events:
            event = events.pop(0)
            if isinstance(event, Unparsed):
                self._check_unparsed(core, event.data)
                continue
            steps: list[Event] = [event]
            if isinstance(event, Received):
                steps = [Received(piece) for piece in cut(event.data)]
            for step in steps:
                new = _apply(core, step)
                actions += new
                while new and isinstance(new[-1], Login) and events and _outcome(events[0]):
                    new = _apply(core, events.pop(0))
                    actions += new
        expected = [action for _, listed in self.script for action in listed]
        if merged(actions) != merged(expected):
            raise AssertionError(f"{self!r}\nplayed in pieces, it did:\n{_lines(merged(actions))}")
        self._check_leftover(core)

    def _check_unparsed(self, core: Any, data: bytes) -> None:
        leftover = core.take_unparsed()
        assert leftover == data, f"{self!r}\nleft unparsed: {leftover!r}"

    def _check_leftover(self, core: Any) -> None:
        if not (self.script and isinstance(self.script[-1][0], Unparsed)):
            self._check_unparsed(core, b"")


def _outcome(event: Event) -> bool:
    return isinstance(event, (Succeeded, Failed))


def _apply(core: Any, event: Started | Received | Succeeded | Failed) -> list[object]:
    if isinstance(event, Started):
        return list(core.start())
    if isinstance(event, Received):
        return list(core.receive_data(event.data))
    if isinstance(event, Succeeded):
        return list(core.login_succeeded(event.upstream))
    return list(core.login_failed(event.error))


def _mismatch(
    playbook: Playbook, number: int, event: Event, expected: list[object], actual: list[object]
) -> str:
    return (
        f"{playbook!r}\nevent {number}, {event!r}:\n"
        f"  expected:\n{_lines(merged(expected))}\n  actual:\n{_lines(actual)}"
    )


def _lines(actions: list[object]) -> str:
    return "\n".join(f"    {action!r}" for action in actions) or "    (nothing)"


def script_tests(scripts: list[Any]) -> tuple[Callable[..., None], ...]:
    """The three tests every table of scripts gets (pytest.param(Playbook, id=...) rows):
    as written, byte by byte, and cut at random. Assign them to test_ names in the module."""

    @pytest.mark.parametrize("playbook", scripts)
    def test_script(playbook: Playbook) -> None:
        """Each script plays as written: exactly these answers, Logins and leftover bytes."""
        assert playbook

    @pytest.mark.parametrize("playbook", scripts)
    def test_script_byte_by_byte(playbook: Playbook) -> None:
        """Feeding one byte at a time gives the same actions as one chunk."""
        playbook.byte_by_byte()

    @settings(max_examples=300, deadline=None)
    @given(case=st.sampled_from(scripts), cuts=st.lists(st.integers(min_value=0), max_size=8))
    def test_script_random_splits(case: Any, cuts: list[int]) -> None:
        """Any split of the input gives the same actions as one chunk."""
        (playbook,) = case.values
        playbook.split(cuts)

    return test_script, test_script_byte_by_byte, test_script_random_splits


# -- helpers every core test shares --


def converse(
    session: Any, chunks: Iterable[bytes], outcomes: Iterable[LoggedIn | ProxyError] = ()
) -> list[object]:
    """Feed `chunks` to a session, answering each Login at once with the next of `outcomes`
    while there are any; all its actions, merged. For inputs no script can foresee."""
    pending = list(outcomes)
    actions: list[object] = []
    for chunk in chunks:
        new = _apply(session, Received(chunk))
        actions += new
        while new and isinstance(new[-1], Login) and pending:
            outcome = pending.pop(0)
            event = Succeeded(outcome) if isinstance(outcome, LoggedIn) else Failed(outcome)
            new = _apply(session, event)
            actions += new
    return merged(actions)


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


def b64(data: str | bytes) -> bytes:
    """Base64 of `data` (text as UTF-8), as SASL clients send it."""
    return base64.b64encode(data.encode() if isinstance(data, str) else data)


def line(text: str) -> Send:
    """One protocol line, as a core writes it."""
    return Send(text.encode() + b"\r\n")
