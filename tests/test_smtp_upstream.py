"""SmtpUpstreamLogin: replies from Office 365 / Dovecot in, actions out."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.actions import Close, LoggedIn, LoginRefused, Send, StartTLS, UpstreamAction
from proxy.errors import FailureKind, Throttled, UpstreamRejected, UpstreamUnavailable
from proxy.smtp import SmtpUpstreamLogin
from tests.support.playbook import Playbook, Received, merged

# Microsoft's worked XOAUTH2 example (PROTOCOL-NOTES.md).
MAILBOX = "test@contoso.onmicrosoft.com"
TOKEN = "EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA"
XOAUTH2_LINE = (
    b"dXNlcj10ZXN0QGNvbnRvc28ub25taWNyb3NvZnQuY29tAWF1dGg9QmVhcmVyIEV3QkFBbDNCQUFVRkZwVUFvN0oz"
    b"VmUwYmpMQldaV0NjbFJDM0VvQUEBAQ==\r\n"
)

O365_BANNER = (
    b"220 SN4PR0501CA0123.outlook.office365.com Microsoft ESMTP MAIL Service ready at "
    b"Mon, 3 Mar 2025 10:00:00 +0000\r\n"
)
O365_EHLO_CLEAR = (
    b"250-SN4PR0501CA0123.outlook.office365.com Hello [203.0.113.7]\r\n"
    b"250-SIZE 157286400\r\n"
    b"250-PIPELINING\r\n"
    b"250-DSN\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n"
    b"250-STARTTLS\r\n"
    b"250-8BITMIME\r\n"
    b"250-BINARYMIME\r\n"
    b"250-CHUNKING\r\n"
    b"250 SMTPUTF8\r\n"
)
O365_STARTTLS_OK = b"220 2.0.0 SMTP server ready\r\n"
O365_CAPABILITIES = (
    "SIZE 157286400",
    "PIPELINING",
    "DSN",
    "ENHANCEDSTATUSCODES",
    "AUTH LOGIN XOAUTH2",
    "8BITMIME",
    "BINARYMIME",
    "CHUNKING",
    "SMTPUTF8",
)
O365_EHLO_TLS = (
    b"250-SN4PR0501CA0123.outlook.office365.com Hello [203.0.113.7]\r\n"
    + b"".join(f"250-{cap}\r\n".encode() for cap in O365_CAPABILITIES[:-1])
    + b"250 SMTPUTF8\r\n"
)
O365_CONTINUE = b"334 \r\n"
O365_SUCCESS = b"235 2.7.0 Authentication successful\r\n"

DOVECOT_BANNER = b"220 mail.test Dovecot (Debian) ready.\r\n"
DOVECOT_EHLO_CLEAR = (
    b"250-mail.test\r\n250-8BITMIME\r\n250-BURL imap\r\n250-CHUNKING\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n250-SIZE\r\n250-STARTTLS\r\n250 PIPELINING\r\n"
)
DOVECOT_EHLO_TLS = (
    b"250-mail.test\r\n250-8BITMIME\r\n250-AUTH PLAIN LOGIN XOAUTH2 OAUTHBEARER\r\n"
    b"250-BURL imap\r\n250-CHUNKING\r\n250-ENHANCEDSTATUSCODES\r\n250-SIZE\r\n250 PIPELINING\r\n"
)
DOVECOT_CHALLENGE = b"334 eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0=\r\n"
DOVECOT_FAILED = b"535 5.7.8 Authentication failed.\r\n"

QUIT_AND_CLOSE: list[UpstreamAction] = [Send(b"QUIT\r\n"), Close()]


def login(**options: object) -> SmtpUpstreamLogin:
    return SmtpUpstreamLogin(MAILBOX, TOKEN, **options)  # type: ignore[arg-type]


def up_to_auth(upstream: SmtpUpstreamLogin, banner: bytes = O365_BANNER,
               clear: bytes = O365_EHLO_CLEAR, tls: bytes = O365_EHLO_TLS) -> None:
    """Drive a login through STARTTLS to the point where the XOAUTH2 line has been sent."""
    for reply in (banner, clear, O365_STARTTLS_OK, tls, O365_CONTINUE):
        upstream.receive_data(reply)


def refusal(actions: list[UpstreamAction]) -> LoginRefused:
    """The LoginRefused that ends `actions`, after the polite QUIT and Close."""
    assert actions[:-1] == QUIT_AND_CLOSE
    last = actions[-1]
    assert isinstance(last, LoginRefused)
    assert last.error.kind is FailureKind.TEMPORARY
    assert TOKEN not in last.error.message
    assert XOAUTH2_LINE.strip().decode() not in last.error.message
    return last


# -- full transcripts --


def test_office365_transcript() -> None:
    """O365: EHLO, STARTTLS, StartTLS then EHLO over TLS, two-step XOAUTH2, LoggedIn with caps."""
    playbook = (
        Playbook(SmtpUpstreamLogin, mailbox=MAILBOX, access_token=TOKEN, ehlo_name="proxy.lan")
        >> Received(O365_BANNER)
        << Send(b"EHLO proxy.lan\r\n")
        >> Received(O365_EHLO_CLEAR)
        << Send(b"STARTTLS\r\n")
        >> Received(O365_STARTTLS_OK)
        << StartTLS()
        << Send(b"EHLO proxy.lan\r\n")
        >> Received(O365_EHLO_TLS)
        << Send(b"AUTH XOAUTH2\r\n")
        >> Received(O365_CONTINUE)
        << Send(XOAUTH2_LINE)
        >> Received(O365_SUCCESS)
        << LoggedIn(O365_CAPABILITIES)
    )
    assert playbook
    playbook.byte_by_byte()


def test_nothing_is_sent_between_starttls_and_its_answer() -> None:
    """After STARTTLS the login waits for the complete 220 before asking for TLS or sending."""
    upstream = login()
    upstream.receive_data(O365_BANNER)
    assert upstream.receive_data(O365_EHLO_CLEAR) == [Send(b"STARTTLS\r\n")]
    assert upstream.receive_data(b"220 2.0.0 SMTP ser") == []
    assert upstream.receive_data(b"ver ready\r\n") == [StartTLS(), Send(b"EHLO xoauth2-proxy\r\n")]


def test_dovecot_success_transcript() -> None:
    """Dovecot's submission service: the same steps, `235 2.7.0 Logged in.` gives LoggedIn."""
    upstream = login()
    up_to_auth(upstream, DOVECOT_BANNER, DOVECOT_EHLO_CLEAR, DOVECOT_EHLO_TLS)
    assert upstream.receive_data(b"235 2.7.0 Logged in.\r\n") == [
        LoggedIn(("8BITMIME", "AUTH PLAIN LOGIN XOAUTH2 OAUTHBEARER", "BURL imap", "CHUNKING",
                  "ENHANCEDSTATUSCODES", "SIZE", "PIPELINING"))
    ]


def test_dovecot_failure_challenge_is_answered_with_an_empty_line() -> None:
    """A 334 JSON challenge after the token gets an empty line; the 535 refuses, with detail."""
    upstream = login()
    up_to_auth(upstream, DOVECOT_BANNER, DOVECOT_EHLO_CLEAR, DOVECOT_EHLO_TLS)
    assert upstream.receive_data(DOVECOT_CHALLENGE) == [Send(b"\r\n")]
    refused = refusal(upstream.receive_data(DOVECOT_FAILED))
    assert isinstance(refused.error, UpstreamRejected)
    assert "535 5.7.8 Authentication failed." in refused.error.message
    assert '"status":"401"' in refused.error.message
    assert "xoauth2-proxy account check" in refused.error.message


def test_without_starttls_option_auth_follows_the_first_ehlo() -> None:
    """starttls=False (an implicit-TLS upstream): no STARTTLS, XOAUTH2 right after EHLO."""
    upstream = login(starttls=False)
    upstream.receive_data(O365_BANNER)
    assert upstream.receive_data(O365_EHLO_TLS) == [Send(b"AUTH XOAUTH2\r\n")]


def test_multiline_banner_and_bytes_after_235_are_kept() -> None:
    """A multi-line 220 banner is read whole; bytes after the 235 are left for the client."""
    upstream = login(starttls=False)
    assert upstream.receive_data(b"220-mail.test ESMTP\r\n220-second line\r\n") == []
    assert upstream.receive_data(b"220 ready\r\n") == [Send(b"EHLO xoauth2-proxy\r\n")]
    upstream.receive_data(O365_EHLO_TLS)
    upstream.receive_data(O365_CONTINUE)
    assert upstream.receive_data(O365_SUCCESS + b"250 2.0.0 extra\r\n") == [
        LoggedIn(O365_CAPABILITIES)
    ]
    assert upstream.receive_data(b"more") == []
    assert upstream.take_unparsed() == b"250 2.0.0 extra\r\nmore"


# -- failures --


def test_office365_wrong_token_is_rejected() -> None:
    """`535 5.7.3 Authentication unsuccessful` -> UpstreamRejected quoting the server."""
    upstream = login()
    up_to_auth(upstream)
    refused = refusal(upstream.receive_data(b"535 5.7.3 Authentication unsuccessful\r\n"))
    assert isinstance(refused.error, UpstreamRejected)
    assert "535 5.7.3 Authentication unsuccessful" in refused.error.message
    assert upstream.receive_data(b"421 bye\r\n") == []


def test_smtp_auth_disabled_for_tenant_tells_the_admin_the_fix() -> None:
    """5.7.139 SmtpClientAuthentication disabled -> temporary, with the Set-CASMailbox fix."""
    upstream = login()
    up_to_auth(upstream)
    refused = refusal(upstream.receive_data(
        b"535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the"
        b" Tenant. Visit https://aka.ms/smtp_auth_disabled for more information."
        b" [SN4PR0501CA0123.namprd05.prod.outlook.com]\r\n"
    ))
    assert isinstance(refused.error, UpstreamRejected)
    assert "Set-CASMailbox -Identity test@contoso.onmicrosoft.com" in refused.error.message
    assert "-SmtpClientAuthenticationDisabled $false" in refused.error.message


@pytest.mark.parametrize(
    ("reply", "error_type"),
    [
        (b"454 4.7.0 Temporary authentication failure\r\n", UpstreamUnavailable),
        (b"421 4.3.2 Service not available, closing transmission channel\r\n", UpstreamUnavailable),
        (b"451 4.7.500 Request is throttled. Suggested Backoff Time: 100 ms\r\n", Throttled),
    ],
)
def test_temporary_upstream_answers_are_temporary(reply: bytes, error_type: type) -> None:
    """4xx answers to the token (454, 421, throttling) are temporary failures."""
    upstream = login()
    up_to_auth(upstream)
    refused = refusal(upstream.receive_data(reply))
    assert type(refused.error) is error_type
    assert reply.decode().strip() in refused.error.message


def test_auth_xoauth2_refused_before_the_token() -> None:
    """A 5xx to `AUTH XOAUTH2` itself refuses the login without sending the token."""
    upstream = login(starttls=False)
    upstream.receive_data(O365_BANNER)
    upstream.receive_data(O365_EHLO_TLS)
    actions = upstream.receive_data(b"504 5.7.4 Unrecognized authentication type\r\n")
    assert isinstance(refusal(actions).error, UpstreamRejected)


@pytest.mark.parametrize(
    "banner",
    [
        b"421 4.3.2 Service not available\r\n",
        b"554-mail.test no SMTP service here\r\n554 5.3.2 go away\r\n",
    ],
)
def test_refusing_banner_is_unavailable(banner: bytes) -> None:
    """A 4xx/5xx banner -> LoginRefused(UpstreamUnavailable) quoting the server."""
    refused = refusal(login().receive_data(banner))
    assert isinstance(refused.error, UpstreamUnavailable)
    assert banner[:3].decode() in refused.error.message
    assert "go away" in refused.error.message or "Service not available" in refused.error.message


def test_missing_starttls_is_refused_and_nothing_sent_in_clear() -> None:
    """An EHLO without STARTTLS ends the login; neither AUTH nor the token goes out in clear."""
    upstream = login()
    upstream.receive_data(O365_BANNER)
    refused = refusal(upstream.receive_data(O365_EHLO_TLS))  # lists AUTH but no STARTTLS
    assert isinstance(refused.error, UpstreamUnavailable)
    assert "does not offer STARTTLS" in refused.error.message


def test_refused_starttls_is_unavailable() -> None:
    """A non-220 answer to STARTTLS ends the login."""
    upstream = login()
    upstream.receive_data(O365_BANNER)
    upstream.receive_data(O365_EHLO_CLEAR)
    refused = refusal(upstream.receive_data(b"454 4.7.0 TLS not available\r\n"))
    assert "refused STARTTLS" in refused.error.message


def test_data_after_starttls_answer_is_an_injection_and_refused() -> None:
    """Bytes in clear after the STARTTLS 220 refuse the server; no StartTLS, no QUIT."""
    upstream = login()
    upstream.receive_data(O365_BANNER)
    upstream.receive_data(O365_EHLO_CLEAR)
    actions = upstream.receive_data(O365_STARTTLS_OK + b"250-fake\r\n")
    assert actions[:-1] == [Close()]
    assert isinstance(actions[-1], LoginRefused)


def test_ehlo_after_tls_without_xoauth2_is_refused() -> None:
    """A post-TLS EHLO whose AUTH lacks XOAUTH2 ends the login before AUTH is sent."""
    upstream = login()
    up_to_auth_tls = [O365_BANNER, O365_EHLO_CLEAR, O365_STARTTLS_OK]
    for reply in up_to_auth_tls:
        upstream.receive_data(reply)
    refused = refusal(upstream.receive_data(b"250-mail.test\r\n250 AUTH PLAIN LOGIN\r\n"))
    assert "does not offer AUTH XOAUTH2" in refused.error.message


def test_old_auth_equals_form_counts_as_offering_xoauth2() -> None:
    """`AUTH=LOGIN XOAUTH2` is recognised like `AUTH LOGIN XOAUTH2`."""
    upstream = login(starttls=False)
    upstream.receive_data(O365_BANNER)
    assert upstream.receive_data(b"250-x\r\n250 AUTH=LOGIN XOAUTH2\r\n") == [
        Send(b"AUTH XOAUTH2\r\n")
    ]


@pytest.mark.parametrize("garbage", [b"HTTP/1.1 400 Bad Request\r\n", b"22 short\r\n", b"x" * 5000])
def test_malformed_reply_is_unavailable_without_quit(garbage: bytes) -> None:
    """Something that is not an SMTP reply ends the login with Close, without QUIT."""
    actions = login().receive_data(garbage)
    assert actions[:-1] == [Close()]
    assert isinstance(actions[-1], LoginRefused)
    assert isinstance(actions[-1].error, UpstreamUnavailable)


def test_server_echoing_the_token_is_redacted() -> None:
    """Even a server that quotes the XOAUTH2 line back never gets it into an error message."""
    upstream = login()
    up_to_auth(upstream)
    reply = b"500 5.5.2 bad line " + XOAUTH2_LINE.strip() + b" token " + TOKEN.encode() + b"\r\n"
    refused = refusal(upstream.receive_data(reply))
    assert "[redacted]" in refused.error.message
    assert TOKEN not in repr(upstream)


# -- same results whatever the chunking --

O365_TURNS = [O365_BANNER, O365_EHLO_CLEAR, O365_STARTTLS_OK, O365_EHLO_TLS, O365_CONTINUE,
              O365_SUCCESS + b"250 2.1.0 Sender OK\r\n"]
DOVECOT_FAIL_TURNS = [DOVECOT_BANNER, DOVECOT_EHLO_CLEAR, O365_STARTTLS_OK, DOVECOT_EHLO_TLS,
                      O365_CONTINUE, DOVECOT_CHALLENGE, DOVECOT_FAILED]


def replay(turns: list[list[bytes]]) -> tuple[list[object], bytes]:
    """Feed each server turn in its chunks; adjacent Sends merged, plus the leftovers."""
    upstream = login()
    actions: list[object] = []
    for chunks in turns:
        for chunk in chunks:
            actions += upstream.receive_data(chunk)
    return merged(actions), upstream.take_unparsed()


@settings(max_examples=200, deadline=None)
@given(which=st.sampled_from([O365_TURNS, DOVECOT_FAIL_TURNS]), data=st.data())
def test_random_splits_within_each_server_turn_give_the_same_result(
    which: list[bytes], data: st.DataObject
) -> None:
    """Splitting each server turn anywhere (one byte at a time included) changes nothing."""
    split_turns = []
    for turn in which:
        cuts = sorted(data.draw(st.sets(st.integers(1, len(turn) - 1), max_size=len(turn))))
        bounds = zip([0, *cuts], [*cuts, len(turn)], strict=True)
        split_turns.append([turn[a:b] for a, b in bounds])
    assert replay(split_turns) == replay([[turn] for turn in which])
