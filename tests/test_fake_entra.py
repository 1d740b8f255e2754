"""tests.support.fake_entra: the fake answers in Entra ID's shapes, checks what Entra checks."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from tests.support.fake_entra import FakeEntra

TENANT = "contoso.onmicrosoft.com"
APP_ID = "11111111-2222-3333-4444-555555555555"
SECRET = "app-secret-value"
APP_SCOPE = "https://outlook.office365.com/.default"
minted: list[tuple[str, int]] = []
# Straight to 127.0.0.1, whatever HTTP_PROXY the environment sets.
http = requests.Session()
http.trust_env = False


def mint(mailbox: str, lifetime: int) -> str:
    minted.append((mailbox, lifetime))
    return f"token-for-{mailbox}-{secrets.token_hex(4)}"


@pytest.fixture
def fake() -> Iterator[FakeEntra]:
    with FakeEntra(mint, access_token_lifetime=900, device_interval=0) as service:
        service.add_app(TENANT, APP_ID, secret=SECRET, mailbox="printer@contoso.com",
                        redirect_uris=["http://localhost:8765/"])
        service.add_user(TENANT, APP_ID, "alice@contoso.com")
        yield service


def post_token(fake: FakeEntra, form: dict[str, str], timeout: float = 2) -> requests.Response:
    return http.post(fake.token_url(TENANT), data=form, timeout=timeout)


def authorize_url(fake: FakeEntra, **overrides: str) -> str:
    verifier = "v" * 50
    query = {
        "client_id": APP_ID, "response_type": "code", "redirect_uri": "http://localhost:8765/",
        "scope": "https://outlook.office.com/IMAP.AccessAsUser.All offline_access",
        "state": "STATE", "code_challenge_method": "S256",
        "code_challenge": base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        .rstrip(b"=").decode(),
    }
    query.update(overrides)
    query = {k: v for k, v in query.items() if v}
    return f"{fake.authority}/{TENANT}/oauth2/v2.0/authorize?{urlencode(query)}"


def test_error_answers_have_entra_shape(fake: FakeEntra) -> None:
    """A wrong secret gets HTTP 401 and Entra's JSON: error, AADSTS description, codes, ids."""
    answer = post_token(fake, {"grant_type": "client_credentials", "client_id": APP_ID,
                               "client_secret": "wrong", "scope": APP_SCOPE})
    assert answer.status_code == 401
    body: dict[str, Any] = answer.json()
    assert body["error"] == "invalid_client" and body["error_codes"] == [7000215]
    assert body["error_description"].startswith("AADSTS7000215: ")
    assert "\r\nTrace ID: " in body["error_description"]
    assert {"timestamp", "trace_id", "correlation_id"} <= body.keys()


def test_client_credentials_answer(fake: FakeEntra) -> None:
    """App-only tokens are minted for the app's mailbox with the configured lifetime."""
    answer = post_token(fake, {"grant_type": "client_credentials", "client_id": APP_ID,
                               "client_secret": SECRET, "scope": APP_SCOPE}).json()
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 900
    assert answer["access_token"].startswith("token-for-printer@contoso.com-")
    assert "refresh_token" not in answer and minted[-1] == ("printer@contoso.com", 900)


@pytest.mark.parametrize(
    ("form", "status", "code"),
    [({"grant_type": "client_credentials", "scope": APP_SCOPE}, 401, 7000218),
     ({"grant_type": "password", "client_secret": SECRET}, 400, 70003),
     ({"grant_type": "client_credentials", "client_secret": SECRET, "scope": "openid"}, 400,
      1002012)],
)
def test_token_request_checks(fake: FakeEntra, form: dict[str, str], status: int,
                              code: int) -> None:
    """Client credentials need a secret or assertion and a /.default scope; odd grants fail."""
    answer = post_token(fake, {"client_id": APP_ID, **form})
    assert (answer.status_code, answer.json()["error_codes"]) == (status, [code])


def test_authorize_redirects_with_code_and_state(fake: FakeEntra) -> None:
    """/authorize answers at once with a 302 carrying a code and the state."""
    answer = http.get(authorize_url(fake), allow_redirects=False, timeout=2)
    assert answer.status_code == 302
    query = parse_qs(urlsplit(answer.headers["Location"]).query)
    assert query["state"] == ["STATE"] and query["code"][0]


@pytest.mark.parametrize(
    ("overrides", "error"),
    [({"code_challenge": ""}, "invalid_request"),
     ({"code_challenge_method": "plain"}, "invalid_request"),
     ({"state": ""}, "invalid_request"),
     ({"response_type": "token"}, "unsupported_response_type")],
)
def test_authorize_error_redirects(fake: FakeEntra, overrides: dict[str, str],
                                   error: str) -> None:
    """Without S256 PKCE or state, or with another response_type, the redirect carries an error."""
    answer = http.get(authorize_url(fake, **overrides), allow_redirects=False, timeout=2)
    assert answer.status_code == 302
    query = parse_qs(urlsplit(answer.headers["Location"]).query)
    assert query["error"] == [error] and query["error_description"][0].startswith("AADSTS")


@pytest.mark.parametrize(
    ("overrides", "code"),
    [({"redirect_uri": "http://evil.example/"}, "AADSTS50011"),
     ({"client_id": "unknown"}, "AADSTS700016")],
)
def test_authorize_refuses_without_redirecting(fake: FakeEntra, overrides: dict[str, str],
                                               code: str) -> None:
    """An unknown app or an unregistered redirect URI gets an error page, never a redirect."""
    answer = http.get(authorize_url(fake, **overrides), allow_redirects=False, timeout=2)
    assert answer.status_code == 400 and "Location" not in answer.headers
    assert code in answer.text


def test_request_counters(fake: FakeEntra) -> None:
    """requests lists (path, grant_type); token_requests counts token POSTs by grant type."""
    post_token(fake, {"grant_type": "client_credentials", "client_id": APP_ID,
                      "client_secret": SECRET, "scope": APP_SCOPE})
    http.get(authorize_url(fake), allow_redirects=False, timeout=2)
    assert fake.requests == [(f"/{TENANT}/oauth2/v2.0/token", "client_credentials"),
                             (f"/{TENANT}/oauth2/v2.0/authorize", None)]
    assert fake.token_requests() == 1 and fake.token_requests("client_credentials") == 1
    assert fake.token_requests("refresh_token") == 0


def test_concurrent_requests(fake: FakeEntra) -> None:
    """Many threads at once each get their own token, and every request is counted."""
    form = {"grant_type": "client_credentials", "client_id": APP_ID, "client_secret": SECRET,
            "scope": APP_SCOPE}
    with ThreadPoolExecutor(16) as pool:
        tokens = list(pool.map(lambda _: post_token(fake, form).json()["access_token"],
                               range(48)))
    assert len(set(tokens)) == 48 and fake.token_requests("client_credentials") == 48


def test_fail_next_counts_down(fake: FakeEntra) -> None:
    """fail_next(n, kind) fails exactly the next n POSTs; unknown kinds are refused."""
    form = {"grant_type": "client_credentials", "client_id": APP_ID, "client_secret": SECRET,
            "scope": APP_SCOPE}
    fake.fail_next(2, "429")
    assert [post_token(fake, form).status_code for _ in range(3)] == [429, 429, 200]
    with pytest.raises(ValueError):
        fake.fail_next(1, "gremlins")


def test_stop_is_quick_even_with_a_held_request() -> None:
    """stop() returns promptly although a "timeout" failure holds a request open."""
    service = FakeEntra(mint, hang_seconds=30).start()
    service.add_app(TENANT, APP_ID, secret=SECRET)
    service.fail_next(1, "timeout")
    with pytest.raises(requests.Timeout):
        post_token(service, {"grant_type": "client_credentials", "client_id": APP_ID}, 0.3)
    started = time.monotonic()
    service.stop()
    assert time.monotonic() - started < 2
    with pytest.raises(RuntimeError):
        _ = service.authority
