"""The IMAP device session: bytes from the client in, actions out, as Playbook scripts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.actions import Close, LoggedIn, Login, Phase, Relay, Send, StartTLS
from proxy.errors import (
    NeedsReauthorisation,
    ProxyError,
    Throttled,
    TokenEndpointUnavailable,
    WrongPassword,
)
from proxy.imap.device import ImapSession
from tests.support.playbook import (
    Failed,
    Playbook,
    Received,
    Started,
    Succeeded,
    Unparsed,
    b64,
    line,
    script_tests,
)

CAPABILITIES = "IMAP4rev1 SASL-IR LITERAL+ ID AUTH=PLAIN AUTH=LOGIN"
GREETING = line(f"* OK [CAPABILITY {CAPABILITIES}] xoauth2-proxy ready")
CONTINUE_LITERAL = line("+ Ready for literal data")
PLAIN_PROMPT = Send(b"+ \r\n")
USERNAME_PROMPT = Send(b"+ VXNlcm5hbWU6\r\n")
PASSWORD_PROMPT = Send(b"+ UGFzc3dvcmQ6\r\n")
WRONG = WrongPassword()
WRONG_ANSWER = line("a1 NO [AUTHENTICATIONFAILED] Wrong user name or password.")
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

# Client input, and each Login answered with an outcome as the glue would; a script ends with
# nothing left unparsed unless it says what is.
SCRIPTS = [
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 CAPABILITY\r\n")
        << line(f"* CAPABILITY {CAPABILITIES}")
        << line("a1 OK CAPABILITY completed"),
        id="capability",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 noop\r\n")
        << line("a1 OK NOOP completed"),
        id="noop-any-case",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b'a1 ID ("name" "Thunderbird" "version" "115.0")\r\n')
        << line('* ID ("name" "xoauth2-proxy")')
        << line("a1 OK ID completed"),
        id="id",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 ID NIL\r\n")
        << line('* ID ("name" "xoauth2-proxy")')
        << line("a1 OK ID completed"),
        id="id-nil",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 LOGOUT\r\na2 LOGIN alice s3cret\r\n")
        << line("* BYE Logging out")
        << line("a1 OK LOGOUT completed")
        << Close(),
        id="logout-closes-and-reads-no-more",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 LOGIN alice s3cret\r\n")
        << Login("alice", "s3cret"),
        id="login-atoms",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b'a1 LOGIN "alice@contoso.com" "pass \\"word\\\\"\r\n')
        << Login("alice@contoso.com", 'pass "word\\'),
        id="login-quoted-with-escapes",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b'a1 LOGIN {5}\r\nalice {9}\r\npa ss\r\n"x\r\n')
        << CONTINUE_LITERAL
        << CONTINUE_LITERAL
        << Login("alice", 'pa ss\r\n"x'),
        id="login-synchronising-literals",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 LOGIN alice {6+}\r\ns3cret\r\n")
        << Login("alice", "s3cret"),
        id="login-non-synchronising-literal",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received('a1 LOGIN "jürgen" "pässwort"\r\n'.encode())
        << Login("jürgen", "pässwort"),
        id="login-utf8",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 LOGIN alice\r\n")
        << line("a1 BAD LOGIN takes a user name and a password"),
        id="login-without-password",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 LOGIN alice pass word\r\n")
        << line("a1 BAD LOGIN takes a user name and a password"),
        id="login-three-arguments",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 LOGIN alice NIL\r\n")
        << line("a1 BAD LOGIN takes a user name and a password"),
        id="login-nil-password",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b'a1 LOGIN "" s3cret\r\n')
        << WRONG_ANSWER,
        id="login-empty-user-answered-as-wrong-password",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 LOGIN alice {6}\r\n")
        << CONTINUE_LITERAL,
        id="login-no-login-before-literal-password",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 LOGIN alice {70000}\r\na2 NOOP\r\n")
        << line("a1 BAD Literal too large")
        << line("a2 OK NOOP completed"),
        id="login-sync-literal-too-large",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 LOGIN alice {70000+}\r\n")
        << line("* BYE Literal too large")
        << Close(),
        id="login-non-sync-literal-too-large",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b'a1 LOGIN "alice s3cret\r\n')
        << line("a1 BAD Unterminated quoted string"),
        id="login-parse-error",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 AUTHENTICATE PLAIN " + PLAIN_ALICE + b"\r\n")
        << Login("alice", "s3cret"),
        id="plain-sasl-ir",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 authenticate plain\r\n" + PLAIN_ALICE + b"\r\n")
        << PLAIN_PROMPT
        << Login("alice", "s3cret"),
        id="plain-two-step",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 AUTHENTICATE PLAIN " + b64(b"alice\0alice\0pw") + b"\r\n")
        << Login("alice", "pw"),
        id="plain-authzid-same-user",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 AUTHENTICATE PLAIN " + b64(b"bob\0alice\0pw") + b"\r\n")
        << line("a1 BAD Authorisation identity must be empty or equal the user name"),
        id="plain-other-authzid",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 AUTHENTICATE PLAIN =\r\n")
        << line("a1 BAD Invalid PLAIN response"),
        id="plain-empty-initial-response",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 AUTHENTICATE PLAIN\r\n=\r\n")
        << PLAIN_PROMPT
        << line("a1 BAD Invalid base64 data"),
        id="plain-two-step-equals-is-not-empty",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 AUTHENTICATE PLAIN\r\n")
        << PLAIN_PROMPT,
        id="plain-no-login-before-response",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 AUTHENTICATE PLAIN {20+}\r\n" + PLAIN_ALICE + b"\r\n")
        << Login("alice", "s3cret"),
        id="plain-initial-response-as-literal",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 AUTHENTICATE PLAIN\r\n!!notbase64!!\r\na2 NOOP\r\n")
        << PLAIN_PROMPT
        << line("a1 BAD Invalid base64 data")
        << line("a2 OK NOOP completed"),
        id="plain-bad-base64-then-usable",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 AUTHENTICATE PLAIN @@@\r\n")
        << line("a1 BAD Invalid base64 data"),
        id="plain-bad-base64-initial-response",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 AUTHENTICATE PLAIN\r\n*\r\na2 NOOP\r\n")
        << PLAIN_PROMPT
        << line("a1 BAD AUTHENTICATE cancelled")
        << line("a2 OK NOOP completed"),
        id="plain-cancel-then-usable",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 AUTHENTICATE LOGIN\r\n" + b64(b"alice") + b"\r\n" + b64(b"s3cret") + b"\r\n")
        << USERNAME_PROMPT
        << PASSWORD_PROMPT
        << Login("alice", "s3cret"),
        id="login-mechanism",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 AUTHENTICATE LOGIN " + b64(b"alice") + b"\r\n" + b64(b"s3cret") + b"\r\n")
        << PASSWORD_PROMPT
        << Login("alice", "s3cret"),
        id="login-mechanism-initial-user",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 AUTHENTICATE LOGIN\r\n" + b64(b"alice") + b"\r\n")
        << USERNAME_PROMPT
        << PASSWORD_PROMPT,
        id="login-mechanism-no-login-before-password",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 AUTHENTICATE LOGIN\r\n*\r\n")
        << USERNAME_PROMPT
        << line("a1 BAD AUTHENTICATE cancelled"),
        id="login-mechanism-cancel-user",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 AUTHENTICATE LOGIN\r\n" + b64(b"alice") + b"\r\n*\r\na2 LOGIN bob b0bpw\r\n")
        << USERNAME_PROMPT
        << PASSWORD_PROMPT
        << line("a1 BAD AUTHENTICATE cancelled")
        << Login("bob", "b0bpw"),
        id="login-mechanism-cancel-password-then-usable",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 AUTHENTICATE LOGIN\r\n%%%\r\n")
        << USERNAME_PROMPT
        << line("a1 BAD Invalid base64 data"),
        id="login-mechanism-bad-base64",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 AUTHENTICATE XOAUTH2 " + b64(b"user=a\1auth=Bearer x\1\1") + b"\r\n")
        << line("a1 NO Unsupported authentication mechanism; use PLAIN or LOGIN"),
        id="xoauth2-not-offered",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 AUTHENTICATE CRAM-MD5\r\n")
        << line("a1 NO Unsupported authentication mechanism; use PLAIN or LOGIN"),
        id="unknown-mechanism",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 AUTHENTICATE\r\n")
        << line("a1 BAD AUTHENTICATE takes a mechanism and an optional response"),
        id="authenticate-without-mechanism",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 AUTHENTICATE PLAIN a b\r\n")
        << line("a1 BAD AUTHENTICATE takes a mechanism and an optional response"),
        id="authenticate-too-many-arguments",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 AUTHENTICATE PLAIN " + b64(b"\0\0s3cret") + b"\r\n")
        << WRONG_ANSWER,
        id="plain-empty-user-answered-as-wrong-password",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 AUTHENTICATE PLAIN *\r\n")
        << line("a1 BAD Invalid base64 data"),
        id="plain-star-initial-response-is-not-a-cancel",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 AUTHENTICATE LOGIN " + b64(b"alice") + b"\r\n=\r\n")
        << PASSWORD_PROMPT
        << line("a1 BAD Invalid base64 data"),
        id="login-mechanism-equals-password-is-not-empty",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 AUTHENTICATE PLAIN {9000+}\r\n" + b"A" * 9000 + b"\r\na2 NOOP\r\n")
        << line("a1 BAD SASL response too long")
        << line("a2 OK NOOP completed"),
        id="sasl-response-over-the-cap",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 SELECT INBOX\r\na2 fetch 1:* (FLAGS)\r\na3 UID FETCH 1 BODY[]\r\na4 IDLE\r\n")
        << line("a1 BAD SELECT is only valid after login")
        << line("a2 BAD FETCH is only valid after login")
        << line("a3 BAD UID is only valid after login")
        << line("a4 BAD IDLE is only valid after login"),
        id="commands-only-valid-after-login",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 FROB\r\na2 X-LOGIN alice pw\r\n")
        << line("a1 BAD Unknown command FROB")
        << line("a2 BAD Unknown command X-LOGIN"),
        id="unknown-commands",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 STARTTLS\r\n")
        << line("a1 BAD STARTTLS is not enabled on this listener"),
        id="starttls-not-enabled",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"* NOOP\r\nNOOP\r\n")
        << line("* BAD Invalid tag")
        << line("NOOP BAD Missing command"),
        id="bad-tags",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"\r\n\r\na1 NOOP\r\n")
        << line("a1 OK NOOP completed"),
        id="empty-lines",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"\xff1 NOOP\r\n")
        << line("* BAD Invalid tag"),
        id="eight-bit-tag-invalid",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 AUTHENTICATE LOGIN =\r\n")
        << WRONG_ANSWER,
        id="login-mechanism-empty-initial-user",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 AUTHENTICATE LOGIN\r\n\r\na2 NOOP\r\n")
        << USERNAME_PROMPT
        << WRONG_ANSWER
        << line("a2 OK NOOP completed"),
        id="login-mechanism-empty-user-refused-before-password",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 LOGIN alice p1\r\na2 LOGIN alice p2\r\na3 LOGIN alice p3\r\na4 LOGIN alice p4\r\n")
        << Login("alice", "p1")
        >> Failed(WRONG)
        << line("a1 NO [AUTHENTICATIONFAILED] Wrong user name or password.")
        << Login("alice", "p2")
        >> Failed(WRONG)
        << line("a2 NO [AUTHENTICATIONFAILED] Wrong user name or password.")
        << Login("alice", "p3")
        >> Failed(WRONG)
        << line("a3 NO [AUTHENTICATIONFAILED] Wrong user name or password.")
        << line("* BYE Too many failed logins")
        << Close(),
        id="third-wrong-password-closes",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 LOGIN alice p1\r\na2 LOGIN alice p2\r\na3 LOGIN alice p3\r\na4 LOGIN alice p4\r\n")
        << Login("alice", "p1")
        >> Failed(WRONG)
        << line("a1 NO [AUTHENTICATIONFAILED] Wrong user name or password.")
        << Login("alice", "p2")
        >> Failed(UNREACHABLE)
        << line(
                "a2 NO [UNAVAILABLE] Microsoft's sign-in service could not be reached; "
                "try again later."
            )
        << Login("alice", "p3")
        >> Failed(THROTTLED)
        << line("a3 NO [UNAVAILABLE] Too many requests; try again later.")
        << Login("alice", "p4")
        >> Failed(WRONG)
        << line("a4 NO [AUTHENTICATIONFAILED] Wrong user name or password."),
        id="temporary-failures-do-not-count-as-wrong-passwords",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 FROB\r\n" * 25)
        << Send(b"a1 BAD Unknown command FROB\r\n" * 20)
        << line("* BYE Too many invalid commands")
        << Close(),
        id="too-many-bad-commands",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 " + b"x" * 9000 + b"\r\na2 LOGIN alice s3cret\r\n")
        << line("* BYE Line too long")
        << Close(),
        id="overlong-line",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 AUTHENTICATE PLAIN\r\n" + b"A" * 9000 + b"\r\n")
        << PLAIN_PROMPT
        << line("* BYE Line too long")
        << Close(),
        id="overlong-sasl-line",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 LOGIN alice s3cret\r\na2 SELECT INBOX\r\na3 FETCH 1 (BODY[])\r\n")
        << Login("alice", "s3cret")
        >> Succeeded(LoggedIn(O365_CAPABILITIES))
        << line(f"a1 OK [CAPABILITY {O365_VISIBLE}] LOGIN completed")
        << Relay()
        >> Unparsed(b"a2 SELECT INBOX\r\na3 FETCH 1 (BODY[])\r\n"),
        id="pipelined-commands-kept-for-relay",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 LOGIN alice s3cret\r\na2 APPEND INBOX {5}\r\n")
        << Login("alice", "s3cret")
        >> Succeeded(LoggedIn(("IMAP4rev1",)))
        << line("a1 OK [CAPABILITY IMAP4rev1] LOGIN completed")
        << Relay()
        >> Unparsed(b"a2 APPEND INBOX {5}\r\n"),
        id="pipelined-literal-left-to-upstream",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 AUTHENTICATE PLAIN " + PLAIN_ALICE + b"\r\n")
        << Login("alice", "s3cret")
        >> Succeeded(LoggedIn(("IMAP4rev1", "STARTTLS", "LOGINDISABLED", "AUTH=XOAUTH2", "SASL-IR", "IDLE")))
        << line("a1 OK [CAPABILITY IMAP4rev1 IDLE] AUTHENTICATE completed")
        << Relay(),
        id="hidden-capabilities",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 LOGIN alice s3cret\r\n")
        << Login("alice", "s3cret")
        >> Succeeded(LoggedIn())
        << line("a1 OK LOGIN completed")
        << Relay(),
        id="no-capabilities-no-code",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 LOGIN alice wr0ng\r\n")
        << Login("alice", "wr0ng")
        >> Failed(WRONG)
        << line("a1 NO [AUTHENTICATIONFAILED] Wrong user name or password."),
        id="wrong-password",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 LOGIN alice s3cret\r\n")
        << Login("alice", "s3cret")
        >> Failed(REAUTHORISE)
        << line(
                "a1 NO [AUTHENTICATIONFAILED] Stored sign-in for alice is no longer valid; "
                "run: xoauth2-proxy account add alice"
            ),
        id="needs-reauthorisation",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 LOGIN alice s3cret\r\n")
        << Login("alice", "s3cret")
        >> Failed(UNREACHABLE)
        << line(
                "a1 NO [UNAVAILABLE] Microsoft's sign-in service could not be reached; "
                "try again later."
            ),
        id="temporary-failure",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 AUTHENTICATE PLAIN " + PLAIN_ALICE + b"\r\n")
        << Login("alice", "s3cret")
        >> Failed(ProxyError("first line\n  second\tline"))
        << line("a1 NO [UNAVAILABLE] first line second line"),
        id="failure-text-one-line",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 LOGIN alice wr0ng\r\na2 NOOP\r\na3 LOGIN alice right\r\na4 SELECT INBOX\r\n")
        << Login("alice", "wr0ng")
        >> Failed(WRONG)
        << line("a1 NO [AUTHENTICATIONFAILED] Wrong user name or password.")
        << line("a2 OK NOOP completed")
        << Login("alice", "right")
        >> Succeeded(LoggedIn(("IMAP4rev1",)))
        << line("a3 OK [CAPABILITY IMAP4rev1] LOGIN completed")
        << Relay()
        >> Unparsed(b"a4 SELECT INBOX\r\n"),
        id="buffered-commands-after-failure",
    ),
    pytest.param(
        Playbook(ImapSession)
        >> Received(b"a1 LOGIN alice s3cret\r\na2 CAPABILITY\r\n")
        << Login("alice", "s3cret")
        >> Failed(THROTTLED)
        << line("a1 NO [UNAVAILABLE] Too many requests; try again later.")
        << line(f"* CAPABILITY {CAPABILITIES}")
        << line("a2 OK CAPABILITY completed"),
        id="throttled-then-buffered-commands",
    ),
]


test_script, test_script_byte_by_byte, test_script_random_splits = script_tests(SCRIPTS)


@pytest.mark.parametrize("playbook", SCRIPTS)
def test_password_never_sent_back(playbook: Playbook) -> None:
    """No answer to the client contains a password it gave, in clear or in base64."""
    actions = playbook.play()
    passwords = [a.password for a in actions if isinstance(a, Login)]
    sent = b"".join(a.data for a in actions if isinstance(a, Send))
    for password in passwords:
        assert password.encode() not in sent
        assert b64(password) not in sent


@pytest.mark.parametrize("playbook", SCRIPTS)
def test_login_only_at_a_line_end(playbook: Playbook) -> None:
    """Fed byte by byte, a Login appears only with the LF that ends the line carrying the password."""
    data = playbook.received
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
    assert Playbook(ImapSession) >> Started() << GREETING


def test_capabilities_offer_no_xoauth2_and_no_starttls() -> None:
    """Before login the client is offered PLAIN and LOGIN only, never XOAUTH2 or STARTTLS."""
    assert b"XOAUTH2" not in GREETING.data and b"STARTTLS" not in GREETING.data
    assert b"LOGINDISABLED" not in GREETING.data


def test_nothing_read_while_login_pending() -> None:
    """After Login the session answers nothing until told the outcome."""
    assert (
        Playbook(ImapSession)
        >> Received(b"a1 LOGIN alice s3cret\r\n")
        << Login("alice", "s3cret")
        >> Received(b"a2 CAPABILITY\r\na3 FROB\r\n")
        >> Succeeded(LoggedIn(("IMAP4rev1",)))
        << line("a1 OK [CAPABILITY IMAP4rev1] LOGIN completed")
        << Relay()
        >> Unparsed(b"a2 CAPABILITY\r\na3 FROB\r\n")
    )


def test_relay_takes_no_more_input() -> None:
    """Once relaying, bytes fed to the session produce nothing and stay for the relay."""
    assert (
        Playbook(ImapSession)
        >> Received(b"a1 LOGIN alice s3cret\r\n")
        << Login("alice", "s3cret")
        >> Succeeded()
        << line("a1 OK LOGIN completed")
        << Relay()
        >> Received(b"a2 LOGOUT\r\n")
        >> Unparsed(b"a2 LOGOUT\r\n")
    )


def test_closed_session_takes_no_more_input() -> None:
    """After Close the session produces nothing more."""
    assert (
        Playbook(ImapSession)
        >> Received(b"a1 LOGOUT\r\n")
        << line("* BYE Logging out")
        << line("a1 OK LOGOUT completed")
        << Close()
        >> Received(b"a2 LOGIN alice s3cret\r\n")
    )


def test_phase_follows_the_conversation() -> None:
    """The public phase reads READING, LOGGING_IN after a Login, READING again after a
    failure, RELAYING after success; CLOSED after LOGOUT."""
    session = ImapSession()
    assert session.phase is Phase.READING
    session.receive_data(b"a1 LOGIN alice wr0ng\r\n")
    assert session.phase is Phase.LOGGING_IN
    session.login_failed(WRONG)
    assert session.phase is Phase.READING
    session.receive_data(b"a2 LOGIN alice s3cret\r\n")
    session.login_succeeded(LoggedIn())
    assert session.phase is Phase.RELAYING
    closing = ImapSession()
    closing.receive_data(b"a1 LOGOUT\r\n")
    assert closing.phase is Phase.CLOSED


def test_login_failure_does_not_count_as_bad_command() -> None:
    """Twenty BAD answers are tolerated; a login failure in between does not tip the count."""
    assert (
        Playbook(ImapSession)
        >> Received(b"a1 FROB\r\n" * 20 + b"a2 LOGIN alice wr0ng\r\na3 NOOP\r\n")
        << Send(b"a1 BAD Unknown command FROB\r\n" * 20)
        << Login("alice", "wr0ng")
        >> Failed(WRONG)
        << line("a2 NO [AUTHENTICATIONFAILED] Wrong user name or password.")
        << line("a3 OK NOOP completed")
    )


@pytest.mark.parametrize(
    "data",
    [
        b'a1 LOGIN alice ""\r\n',
        b'a1 LOGIN "" s3cret\r\n',
        b"a1 AUTHENTICATE PLAIN " + b64(b"\0alice\0") + b"\r\n",
        b"a1 AUTHENTICATE PLAIN " + b64(b"\0\0s3cret") + b"\r\n",
        b"a1 AUTHENTICATE LOGIN " + b64(b"alice") + b"\r\n\r\n",
        b"a1 AUTHENTICATE LOGIN =\r\n",
        b"a1 AUTHENTICATE LOGIN\r\n\r\n",
        b"a1 LOGIN alice {0}\r\n\r\n",
    ],
)
def test_empty_user_or_password_is_refused_without_login(data: bytes) -> None:
    """An empty user name or password, by LOGIN or by AUTHENTICATE PLAIN or LOGIN, gets the
    wrong-password answer without a Login."""
    actions = ImapSession().receive_data(data)
    assert not any(isinstance(a, Login) for a in actions), data
    assert isinstance(actions[-1], Send)
    assert actions[-1].data.endswith(WRONG_ANSWER.data), data


def test_empty_password_answer_is_the_wrong_password_answer() -> None:
    """An empty password gets exactly the answer a wrong password gets."""
    empty = (Playbook(ImapSession) >> Received(b'a1 LOGIN alice ""\r\n') << WRONG_ANSWER).play()
    wrong = (
        Playbook(ImapSession)
        >> Received(b"a1 LOGIN alice wr0ng\r\n")
        << Login("alice", "wr0ng")
        >> Failed(WRONG)
        << WRONG_ANSWER
    ).play()
    assert empty == wrong[1:]


def test_empty_passwords_count_as_failed_logins() -> None:
    """Empty passwords count towards the failed-login limit like wrong ones."""
    assert (
        Playbook(ImapSession)
        >> Received(b'a1 LOGIN alice ""\r\n' * 3 + b"a2 NOOP\r\n")
        << Send(WRONG_ANSWER.data * 3)
        << line("* BYE Too many failed logins")
        << Close()
    )


def test_empty_login_user_refused_before_password_prompt() -> None:
    """AUTHENTICATE LOGIN with an empty user name is refused before the password is asked for."""
    assert Playbook(ImapSession) >> Received(b"a1 AUTHENTICATE LOGIN =\r\n") << WRONG_ANSWER


def test_repeated_login_failures_end_the_connection() -> None:
    """A client that keeps giving wrong passwords is sent away after the third."""
    playbook = Playbook(ImapSession) >> Received(
        b"".join(b"a%d LOGIN alice wrong%d\r\n" % (i, i) for i in range(25))
    )
    for i in range(3):
        playbook << Login("alice", f"wrong{i}") >> Failed(WRONG)
        playbook << line(f"a{i} NO [AUTHENTICATIONFAILED] Wrong user name or password.")
    assert playbook << line("* BYE Too many failed logins") << Close()


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
    assert (
        Playbook(ImapSession, starttls=True)
        >> Started()
        << line(
            "* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID STARTTLS AUTH=PLAIN AUTH=LOGIN] "
            "xoauth2-proxy ready"
        )
        >> Received(b"a1 STARTTLS\r\n")
        << line("a1 OK Begin TLS negotiation now")
        << StartTLS()
        >> Received(b"a2 CAPABILITY\r\na3 STARTTLS\r\n")
        << line(f"* CAPABILITY {CAPABILITIES}")
        << line("a2 OK CAPABILITY completed")
        << line("a3 BAD TLS is already active")
    )


def test_starttls_drops_plaintext_pipelined_after_it() -> None:
    """Commands pipelined in plaintext after STARTTLS are discarded, never obeyed (RFC 3501 6.2.1)."""
    assert (
        Playbook(ImapSession, starttls=True)
        >> Received(b"a1 STARTTLS\r\na2 LOGIN alice injected\r\n")
        << line("a1 OK Begin TLS negotiation now")
        << StartTLS()
        >> Unparsed(b"")
        >> Received(b"a3 NOOP\r\n")
        << line("a3 OK NOOP completed")
    )


def test_login_requires_tls() -> None:
    """With login_requires_tls, LOGINDISABLED replaces AUTH=, logins get NO [PRIVACYREQUIRED] until STARTTLS."""
    refusal = "NO [PRIVACYREQUIRED] Use STARTTLS before logging in"
    assert (
        Playbook(ImapSession, starttls=True, login_requires_tls=True)
        >> Started()
        << line("* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID STARTTLS LOGINDISABLED] xoauth2-proxy ready")
        >> Received(b"a1 LOGIN alice s3cret\r\na2 AUTHENTICATE PLAIN " + PLAIN_ALICE + b"\r\n")
        << line(f"a1 {refusal}")
        << line(f"a2 {refusal}")
        >> Received(b"a3 STARTTLS\r\n")
        << line("a3 OK Begin TLS negotiation now")
        << StartTLS()
        >> Received(b"a4 LOGIN alice s3cret\r\n")
        << Login("alice", "s3cret")
    )


def test_implicit_tls_allows_login() -> None:
    """On an implicit-TLS connection (tls_active) login is offered and accepted at once."""
    assert (
        Playbook(ImapSession, tls_active=True, login_requires_tls=True)
        >> Started()
        << GREETING
        >> Received(b"a1 LOGIN alice s3cret\r\n")
        << Login("alice", "s3cret")
    )


@pytest.mark.parametrize("mechanism", [b"PLAIN", b"LOGIN"])
def test_authenticate_refused_before_any_prompt_without_tls(mechanism: bytes) -> None:
    """Before TLS, AUTHENTICATE is refused at once, with no prompt that invites the password in clear."""
    assert (
        Playbook(ImapSession, starttls=True, login_requires_tls=True)
        >> Received(b"a1 AUTHENTICATE " + mechanism + b"\r\n")
        << line("a1 NO [PRIVACYREQUIRED] Use STARTTLS before logging in")
    )
