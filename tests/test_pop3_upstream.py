"""The POP3 XOAUTH2 sign-in: server bytes in, client bytes and a verdict out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.actions import Close, LoggedIn, LoginRefused, Send, SignInPhase
from proxy.errors import FailureKind, ProxyError, Throttled, UpstreamRejected, UpstreamUnavailable
from proxy.pop3 import Pop3UpstreamLogin
from tests.support.playbook import merged as outcome
from tests.support.playbook import split

# Microsoft's worked example (PROTOCOL-NOTES.md).
MAILBOX = "test@contoso.onmicrosoft.com"
TOKEN = "EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA"
RESPONSE = (
    b"dXNlcj10ZXN0QGNvbnRvc28ub25taWNyb3NvZnQuY29tAWF1dGg9QmVhcmVyIEV3QkFBbDNCQUFVRkZwVUFvN0oz"
    b"VmUwYmpMQldaV0NjbFJDM0VvQUEBAQ=="
)
AUTH = b"AUTH XOAUTH2\r\n"
O365_GREETING = (
    b"+OK The Microsoft Exchange POP3 service is ready. "
    b"[TQBXADQAUABSADEAMwBDAEEAMAAwADEAMwAuAG4AYQBtAHAAcgBkADEAMwAuAHAAcgBvAGQALgBvAHUAdABsAG8AbwBrAC4AYwBvAG0A]\r\n"
)
DOVECOT_GREETING = b"+OK Dovecot (Debian) ready.\r\n"
DOVECOT_REPORT = b"+ eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0=\r\n"




def sign_in(chunks: Sequence[bytes]) -> tuple[list[object], bytes]:
    login = Pop3UpstreamLogin(MAILBOX, TOKEN)
    actions: list[object] = []
    for chunk in chunks:
        actions += login.receive_data(chunk)
    return outcome(actions), login.take_unparsed()


def refused(actions: list[object]) -> Any:
    """The (error class, message) of the refusal that ends `actions`, after the Close."""
    assert len(actions) >= 2 and isinstance(actions[-1], tuple) and actions[-2] == Close()
    assert sum(isinstance(a, (tuple, LoggedIn)) for a in actions) == 1
    return actions[-1]


def test_xoauth2_response_matches_microsoft_example() -> None:
    """The base64 line sent upstream is Microsoft's documented example, byte for byte."""
    login = Pop3UpstreamLogin(MAILBOX, TOKEN)
    assert login.receive_data(O365_GREETING) == [Send(AUTH)]
    assert login.receive_data(b"+ \r\n") == [Send(RESPONSE + b"\r\n")]
    assert login.receive_data(b"+OK User successfully authenticated.\r\n") == [LoggedIn()]


def test_nothing_sent_before_greeting() -> None:
    """The login waits for the whole greeting line before it says anything."""
    login = Pop3UpstreamLogin(MAILBOX, TOKEN)
    assert login.receive_data(b"+OK Dovecot") == []
    assert login.receive_data(b" ready.\r\n") == [Send(AUTH)]


SUCCESSES = [
    pytest.param(O365_GREETING + b"+ \r\n+OK User successfully authenticated.\r\n", id="o365"),
    pytest.param(
        O365_GREETING + b"+\r\n+OK User successfully authenticated.\r\n", id="o365-bare-plus"
    ),
    pytest.param(DOVECOT_GREETING + b"+ \r\n+OK Logged in.\r\n", id="dovecot"),
    pytest.param(DOVECOT_GREETING + b"+ \n+OK Logged in.\n", id="bare-lf"),
]


@pytest.mark.parametrize("transcript", SUCCESSES)
def test_success(transcript: bytes) -> None:
    """AUTH XOAUTH2, the base64 line after the "+", then +OK means logged in."""
    assert sign_in([transcript]) == ([Send(AUTH + RESPONSE + b"\r\n"), LoggedIn()], b"")


def test_bytes_after_login_belong_to_the_client() -> None:
    """Whatever the server sends after its +OK is kept for the relay, not parsed."""
    actions, left = sign_in([DOVECOT_GREETING + b"+ \r\n+OK Logged in.\r\n+OK 2 320\r\n"])
    assert actions[-1] == LoggedIn()
    assert left == b"+OK 2 320\r\n"
    login = Pop3UpstreamLogin(MAILBOX, TOKEN)
    login.receive_data(DOVECOT_GREETING + b"+ \r\n+OK Logged in.\r\n")
    assert login.receive_data(b"-ERR later\r\n") == []
    assert login.take_unparsed() == b"-ERR later\r\n"


FAILURES = [
    pytest.param(
        O365_GREETING
        + b"+ \r\n-ERR Authentication failure: unknown user name or bad password.\r\n",
        Send(AUTH + RESPONSE + b"\r\n"),
        UpstreamRejected,
        "Authentication failure: unknown user name or bad password.",
        id="o365-rejected",
    ),
    pytest.param(
        DOVECOT_GREETING + b"+ \r\n" + DOVECOT_REPORT + b"-ERR [AUTH] Authentication failed.\r\n",
        Send(AUTH + RESPONSE + b"\r\n\r\n"),
        UpstreamRejected,
        "[AUTH] Authentication failed.",
        id="dovecot-rejected-after-error-report",
    ),
    pytest.param(
        DOVECOT_GREETING + b"-ERR Unsupported authentication mechanism.\r\n",
        Send(AUTH),
        UpstreamRejected,
        "Unsupported authentication mechanism.",
        id="mechanism-refused",
    ),
    pytest.param(
        O365_GREETING + b"+ \r\n-ERR [SYS/TEMP] Server busy.\r\n",
        Send(AUTH + RESPONSE + b"\r\n"),
        UpstreamUnavailable,
        "[SYS/TEMP] Server busy.",
        id="sys-temp",
    ),
    pytest.param(
        O365_GREETING + b"+ \r\n-ERR [IN-USE] Mailbox locked.\r\n",
        Send(AUTH + RESPONSE + b"\r\n"),
        UpstreamUnavailable,
        "[IN-USE] Mailbox locked.",
        id="in-use",
    ),
    pytest.param(
        O365_GREETING
        + b"+ \r\n-ERR Request is throttled. Suggested Backoff Time: 2000 milliseconds\r\n",
        Send(AUTH + RESPONSE + b"\r\n"),
        Throttled,
        "Request is throttled.",
        id="throttled",
    ),
    pytest.param(
        O365_GREETING + b"-ERR [SYS/TEMP] Too many connections.\r\n",
        Send(AUTH),
        UpstreamUnavailable,
        "[SYS/TEMP] Too many connections.",
        id="throttled-before-response",
    ),
    pytest.param(
        b"-ERR Server shutting down.\r\n",
        None,
        UpstreamUnavailable,
        "Server shutting down.",
        id="error-greeting",
    ),
    pytest.param(
        b"* OK IMAP4rev1 ready\r\n",
        None,
        UpstreamUnavailable,
        "* OK IMAP4rev1 ready",
        id="not-a-pop3-server",
    ),
    pytest.param(
        DOVECOT_GREETING + b"+OK what?\r\n",
        Send(AUTH),
        UpstreamUnavailable,
        "what?",
        id="ok-instead-of-continuation",
    ),
    pytest.param(
        DOVECOT_GREETING + b"+ \r\n" + DOVECOT_REPORT + b"+ again\r\n",
        Send(AUTH + RESPONSE + b"\r\n\r\n"),
        UpstreamUnavailable,
        "+ again",
        id="second-challenge",
    ),
    pytest.param(
        b"+OK " + b"x" * 9000 + b"\r\n",
        None,
        UpstreamUnavailable,
        "longer than 8192 bytes",
        id="overlong-line",
    ),
]


@pytest.mark.parametrize("transcript, sent, error_class, server_text", FAILURES)
def test_failure(
    transcript: bytes, sent: Send | None, error_class: type[ProxyError], server_text: str
) -> None:
    """Each refusal closes the connection and becomes one temporary LoginRefused naming the
    server's own text."""
    actions, _ = sign_in([transcript])
    assert actions[:-1] == [*([sent] if sent else []), Close()]
    cls, message = refused(actions)
    assert cls is error_class
    assert error_class.kind is FailureKind.TEMPORARY
    assert server_text in message


def test_refusal_is_final() -> None:
    """After a refusal nothing more is parsed or sent, and nothing is kept."""
    login = Pop3UpstreamLogin(MAILBOX, TOKEN)
    closing, refusal = login.receive_data(b"-ERR no\r\n")
    assert closing == Close() and isinstance(refusal, LoginRefused)
    assert login.phase is SignInPhase.REFUSED
    assert login.receive_data(b"+OK\r\n+ \r\n") == []
    assert login.take_unparsed() == b""


def test_refusal_never_contains_credentials() -> None:
    """A server that echoes the credentials cannot leak them into the error message."""
    transcript = (
        O365_GREETING
        + b"+ \r\n-ERR bad "
        + RESPONSE
        + b" token "
        + TOKEN.encode()
        + b" \r\n0d0a\r\n"
    )
    actions, _ = sign_in([transcript])
    _, message = refused(actions)
    assert TOKEN not in message and RESPONSE.decode() not in message
    assert "XOAUTH2" not in message and "\r" not in message and "\n" not in message
    assert "bad [redacted] token [redacted]" in message


def test_server_text_is_one_line_and_bounded() -> None:
    """Control characters in the server's text are removed and long text is cut."""
    actions, _ = sign_in([DOVECOT_GREETING + b"-ERR a\x00b\x1bc" + b"y" * 1000 + b"\r\n"])
    _, message = refused(actions)
    assert "a b c" in message and "..." in message and len(message) < 400
    assert all(ord(c) >= 0x20 for c in message)


ALL_TRANSCRIPTS = [p.values[0] for p in SUCCESSES + FAILURES] + [
    DOVECOT_GREETING + b"+ \r\n+OK Logged in.\r\n+OK 2 320\r\n1 120\r\n.\r\n",
]


@pytest.mark.parametrize("transcript", ALL_TRANSCRIPTS)
def test_byte_by_byte(transcript: bytes) -> None:
    """Feeding the server's bytes one at a time gives the same result as one chunk."""
    single = sign_in([transcript[i : i + 1] for i in range(len(transcript))])
    assert single == sign_in([transcript])


@settings(max_examples=300, deadline=None)
@given(
    transcript=st.sampled_from(ALL_TRANSCRIPTS), cuts=st.lists(st.integers(min_value=0), max_size=8)
)
def test_random_splits(transcript: bytes, cuts: list[int]) -> None:
    """Any split of the server's bytes gives the same result as one chunk."""
    chunks = split(transcript, cuts)
    assert sign_in(chunks) == sign_in([transcript])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=60), max_size=10))
def test_arbitrary_server_bytes_are_safe(chunks: list[bytes]) -> None:
    """Arbitrary server bytes never raise and give at most one verdict, the last action."""
    login = Pop3UpstreamLogin(MAILBOX, TOKEN, max_line=100)
    actions: list[object] = []
    for chunk in chunks:
        actions += login.receive_data(chunk)
    verdicts = [a for a in actions if isinstance(a, (LoggedIn, LoginRefused))]
    assert len(verdicts) <= 1
    assert not verdicts or actions[-1] is verdicts[0]
    for action in actions:
        if isinstance(action, LoginRefused):
            assert TOKEN not in action.error.message
