"""The IMAP XOAUTH2 sign-in: server bytes in, client bytes and a verdict out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.actions import Close, LoggedIn, LoginRefused, Send, SignInPhase
from proxy.errors import FailureKind, Throttled, UpstreamRejected, UpstreamUnavailable
from proxy.imap.upstream import ImapUpstreamLogin
from tests.support.playbook import merged as outcome
from tests.support.playbook import split

# Microsoft's worked example (PROTOCOL-NOTES.md).
MAILBOX = "test@contoso.onmicrosoft.com"
TOKEN = "EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA"
RESPONSE = (
    b"dXNlcj10ZXN0QGNvbnRvc28ub25taWNyb3NvZnQuY29tAWF1dGg9QmVhcmVyIEV3QkFBbDNCQUFVRkZwVUFvN0oz"
    b"VmUwYmpMQldaV0NjbFJDM0VvQUEBAQ=="
)

O365_GREETING = (
    b"* OK The Microsoft Exchange IMAP4 service is ready. "
    b"[TQBXADQAUABSADAAMQBDAEEAMAAwADEANQAuAG4AYQBtAHAAcgBkADAAMQAuAHAAcgBvAGQALgBvAHUAdABsAG8A"
    b"bwBrAC4AYwBvAG0A]\r\n"
)
O365_PRE = (
    "IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS ID UNSELECT CHILDREN IDLE NAMESPACE "
    "LITERAL+"
)
O365_POST = (
    "IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS MOVE ID UNSELECT CLIENTACCESSRULES "
    "CLIENTNETWORKPRESENCELOCATION BACKENDAUTHENTICATE CHILDREN IDLE NAMESPACE LITERAL+"
)
O365_CAPABILITY = b"* CAPABILITY " + O365_PRE.encode() + b"\r\nX1 OK CAPABILITY completed.\r\n"
O365_POST_CAPABILITY = (
    b"* CAPABILITY " + O365_POST.encode() + b"\r\nX3 OK CAPABILITY completed.\r\n"
)
DOVECOT_CAPS = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN AUTH=LOGIN "
    "AUTH=XOAUTH2 AUTH=OAUTHBEARER"
)
DOVECOT_GREETING = b"* OK [CAPABILITY " + DOVECOT_CAPS.encode() + b"] Dovecot (Debian) ready.\r\n"
DOVECOT_POST = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES "
    "MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED "
    "I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS "
    "BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY LITERAL+ NOTIFY SPECIAL-USE"
)
DOVECOT_REPORT = b"+ eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0=\r\n"
NO_SASL_IR_GREETING = b"* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2 IDLE] ready\r\n"

SEND_CAPABILITY_1 = Send(b"X1 CAPABILITY\r\n")
SEND_AUTH_IR_1 = Send(b"X1 AUTHENTICATE XOAUTH2 " + RESPONSE + b"\r\n")
SEND_AUTH_IR_2 = Send(b"X2 AUTHENTICATE XOAUTH2 " + RESPONSE + b"\r\n")
SEND_AUTH_1 = Send(b"X1 AUTHENTICATE XOAUTH2\r\n")
SEND_TOKEN = Send(RESPONSE + b"\r\n")
SEND_EMPTY = Send(b"\r\n")
CLOSE = Close()




def sign_in(chunks: Sequence[bytes], mailbox: str = MAILBOX) -> tuple[list[object], bytes | None]:
    """The outcome and the leftover bytes (None after a refusal: the connection closes then)."""
    login = ImapUpstreamLogin(mailbox, TOKEN)
    actions: list[object] = []
    for chunk in chunks:
        actions += login.receive_data(chunk)
    leftover = login.take_unparsed()
    return outcome(actions), None if CLOSE in actions else leftover


def expect(expected: list[object], leftover: bytes) -> tuple[list[object], bytes | None]:
    return outcome(expected), None if CLOSE in expected else leftover


def refusal(actions: list[object]) -> tuple[type, str]:
    """The (error class, message) pair that ends an outcome list, after the Close."""
    assert actions[-2] == CLOSE
    item = actions[-1]
    assert isinstance(item, tuple)
    error_class, message = item
    assert isinstance(error_class, type) and isinstance(message, str)
    return error_class, message


def rejected(text: str) -> tuple[type, str]:
    return (UpstreamRejected, f"The mail server refused the access token ({text})")


WRONG_MAILBOX = (
    UpstreamRejected,
    "Office 365 accepted the token but not for this mailbox: check the account's mailbox and "
    "its permissions (Add-MailboxPermission for app-only access)",
)

# (server bytes, expected merged actions, expected leftover)
TRANSCRIPTS = [
    pytest.param(
        O365_GREETING
        + O365_CAPABILITY
        + b"X2 OK AUTHENTICATE completed.\r\n"
        + O365_POST_CAPABILITY,
        [
            SEND_CAPABILITY_1,
            SEND_AUTH_IR_2,
            Send(b"X3 CAPABILITY\r\n"),
            LoggedIn(tuple(O365_POST.split())),
        ],
        b"",
        id="o365-success",
    ),
    pytest.param(
        O365_GREETING + O365_CAPABILITY + b"X2 NO AUTHENTICATE failed.\r\n",
        [SEND_CAPABILITY_1, SEND_AUTH_IR_2, CLOSE, rejected("AUTHENTICATE failed.")],
        b"",
        id="o365-refused",
    ),
    pytest.param(
        O365_GREETING
        + O365_CAPABILITY
        + b"X2 BAD User is authenticated but not connected.\r\n* BYE Connection closed. 14\r\n",
        [SEND_CAPABILITY_1, SEND_AUTH_IR_2, CLOSE, WRONG_MAILBOX],
        b"",
        id="o365-wrong-mailbox",
    ),
    pytest.param(
        O365_GREETING
        + O365_CAPABILITY
        + b"X2 NO Request is throttled. Suggested Backoff Time: 2000 milliseconds\r\n",
        [
            SEND_CAPABILITY_1,
            SEND_AUTH_IR_2,
            CLOSE,
            (
                Throttled,
                "Office 365 is throttling this mailbox, try again later: Request is throttled. "
                "Suggested Backoff Time: 2000 milliseconds",
            ),
        ],
        b"",
        id="o365-throttled-no",
    ),
    pytest.param(
        O365_GREETING
        + O365_CAPABILITY
        + b"X2 BAD Request is throttled. Suggested Backoff Time: 50 milliseconds\r\n",
        [
            SEND_CAPABILITY_1,
            SEND_AUTH_IR_2,
            CLOSE,
            (
                Throttled,
                "Office 365 is throttling this mailbox, try again later: Request is throttled. "
                "Suggested Backoff Time: 50 milliseconds",
            ),
        ],
        b"",
        id="o365-throttled-bad",
    ),
    pytest.param(
        DOVECOT_GREETING + b"X1 OK [CAPABILITY " + DOVECOT_POST.encode() + b"] Logged in\r\n",
        [SEND_AUTH_IR_1, LoggedIn(tuple(DOVECOT_POST.split()))],
        b"",
        id="dovecot-success",
    ),
    pytest.param(
        DOVECOT_GREETING
        + DOVECOT_REPORT
        + b"X1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
        [
            SEND_AUTH_IR_1,
            SEND_EMPTY,
            CLOSE,
            rejected("[AUTHENTICATIONFAILED] Authentication failed."),
        ],
        b"",
        id="dovecot-refused-with-report",
    ),
    pytest.param(
        NO_SASL_IR_GREETING
        + b"+ \r\nX1 OK Logged in\r\n* CAPABILITY IMAP4rev1 IDLE\r\nX2 OK done\r\n",
        [SEND_AUTH_1, SEND_TOKEN, Send(b"X2 CAPABILITY\r\n"), LoggedIn(("IMAP4rev1", "IDLE"))],
        b"",
        id="two-step-success",
    ),
    pytest.param(
        NO_SASL_IR_GREETING + b"+\r\nX1 OK [CAPABILITY IMAP4rev1] Logged in\r\n",
        [SEND_AUTH_1, SEND_TOKEN, LoggedIn(("IMAP4rev1",))],
        b"",
        id="two-step-bare-plus",
    ),
    pytest.param(
        NO_SASL_IR_GREETING + b"+ \r\n" + DOVECOT_REPORT + b"X1 NO [AUTHENTICATIONFAILED] no\r\n",
        [SEND_AUTH_1, SEND_TOKEN, SEND_EMPTY, CLOSE, rejected("[AUTHENTICATIONFAILED] no")],
        b"",
        id="two-step-refused-with-report",
    ),
    pytest.param(
        b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready\r\n",
        [CLOSE, (UpstreamUnavailable, "The mail server does not offer AUTH=XOAUTH2")],
        b"",
        id="no-xoauth2-in-greeting",
    ),
    pytest.param(
        O365_GREETING + b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\nX1 OK done\r\n",
        [
            SEND_CAPABILITY_1,
            CLOSE,
            (UpstreamUnavailable, "The mail server does not offer AUTH=XOAUTH2"),
        ],
        b"",
        id="no-xoauth2-in-capability",
    ),
    pytest.param(
        b"* OK [CAPABILITY imap4rev1 sasl-ir auth=xoauth2] ready\r\nX1 OK [CAPABILITY IMAP4rev1] in\r\n",
        [SEND_AUTH_IR_1, LoggedIn(("IMAP4rev1",))],
        b"",
        id="capabilities-any-case",
    ),
    pytest.param(
        b"* BYE Too many connections from your address\r\n",
        [
            CLOSE,
            (
                UpstreamUnavailable,
                "The mail server is not available: Too many connections from your address",
            ),
        ],
        b"",
        id="bye-greeting",
    ),
    pytest.param(
        b"* PREAUTH [CAPABILITY IMAP4rev1] logged in as nobody\r\n",
        [
            CLOSE,
            (
                UpstreamUnavailable,
                "The mail server is not available: [CAPABILITY IMAP4rev1] logged in as nobody",
            ),
        ],
        b"",
        id="preauth-greeting",
    ),
    pytest.param(
        b"+OK POP3 server ready\r\n",
        [CLOSE, (UpstreamUnavailable, "The mail server did not greet as an IMAP server")],
        b"",
        id="not-imap",
    ),
    pytest.param(
        O365_GREETING + b"X1 NO CAPABILITY not now\r\n",
        [
            SEND_CAPABILITY_1,
            CLOSE,
            (UpstreamUnavailable, "The mail server refused CAPABILITY: CAPABILITY not now"),
        ],
        b"",
        id="capability-refused",
    ),
    pytest.param(
        O365_GREETING + b"+ go ahead\r\n",
        [
            SEND_CAPABILITY_1,
            CLOSE,
            (UpstreamUnavailable, "The mail server sent an unexpected continuation"),
        ],
        b"",
        id="unexpected-continuation",
    ),
    pytest.param(
        DOVECOT_GREETING + b"* BYE Server shutting down.\r\n",
        [
            SEND_AUTH_IR_1,
            CLOSE,
            (UpstreamUnavailable, "The mail server closed the session: Server shutting down."),
        ],
        b"",
        id="bye-during-authenticate",
    ),
    pytest.param(
        DOVECOT_GREETING + b"X1 NO [UNAVAILABLE] Temporary authentication failure.\r\n",
        [
            SEND_AUTH_IR_1,
            CLOSE,
            (
                UpstreamUnavailable,
                "The mail server is temporarily unavailable: [UNAVAILABLE] Temporary "
                "authentication failure.",
            ),
        ],
        b"",
        id="temporary-code",
    ),
    pytest.param(
        DOVECOT_GREETING
        + b"* OK [ALERT] hello\r\nX0 NO other tag\r\n* 3 EXISTS\r\nX1 OK [CAPABILITY IMAP4rev1] in\r\n",
        [SEND_AUTH_IR_1, LoggedIn(("IMAP4rev1",))],
        b"",
        id="unrelated-lines-ignored",
    ),
    pytest.param(
        DOVECOT_GREETING.replace(b"\r\n", b"\n") + b"X1 OK [CAPABILITY IMAP4rev1] in\n",
        [SEND_AUTH_IR_1, LoggedIn(("IMAP4rev1",))],
        b"",
        id="bare-lf",
    ),
    pytest.param(
        DOVECOT_GREETING
        + b"X1 OK [CAPABILITY IMAP4rev1] Logged in\r\n* 1 EXISTS\r\n* OK [UIDVALIDITY 1]\r\nX",
        [SEND_AUTH_IR_1, LoggedIn(("IMAP4rev1",))],
        b"* 1 EXISTS\r\n* OK [UIDVALIDITY 1]\r\nX",
        id="bytes-after-login-kept",
    ),
    pytest.param(
        O365_GREETING
        + O365_CAPABILITY
        + b"X2 OK AUTHENTICATE completed.\r\n"
        + O365_POST_CAPABILITY
        + b"A1 OK not ours\r\n",
        [
            SEND_CAPABILITY_1,
            SEND_AUTH_IR_2,
            Send(b"X3 CAPABILITY\r\n"),
            LoggedIn(tuple(O365_POST.split())),
        ],
        b"A1 OK not ours\r\n",
        id="o365-bytes-after-login-kept",
    ),
    pytest.param(
        b"* OK " + b"x" * 70000 + b"\r\n",
        [CLOSE, (UpstreamUnavailable, "The mail server sent an overlong line")],
        b"",
        id="overlong-line",
    ),
]


@pytest.mark.parametrize("transcript, expected, leftover", TRANSCRIPTS)
def test_transcript(transcript: bytes, expected: list[object], leftover: bytes) -> None:
    """Each server transcript gives exactly these client lines, this verdict and leftover bytes."""
    assert sign_in([transcript]) == expect(expected, leftover)


@pytest.mark.parametrize("transcript, expected, leftover", TRANSCRIPTS)
def test_transcript_byte_by_byte(
    transcript: bytes, expected: list[object], leftover: bytes
) -> None:
    """Feeding one byte at a time gives the same result as one chunk."""
    chunks = [transcript[i : i + 1] for i in range(len(transcript))]
    if len(chunks) > 5000:
        chunks = [transcript[i : i + 997] for i in range(0, len(transcript), 997)]
    assert sign_in(chunks) == expect(expected, leftover)


@settings(max_examples=300, deadline=None)
@given(case=st.sampled_from(TRANSCRIPTS), cuts=st.lists(st.integers(min_value=0), max_size=8))
def test_transcript_random_splits(case: Any, cuts: list[int]) -> None:
    """Any split of the server's bytes gives the same result as one chunk."""
    data, expected, leftover = case.values
    chunks = split(data, cuts)
    assert sign_in(chunks) == expect(expected, leftover)


@pytest.mark.parametrize("transcript, expected, leftover", TRANSCRIPTS)
def test_refusals_are_temporary_and_keep_the_token_secret(
    transcript: bytes, expected: list[object], leftover: bytes
) -> None:
    """Every refusal is a temporary failure, and no error message carries the token or the XOAUTH2 string."""
    login = ImapUpstreamLogin(MAILBOX, TOKEN)
    for action in login.receive_data(transcript):
        if isinstance(action, LoginRefused):
            assert action.error.kind is FailureKind.TEMPORARY
            text = str(action.error) + repr(action.error)
            assert TOKEN not in text
            assert RESPONSE.decode() not in text and RESPONSE.decode()[:20] not in text


def test_xoauth2_line_matches_microsoft_example() -> None:
    """The AUTHENTICATE line carries Microsoft's documented example, byte for byte."""
    login = ImapUpstreamLogin(MAILBOX, TOKEN)
    assert login.receive_data(DOVECOT_GREETING) == [SEND_AUTH_IR_1]


def test_nothing_sent_before_greeting() -> None:
    """The login waits for the whole greeting line before it says anything."""
    login = ImapUpstreamLogin(MAILBOX, TOKEN)
    assert login.receive_data(DOVECOT_GREETING[:-1]) == []
    assert login.receive_data(b"\n") == [SEND_AUTH_IR_1]


def test_verdict_is_final() -> None:
    """After LoginRefused, further server bytes produce nothing and are dropped (the connection
    closes); after LoggedIn they produce nothing and stay for the client."""
    login = ImapUpstreamLogin(MAILBOX, TOKEN)
    login.receive_data(b"* BYE go away\r\n")
    assert login.phase is SignInPhase.REFUSED
    assert login.receive_data(b"* OK [CAPABILITY AUTH=XOAUTH2 SASL-IR] hi\r\n") == []
    assert login.take_unparsed() == b""
    login = ImapUpstreamLogin(MAILBOX, TOKEN)
    login.receive_data(b"* OK [CAPABILITY AUTH=XOAUTH2 SASL-IR] hi\r\nX1 OK [CAPABILITY IMAP4rev1] in\r\n")
    assert login.phase is SignInPhase.LOGGED_IN
    assert login.receive_data(b"* 1 EXISTS\r\n") == []
    assert login.take_unparsed() == b"* 1 EXISTS\r\n"


def test_wrong_mailbox_message_mentions_the_mailbox() -> None:
    """ "Authenticated but not connected" tells the administrator to check the mailbox and its permissions."""
    actions, _ = sign_in(
        [DOVECOT_GREETING + b"X1 BAD User is authenticated but not connected.\r\n"],
        mailbox="shared@contoso.com",
    )
    error_class, message = refusal(actions)
    assert error_class is UpstreamRejected
    assert "mailbox" in message and "Add-MailboxPermission" in message


def test_server_text_is_one_line_and_bounded() -> None:
    """Server text quoted in an error is whitespace-collapsed and at most 200 characters."""
    actions, _ = sign_in([DOVECOT_GREETING + b"X1 NO  a\t b " + b"y" * 500 + b"\r\n"])
    _, message = refusal(actions)
    assert "a b yyy" in message and "\t" not in message
    assert len(message) < 300


def test_post_login_capability_refusal_names_the_command() -> None:
    """A NO to the CAPABILITY sent after login names the command CAPABILITY, not an internal step."""
    actions, _ = sign_in(
        [O365_GREETING + O365_CAPABILITY + b"X2 OK AUTHENTICATE completed.\r\nX3 NO busy\r\n"]
    )
    _, message = refusal(actions)
    assert "CAPABILITY-AFTER" not in message and "CAPABILITY" in message


SERVER_FRAGMENTS = [
    O365_GREETING,
    DOVECOT_GREETING,
    NO_SASL_IR_GREETING,
    DOVECOT_REPORT,
    O365_CAPABILITY,
    b"+ \r\n",
    b"X1 OK done\r\n",
    b"X2 OK done\r\n",
    b"X1 NO no\r\n",
    b"* BYE bye\r\n",
    b"* CAPABILITY IMAP4rev1\r\n",
    b"\r\n",
    b"\n",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=40), st.sampled_from(SERVER_FRAGMENTS)), max_size=12))
def test_arbitrary_server_bytes_are_safe(chunks: list[bytes]) -> None:
    """Any server bytes: no exception, at most one verdict, the token only ever sent once and never in an error."""
    login = ImapUpstreamLogin(MAILBOX, TOKEN)
    actions: list[object] = []
    for chunk in chunks:
        actions += login.receive_data(chunk)
    verdicts = [a for a in actions if isinstance(a, (LoggedIn, LoginRefused))]
    assert len(verdicts) <= 1
    if verdicts:
        index = actions.index(verdicts[0])
        tail = actions[index + 1 :]
        assert tail == []  # the verdict is the last action, after the Close of a refusal
        if isinstance(verdicts[0], LoginRefused):
            assert actions[index - 1] == CLOSE
    sent = [a.data for a in actions if isinstance(a, Send)]
    assert sum(RESPONSE in data for data in sent) <= 1
    for verdict in verdicts:
        if isinstance(verdict, LoginRefused):
            assert TOKEN not in verdict.error.message
            assert verdict.error.kind is FailureKind.TEMPORARY
