"""The POP3 device session: bytes from the client in, actions out, as Playbook scripts."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.actions import Close, LoggedIn, Login, Phase, Relay, Send, StartTLS
from proxy.errors import ProxyError, TokenEndpointUnavailable, WrongPassword
from proxy.pop3 import Pop3Session
from tests.support.playbook import (
    Failed,
    Playbook,
    Received,
    Started,
    Succeeded,
    Unparsed,
    b64,
    converse,
    script_tests,
)

Outcome = LoggedIn | ProxyError


def err(text: str) -> Send:
    return Send(b"-ERR " + text.encode() + b"\r\n")


def ok(text: str) -> Send:
    return Send(b"+OK " + text.encode() + b"\r\n")


PROMPT_USERNAME = Send(b"+ VXNlcm5hbWU6\r\n")
PROMPT_PASSWORD = Send(b"+ UGFzc3dvcmQ6\r\n")
WRONG = WrongPassword()
WRONG_ANSWER = err("[AUTH] Wrong user name or password.")
UNREACHABLE = TokenEndpointUnavailable()
CAPA_ANSWER = Send(
    b"+OK Capability list follows\r\nUSER\r\nSASL PLAIN LOGIN\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
    b"PIPELINING\r\nTOP\r\nUIDL\r\nIMPLEMENTATION xoauth2-proxy\r\n.\r\n"
)
MECHANISM_LIST = Send(b"+OK Supported mechanisms follow\r\nPLAIN\r\nLOGIN\r\n.\r\n")

# Client input, and each Login answered with an outcome as the glue would; a script ends with
# nothing left unparsed unless it says what is.
SCRIPTS = [
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"USER alice\r\nPASS s3cret\r\n")
        << ok("Send PASS.")
        << Login("alice", "s3cret"),
        id="user-pass",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"user alice\r\npAsS s3cret\r\n")
        << ok("Send PASS.")
        << Login("alice", "s3cret"),
        id="commands-case-insensitive",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"USER alice\nPASS s3cret\n")
        << ok("Send PASS.")
        << Login("alice", "s3cret"),
        id="bare-lf",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"USER alice\r\nPASS my pass \r\n")
        << ok("Send PASS.")
        << Login("alice", "my pass "),
        id="pass-keeps-spaces",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"USER alice\r\nCAPA\r\n")
        << ok("Send PASS.")
        << CAPA_ANSWER,
        id="user-alone-no-login",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"PASS s3cret\r\n")
        << err("Send USER first."),
        id="pass-without-user",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"USER\r\n")
        << err("USER needs a user name."),
        id="user-without-name",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"USER alice\r\nPASS\r\n")
        << ok("Send PASS.")
        << WRONG_ANSWER,
        id="pass-empty-answered-as-wrong-password",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"AUTH\r\n")
        << MECHANISM_LIST,
        id="auth-lists-mechanisms",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"AUTH PLAIN " + b64(b"\0alice\0s3cret") + b"\r\n")
        << Login("alice", "s3cret"),
        id="auth-plain-initial-response",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"AUTH PLAIN\r\n" + b64(b"\0alice\0s3cret") + b"\r\n")
        << Send(b"+ \r\n")
        << Login("alice", "s3cret"),
        id="auth-plain-two-step",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"auth plain " + b64(b"alice\0alice\0pw") + b"\r\n")
        << Login("alice", "pw"),
        id="auth-plain-authzid-same-user",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"AUTH PLAIN " + b64(b"bob\0alice\0pw") + b"\r\n")
        << err("Authorisation identity must be empty or equal the user name."),
        id="auth-plain-other-authzid",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"AUTH PLAIN =\r\n")
        << err("Invalid PLAIN response."),
        id="auth-plain-empty-initial-response",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"AUTH PLAIN " + b64(b"\0alice\0") + b"\r\n")
        << WRONG_ANSWER,
        id="auth-plain-no-password-answered-as-wrong-password",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"AUTH LOGIN\r\n" + b64(b"alice") + b"\r\n" + b64(b"s3cret") + b"\r\n")
        << PROMPT_USERNAME
        << PROMPT_PASSWORD
        << Login("alice", "s3cret"),
        id="auth-login",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"AUTH LOGIN " + b64(b"alice") + b"\r\n" + b64(b"s3cret") + b"\r\n")
        << PROMPT_PASSWORD
        << Login("alice", "s3cret"),
        id="auth-login-initial-user",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"AUTH LOGIN\r\n" + b64(b"alice") + b"\r\n")
        << PROMPT_USERNAME
        << PROMPT_PASSWORD,
        id="auth-login-no-login-before-password",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"AUTH LOGIN\r\n\r\n")
        << PROMPT_USERNAME
        << WRONG_ANSWER,
        id="auth-login-empty-user-answered-as-wrong-password",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"AUTH PLAIN\r\n*\r\nCAPA\r\n")
        << Send(b"+ \r\n")
        << err("Authentication cancelled.")
        << CAPA_ANSWER,
        id="cancel-plain-then-usable",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"AUTH PLAIN " + b64(b"\0\0pw") + b"\r\n")
        << WRONG_ANSWER,
        id="auth-plain-empty-user-answered-as-wrong-password",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"AUTH LOGIN =\r\n")
        << WRONG_ANSWER,
        id="auth-login-equals-is-an-empty-user",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"AUTH LOGIN " + b64(b"alice") + b"\r\n=\r\n")
        << PROMPT_PASSWORD
        << err("Invalid base64 data."),
        id="auth-login-equals-password-is-not-empty",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"AUTH PLAIN *\r\n")
        << err("Invalid base64 data."),
        id="auth-plain-star-initial-response-is-not-a-cancel",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"USER a\r\nPASS\r\n" * 3 + b"CAPA\r\n")
        << Send((ok("Send PASS.").data + WRONG_ANSWER.data) * 3)
        << Close(),
        id="empty-passwords-count-as-failed-logins",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"AUTH LOGIN\r\n*\r\n")
        << PROMPT_USERNAME
        << err("Authentication cancelled."),
        id="cancel-login-user",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"AUTH LOGIN\r\n" + b64(b"alice") + b"\r\n*\r\nUSER bob\r\nPASS x\r\n")
        << PROMPT_USERNAME
        << PROMPT_PASSWORD
        << err("Authentication cancelled.")
        << ok("Send PASS.")
        << Login("bob", "x"),
        id="cancel-login-password-then-usable",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"AUTH PLAIN\r\n!!notbase64!!\r\nUSER a\r\nPASS b\r\n")
        << Send(b"+ \r\n")
        << err("Invalid base64 data.")
        << ok("Send PASS.")
        << Login("a", "b"),
        id="bad-base64-then-usable",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"AUTH PLAIN @@@\r\n")
        << err("Invalid base64 data."),
        id="bad-base64-initial-response",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"AUTH LOGIN\r\n%%%\r\n")
        << PROMPT_USERNAME
        << err("Invalid base64 data."),
        id="bad-base64-login",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"AUTH XOAUTH2 " + b64(b"user=a\1auth=Bearer x\1\1") + b"\r\n")
        << err("Unsupported authentication mechanism; use PLAIN or LOGIN."),
        id="xoauth2-not-offered",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"AUTH CRAM-MD5\r\n")
        << err("Unsupported authentication mechanism; use PLAIN or LOGIN."),
        id="unknown-mechanism",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"AUTH PLAIN a b\r\n")
        << err("Syntax error: AUTH mechanism [initial-response]."),
        id="auth-too-many-arguments",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"APOP alice c4c9334bac560ecc979e58001b3e22fb\r\n")
        << err("APOP is not supported; use USER/PASS."),
        id="apop-refused",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"QUIT\r\nUSER a\r\nPASS b\r\n")
        << ok("xoauth2-proxy signing off.")
        << Close(),
        id="quit-closes-and-ignores-the-rest",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"NOOP\r\nSTAT\r\nretr 1\r\n")
        << Send(err("Not logged in: send USER and PASS (or AUTH) first.").data * 3),
        id="transaction-commands-before-login",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"FROB\r\n\r\n")
        << err("Unknown command.")
        << err("Unknown command."),
        id="unknown-and-empty",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"STLS\r\n")
        << err("STLS is not available."),
        id="stls-not-offered",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"X" * 9000 + b"\r\nUSER a\r\nPASS b\r\n")
        << err("Line too long.")
        << ok("Send PASS.")
        << Login("a", "b"),
        id="overlong-line-then-usable",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"AUTH PLAIN\r\n" + b"A" * 9000 + b"\r\nUSER a\r\n")
        << Send(b"+ \r\n")
        << err("Line too long.")
        << ok("Send PASS."),
        id="overlong-sasl-line-ends-exchange",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"USER a\r\nPASS b\r\nSTAT\r\n")
        << ok("Send PASS.")
        << Login("a", "b")
        >> Succeeded(LoggedIn())
        << ok("Logged in.")
        << Relay()
        >> Unparsed(b"STAT\r\n"),
        id="pipelined-commands-kept-for-relay",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"USER a\r\nPASS b\r\nLIST\r\nRETR 1\r\n")
        << ok("Send PASS.")
        << Login("a", "b")
        >> Succeeded(LoggedIn())
        << ok("Logged in.")
        << Relay()
        >> Unparsed(b"LIST\r\nRETR 1\r\n"),
        id="more-pipelined-commands-kept",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"USER a\r\nPASS b\r\n")
        << ok("Send PASS.")
        << Login("a", "b")
        >> Failed(WRONG)
        << err("[AUTH] Wrong user name or password."),
        id="wrong-password-answer",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"USER a\r\nPASS b\r\n")
        << ok("Send PASS.")
        << Login("a", "b")
        >> Failed(UNREACHABLE)
        << err("[SYS/TEMP] Microsoft's sign-in service could not be reached; try again later."),
        id="temporary-failure-answer",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"USER a\r\nPASS b\r\nPASS c\r\nUSER a\r\nPASS d\r\nSTAT\r\n")
        << ok("Send PASS.")
        << Login("a", "b")
        >> Failed(WRONG)
        << err("[AUTH] Wrong user name or password.")
        << err("Send USER first.")
        << ok("Send PASS.")
        << Login("a", "d")
        >> Succeeded(LoggedIn())
        << ok("Logged in.")
        << Relay()
        >> Unparsed(b"STAT\r\n"),
        id="retry-after-failure-uses-buffered-commands",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"USER a\r\nPASS 1\r\nUSER a\r\nPASS 2\r\nUSER a\r\nPASS 3\r\nCAPA\r\n")
        << ok("Send PASS.")
        << Login("a", "1")
        >> Failed(WRONG)
        << err("[AUTH] Wrong user name or password.")
        << ok("Send PASS.")
        << Login("a", "2")
        >> Failed(UNREACHABLE)
        << err("[SYS/TEMP] Microsoft's sign-in service could not be reached; try again later.")
        << ok("Send PASS.")
        << Login("a", "3")
        >> Failed(WRONG)
        << err("[AUTH] Wrong user name or password.")
        << Close(),
        id="third-login-failure-closes",
    ),
    pytest.param(
        Playbook(Pop3Session)
        >> Received(b"FROB\r\n" * 25)
        << Send(err("Unknown command.").data * 19)
        << err("Too many errors; closing connection.")
        << Close(),
        id="error-cap-closes",
    ),
]

test_script, test_script_byte_by_byte, test_script_random_splits = script_tests(SCRIPTS)


def test_greeting() -> None:
    """The greeting is a plain +OK without an APOP timestamp."""
    assert Playbook(Pop3Session) >> Started() << ok("xoauth2-proxy POP3 ready")


def capa_lines(**options: Any) -> list[bytes]:
    actions = Pop3Session(**options).receive_data(b"CAPA\r\n")
    assert len(actions) == 1 and isinstance(actions[0], Send)
    assert actions[0].data.endswith(b"\r\n.\r\n")
    return actions[0].data.split(b"\r\n")[:-1]


def test_capa_lists_what_the_proxy_accepts() -> None:
    """CAPA offers USER, SASL PLAIN LOGIN, the response codes and pipelining, never XOAUTH2."""
    lines = capa_lines()
    assert lines[0].startswith(b"+OK")
    assert lines[-1] == b"."
    for capability in (
        b"USER",
        b"SASL PLAIN LOGIN",
        b"RESP-CODES",
        b"AUTH-RESP-CODE",
        b"PIPELINING",
        b"TOP",
        b"UIDL",
        b"IMPLEMENTATION xoauth2-proxy",
    ):
        assert capability in lines
    assert b"STLS" not in lines
    assert not any(b"XOAUTH2" in line for line in lines)


def test_capa_upstream_capabilities_configurable() -> None:
    """The upstream capabilities advertised before login are an option."""
    lines = capa_lines(upstream_capabilities=())
    assert b"TOP" not in lines and b"UIDL" not in lines


def test_capa_offers_stls_and_hides_login_until_tls() -> None:
    """With STLS required, CAPA offers STLS and no login method until TLS is on."""
    lines = capa_lines(starttls=True, login_requires_tls=True)
    assert b"STLS" in lines and b"USER" not in lines
    assert not any(line.startswith(b"SASL") for line in lines)


def test_stls_starts_tls_and_drops_plaintext_pipelined_bytes() -> None:
    """STLS answers +OK, asks for TLS and discards what was pipelined in plaintext after it;
    the user name given before TLS does not carry over, and STLS is offered no more."""
    assert (
        Playbook(Pop3Session, starttls=True)
        >> Received(b"USER a\r\nSTLS\r\nPASS injected\r\n")
        << ok("Send PASS.")
        << ok("Begin TLS negotiation.")
        << StartTLS()
        >> Unparsed(b"")
        >> Received(b"PASS b\r\nSTLS\r\n")
        << err("Send USER first.")
        << err("TLS is already active.")
        >> Received(b"CAPA\r\n")
        << CAPA_ANSWER
    )


def test_login_requires_tls() -> None:
    """With login_requires_tls, USER/PASS/AUTH are refused before STLS and accepted after."""
    refusal = err("Login is only accepted over TLS: send STLS first.")
    assert (
        Playbook(Pop3Session, starttls=True, login_requires_tls=True)
        >> Received(b"USER a\r\nPASS b\r\nAUTH PLAIN x\r\n")
        << refusal
        << refusal
        << refusal
        >> Received(b"STLS\r\n")
        << ok("Begin TLS negotiation.")
        << StartTLS()
        >> Received(b"USER a\r\nPASS b\r\n")
        << ok("Send PASS.")
        << Login("a", "b")
    )


def test_implicit_tls_allows_login() -> None:
    """An implicit-TLS connection (tls_active) logs in without STLS."""
    assert (
        Playbook(Pop3Session, login_requires_tls=True, tls_active=True)
        >> Received(b"USER a\r\nPASS b\r\n")
        << ok("Send PASS.")
        << Login("a", "b")
    )


def test_nothing_read_while_login_pending() -> None:
    """After Login the session answers nothing until told the outcome."""
    assert (
        Playbook(Pop3Session)
        >> Received(b"USER a\r\nPASS b\r\n")
        << ok("Send PASS.")
        << Login("a", "b")
        >> Received(b"CAPA\r\nNOOP\r\n")
        >> Succeeded()
        << ok("Logged in.")
        << Relay()
        >> Unparsed(b"CAPA\r\nNOOP\r\n")
    )


def test_phase_follows_the_conversation() -> None:
    """The public phase reads READING, LOGGING_IN after a Login, READING again after a
    failure, RELAYING after success; CLOSED after QUIT."""
    session = Pop3Session()
    assert session.phase is Phase.READING
    session.receive_data(b"USER a\r\nPASS b\r\n")
    assert session.phase is Phase.LOGGING_IN
    session.login_failed(WRONG)
    assert session.phase is Phase.READING
    session.receive_data(b"USER a\r\nPASS c\r\n")
    session.login_succeeded(LoggedIn())
    assert session.phase is Phase.RELAYING
    closing = Pop3Session()
    closing.receive_data(b"QUIT\r\n")
    assert closing.phase is Phase.CLOSED


def test_outcome_without_pending_login_is_a_bug() -> None:
    """Reporting a login outcome when none is pending raises, to catch glue bugs early."""
    with pytest.raises(RuntimeError):
        Pop3Session().login_succeeded(LoggedIn())
    with pytest.raises(RuntimeError):
        Pop3Session().login_failed(WRONG)


def test_failure_message_is_one_line() -> None:
    """CR and LF in an error message cannot forge extra protocol lines."""
    assert (
        Playbook(Pop3Session)
        >> Received(b"USER a\r\nPASS b\r\n")
        << ok("Send PASS.")
        << Login("a", "b")
        >> Failed(ProxyError("bad\r\n+OK Logged in.\r\nreally"))
        << err("[SYS/TEMP] bad +OK Logged in. really")
    )


def test_long_failure_message_fits_a_pop3_line() -> None:
    """An answer never exceeds the 512 octets RFC 1939 allows, even with multi-byte text."""
    for text in ("x" * 2000, "\u00e9" * 2000, "\U0001f600" * 2000):
        session = Pop3Session()
        session.receive_data(b"USER a\r\nPASS b\r\n")
        (answer,) = session.login_failed(ProxyError(text))
        assert isinstance(answer, Send)
        assert len(answer.data) <= 512 and answer.data.endswith(b"...\r\n")
        assert answer.data.startswith(b"-ERR [SYS/TEMP] ")
        answer.data.decode("utf-8")


PASSWORD = "Pa55-w0rd-never-echoed"
PASSWORD_INPUTS = [
    b"USER alice\r\nPASS " + PASSWORD.encode() + b"\r\n",
    b"AUTH PLAIN " + b64(b"\0alice\0" + PASSWORD.encode()) + b"\r\n",
    b"AUTH LOGIN\r\n" + b64(b"alice") + b"\r\n" + b64(PASSWORD.encode()) + b"\r\n",
    b"PASS " + PASSWORD.encode() + b"\r\n" + PASSWORD.encode() + b"\r\n",
]


@pytest.mark.parametrize("data", PASSWORD_INPUTS)
@pytest.mark.parametrize("outcome", [WRONG, UNREACHABLE, LoggedIn()])
def test_password_never_in_answers(data: bytes, outcome: Outcome) -> None:
    """No answer contains the password, in clear or in base64."""
    actions = converse(Pop3Session(), [data], [outcome])
    sent = b"".join(a.data for a in actions if isinstance(a, Send))
    assert PASSWORD.encode() not in sent and b64(PASSWORD) not in sent


VOCABULARY = [
    b"USER alice\r\nPASS pw\r\n",
    b"USER alice\r\n",
    b"PASS pw\r\n",
    b"AUTH\r\n",
    b"AUTH PLAIN\r\n",
    b"AUTH LOGIN\r\n",
    b"AUTH PLAIN " + b64(b"\0a\0b") + b"\r\n",
    b64(b"\0a\0b") + b"\r\n",
    b64(b"a") + b"\r\n",
    b"*\r\n",
    b"CAPA\r\n",
    b"QUIT\r\n",
    b"STLS\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b"PASS",
    b" ",
    b"=",
]


@settings(max_examples=500, deadline=None)
@given(
    # Mostly real commands, so that logins happen; some raw bytes, so that anything can.
    pieces=st.lists(
        st.one_of(*[st.sampled_from(VOCABULARY)] * 4, st.binary(max_size=40)), max_size=30
    ),
    outcomes=st.lists(st.sampled_from([WRONG, UNREACHABLE, LoggedIn()]), max_size=4),
    starttls=st.booleans(),
)
def test_arbitrary_input_is_safe(pieces: list[bytes], outcomes: list[Outcome], starttls: bool) -> None:
    """Arbitrary bytes never raise, every answer is whole CRLF lines, and a Login always carries
    a user name and a password the client sent (PASS or AUTH)."""
    data = b"".join(pieces)
    actions = converse(Pop3Session(starttls=starttls, max_line=64), pieces, outcomes)
    for action in actions:
        if isinstance(action, Send):
            assert action.data.endswith(b"\r\n")
            assert all(len(line) <= 510 for line in action.data.split(b"\r\n"))
        if isinstance(action, Login):
            assert action.username and action.password
            assert b"PASS" in data.upper() or b"AUTH" in data.upper()
    if not starttls:  # STLS drops what arrived with it, so only without it may splits not matter
        assert actions == converse(Pop3Session(max_line=64), [data], outcomes)
    assert actions.count(Relay()) <= 1 and (Relay() not in actions or actions[-1] == Relay())
