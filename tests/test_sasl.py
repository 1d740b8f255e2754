"""SASL: XOAUTH2 for the upstream, PLAIN and LOGIN decoding, and the exchange with devices."""

from __future__ import annotations

import base64
import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.errors import ProxyError
from proxy.sasl import (
    LOGIN_PASSWORD_PROMPT,
    LOGIN_USERNAME_PROMPT,
    MAX_RESPONSE,
    Cancelled,
    Challenge,
    Credentials,
    Invalid,
    SaslError,
    SaslExchange,
    b64decode,
    decode_text,
    parse_login_field,
    parse_plain,
    xoauth2,
)
from tests.support.playbook import b64


def test_xoauth2_matches_microsoft_example() -> None:
    """xoauth2() gives Microsoft's documented worked example byte for byte."""
    assert xoauth2("test@contoso.onmicrosoft.com", "EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA") == (
        b"dXNlcj10ZXN0QGNvbnRvc28ub25taWNyb3NvZnQuY29tAWF1dGg9QmVhcmVyIEV3QkFBbDNCQUFVRkZwVUFv"
        b"N0ozVmUwYmpMQldaV0NjbFJDM0VvQUEBAQ=="
    )


def test_xoauth2_layout() -> None:
    """The decoded XOAUTH2 response is user=MAILBOX ^A auth=Bearer TOKEN ^A ^A, with no line break."""
    encoded = xoauth2("shared@contoso.com", "tok.en-_~")
    assert b"\n" not in encoded and b"\r" not in encoded
    assert base64.b64decode(encoded) == b"user=shared@contoso.com\x01auth=Bearer tok.en-_~\x01\x01"


def test_xoauth2_non_ascii_mailbox_is_utf8() -> None:
    """A mailbox with non-ASCII letters is sent as UTF-8."""
    assert base64.b64decode(xoauth2("jürgen@example.de", "t")) == (
        "user=jürgen@example.de\x01auth=Bearer t\x01\x01".encode()
    )


def test_login_prompts() -> None:
    """The LOGIN mechanism's prompts are base64 of 'Username:' and 'Password:'."""
    assert LOGIN_USERNAME_PROMPT == b"VXNlcm5hbWU6"
    assert LOGIN_PASSWORD_PROMPT == b"UGFzc3dvcmQ6"


PLAIN_OK = [
    pytest.param(b64(b"\0alice\0s3cret"), ("alice", "s3cret"), id="no-authzid"),
    pytest.param(b64(b"alice\0alice\0s3cret"), ("alice", "s3cret"), id="authzid-equal"),
    pytest.param(b64(b"ALICE\0alice\0s3cret"), ("alice", "s3cret"), id="authzid-equal-any-case"),
    pytest.param(
        b64(b"\0alice@contoso.com\0pass word "),
        ("alice@contoso.com", "pass word "),
        id="password-spaces-kept",
    ),
    pytest.param(b"  " + b64(b"\0a\0b") + b" \r\n", ("a", "b"), id="surrounding-whitespace"),
    pytest.param(b64("\0jürgen\0pässwort".encode()), ("jürgen", "pässwort"), id="utf8"),
    pytest.param(b64(b"\0j\xfcrgen\0p\xe4ss"), ("jürgen", "päss"), id="latin1-fallback"),
    pytest.param(b64(b"\0alice\0"), ("alice", ""), id="empty-password-decodes"),
    pytest.param(b64(b"\0\0pw"), ("", "pw"), id="empty-user-decodes"),
]


@pytest.mark.parametrize("response, expected", PLAIN_OK)
def test_parse_plain(response: bytes, expected: tuple[str, str]) -> None:
    """A valid PLAIN response decodes to (user name, password)."""
    assert parse_plain(response) == expected


PLAIN_BAD = [
    pytest.param(b"", "Invalid PLAIN response", id="empty"),
    pytest.param(b64(b"alice\0s3cret"), "Invalid PLAIN response", id="one-nul"),
    pytest.param(b64(b"alice"), "Invalid PLAIN response", id="no-nul"),
    pytest.param(b64(b"\0alice\0pw\0extra"), "Invalid PLAIN response", id="three-nuls"),
    pytest.param(
        b64(b"bob\0alice\0pw"),
        "Authorisation identity must be empty or equal the user name",
        id="other-authzid",
    ),
    pytest.param(b"!!notbase64!!", "Invalid base64 data", id="bad-alphabet"),
    pytest.param(b"AGFsaWNl AHB3", "Invalid base64 data", id="inner-space"),
    pytest.param(b"AGFsaWNlAHB3Z", "Invalid base64 data", id="bad-length"),
    pytest.param(b"YQ", "Invalid base64 data", id="missing-padding"),
]


@pytest.mark.parametrize("response, message", PLAIN_BAD)
def test_parse_plain_errors(response: bytes, message: str) -> None:
    """A malformed PLAIN response raises SaslError with this message."""
    with pytest.raises(SaslError) as info:
        parse_plain(response)
    assert info.value.message == message
    assert isinstance(info.value, ProxyError)


def test_sasl_error_never_carries_the_password() -> None:
    """The message of a refused PLAIN response does not contain the password it carried."""
    with pytest.raises(SaslError) as info:
        parse_plain(b64(b"bob\0alice\0TopSecret99"))
    assert "TopSecret99" not in str(info.value)


LOGIN_FIELDS = [
    pytest.param(b64(b"alice"), "alice", id="ascii"),
    pytest.param(b"", "", id="empty"),
    pytest.param(b64(b"pass word") + b"\r\n", "pass word", id="trailing-crlf"),
    pytest.param(b64("pässwort".encode()), "pässwort", id="utf8"),
    pytest.param(b64(b"p\xe4ss"), "päss", id="latin1"),
]


@pytest.mark.parametrize("response, expected", LOGIN_FIELDS)
def test_parse_login_field(response: bytes, expected: str) -> None:
    """One LOGIN answer decodes from base64 to text."""
    assert parse_login_field(response) == expected


@pytest.mark.parametrize("response", [b"%%%", b"YWxp Y2U=", b"YWxpY2U", b"\xff\xfe"])
def test_parse_login_field_bad_base64(response: bytes) -> None:
    """Strict base64: characters outside the alphabet or a bad length raise SaslError."""
    with pytest.raises(SaslError, match="Invalid base64 data"):
        parse_login_field(response)


def test_b64_helpers() -> None:
    """b64decode undoes base64; decode_text prefers UTF-8."""
    assert b64decode(b64("héllo")) == "héllo".encode()
    assert decode_text("é".encode()) == "é"
    assert decode_text(b"\xe9") == "é"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_arbitrary_bytes_only_raise_sasl_error(data: bytes) -> None:
    """Any bytes either decode or raise SaslError; nothing else escapes."""
    for parse in (parse_plain, parse_login_field):
        with contextlib.suppress(SaslError):
            parse(data)


@settings(max_examples=200, deadline=None)
@given(
    user=st.text(st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]), min_size=1),
    password=st.text(st.characters(blacklist_characters="\0", blacklist_categories=["Cs"])),
    with_authzid=st.booleans(),
)
def test_plain_round_trip(user: str, password: str, with_authzid: bool) -> None:
    """Any user name and password without NUL survive PLAIN encoding, with or without an equal authzid."""
    authzid = user if with_authzid else ""
    response = b64(f"{authzid}\0{user}\0{password}".encode())
    assert parse_plain(response) == (user, password)


# -- the exchange with a device --

USERNAME = Challenge(LOGIN_USERNAME_PROMPT)
PASSWORD = Challenge(LOGIN_PASSWORD_PROMPT)

# (mechanism, initial response or None, the client's answers to challenges, expected steps)
EXCHANGES = [
    pytest.param("PLAIN", b64("\0alice\0pw"), [], [Credentials("alice", "pw")], id="plain-ir"),
    pytest.param(
        "PLAIN", None, [b64("\0alice\0pw")], [Challenge(b""), Credentials("alice", "pw")],
        id="plain-two-step",
    ),
    pytest.param(
        "LOGIN", None, [b64("alice"), b64("pw")], [USERNAME, PASSWORD, Credentials("alice", "pw")],
        id="login",
    ),
    pytest.param(
        "LOGIN", b64("alice"), [b64("pw")], [PASSWORD, Credentials("alice", "pw")],
        id="login-initial-user",
    ),
    pytest.param("PLAIN", b"=", [], [Invalid("Invalid PLAIN response")], id="equals-is-empty-ir"),
    pytest.param("LOGIN", b"=", [], [Credentials("", "")], id="equals-is-an-empty-user"),
    pytest.param(
        "LOGIN", b64("alice"), [b"="], [PASSWORD, Invalid("Invalid base64 data")],
        id="equals-after-a-challenge-is-no-empty-response",
    ),
    pytest.param(
        "LOGIN", b64("alice"), [b""], [PASSWORD, Credentials("alice", "")],
        id="empty-line-is-an-empty-password",
    ),
    pytest.param(
        "LOGIN", None, [b""], [USERNAME, Credentials("", "")],
        id="empty-user-ends-before-the-password",
    ),
    pytest.param("PLAIN", None, [b" * "], [Challenge(b""), Cancelled()], id="star-cancels"),
    pytest.param(
        "LOGIN", None, [b64("alice"), b"*"], [USERNAME, PASSWORD, Cancelled()],
        id="star-cancels-at-the-password",
    ),
    pytest.param("PLAIN", b"*", [], [Invalid("Invalid base64 data")], id="star-ir-is-no-cancel"),
    pytest.param(
        "PLAIN", b"A" * (MAX_RESPONSE + 4), [], [Invalid("SASL response too long")],
        id="over-the-cap-ir",
    ),
    pytest.param(
        "LOGIN", None, [b"A" * (MAX_RESPONSE + 4)], [USERNAME, Invalid("SASL response too long")],
        id="over-the-cap-answer",
    ),
    pytest.param(
        "PLAIN", b64("bob\0alice\0pw"), [],
        [Invalid("Authorisation identity must be empty or equal the user name")],
        id="other-authzid",
    ),
]


@pytest.mark.parametrize("mechanism, initial, answers, expected", EXCHANGES)
def test_exchange(
    mechanism: str, initial: bytes | None, answers: list[bytes], expected: list[object]
) -> None:
    """Each exchange takes exactly these steps: challenges, then one ending (credentials,
    cancel, or why the response is unusable)."""
    exchange = SaslExchange(mechanism)
    steps = [exchange.start(initial)] + [exchange.receive(answer) for answer in answers]
    assert steps == expected


def test_exchange_offers_plain_and_login_only() -> None:
    """Any other mechanism is refused when the exchange is made (the session checks first)."""
    with pytest.raises(ValueError):
        SaslExchange("XOAUTH2")


def test_credentials_do_not_show_the_password() -> None:
    """The password of finished credentials is left out of their repr (logs, test output)."""
    assert "pw" not in repr(Credentials("alice", "pw"))
