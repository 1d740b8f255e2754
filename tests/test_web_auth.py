"""The admin page's parsers of outside input and its sessions: tokens, cookies, form bodies."""

from __future__ import annotations

import pytest

from proxy.web.auth import (
    MAX_SESSIONS,
    SESSION_IDLE,
    AdminSessions,
    bearer_token,
    cookie_value,
    session_cookie,
)
from proxy.web.forms import MAX_BODY, FormError, parse_form, parse_query

SESSION_ID = "A" * 43
FORM = "application/x-www-form-urlencoded"


@pytest.mark.parametrize("header, token", [
    ("Bearer abc.DEF-123_~+/=", "abc.DEF-123_~+/="),
    ("bearer   tok", "tok"),
    (None, None), ("", None), ("Basic dXNlcjpwdw==", None), ("Bearer", None),
    ("Bearer two words", None), ("Bearer tök", None), ("Bearer " + "x" * 513, None),
])
def test_bearer_token(header: str | None, token: str | None) -> None:
    """Only `Bearer TOKEN` with a plain token is taken; anything else is no token at all."""
    assert bearer_token(header) == token


@pytest.mark.parametrize("header, value", [
    (f"xoauth2-proxy-8025={SESSION_ID}", SESSION_ID),
    (f"other=1; xoauth2-proxy-8025={SESSION_ID} ; x=y", SESSION_ID),
    (f"xoauth2-proxy-8026={SESSION_ID}", None),  # another admin page's cookie
    (f"xoauth2-proxy-8025={SESSION_ID}; xoauth2-proxy-8025={'B' * 43}", None),  # ambiguous
    ("xoauth2-proxy-8025=short", None), ("xoauth2-proxy-8025=" + "!" * 43, None),
    (None, None), ("garbage;;;==", None),
])
def test_cookie_value(header: str | None, value: str | None) -> None:
    """The session cookie is found among others; a doubled or malformed one is ignored."""
    assert cookie_value(header, "xoauth2-proxy-8025") == value


def test_session_cookie_is_http_only_and_strict() -> None:
    """The cookie cannot be read by scripts or sent by other sites, and covers every path."""
    assert session_cookie("n", "v") == "n=v; Path=/; HttpOnly; SameSite=Strict"


def test_sessions_are_found_by_their_id_until_idle_too_long() -> None:
    """A session is found by its cookie value (stored only as a hash) until it has been idle
    SESSION_IDLE seconds; use keeps it alive."""
    now = [0.0]
    sessions = AdminSessions(lambda: now[0])
    session_id, session = sessions.create()
    assert session_id not in repr(sessions.__dict__)
    now[0] += SESSION_IDLE - 1
    assert sessions.find(session_id) is session
    now[0] += SESSION_IDLE - 1
    assert sessions.find(session_id) is session
    assert sessions.find(session_id[:-1] + "x") is None
    now[0] += SESSION_IDLE + 1
    assert sessions.find(session_id) is None


def test_sessions_are_bounded_and_the_least_recently_used_goes() -> None:
    """However many logins, at most MAX_SESSIONS sessions are kept."""
    now = [0.0]
    sessions = AdminSessions(lambda: now[0])
    first, _ = sessions.create()
    for _ in range(MAX_SESSIONS + 5):
        now[0] += 1
        sessions.create()
    assert len(sessions) == MAX_SESSIONS
    assert sessions.find(first) is None


def test_csrf_token_is_compared_whole() -> None:
    """The CSRF check needs the session's exact token."""
    _, session = AdminSessions().create()
    assert session.csrf_matches(session.csrf)
    assert not session.csrf_matches(session.csrf[:-1])
    assert not session.csrf_matches(None)
    assert not session.csrf_matches("")


def test_form_fields_are_decoded() -> None:
    """A urlencoded body gives its fields, UTF-8 and + decoded, blank values kept."""
    body = b"account=alice%40contoso.com&password=p%C3%A4ss+w%26rd&empty="
    assert parse_form(body, FORM + "; charset=UTF-8") == {
        "account": "alice@contoso.com", "password": "päss w&rd", "empty": ""}
    assert parse_query(b"/authorise?account=a%40b&token=x#frag") == {"account": "a@b", "token": "x"}
    assert parse_query(b"/") == {}


@pytest.mark.parametrize("body, content_type", [
    (b"a=1", "multipart/form-data; boundary=x"),
    (b"a=1", None),
    (b"a=1&a=2", FORM),
    (b"a=%FF", FORM),
    ("a=é".encode(), FORM),
    (b"a=%00", FORM),
    (b"&".join(b"f%d=1" % i for i in range(40)), FORM),
    (b"a=" + b"x" * 5000, FORM),
    (b"a=" + b"x" * MAX_BODY, FORM),
])
def test_bad_forms_are_refused(body: bytes, content_type: str | None) -> None:
    """Other media types, doubled fields, bad UTF-8, NUL, too many or too long fields: refused."""
    with pytest.raises(FormError):
        parse_form(body, content_type)
