"""SmtpSession: bytes from the legacy SMTP client in, actions out, as Playbook scripts."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.actions import Close, FrontAction, LoggedIn, Login, Phase, Relay, Send, StartTLS
from proxy.errors import (
    NeedsReauthorisation,
    ProxyError,
    TemporaryFailure,
    UpstreamUnavailable,
    WrongPassword,
)
from proxy.smtp import SmtpSession
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

USER = "scanner@contoso.com"
PASSWORD = "s3cret-Passw0rd"
PLAIN_IR = b64(f"\0{USER}\0{PASSWORD}")
BANNER = line("220 xoauth2-proxy ESMTP xoauth2-proxy ready")
EHLO_REPLY = Send(
    b"250-xoauth2-proxy\r\n"
    b"250-PIPELINING\r\n"
    b"250-SIZE 157286400\r\n"
    b"250-8BITMIME\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n"
    b"250-CHUNKING\r\n"
    b"250-AUTH PLAIN LOGIN\r\n"
    b"250 AUTH=PLAIN LOGIN\r\n"
)
EHLO_BEFORE_TLS = Send(
    b"250-xoauth2-proxy\r\n"
    b"250-PIPELINING\r\n"
    b"250-SIZE 157286400\r\n"
    b"250-8BITMIME\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n"
    b"250-CHUNKING\r\n"
    b"250 STARTTLS\r\n"
)
USERNAME_PROMPT = line("334 VXNlcm5hbWU6")
PASSWORD_PROMPT = line("334 UGFzc3dvcmQ6")
WRONG_ANSWER = line("535 5.7.8 Wrong user name or password.")
SUCCESS = line("235 2.7.0 Authentication successful")
UNRECOGNISED = line("500 5.5.2 Command not recognised")


def greeted(command: bytes = b"EHLO printer\r\n", **options: object) -> Playbook:
    """A script that starts after the client's EHLO (or `command`)."""
    answer = EHLO_REPLY if command.startswith(b"EHLO") else line("250 xoauth2-proxy")
    return Playbook(SmtpSession, **options) >> Received(command) << answer


# -- greeting and plain commands --


def test_greeting_names_the_host() -> None:
    """start() sends the 220 banner with the configured host name."""
    assert Playbook(SmtpSession) >> Started() << BANNER
    assert (
        Playbook(SmtpSession, hostname="mail.lan")
        >> Started()
        << line("220 mail.lan ESMTP xoauth2-proxy ready")
    )


def test_ehlo_lists_only_extensions_both_upstreams_support() -> None:
    """EHLO offers AUTH (both forms) and the extensions common to Office 365 and Dovecot."""
    assert greeted()


def test_ehlo_size_follows_option() -> None:
    """The SIZE keyword carries max_message_size."""
    (answer,) = SmtpSession(max_message_size=35_000_000).receive_data(b"EHLO x\r\n")
    assert isinstance(answer, Send) and b"250-SIZE 35000000\r\n" in answer.data


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
        (b"HELP", b"214 2.0.0 Log in with AUTH PLAIN or AUTH LOGIN, then send as usual\r\n"),
        (b"XYZZY", b"500 5.5.2 Command not recognised\r\n"),
        (b"", b"500 5.5.2 Command not recognised\r\n"),
        (b"AUTH PLAIN", b"503 5.5.1 Send EHLO or HELO first\r\n"),
        (b"AUTH LOGIN", b"503 5.5.1 Send EHLO or HELO first\r\n"),
    ],
)
def test_command_before_greeting_and_login(command: bytes, answer: bytes) -> None:
    """Each pre-login command gets its fixed answer; no mail transaction, no AUTH before HELO."""
    assert Playbook(SmtpSession) >> Received(command + b"\r\n") << Send(answer)


def test_quit_says_bye_and_closes_then_ignores_input() -> None:
    """QUIT answers 221 and closes; anything after it (even pipelined) is ignored."""
    assert (
        Playbook(SmtpSession)
        >> Received(b"QUIT\r\nNOOP\r\n")
        << line("221 2.0.0 Bye")
        << Close()
        >> Received(b"NOOP\r\n")
    )


def test_bare_lf_line_endings_are_accepted() -> None:
    """Printers that end lines with a bare LF are understood."""
    assert (
        Playbook(SmtpSession)
        >> Received(b"HELO printer\nNOOP\n")
        << line("250 xoauth2-proxy")
        << line("250 2.0.0 OK")
    )


def test_overlong_line_is_refused_and_session_goes_on() -> None:
    """A line over max_line gets 500 5.5.2 Line too long, and the next command works."""
    assert (
        Playbook(SmtpSession, max_line=64)
        >> Received(b"NOOP " + b"x" * 200 + b"\r\nNOOP\r\n")
        << line("500 5.5.2 Line too long")
        << line("250 2.0.0 OK")
    )


def test_error_cap_closes_with_421() -> None:
    """After max_errors error replies the session answers 421 4.7.0 and closes."""
    assert (
        Playbook(SmtpSession)
        >> Received(b"BOGUS\r\n" * 25)
        << Send(UNRECOGNISED.data * 20)
        << line("421 4.7.0 Too many errors, closing connection")
        << Close()
        >> Received(b"NOOP\r\n")
    )


# -- AUTH --


def test_printer_helo_auth_login_exchange() -> None:
    """HELO, AUTH LOGIN, user name, password: the prompts, then Login and nothing else."""
    assert (
        Playbook(SmtpSession)
        >> Received(b"HELO printer\r\n")
        << line("250 xoauth2-proxy")
        >> Received(b"AUTH LOGIN\r\n")
        << USERNAME_PROMPT
        >> Received(b64(USER) + b"\r\n")
        << PASSWORD_PROMPT
        >> Received(b64(PASSWORD) + b"\r\n")
        << Login(USER, PASSWORD)
        >> Succeeded(LoggedIn(("SIZE 157286400",)))
        << SUCCESS
        << Relay()
    )


def test_auth_login_with_initial_user_name() -> None:
    """AUTH LOGIN <base64 user> skips the user name prompt."""
    assert (
        greeted()
        >> Received(b"AUTH LOGIN " + b64(USER) + b"\r\n")
        << PASSWORD_PROMPT
        >> Received(b64(PASSWORD) + b"\r\n")
        << Login(USER, PASSWORD)
    )


def test_auth_plain_with_initial_response() -> None:
    """AUTH PLAIN <initial response> gives Login at once."""
    assert greeted() >> Received(b"AUTH PLAIN " + PLAIN_IR + b"\r\n") << Login(USER, PASSWORD)


def test_auth_plain_without_initial_response() -> None:
    """AUTH PLAIN prompts with an empty 334, then takes the response line."""
    assert (
        greeted()
        >> Received(b"auth plain\r\n")
        << line("334 ")
        >> Received(PLAIN_IR + b"\r\n")
        << Login(USER, PASSWORD)
    )


def test_auth_accepted_after_helo_only() -> None:
    """A HELO-only client can still authenticate with AUTH PLAIN."""
    assert (
        greeted(b"HELO printer\r\n")
        >> Received(b"AUTH PLAIN " + PLAIN_IR + b"\r\n")
        << Login(USER, PASSWORD)
    )


@pytest.mark.parametrize(
    "exchange",
    [
        [(b"AUTH PLAIN\r\n", line("334 "))],
        [(b"AUTH LOGIN\r\n", USERNAME_PROMPT)],
        [(b"AUTH LOGIN\r\n", USERNAME_PROMPT), (b64(USER) + b"\r\n", PASSWORD_PROMPT)],
    ],
)
def test_star_cancels_authentication(exchange: list[tuple[bytes, Send]]) -> None:
    """`*` at any SASL step answers 501 5.7.0 and returns to command mode."""
    playbook = greeted()
    for data, prompt in exchange:
        playbook = playbook >> Received(data) << prompt
    assert (
        playbook
        >> Received(b"*\r\n")
        << line("501 5.7.0 Authentication cancelled")
        >> Received(b"NOOP\r\n")
        << line("250 2.0.0 OK")
    )


def test_star_as_initial_response_is_no_cancel() -> None:
    """`*` cancels only as the answer to a challenge: as an initial response it is bad base64."""
    assert (
        greeted()
        >> Received(b"AUTH PLAIN *\r\n")
        << line("501 5.5.2 Invalid base64 data")
    )


@pytest.mark.parametrize(
    ("exchange", "answer"),
    [
        ([b"AUTH PLAIN !!!notbase64\r\n"], "501 5.5.2 Invalid base64 data"),
        ([b"AUTH PLAIN\r\n", b"%%%\r\n"], "501 5.5.2 Invalid base64 data"),
        ([b"AUTH LOGIN\r\n", b"@@\r\n"], "501 5.5.2 Invalid base64 data"),
        ([b"AUTH LOGIN\r\n", b64(USER) + b"\r\n", b"a\r\n"], "501 5.5.2 Invalid base64 data"),
        ([b"AUTH LOGIN\r\n", b64(USER) + b"\r\n", b"=\r\n"], "501 5.5.2 Invalid base64 data"),
        ([b"AUTH PLAIN =\r\n"], "501 5.5.2 Invalid PLAIN response"),
        ([b"AUTH PLAIN " + b64("nobody") + b"\r\n"], "501 5.5.2 Invalid PLAIN response"),
        (
            [b"AUTH PLAIN " + b64(f"boss@contoso.com\0{USER}\0{PASSWORD}") + b"\r\n"],
            "501 5.5.2 Authorisation identity must be empty or equal the user name",
        ),
    ],
)
def test_undecodable_sasl_response_is_501_and_auth_works_again(
    exchange: list[bytes], answer: str
) -> None:
    """Bad base64 (a `=` after a challenge included) or a malformed PLAIN response gets
    501 5.5.2; a new AUTH then succeeds."""
    session = SmtpSession()
    session.receive_data(b"EHLO x\r\n")
    for data in exchange[:-1]:
        session.receive_data(data)
    assert session.receive_data(exchange[-1]) == [line(answer)]
    assert session.receive_data(b"AUTH PLAIN " + PLAIN_IR + b"\r\n") == [Login(USER, PASSWORD)]


@pytest.mark.parametrize(
    ("data", "prompts"),
    [
        (b"AUTH LOGIN =\r\n", []),
        (b"AUTH LOGIN\r\n\r\n", [USERNAME_PROMPT]),
        (b"AUTH PLAIN " + b64(f"\0\0{PASSWORD}") + b"\r\n", []),
        (b"AUTH PLAIN " + b64(f"\0{USER}\0") + b"\r\n", []),
        (b"AUTH LOGIN " + b64(USER) + b"\r\n\r\n", [PASSWORD_PROMPT]),
    ],
)
def test_empty_user_name_or_password_is_a_wrong_password(data: bytes, prompts: list[Send]) -> None:
    """An empty user name (AUTH LOGIN = is one, RFC 4954) or password is refused as wrong
    credentials, with no Login; an empty user name before the password is asked for."""
    playbook = greeted() >> Received(data)
    for prompt in prompts:
        playbook = playbook << prompt
    assert playbook << WRONG_ANSWER


UNSUPPORTED_MECHANISM = "504 5.5.4 Unrecognised authentication mechanism; use PLAIN or LOGIN"


@pytest.mark.parametrize(
    ("command", "answer"),
    [
        (b"AUTH CRAM-MD5", UNSUPPORTED_MECHANISM),
        (b"AUTH XOAUTH2 abc", UNSUPPORTED_MECHANISM),
        (b"AUTH", "501 5.5.4 Syntax: AUTH mechanism [initial-response]"),
        (b"AUTH PLAIN a b", "501 5.5.4 Syntax: AUTH mechanism [initial-response]"),
    ],
)
def test_auth_command_errors(command: bytes, answer: str) -> None:
    """Unsupported mechanisms get 504 5.5.4, malformed AUTH lines 501 5.5.4."""
    assert greeted() >> Received(command + b"\r\n") << line(answer)


def test_overlong_sasl_response_ends_the_exchange() -> None:
    """A SASL response over max_line gets 500 5.5.2 and the session is back in command mode."""
    assert (
        greeted(b"EHLO x\r\n", max_line=64)
        >> Received(b"AUTH PLAIN\r\n")
        << line("334 ")
        >> Received(b"A" * 200 + b"\r\nNOOP\r\n")
        << line("500 5.5.2 Line too long")
        << line("250 2.0.0 OK")
    )


# -- the login outcome --


def test_nothing_happens_while_login_is_pending() -> None:
    """After Login the session only buffers until told the outcome."""
    assert (
        greeted()
        >> Received(b"AUTH PLAIN " + PLAIN_IR + b"\r\n")
        << Login(USER, PASSWORD)
        >> Received(b"NOOP\r\nQUIT\r\n")
        >> Unparsed(b"NOOP\r\nQUIT\r\n")
    )


def test_pipelined_mail_from_after_auth_is_left_for_the_relay() -> None:
    """AUTH PLAIN <ir> and MAIL FROM in one chunk: MAIL FROM stays unparsed for the upstream."""
    assert (
        greeted()
        >> Received(b"AUTH PLAIN " + PLAIN_IR + b"\r\nMAIL FROM:<a@b>\r\n")
        << Login(USER, PASSWORD)
        >> Succeeded()
        << SUCCESS
        << Relay()
        >> Unparsed(b"MAIL FROM:<a@b>\r\n")
    )


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
    assert (
        greeted()
        >> Received(b"AUTH PLAIN " + PLAIN_IR + b"\r\n")
        << Login(USER, PASSWORD)
        >> Failed(error)
        << Send(answer)
        >> Received(b"NOOP\r\n")
        << line("250 2.0.0 OK")
    )


def test_pipelined_commands_after_failed_login_are_answered() -> None:
    """After login_failed, commands buffered during the wait are answered in order."""
    assert (
        greeted()
        >> Received(b"AUTH PLAIN " + PLAIN_IR + b"\r\nMAIL FROM:<a@b>\r\nQUIT\r\n")
        << Login(USER, PASSWORD)
        >> Failed(WrongPassword())
        << WRONG_ANSWER
        << line("530 5.7.0 Authentication required")
        << line("221 2.0.0 Bye")
        << Close()
    )


def test_failed_logins_count_towards_the_error_cap() -> None:
    """Repeated wrong passwords end in 421 and Close like any other errors."""
    login = Received(b"AUTH PLAIN " + PLAIN_IR + b"\r\n")
    playbook = greeted(b"EHLO x\r\n", max_errors=3)
    for _ in range(2):
        playbook = playbook >> login << Login(USER, PASSWORD) >> Failed(WrongPassword())
        playbook = playbook << WRONG_ANSWER
    assert (
        playbook
        >> login
        << Login(USER, PASSWORD)
        >> Failed(WrongPassword())
        << WRONG_ANSWER
        << line("421 4.7.0 Too many errors, closing connection")
        << Close()
    )


def test_phase_follows_the_conversation() -> None:
    """The public phase reads READING, LOGGING_IN after a Login, READING again after a
    failure, RELAYING after success; CLOSED after QUIT."""
    session = SmtpSession()
    session.receive_data(b"EHLO x\r\n")
    assert session.phase is Phase.READING
    session.receive_data(b"AUTH PLAIN " + PLAIN_IR + b"\r\n")
    assert session.phase is Phase.LOGGING_IN
    session.login_failed(WrongPassword())
    assert session.phase is Phase.READING
    session.receive_data(b"AUTH PLAIN " + PLAIN_IR + b"\r\n")
    session.login_succeeded(LoggedIn())
    assert session.phase is Phase.RELAYING
    closing = SmtpSession()
    closing.receive_data(b"QUIT\r\n")
    assert closing.phase is Phase.CLOSED


def test_outcome_without_pending_login_is_a_programming_error() -> None:
    """login_succeeded/login_failed outside the wait raise instead of corrupting the state."""
    session = SmtpSession()
    session.receive_data(b"EHLO printer\r\n")
    with pytest.raises(RuntimeError):
        session.login_succeeded(LoggedIn())
    with pytest.raises(RuntimeError):
        session.login_failed(WrongPassword())


def test_starttls_forgets_the_greeting_and_drops_plaintext_pipelined_after_it() -> None:
    """STARTTLS answers 220 and asks for TLS; what was pipelined in clear is dropped, and AUTH
    needs a new EHLO (RFC 3207 4.2), which offers AUTH and no longer STARTTLS."""
    assert (
        Playbook(SmtpSession, starttls=True, login_requires_tls=True)
        >> Received(b"EHLO x\r\nAUTH PLAIN " + PLAIN_IR + b"\r\nSTARTTLS\r\nAUTH PLAIN x\r\n")
        << EHLO_BEFORE_TLS
        << line("530 5.7.0 Must issue a STARTTLS command first")
        << line("220 2.0.0 Ready to start TLS")
        << StartTLS()
        >> Unparsed(b"")
        >> Received(b"AUTH PLAIN " + PLAIN_IR + b"\r\nEHLO x\r\nAUTH PLAIN " + PLAIN_IR + b"\r\n")
        << line("503 5.5.1 Send EHLO or HELO first")
        << EHLO_REPLY
        << Login(USER, PASSWORD)
    )


def test_password_is_never_echoed() -> None:
    """No reply in a full exchange (success and failure) contains the password."""
    session = SmtpSession()
    written = b"".join(a.data for a in session.start() if isinstance(a, Send))
    for data in (b"EHLO x\r\nAUTH LOGIN " + b64(USER) + b"\r\n", b64(PASSWORD) + b"\r\n"):
        written += b"".join(a.data for a in session.receive_data(data) if isinstance(a, Send))
    for action in session.login_failed(WrongPassword()):
        assert isinstance(action, Send)
        written += action.data
    assert PASSWORD.encode() not in written and b64(PASSWORD) not in written
    assert PASSWORD not in repr(Login(USER, PASSWORD))


# -- whole conversations, the same whatever the chunking --

SCRIPTS = [
    pytest.param(
        Playbook(SmtpSession)
        >> Started()
        << BANNER
        >> Received(
            b"HELO printer\r\nAUTH LOGIN\r\n" + b64(USER) + b"\r\n" + b64(PASSWORD) + b"\r\nQUIT\r\n"
        )
        << line("250 xoauth2-proxy")
        << USERNAME_PROMPT
        << PASSWORD_PROMPT
        << Login(USER, PASSWORD)
        >> Succeeded()
        << SUCCESS
        << Relay()
        >> Unparsed(b"QUIT\r\n"),
        id="printer-auth-login",
    ),
    pytest.param(
        Playbook(SmtpSession)
        >> Started()
        << BANNER
        >> Received(b"EHLO x\r\nAUTH PLAIN " + PLAIN_IR + b"\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n")
        << EHLO_REPLY
        << Login(USER, PASSWORD)
        >> Succeeded()
        << SUCCESS
        << Relay()
        >> Unparsed(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"),
        id="pipelined-transaction-left-for-the-relay",
    ),
    pytest.param(
        Playbook(SmtpSession)
        >> Started()
        << BANNER
        >> Received(
            b"EHLO x\r\nAUTH PLAIN " + PLAIN_IR + b"\r\nMAIL FROM:<a@b>\r\nAUTH PLAIN\r\n"
            + PLAIN_IR + b"\r\nDATA\r\n"
        )
        << EHLO_REPLY
        << Login(USER, PASSWORD)
        >> Failed(WrongPassword())
        << WRONG_ANSWER
        << line("530 5.7.0 Authentication required")
        << line("334 ")
        << Login(USER, PASSWORD)
        >> Failed(UpstreamUnavailable())
        << line("454 4.7.0 The mail server could not be reached; try again later.")
        << line("530 5.7.0 Authentication required"),
        id="failures-then-buffered-commands",
    ),
    pytest.param(
        Playbook(SmtpSession)
        >> Started()
        << BANNER
        >> Received(
            b"NOOP\nAUTH PLAIN\r\nEHLO a\r\nAUTH PLAIN\r\n*\r\nAUTH LOGIN =\r\n!\r\n"
            + b"x" * 5000 + b"\r\nVRFY u\r\nBOGUS\r\n" * 25
        )
        << line("250 2.0.0 OK")
        << line("503 5.5.1 Send EHLO or HELO first")  # error 1
        << EHLO_REPLY
        << line("334 ")
        << line("501 5.7.0 Authentication cancelled")  # 2
        << WRONG_ANSWER  # 3: an empty user name
        << UNRECOGNISED  # 4: "!"
        << line("500 5.5.2 Line too long")  # 5
        << line("252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery")
        << UNRECOGNISED  # 6: BOGUS; then an empty line, VRFY and BOGUS, seven times
        << Send(
            (
                UNRECOGNISED.data
                + b"252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n"
                + UNRECOGNISED.data
            )
            * 7
        )
        << line("421 4.7.0 Too many errors, closing connection")
        << Close(),
        id="errors-up-to-the-cap",
    ),
]

test_script, test_script_byte_by_byte, test_script_random_splits = script_tests(SCRIPTS)


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
    """Every Send is whole reply lines of printable ASCII."""
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
