"""SmtpSession: bytes from the legacy SMTP client in, actions out."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.actions import Close, FrontAction, LoggedIn, Login, Relay, Send
from proxy.errors import (
    NeedsReauthorisation,
    ProxyError,
    TemporaryFailure,
    UpstreamUnavailable,
    WrongPassword,
)
from proxy.smtp import SmtpSession
from tests.support.playbook import b64, merged, split

USER = "scanner@contoso.com"
PASSWORD = "s3cret-Passw0rd"




PLAIN_IR = b64(f"\0{USER}\0{PASSWORD}")
EHLO_REPLY = (
    b"250-xoauth2-proxy\r\n"
    b"250-PIPELINING\r\n"
    b"250-SIZE 157286400\r\n"
    b"250-8BITMIME\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n"
    b"250-CHUNKING\r\n"
    b"250-AUTH PLAIN LOGIN\r\n"
    b"250 AUTH=PLAIN LOGIN\r\n"
)




def fresh() -> SmtpSession:
    session = SmtpSession()
    session.start()
    return session


def replies(session: SmtpSession, data: bytes) -> bytes:
    """Everything the session writes for `data`; fails if it does anything but write."""
    actions = session.receive_data(data)
    assert all(isinstance(a, Send) for a in actions), actions
    return b"".join(a.data for a in actions if isinstance(a, Send))


def greeted(command: bytes = b"EHLO printer\r\n") -> SmtpSession:
    session = fresh()
    session.receive_data(command)
    return session


# -- greeting and plain commands --


def test_greeting_names_the_host() -> None:
    """start() sends the 220 banner with the configured host name."""
    assert SmtpSession().start() == [Send(b"220 xoauth2-proxy ESMTP xoauth2-proxy ready\r\n")]
    custom = SmtpSession(hostname="mail.lan").start()
    assert custom == [Send(b"220 mail.lan ESMTP xoauth2-proxy ready\r\n")]


def test_ehlo_lists_only_extensions_both_upstreams_support() -> None:
    """EHLO offers AUTH (both forms) and the extensions common to Office 365 and Dovecot."""
    assert fresh().receive_data(b"EHLO printer\r\n") == [Send(EHLO_REPLY)]


def test_ehlo_size_follows_option() -> None:
    """The SIZE keyword carries max_message_size."""
    session = SmtpSession(max_message_size=35_000_000)
    assert b"250-SIZE 35000000\r\n" in replies(session, b"EHLO x\r\n")


@pytest.mark.parametrize(
    ("command", "answer"),
    [
        (b"HELO printer", b"250 xoauth2-proxy\r\n"),
        (b"EHLO", b"501 5.5.4 Syntax: EHLO hostname\r\n"),
        (b"HELO", b"501 5.5.4 Syntax: HELO hostname\r\n"),
        (b"MAIL FROM:<scanner@contoso.com>", b"530 5.7.0 Authentication required\r\n"),
        (b"RCPT TO:<boss@contoso.com>", b"530 5.7.0 Authentication required\r\n"),
        (b"DATA", b"530 5.7.0 Authentication required\r\n"),
        (b"BDAT 10 LAST", b"530 5.7.0 Authentication required\r\n"),
        (b"RSET", b"250 2.0.0 OK\r\n"),
        (b"NOOP", b"250 2.0.0 OK\r\n"),
        (b"noop", b"250 2.0.0 OK\r\n"),
        (b"STARTTLS", b"502 5.5.1 STARTTLS is not available on this port\r\n"),
        (b"VRFY boss", b"252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery"
                       b"\r\n"),
        (b"XYZZY", b"500 5.5.2 Command not recognised\r\n"),
        (b"", b"500 5.5.2 Command not recognised\r\n"),
        (b"AUTH PLAIN", b"503 5.5.1 Send EHLO or HELO first\r\n"),
        (b"AUTH LOGIN", b"503 5.5.1 Send EHLO or HELO first\r\n"),
    ],
)
def test_command_before_greeting_and_login(command: bytes, answer: bytes) -> None:
    """Each pre-login command gets its fixed answer; no mail transaction, no AUTH before HELO."""
    assert replies(fresh(), command + b"\r\n") == answer


def test_quit_says_bye_and_closes_then_ignores_input() -> None:
    """QUIT answers 221 and closes; anything after it (even pipelined) is ignored."""
    session = fresh()
    assert session.receive_data(b"QUIT\r\nNOOP\r\n") == [Send(b"221 2.0.0 Bye\r\n"), Close()]
    assert session.receive_data(b"NOOP\r\n") == []


def test_bare_lf_line_endings_are_accepted() -> None:
    """Printers that end lines with a bare LF are understood."""
    assert replies(fresh(), b"HELO printer\nNOOP\n") == b"250 xoauth2-proxy\r\n250 2.0.0 OK\r\n"


def test_overlong_line_is_refused_and_session_goes_on() -> None:
    """A line over max_line gets 500 5.5.2 Line too long, and the next command works."""
    session = SmtpSession(max_line=64)
    session.start()
    data = b"NOOP " + b"x" * 200 + b"\r\nNOOP\r\n"
    assert replies(session, data) == b"500 5.5.2 Line too long\r\n250 2.0.0 OK\r\n"


def test_error_cap_closes_with_421() -> None:
    """After max_errors error replies the session answers 421 4.7.0 and closes."""
    session = fresh()
    actions = session.receive_data(b"BOGUS\r\n" * 25)
    assert merged(actions) == [
        Send(b"500 5.5.2 Command not recognised\r\n" * 20
             + b"421 4.7.0 Too many errors, closing connection\r\n"),
        Close(),
    ]
    assert session.receive_data(b"NOOP\r\n") == []


# -- AUTH --


def test_printer_helo_auth_login_exchange() -> None:
    """HELO, AUTH LOGIN, user name, password: the prompts, then Login and nothing else."""
    session = fresh()
    assert replies(session, b"HELO printer\r\n") == b"250 xoauth2-proxy\r\n"
    assert replies(session, b"AUTH LOGIN\r\n") == b"334 VXNlcm5hbWU6\r\n"
    assert replies(session, b64(USER) + b"\r\n") == b"334 UGFzc3dvcmQ6\r\n"
    assert session.receive_data(b64(PASSWORD) + b"\r\n") == [Login(USER, PASSWORD)]
    assert session.login_succeeded(LoggedIn(("SIZE 157286400",))) == [
        Send(b"235 2.7.0 Authentication successful\r\n"),
        Relay(),
    ]
    assert session.take_unparsed() == b""


def test_auth_login_with_initial_user_name() -> None:
    """AUTH LOGIN <base64 user> skips the user name prompt."""
    session = greeted()
    assert replies(session, b"AUTH LOGIN " + b64(USER) + b"\r\n") == b"334 UGFzc3dvcmQ6\r\n"
    assert session.receive_data(b64(PASSWORD) + b"\r\n") == [Login(USER, PASSWORD)]


def test_auth_plain_with_initial_response() -> None:
    """AUTH PLAIN <initial response> gives Login at once."""
    session = greeted()
    assert session.receive_data(b"AUTH PLAIN " + PLAIN_IR + b"\r\n") == [Login(USER, PASSWORD)]


def test_auth_plain_without_initial_response() -> None:
    """AUTH PLAIN prompts with an empty 334, then takes the response line."""
    session = greeted()
    assert replies(session, b"auth plain\r\n") == b"334 \r\n"
    assert session.receive_data(PLAIN_IR + b"\r\n") == [Login(USER, PASSWORD)]


def test_auth_accepted_after_helo_only() -> None:
    """A HELO-only client can still authenticate with AUTH PLAIN."""
    session = greeted(b"HELO printer\r\n")
    assert session.receive_data(b"AUTH PLAIN " + PLAIN_IR + b"\r\n") == [Login(USER, PASSWORD)]


@pytest.mark.parametrize(
    "exchange",
    [
        [b"AUTH PLAIN\r\n", b"*\r\n"],
        [b"AUTH LOGIN\r\n", b"*\r\n"],
        [b"AUTH LOGIN\r\n", b64(USER) + b"\r\n", b"*\r\n"],
    ],
)
def test_star_cancels_authentication(exchange: list[bytes]) -> None:
    """`*` at any SASL step answers 501 5.7.0 and returns to command mode."""
    session = greeted()
    for line in exchange[:-1]:
        session.receive_data(line)
    assert replies(session, exchange[-1]) == b"501 5.7.0 Authentication cancelled\r\n"
    assert replies(session, b"NOOP\r\n") == b"250 2.0.0 OK\r\n"


@pytest.mark.parametrize(
    ("exchange", "answer"),
    [
        ([b"AUTH PLAIN !!!notbase64\r\n"], b"501 5.5.2 Invalid base64 data\r\n"),
        ([b"AUTH PLAIN\r\n", b"%%%\r\n"], b"501 5.5.2 Invalid base64 data\r\n"),
        ([b"AUTH LOGIN\r\n", b"@@\r\n"], b"501 5.5.2 Invalid base64 data\r\n"),
        ([b"AUTH LOGIN\r\n", b64(USER) + b"\r\n", b"a\r\n"], b"501 5.5.2 Invalid base64 data\r\n"),
        ([b"AUTH PLAIN =\r\n"], b"501 5.5.2 Invalid PLAIN response\r\n"),
        ([b"AUTH PLAIN " + b64("nobody") + b"\r\n"], b"501 5.5.2 Invalid PLAIN response\r\n"),
        (
            [b"AUTH PLAIN " + b64(f"boss@contoso.com\0{USER}\0{PASSWORD}") + b"\r\n"],
            b"501 5.5.2 Authorisation identity must be empty or equal the user name\r\n",
        ),
    ],
)
def test_undecodable_sasl_response_is_501_and_auth_works_again(
    exchange: list[bytes], answer: bytes
) -> None:
    """Bad base64 or a malformed PLAIN response gets 501 5.5.2; a new AUTH then succeeds."""
    session = greeted()
    for line in exchange[:-1]:
        session.receive_data(line)
    assert replies(session, exchange[-1]) == answer
    assert session.receive_data(b"AUTH PLAIN " + PLAIN_IR + b"\r\n") == [Login(USER, PASSWORD)]


def test_auth_login_empty_initial_response_means_empty_user_name() -> None:
    """AUTH LOGIN = is an empty user name (RFC 4954): refused as wrong credentials, no Login."""
    session = greeted()
    assert replies(session, b"AUTH LOGIN =\r\n") == b"334 UGFzc3dvcmQ6\r\n"
    assert replies(session, b64(PASSWORD) + b"\r\n").startswith(b"535 5.7.8 ")


UNSUPPORTED_MECHANISM = b"504 5.5.4 Unrecognised authentication mechanism; use PLAIN or LOGIN\r\n"


@pytest.mark.parametrize(
    ("command", "answer"),
    [
        (b"AUTH CRAM-MD5", UNSUPPORTED_MECHANISM),
        (b"AUTH XOAUTH2 abc", UNSUPPORTED_MECHANISM),
        (b"AUTH", b"501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n"),
        (b"AUTH PLAIN a b", b"501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n"),
    ],
)
def test_auth_command_errors(command: bytes, answer: bytes) -> None:
    """Unsupported mechanisms get 504 5.5.4, malformed AUTH lines 501 5.5.4."""
    assert replies(greeted(), command + b"\r\n") == answer


def test_overlong_sasl_response_ends_the_exchange() -> None:
    """A SASL response over max_line gets 500 5.5.2 and the session is back in command mode."""
    session = SmtpSession(max_line=64)
    session.start()
    session.receive_data(b"EHLO x\r\nAUTH PLAIN\r\n")
    data = b"A" * 200 + b"\r\nNOOP\r\n"
    assert replies(session, data) == b"500 5.5.2 Line too long\r\n250 2.0.0 OK\r\n"


# -- the login outcome --


def test_nothing_happens_while_login_is_pending() -> None:
    """After Login the session only buffers until told the outcome."""
    session = greeted()
    session.receive_data(b"AUTH PLAIN " + PLAIN_IR + b"\r\n")
    assert session.receive_data(b"NOOP\r\nQUIT\r\n") == []
    assert session.take_unparsed() == b"NOOP\r\nQUIT\r\n"


def test_pipelined_mail_from_after_auth_is_left_for_the_relay() -> None:
    """AUTH PLAIN <ir> and MAIL FROM in one chunk: MAIL FROM stays unparsed for the upstream."""
    session = greeted()
    actions = session.receive_data(b"AUTH PLAIN " + PLAIN_IR + b"\r\nMAIL FROM:<a@b>\r\n")
    assert actions == [Login(USER, PASSWORD)]
    assert session.login_succeeded(LoggedIn()) == [
        Send(b"235 2.7.0 Authentication successful\r\n"),
        Relay(),
    ]
    assert session.take_unparsed() == b"MAIL FROM:<a@b>\r\n"


@pytest.mark.parametrize(
    ("error", "answer"),
    [
        (WrongPassword(), b"535 5.7.8 Wrong user name or password.\r\n"),
        (
            NeedsReauthorisation(USER),
            (
                b"535 5.7.8 Stored sign-in for scanner@contoso.com is no longer valid;"
                b" run: xoauth2-proxy account add scanner@contoso.com\r\n"
            ),
        ),
        (
            UpstreamUnavailable(),
            b"454 4.7.0 The mail server could not be reached; try again later.\r\n",
        ),
        (TemporaryFailure("two\r\nlines\n"), b"454 4.7.0 two lines\r\n"),
        (ProxyError("caf\u00e9 \x00 x"), b"454 4.7.0 caf? x\r\n"),
    ],
)
def test_login_failure_answer_follows_kind(error: ProxyError, answer: bytes) -> None:
    """CREDENTIALS -> 535 5.7.8, TEMPORARY -> 454 4.7.0; one ASCII line; then commands again."""
    session = greeted()
    session.receive_data(b"AUTH PLAIN " + PLAIN_IR + b"\r\n")
    assert session.login_failed(error) == [Send(answer)]
    assert replies(session, b"NOOP\r\n") == b"250 2.0.0 OK\r\n"


def test_pipelined_commands_after_failed_login_are_answered() -> None:
    """After login_failed, commands buffered during the wait are answered in order."""
    session = greeted()
    session.receive_data(b"AUTH PLAIN " + PLAIN_IR + b"\r\nMAIL FROM:<a@b>\r\nQUIT\r\n")
    assert session.login_failed(WrongPassword()) == [
        Send(
            b"535 5.7.8 Wrong user name or password.\r\n"
            b"530 5.7.0 Authentication required\r\n"
            b"221 2.0.0 Bye\r\n"
        ),
        Close(),
    ]


def test_failed_logins_count_towards_the_error_cap() -> None:
    """Repeated wrong passwords end in 421 and Close like any other errors."""
    session = SmtpSession(max_errors=3)
    session.start()
    session.receive_data(b"EHLO x\r\n")
    for _ in range(2):
        session.receive_data(b"AUTH PLAIN " + PLAIN_IR + b"\r\n")
        assert session.login_failed(WrongPassword()) == [
            Send(b"535 5.7.8 Wrong user name or password.\r\n")
        ]
    session.receive_data(b"AUTH PLAIN " + PLAIN_IR + b"\r\n")
    assert session.login_failed(WrongPassword()) == [
        Send(
            b"535 5.7.8 Wrong user name or password.\r\n"
            b"421 4.7.0 Too many errors, closing connection\r\n"
        ),
        Close(),
    ]


def test_outcome_without_pending_login_is_a_programming_error() -> None:
    """login_succeeded/login_failed outside the wait raise instead of corrupting the state."""
    session = greeted()
    with pytest.raises(RuntimeError):
        session.login_succeeded(LoggedIn())
    with pytest.raises(RuntimeError):
        session.login_failed(WrongPassword())


def test_password_is_never_echoed() -> None:
    """No reply in a full exchange (success and failure) contains the password."""
    session = fresh()
    written = replies(session, b"EHLO x\r\nAUTH LOGIN " + b64(USER) + b"\r\n")
    session.receive_data(b64(PASSWORD) + b"\r\n")
    for action in session.login_failed(WrongPassword()):
        assert isinstance(action, Send)
        written += action.data
    assert PASSWORD.encode() not in written and b64(PASSWORD) not in written
    assert PASSWORD not in repr(Login(USER, PASSWORD))


# -- same results whatever the chunking --

SCRIPTS: list[tuple[bytes, list[ProxyError | None]]] = [
    # (client bytes, outcomes for successive Logins: None = success)
    (b"HELO printer\r\nAUTH LOGIN\r\n" + b64(USER) + b"\r\n" + b64(PASSWORD) + b"\r\nQUIT\r\n",
     [None]),
    (b"EHLO x\r\nAUTH PLAIN " + PLAIN_IR + b"\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n", [None]),
    (b"EHLO x\r\nAUTH PLAIN " + PLAIN_IR + b"\r\nMAIL FROM:<a@b>\r\nAUTH PLAIN\r\n"
     + PLAIN_IR + b"\r\nDATA\r\n", [WrongPassword(), UpstreamUnavailable()]),
    (b"NOOP\nAUTH PLAIN\r\nEHLO a\r\nAUTH PLAIN\r\n*\r\nAUTH LOGIN =\r\n!\r\n" + b"x" * 5000
     + b"\r\nVRFY u\r\nBOGUS\r\n" * 25, []),
]


def drive(
    chunks: list[bytes], outcomes: list[ProxyError | None]
) -> tuple[list[FrontAction], bytes]:
    """Feed chunks, answering each Login with the next outcome; the merged trace and leftovers."""
    session = SmtpSession()
    pending = list(outcomes)
    trace: list[FrontAction] = list(session.start())
    for chunk in chunks:
        actions = session.receive_data(chunk)
        trace += actions
        while actions and isinstance(actions[-1], Login):
            outcome = pending.pop(0)
            if outcome is None:
                actions = session.login_succeeded(LoggedIn())
            else:
                actions = session.login_failed(outcome)
            trace += actions
    return merged(trace), session.take_unparsed()




@pytest.mark.parametrize(("script", "outcomes"), SCRIPTS)
def test_one_byte_at_a_time_gives_the_same_result(
    script: bytes, outcomes: list[ProxyError | None]
) -> None:
    """Feeding byte by byte yields the same actions and leftovers as one chunk."""
    whole = drive([script], outcomes)
    assert drive([script[i:i + 1] for i in range(len(script))], outcomes) == whole


@settings(max_examples=200, deadline=None)
@given(index=st.integers(0, len(SCRIPTS) - 1), cuts=st.lists(st.integers(0, 10**6), max_size=30))
def test_random_splits_give_the_same_result(index: int, cuts: list[int]) -> None:
    """Any split of the input yields the same actions and leftovers as one chunk."""
    script, outcomes = SCRIPTS[index]
    assert drive(split(script, cuts), outcomes) == drive([script], outcomes)


# -- arbitrary input --

FRAGMENTS = st.one_of(
    st.binary(max_size=40),
    st.sampled_from(
        [b"EHLO x\r\n", b"HELO y\n", b"AUTH PLAIN", b"AUTH LOGIN", b" ", b"\r\n", b"\n", b"*",
         b"=", PLAIN_IR, b64(USER), b64(PASSWORD), b"QUIT", b"MAIL FROM:<a@b>", b"\x00", b"\xff"]
    ),
)
REPLY_LINE = re.compile(rb"[2-5][0-9][0-9][ -][ -~]*\r\n")


def assert_well_formed(actions: list[FrontAction]) -> None:
    for action in actions:
        if isinstance(action, Send):
            lines = action.data.split(b"\r\n")
            assert lines[-1] == b""
            assert all(REPLY_LINE.fullmatch(line + b"\r\n") for line in lines[:-1])


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(FRAGMENTS, max_size=40), fail=st.booleans())
def test_arbitrary_input_never_breaks_the_session(pieces: list[bytes], fail: bool) -> None:
    """Arbitrary bytes never raise; replies are well-formed; Login only after HELO/EHLO and AUTH."""
    session = SmtpSession(max_line=256)
    session.start()
    fed = b""
    closed = False
    for piece in pieces:
        fed += piece
        actions = session.receive_data(piece)
        assert not closed or actions == []
        assert_well_formed(actions)
        closed = closed or Close() in actions
        logins = [a for a in actions if isinstance(a, Login)]
        if not logins:
            continue
        assert logins == [actions[-1]]  # nothing follows a Login until the outcome
        upper = fed.upper()
        greetings = [i for i in (upper.find(b"EHLO"), upper.find(b"HELO")) if i >= 0]
        assert greetings and upper.rfind(b"AUTH") > min(greetings)
        if not fail:
            assert session.login_succeeded(LoggedIn())[-1] == Relay()
            return
        actions = session.login_failed(WrongPassword())
        assert_well_formed(actions)
        closed = closed or Close() in actions
