"""The IMAP front session: bytes from the client in, actions out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.actions import Close, LoggedIn, Login, Relay, Send, StartTLS
from proxy.errors import (
    NeedsReauthorisation,
    ProxyError,
    Throttled,
    TokenEndpointUnavailable,
    WrongPassword,
)
from proxy.imap.session import ImapSession
from tests.support.playbook import b64, merged, split

Outcome = LoggedIn | ProxyError


def converse(
    chunks: Sequence[bytes], outcomes: Sequence[Outcome] = (), **options: Any
) -> tuple[list[object], bytes | None]:
    """Feed `chunks` after the greeting; answer each Login with the next outcome at once.

    Returns the merged actions after the greeting and what is left for the relay (None once
    the session closed: nothing is relayed then, so the leftover does not matter).
    """
    session = ImapSession(**options)
    session.start()
    pending = list(outcomes)
    actions: list[object] = []

    def record(new: list[Any]) -> None:
        actions.extend(new)
        while new and isinstance(new[-1], Login) and pending:
            outcome = pending.pop(0)
            if isinstance(outcome, LoggedIn):
                new = session.login_succeeded(outcome)
            else:
                new = session.login_failed(outcome)
            actions.extend(new)

    for chunk in chunks:
        record(session.receive_data(chunk))
    unparsed = session.take_unparsed()
    return merged(actions), None if Close() in actions else unparsed


def line(text: str) -> Send:
    return Send(text.encode() + b"\r\n")


CAPABILITIES = "IMAP4rev1 SASL-IR LITERAL+ ID AUTH=PLAIN AUTH=LOGIN"
GREETING = line(f"* OK [CAPABILITY {CAPABILITIES}] xoauth2-proxy ready")
CONTINUE_LITERAL = line("+ Ready for literal data")
PLAIN_PROMPT = Send(b"+ \r\n")
USERNAME_PROMPT = Send(b"+ VXNlcm5hbWU6\r\n")
PASSWORD_PROMPT = Send(b"+ UGFzc3dvcmQ6\r\n")
WRONG = WrongPassword()
REAUTHORISE = NeedsReauthorisation("alice")
UNREACHABLE = TokenEndpointUnavailable()
THROTTLED = Throttled()
O365_CAPABILITIES = (
    "IMAP4",
    "IMAP4rev1",
    "AUTH=PLAIN",
    "AUTH=XOAUTH2",
    "SASL-IR",
    "UIDPLUS",
    "MOVE",
    "ID",
    "UNSELECT",
    "CLIENTACCESSRULES",
    "CLIENTNETWORKPRESENCELOCATION",
    "BACKENDAUTHENTICATE",
    "CHILDREN",
    "IDLE",
    "NAMESPACE",
    "LITERAL+",
)
O365_VISIBLE = (
    "IMAP4 IMAP4rev1 UIDPLUS MOVE ID UNSELECT CLIENTACCESSRULES CLIENTNETWORKPRESENCELOCATION "
    "BACKENDAUTHENTICATE CHILDREN IDLE NAMESPACE LITERAL+"
)
PLAIN_ALICE = b64(b"\0alice\0s3cret")

# (input, outcomes for successive Logins, expected merged actions, expected unparsed)
CONVERSATIONS = [
    pytest.param(
        b"a1 CAPABILITY\r\n",
        [],
        [line(f"* CAPABILITY {CAPABILITIES}"), line("a1 OK CAPABILITY completed")],
        b"",
        id="capability",
    ),
    pytest.param(b"a1 noop\r\n", [], [line("a1 OK NOOP completed")], b"", id="noop-any-case"),
    pytest.param(
        b'a1 ID ("name" "Thunderbird" "version" "115.0")\r\n',
        [],
        [line('* ID ("name" "xoauth2-proxy")'), line("a1 OK ID completed")],
        b"",
        id="id",
    ),
    pytest.param(
        b"a1 ID NIL\r\n",
        [],
        [line('* ID ("name" "xoauth2-proxy")'), line("a1 OK ID completed")],
        b"",
        id="id-nil",
    ),
    pytest.param(
        b"a1 LOGOUT\r\na2 LOGIN alice s3cret\r\n",
        [],
        [line("* BYE Logging out"), line("a1 OK LOGOUT completed"), Close()],
        None,
        id="logout-closes-and-reads-no-more",
    ),
    pytest.param(
        b"a1 LOGIN alice s3cret\r\n", [], [Login("alice", "s3cret")], b"", id="login-atoms"
    ),
    pytest.param(
        b'a1 LOGIN "alice@contoso.com" "pass \\"word\\\\"\r\n',
        [],
        [Login("alice@contoso.com", 'pass "word\\')],
        b"",
        id="login-quoted-with-escapes",
    ),
    pytest.param(
        b'a1 LOGIN {5}\r\nalice {9}\r\npa ss\r\n"x\r\n',
        [],
        [CONTINUE_LITERAL, CONTINUE_LITERAL, Login("alice", 'pa ss\r\n"x')],
        b"",
        id="login-synchronising-literals",
    ),
    pytest.param(
        b"a1 LOGIN alice {6+}\r\ns3cret\r\n",
        [],
        [Login("alice", "s3cret")],
        b"",
        id="login-non-synchronising-literal",
    ),
    pytest.param(
        'a1 LOGIN "jürgen" "pässwort"\r\n'.encode(),
        [],
        [Login("jürgen", "pässwort")],
        b"",
        id="login-utf8",
    ),
    pytest.param(
        b"a1 LOGIN alice\r\n",
        [],
        [line("a1 BAD LOGIN takes a user name and a password")],
        b"",
        id="login-without-password",
    ),
    pytest.param(
        b"a1 LOGIN alice pass word\r\n",
        [],
        [line("a1 BAD LOGIN takes a user name and a password")],
        b"",
        id="login-three-arguments",
    ),
    pytest.param(
        b"a1 LOGIN alice NIL\r\n",
        [],
        [line("a1 BAD LOGIN takes a user name and a password")],
        b"",
        id="login-nil-password",
    ),
    pytest.param(
        b'a1 LOGIN "" s3cret\r\n', [], [line("a1 BAD Empty user name")], b"", id="login-empty-user"
    ),
    pytest.param(
        b"a1 LOGIN alice {6}\r\n",
        [],
        [CONTINUE_LITERAL],
        b"",
        id="login-no-login-before-literal-password",
    ),
    pytest.param(
        b"a1 LOGIN alice {70000}\r\na2 NOOP\r\n",
        [],
        [line("a1 BAD Literal too large"), line("a2 OK NOOP completed")],
        b"",
        id="login-sync-literal-too-large",
    ),
    pytest.param(
        b"a1 LOGIN alice {70000+}\r\n",
        [],
        [line("* BYE Literal too large"), Close()],
        None,
        id="login-non-sync-literal-too-large",
    ),
    pytest.param(
        b'a1 LOGIN "alice s3cret\r\n',
        [],
        [line("a1 BAD Unterminated quoted string")],
        b"",
        id="login-parse-error",
    ),
    pytest.param(
        b"a1 AUTHENTICATE PLAIN " + PLAIN_ALICE + b"\r\n",
        [],
        [Login("alice", "s3cret")],
        b"",
        id="plain-sasl-ir",
    ),
    pytest.param(
        b"a1 authenticate plain\r\n" + PLAIN_ALICE + b"\r\n",
        [],
        [PLAIN_PROMPT, Login("alice", "s3cret")],
        b"",
        id="plain-two-step",
    ),
    pytest.param(
        b"a1 AUTHENTICATE PLAIN " + b64(b"alice\0alice\0pw") + b"\r\n",
        [],
        [Login("alice", "pw")],
        b"",
        id="plain-authzid-same-user",
    ),
    pytest.param(
        b"a1 AUTHENTICATE PLAIN " + b64(b"bob\0alice\0pw") + b"\r\n",
        [],
        [line("a1 BAD Authorisation identity must be empty or equal the user name")],
        b"",
        id="plain-other-authzid",
    ),
    pytest.param(
        b"a1 AUTHENTICATE PLAIN =\r\n",
        [],
        [line("a1 BAD Invalid PLAIN response")],
        b"",
        id="plain-empty-initial-response",
    ),
    pytest.param(
        b"a1 AUTHENTICATE PLAIN\r\n=\r\n",
        [],
        [PLAIN_PROMPT, line("a1 BAD Invalid PLAIN response")],
        b"",
        id="plain-two-step-equals",
    ),
    pytest.param(
        b"a1 AUTHENTICATE PLAIN\r\n",
        [],
        [PLAIN_PROMPT],
        b"",
        id="plain-no-login-before-response",
    ),
    pytest.param(
        b"a1 AUTHENTICATE PLAIN {20+}\r\n" + PLAIN_ALICE + b"\r\n",
        [],
        [Login("alice", "s3cret")],
        b"",
        id="plain-initial-response-as-literal",
    ),
    pytest.param(
        b"a1 AUTHENTICATE PLAIN\r\n!!notbase64!!\r\na2 NOOP\r\n",
        [],
        [PLAIN_PROMPT, line("a1 BAD Invalid base64 data"), line("a2 OK NOOP completed")],
        b"",
        id="plain-bad-base64-then-usable",
    ),
    pytest.param(
        b"a1 AUTHENTICATE PLAIN @@@\r\n",
        [],
        [line("a1 BAD Invalid base64 data")],
        b"",
        id="plain-bad-base64-initial-response",
    ),
    pytest.param(
        b"a1 AUTHENTICATE PLAIN\r\n*\r\na2 NOOP\r\n",
        [],
        [PLAIN_PROMPT, line("a1 BAD AUTHENTICATE cancelled"), line("a2 OK NOOP completed")],
        b"",
        id="plain-cancel-then-usable",
    ),
    pytest.param(
        b"a1 AUTHENTICATE LOGIN\r\n" + b64(b"alice") + b"\r\n" + b64(b"s3cret") + b"\r\n",
        [],
        [USERNAME_PROMPT, PASSWORD_PROMPT, Login("alice", "s3cret")],
        b"",
        id="login-mechanism",
    ),
    pytest.param(
        b"a1 AUTHENTICATE LOGIN " + b64(b"alice") + b"\r\n" + b64(b"s3cret") + b"\r\n",
        [],
        [PASSWORD_PROMPT, Login("alice", "s3cret")],
        b"",
        id="login-mechanism-initial-user",
    ),
    pytest.param(
        b"a1 AUTHENTICATE LOGIN\r\n" + b64(b"alice") + b"\r\n",
        [],
        [USERNAME_PROMPT, PASSWORD_PROMPT],
        b"",
        id="login-mechanism-no-login-before-password",
    ),
    pytest.param(
        b"a1 AUTHENTICATE LOGIN\r\n*\r\n",
        [],
        [USERNAME_PROMPT, line("a1 BAD AUTHENTICATE cancelled")],
        b"",
        id="login-mechanism-cancel-user",
    ),
    pytest.param(
        b"a1 AUTHENTICATE LOGIN\r\n" + b64(b"alice") + b"\r\n*\r\na2 LOGIN bob b0bpw\r\n",
        [],
        [
            USERNAME_PROMPT,
            PASSWORD_PROMPT,
            line("a1 BAD AUTHENTICATE cancelled"),
            Login("bob", "b0bpw"),
        ],
        b"",
        id="login-mechanism-cancel-password-then-usable",
    ),
    pytest.param(
        b"a1 AUTHENTICATE LOGIN\r\n%%%\r\n",
        [],
        [USERNAME_PROMPT, line("a1 BAD Invalid base64 data")],
        b"",
        id="login-mechanism-bad-base64",
    ),
    pytest.param(
        b"a1 AUTHENTICATE XOAUTH2 " + b64(b"user=a\1auth=Bearer x\1\1") + b"\r\n",
        [],
        [line("a1 NO Unsupported authentication mechanism; use PLAIN or LOGIN")],
        b"",
        id="xoauth2-not-offered",
    ),
    pytest.param(
        b"a1 AUTHENTICATE CRAM-MD5\r\n",
        [],
        [line("a1 NO Unsupported authentication mechanism; use PLAIN or LOGIN")],
        b"",
        id="unknown-mechanism",
    ),
    pytest.param(
        b"a1 AUTHENTICATE\r\n",
        [],
        [line("a1 BAD AUTHENTICATE takes a mechanism and an optional response")],
        b"",
        id="authenticate-without-mechanism",
    ),
    pytest.param(
        b"a1 AUTHENTICATE PLAIN a b\r\n",
        [],
        [line("a1 BAD AUTHENTICATE takes a mechanism and an optional response")],
        b"",
        id="authenticate-too-many-arguments",
    ),
    pytest.param(
        b"a1 SELECT INBOX\r\na2 fetch 1:* (FLAGS)\r\na3 UID FETCH 1 BODY[]\r\na4 IDLE\r\n",
        [],
        [
            line("a1 BAD SELECT is only valid after login"),
            line("a2 BAD FETCH is only valid after login"),
            line("a3 BAD UID is only valid after login"),
            line("a4 BAD IDLE is only valid after login"),
        ],
        b"",
        id="commands-only-valid-after-login",
    ),
    pytest.param(
        b"a1 FROB\r\na2 X-LOGIN alice pw\r\n",
        [],
        [line("a1 BAD Unknown command FROB"), line("a2 BAD Unknown command X-LOGIN")],
        b"",
        id="unknown-commands",
    ),
    pytest.param(
        b"a1 STARTTLS\r\n",
        [],
        [line("a1 BAD STARTTLS is not enabled on this listener")],
        b"",
        id="starttls-not-enabled",
    ),
    pytest.param(
        b"* NOOP\r\nNOOP\r\n",
        [],
        [line("* BAD Invalid tag"), line("NOOP BAD Missing command")],
        b"",
        id="bad-tags",
    ),
    pytest.param(b"\r\n\r\na1 NOOP\r\n", [], [line("a1 OK NOOP completed")], b"", id="empty-lines"),
    pytest.param(
        b"\xff1 NOOP\r\n", [], [line("* BAD Invalid tag")], b"", id="eight-bit-tag-invalid"
    ),
    pytest.param(
        b"a1 AUTHENTICATE LOGIN =\r\n",
        [],
        [line("a1 BAD Empty user name")],
        b"",
        id="login-mechanism-empty-initial-user",
    ),
    pytest.param(
        b"a1 AUTHENTICATE LOGIN\r\n\r\na2 NOOP\r\n",
        [],
        [USERNAME_PROMPT, line("a1 BAD Empty user name"), line("a2 OK NOOP completed")],
        b"",
        id="login-mechanism-empty-user-refused-before-password",
    ),
    pytest.param(
        b"a1 LOGIN alice p1\r\na2 LOGIN alice p2\r\na3 LOGIN alice p3\r\na4 LOGIN alice p4\r\n",
        [WRONG, WRONG, WRONG, WRONG],
        [
            Login("alice", "p1"),
            line("a1 NO [AUTHENTICATIONFAILED] Wrong user name or password."),
            Login("alice", "p2"),
            line("a2 NO [AUTHENTICATIONFAILED] Wrong user name or password."),
            Login("alice", "p3"),
            line("a3 NO [AUTHENTICATIONFAILED] Wrong user name or password."),
            line("* BYE Too many failed logins"),
            Close(),
        ],
        None,
        id="third-wrong-password-closes",
    ),
    pytest.param(
        b"a1 LOGIN alice p1\r\na2 LOGIN alice p2\r\na3 LOGIN alice p3\r\na4 LOGIN alice p4\r\n",
        [WRONG, UNREACHABLE, THROTTLED, WRONG],
        [
            Login("alice", "p1"),
            line("a1 NO [AUTHENTICATIONFAILED] Wrong user name or password."),
            Login("alice", "p2"),
            line(
                "a2 NO [UNAVAILABLE] Microsoft's sign-in service could not be reached; "
                "try again later."
            ),
            Login("alice", "p3"),
            line("a3 NO [UNAVAILABLE] Too many requests; try again later."),
            Login("alice", "p4"),
            line("a4 NO [AUTHENTICATIONFAILED] Wrong user name or password."),
        ],
        b"",
        id="temporary-failures-do-not-count-as-wrong-passwords",
    ),
    pytest.param(
        b"a1 FROB\r\n" * 25,
        [],
        [line("a1 BAD Unknown command FROB")] * 20
        + [line("* BYE Too many invalid commands"), Close()],
        None,
        id="too-many-bad-commands",
    ),
    pytest.param(
        b"a1 " + b"x" * 9000 + b"\r\na2 LOGIN alice s3cret\r\n",
        [],
        [line("* BYE Line too long"), Close()],
        None,
        id="overlong-line",
    ),
    pytest.param(
        b"a1 AUTHENTICATE PLAIN\r\n" + b"A" * 9000 + b"\r\n",
        [],
        [PLAIN_PROMPT, line("* BYE Line too long"), Close()],
        None,
        id="overlong-sasl-line",
    ),
    pytest.param(
        b"a1 LOGIN alice s3cret\r\na2 SELECT INBOX\r\na3 FETCH 1 (BODY[])\r\n",
        [LoggedIn(O365_CAPABILITIES)],
        [
            Login("alice", "s3cret"),
            line(f"a1 OK [CAPABILITY {O365_VISIBLE}] LOGIN completed"),
            Relay(),
        ],
        b"a2 SELECT INBOX\r\na3 FETCH 1 (BODY[])\r\n",
        id="pipelined-commands-kept-for-relay",
    ),
    pytest.param(
        b"a1 LOGIN alice s3cret\r\na2 APPEND INBOX {5}\r\n",
        [LoggedIn(("IMAP4rev1",))],
        [Login("alice", "s3cret"), line("a1 OK [CAPABILITY IMAP4rev1] LOGIN completed"), Relay()],
        b"a2 APPEND INBOX {5}\r\n",
        id="pipelined-literal-left-to-upstream",
    ),
    pytest.param(
        b"a1 AUTHENTICATE PLAIN " + PLAIN_ALICE + b"\r\n",
        [LoggedIn(("IMAP4rev1", "STARTTLS", "LOGINDISABLED", "AUTH=XOAUTH2", "SASL-IR", "IDLE"))],
        [
            Login("alice", "s3cret"),
            line("a1 OK [CAPABILITY IMAP4rev1 IDLE] AUTHENTICATE completed"),
            Relay(),
        ],
        b"",
        id="hidden-capabilities",
    ),
    pytest.param(
        b"a1 LOGIN alice s3cret\r\n",
        [LoggedIn()],
        [Login("alice", "s3cret"), line("a1 OK LOGIN completed"), Relay()],
        b"",
        id="no-capabilities-no-code",
    ),
    pytest.param(
        b"a1 LOGIN alice wr0ng\r\n",
        [WRONG],
        [
            Login("alice", "wr0ng"),
            line("a1 NO [AUTHENTICATIONFAILED] Wrong user name or password."),
        ],
        b"",
        id="wrong-password",
    ),
    pytest.param(
        b"a1 LOGIN alice s3cret\r\n",
        [REAUTHORISE],
        [
            Login("alice", "s3cret"),
            line(
                "a1 NO [AUTHENTICATIONFAILED] Stored sign-in for alice is no longer valid; "
                "run: xoauth2-proxy account add alice"
            ),
        ],
        b"",
        id="needs-reauthorisation",
    ),
    pytest.param(
        b"a1 LOGIN alice s3cret\r\n",
        [UNREACHABLE],
        [
            Login("alice", "s3cret"),
            line(
                "a1 NO [UNAVAILABLE] Microsoft's sign-in service could not be reached; "
                "try again later."
            ),
        ],
        b"",
        id="temporary-failure",
    ),
    pytest.param(
        b"a1 AUTHENTICATE PLAIN " + PLAIN_ALICE + b"\r\n",
        [ProxyError("first line\n  second\tline")],
        [Login("alice", "s3cret"), line("a1 NO [UNAVAILABLE] first line second line")],
        b"",
        id="failure-text-one-line",
    ),
    pytest.param(
        b"a1 LOGIN alice wr0ng\r\na2 NOOP\r\na3 LOGIN alice right\r\na4 SELECT INBOX\r\n",
        [WRONG, LoggedIn(("IMAP4rev1",))],
        [
            Login("alice", "wr0ng"),
            line("a1 NO [AUTHENTICATIONFAILED] Wrong user name or password."),
            line("a2 OK NOOP completed"),
            Login("alice", "right"),
            line("a3 OK [CAPABILITY IMAP4rev1] LOGIN completed"),
            Relay(),
        ],
        b"a4 SELECT INBOX\r\n",
        id="buffered-commands-after-failure",
    ),
    pytest.param(
        b"a1 LOGIN alice s3cret\r\na2 CAPABILITY\r\n",
        [THROTTLED],
        [
            Login("alice", "s3cret"),
            line("a1 NO [UNAVAILABLE] Too many requests; try again later."),
            line(f"* CAPABILITY {CAPABILITIES}"),
            line("a2 OK CAPABILITY completed"),
        ],
        b"",
        id="throttled-then-buffered-commands",
    ),
]


@pytest.mark.parametrize("data, outcomes, expected, unparsed", CONVERSATIONS)
def test_conversation(
    data: bytes, outcomes: list[Outcome], expected: list[object], unparsed: bytes | None
) -> None:
    """Each client input gives exactly these answers, Logins and leftover bytes."""
    assert converse([data], outcomes) == (merged(expected), unparsed)


@pytest.mark.parametrize("data, outcomes, expected, unparsed", CONVERSATIONS)
def test_conversation_byte_by_byte(
    data: bytes, outcomes: list[Outcome], expected: list[object], unparsed: bytes | None
) -> None:
    """Feeding one byte at a time gives the same actions as one chunk."""
    single = converse([data[i : i + 1] for i in range(len(data))], outcomes)
    assert single == (merged(expected), unparsed)


@settings(max_examples=300, deadline=None)
@given(case=st.sampled_from(CONVERSATIONS), cuts=st.lists(st.integers(min_value=0), max_size=8))
def test_conversation_random_splits(case: Any, cuts: list[int]) -> None:
    """Any split of the input gives the same actions as one chunk."""
    data, outcomes, _, _ = case.values
    chunks = split(data, cuts)
    assert converse(chunks, outcomes) == converse([data], outcomes)


@pytest.mark.parametrize("data, outcomes, expected, unparsed", CONVERSATIONS)
def test_password_never_sent_back(
    data: bytes, outcomes: list[Outcome], expected: list[object], unparsed: bytes | None
) -> None:
    """No answer to the client contains a password it gave, in clear or in base64."""
    actions, _ = converse([data], outcomes)
    passwords = [a.password for a in actions if isinstance(a, Login)]
    sent = b"".join(a.data for a in actions if isinstance(a, Send))
    for password in passwords:
        assert password.encode() not in sent
        assert b64(password.encode()) not in sent


@pytest.mark.parametrize("data, outcomes, expected, unparsed", CONVERSATIONS)
def test_login_only_at_a_line_end(
    data: bytes, outcomes: list[Outcome], expected: list[object], unparsed: bytes | None
) -> None:
    """Fed byte by byte, a Login appears only with the LF that ends the line carrying the password."""
    session = ImapSession()
    session.start()
    for i in range(len(data)):
        actions = session.receive_data(data[i : i + 1])
        if any(isinstance(a, Login) for a in actions):
            assert data[i : i + 1] == b"\n"
            assert isinstance(actions[-1], Login)
            return


def test_greeting() -> None:
    """The greeting is an untagged OK carrying the proxy's own capabilities."""
    assert ImapSession().start() == [GREETING]


def test_capabilities_offer_no_xoauth2_and_no_starttls() -> None:
    """Before login the client is offered PLAIN and LOGIN only, never XOAUTH2 or STARTTLS."""
    assert b"XOAUTH2" not in GREETING.data and b"STARTTLS" not in GREETING.data
    assert b"LOGINDISABLED" not in GREETING.data


def test_nothing_read_while_login_pending() -> None:
    """After Login the session answers nothing until told the outcome."""
    session = ImapSession()
    assert session.receive_data(b"a1 LOGIN alice s3cret\r\n") == [Login("alice", "s3cret")]
    assert session.receive_data(b"a2 CAPABILITY\r\na3 FROB\r\n") == []
    assert session.login_succeeded(LoggedIn(("IMAP4rev1",))) == [
        line("a1 OK [CAPABILITY IMAP4rev1] LOGIN completed"),
        Relay(),
    ]
    assert session.take_unparsed() == b"a2 CAPABILITY\r\na3 FROB\r\n"


def test_relay_takes_no_more_input() -> None:
    """Once relaying, bytes fed to the session produce nothing and stay for the relay."""
    session = ImapSession()
    session.receive_data(b"a1 LOGIN alice s3cret\r\n")
    session.login_succeeded(LoggedIn())
    assert session.receive_data(b"a2 LOGOUT\r\n") == []
    assert session.take_unparsed() == b"a2 LOGOUT\r\n"


def test_closed_session_takes_no_more_input() -> None:
    """After Close the session produces nothing more."""
    session = ImapSession()
    assert session.receive_data(b"a1 LOGOUT\r\n")[-1] == Close()
    assert session.receive_data(b"a2 LOGIN alice s3cret\r\n") == []


def test_login_failure_does_not_count_as_bad_command() -> None:
    """Twenty BAD answers are tolerated; a login failure in between does not tip the count."""
    data = b"a1 FROB\r\n" * 20 + b"a2 LOGIN alice wr0ng\r\na3 NOOP\r\n"
    actions, _ = converse([data], [WRONG])
    assert Close() not in actions
    assert actions[-1] == Send(
        b"a2 NO [AUTHENTICATIONFAILED] Wrong user name or password.\r\na3 OK NOOP completed\r\n"
    )


def test_empty_password_is_refused_without_login() -> None:
    """An empty password, by LOGIN or by AUTHENTICATE PLAIN or LOGIN, is refused without a Login."""
    for data in (
        b'a1 LOGIN alice ""\r\n',
        b"a1 AUTHENTICATE PLAIN " + b64(b"\0alice\0") + b"\r\n",
        b"a1 AUTHENTICATE LOGIN " + b64(b"alice") + b"\r\n=\r\n",
        b"a1 LOGIN alice {0}\r\n\r\n",
    ):
        actions, _ = converse([data])
        assert not any(isinstance(a, Login) for a in actions), data
        assert isinstance(actions[-1], Send)
        last_line = actions[-1].data.split(b"\r\n")[-2]
        assert last_line.startswith(b"a1 NO [AUTHENTICATIONFAILED] "), data


def test_empty_password_answer_is_the_wrong_password_answer() -> None:
    """An empty password gets exactly the answer a wrong password gets."""
    empty, _ = converse([b'a1 LOGIN alice ""\r\n'])
    wrong, _ = converse([b"a1 LOGIN alice wr0ng\r\n"], [WRONG])
    assert empty == wrong[1:]


def test_empty_passwords_count_as_failed_logins() -> None:
    """Empty passwords count towards the failed-login limit like wrong ones."""
    actions, _ = converse([b'a1 LOGIN alice ""\r\n' * 3 + b"a2 NOOP\r\n"])
    assert actions[-1] == Close()
    assert not any(isinstance(a, Login) for a in actions)


def test_empty_login_user_refused_before_password_prompt() -> None:
    """AUTHENTICATE LOGIN with an empty user name is refused before the password is asked for."""
    actions, _ = converse([b"a1 AUTHENTICATE LOGIN =\r\n"])
    assert actions == [line("a1 BAD Empty user name")]


def test_repeated_login_failures_end_the_connection() -> None:
    """A client that keeps giving wrong passwords is sent away at some point."""
    data = b"".join(b"a%d LOGIN alice wrong%d\r\n" % (i, i) for i in range(25))
    actions, _ = converse([data], [WRONG] * 25)
    assert Close() in actions
    assert sum(isinstance(a, Login) for a in actions) < 25


FRAGMENTS = [
    b"a1 ",
    b"LOGIN ",
    b"AUTHENTICATE ",
    b"PLAIN",
    b"LOGIN",
    b" ",
    b"alice ",
    b"s3cret",
    b'"pa\\"ss"',
    b"{3}\r\n",
    b"{3+}\r\n",
    b"{0}\r\n",
    b"{99999}\r\n",
    b"\r\n",
    b"\n",
    b"*",
    b"=",
    PLAIN_ALICE,
    b64(b"alice"),
    b"NOOP",
    b"CAPABILITY",
    b"LOGOUT",
    b"(",
    b")",
    b"NIL",
    b"STARTTLS",
    b'""',
    b"x" * 300,
]


@settings(max_examples=400, deadline=None)
@given(
    chunks=st.lists(st.one_of(st.binary(max_size=20), st.sampled_from(FRAGMENTS)), max_size=25),
    succeed=st.booleans(),
    tls=st.sampled_from([{}, {"starttls": True}, {"starttls": True, "login_requires_tls": True}]),
)
def test_arbitrary_input_is_safe(chunks: list[bytes], succeed: bool, tls: dict[str, bool]) -> None:
    """Any bytes: no exception, only known actions, every Send a CRLF line, Login last with a user and a password."""
    session = ImapSession(max_line=200, max_literal=100, **tls)
    session.start()
    closed = False
    for chunk in chunks:
        actions = session.receive_data(chunk)
        if closed:
            assert actions == []
        for i, action in enumerate(actions):
            assert isinstance(action, (Send, Close, Login, StartTLS))
            if isinstance(action, Send):
                assert action.data.endswith(b"\r\n")
            if isinstance(action, Login):
                assert i == len(actions) - 1
                assert action.username and action.password
                assert b"\n" in chunk
                assert session.receive_data(b"a9 NOOP\r\n") == []
                if succeed:
                    assert session.login_succeeded(LoggedIn(("IMAP4rev1",)))[-1] == Relay()
                    return
                session.login_failed(WrongPassword())
        closed = closed or Close() in actions


def test_starttls_offered_and_started() -> None:
    """With starttls, STARTTLS is offered, answered OK with StartTLS, and no longer offered after."""
    session = ImapSession(starttls=True)
    assert session.start() == [
        line(
            "* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID STARTTLS AUTH=PLAIN AUTH=LOGIN] "
            "xoauth2-proxy ready"
        )
    ]
    assert session.receive_data(b"a1 STARTTLS\r\n") == [
        line("a1 OK Begin TLS negotiation now"),
        StartTLS(),
    ]
    assert session.receive_data(b"a2 CAPABILITY\r\na3 STARTTLS\r\n") == [
        line(f"* CAPABILITY {CAPABILITIES}"),
        line("a2 OK CAPABILITY completed"),
        line("a3 BAD TLS is already active"),
    ]


def test_starttls_drops_plaintext_pipelined_after_it() -> None:
    """Commands pipelined in plaintext after STARTTLS are discarded, never obeyed (RFC 3501 6.2.1)."""
    session = ImapSession(starttls=True)
    actions = session.receive_data(b"a1 STARTTLS\r\na2 LOGIN alice injected\r\n")
    assert actions == [line("a1 OK Begin TLS negotiation now"), StartTLS()]
    assert session.take_unparsed() == b""
    assert session.receive_data(b"a3 NOOP\r\n") == [line("a3 OK NOOP completed")]


def test_login_requires_tls() -> None:
    """With login_requires_tls, LOGINDISABLED replaces AUTH=, logins get NO [PRIVACYREQUIRED] until STARTTLS."""
    session = ImapSession(starttls=True, login_requires_tls=True)
    greeting = session.start()[0]
    assert isinstance(greeting, Send)
    assert b"LOGINDISABLED" in greeting.data and b"AUTH=" not in greeting.data
    refusal = "NO [PRIVACYREQUIRED] Use STARTTLS before logging in"
    assert session.receive_data(
        b"a1 LOGIN alice s3cret\r\na2 AUTHENTICATE PLAIN " + PLAIN_ALICE + b"\r\n"
    ) == [line(f"a1 {refusal}"), line(f"a2 {refusal}")]
    session.receive_data(b"a3 STARTTLS\r\n")
    assert session.receive_data(b"a4 LOGIN alice s3cret\r\n") == [Login("alice", "s3cret")]


def test_implicit_tls_allows_login() -> None:
    """On an implicit-TLS connection (tls_active) login is offered and accepted at once."""
    session = ImapSession(tls_active=True, login_requires_tls=True)
    assert session.start() == [GREETING]
    assert session.receive_data(b"a1 LOGIN alice s3cret\r\n") == [Login("alice", "s3cret")]


@pytest.mark.parametrize("mechanism", [b"PLAIN", b"LOGIN"])
def test_authenticate_refused_before_any_prompt_without_tls(mechanism: bytes) -> None:
    """Before TLS, AUTHENTICATE is refused at once, with no prompt that invites the password in clear."""
    session = ImapSession(starttls=True, login_requires_tls=True)
    session.start()
    assert session.receive_data(b"a1 AUTHENTICATE " + mechanism + b"\r\n") == [
        line("a1 NO [PRIVACYREQUIRED] Use STARTTLS before logging in")
    ]
