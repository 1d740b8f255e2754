"""tests.support.fake_entra: the fake answers in Entra ID's shapes, checks what Entra checks."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from tests.support.fake_entra import FakeEntra
from tests.support.graph_tokens import verify_graph_token

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


# -- tokens for Microsoft Graph, one resource per token --

IMAP = "https://outlook.office.com/IMAP.AccessAsUser.All"
GRAPH_SEND = "https://graph.microsoft.com/Mail.Send"
GRAPH_READ_WRITE = "https://graph.microsoft.com/Mail.ReadWrite"
GRAPH_APP_SCOPE = "https://graph.microsoft.com/.default"


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def sign_in(fake: FakeEntra, scope: str) -> dict[str, Any]:
    """Authorisation code sign-in of alice with PKCE; the code is redeemed for `scope`."""
    verifier = "v" * 50
    location = http.get(authorize_url(fake, scope=scope + " " + IMAP), allow_redirects=False,
                        timeout=2).headers["Location"]
    code = parse_qs(urlsplit(location).query)["code"][0]
    answer = post_token(fake, {"grant_type": "authorization_code", "client_id": APP_ID,
                               "code": code, "redirect_uri": "http://localhost:8765/",
                               "code_verifier": verifier, "scope": IMAP + " offline_access"})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def refresh(fake: FakeEntra, refresh_token: str, scope: str) -> requests.Response:
    return post_token(fake, {"grant_type": "refresh_token", "client_id": APP_ID,
                             "refresh_token": refresh_token, "scope": scope})


def test_client_credentials_for_graph_carry_roles(fake: FakeEntra) -> None:
    """Graph's /.default gives an app-only JWT for Graph with the app's roles and no scp."""
    fake.add_app(TENANT, APP_ID, secret=SECRET, mailbox="printer@contoso.com",
                 graph_roles=("Mail.Send",))
    answer = post_token(fake, {"grant_type": "client_credentials", "client_id": APP_ID,
                               "client_secret": SECRET, "scope": GRAPH_APP_SCOPE}).json()
    claims = claims_of(answer["access_token"])
    assert claims["aud"] == "https://graph.microsoft.com" and claims["roles"] == ["Mail.Send"]
    assert "scp" not in claims and "scope" not in answer
    caller = verify_graph_token(fake.graph_token_key, answer["access_token"], time.time())
    assert caller.mailbox is None and caller.permissions == {"Mail.Send"}


@pytest.mark.parametrize(("endpoint", "form", "code"), [
    ("token", {"grant_type": "client_credentials", "client_secret": SECRET,
               "scope": f"{APP_SCOPE} {GRAPH_APP_SCOPE}"}, 70011),
    ("token", {"grant_type": "refresh_token", "refresh_token": "anything",
               "scope": f"{IMAP} Mail.Send"}, 28000),
])
def test_scopes_of_two_resources_are_refused(fake: FakeEntra, endpoint: str,
                                             form: dict[str, str], code: int) -> None:
    """One token is for one resource: Outlook and Graph scopes together are refused."""
    url = fake.token_url(TENANT).replace("/token", f"/{endpoint}")
    answer = http.post(url, data={"client_id": APP_ID, **form}, timeout=2)
    assert answer.status_code == 400 and answer.json()["error_codes"] == [code]
    assert answer.json()["error"] == "invalid_scope"


def test_one_refresh_token_is_redeemed_for_each_resource_in_turn() -> None:
    """After one sign-in, each rotated refresh token gets Outlook or Graph tokens, as asked."""
    with FakeEntra(mint, invalidate_rotated_refresh_tokens=True) as fake:
        fake.add_user(TENANT, APP_ID, "alice@contoso.com")
        first = sign_in(fake, f"{GRAPH_SEND} {GRAPH_READ_WRITE} offline_access")
        assert first["access_token"].startswith("token-for-alice@contoso.com-")
        assert first["scope"] == IMAP
        graph = refresh(fake, first["refresh_token"], f"{GRAPH_SEND} {GRAPH_READ_WRITE}").json()
        claims = claims_of(graph["access_token"])
        assert claims["aud"] == "https://graph.microsoft.com"
        assert claims["scp"] == "Mail.Send Mail.ReadWrite" and claims["upn"] == "alice@contoso.com"
        assert graph["scope"] == f"{GRAPH_SEND} {GRAPH_READ_WRITE}"
        outlook = refresh(fake, graph["refresh_token"], f"{IMAP} offline_access").json()
        assert outlook["access_token"].startswith("token-for-alice@contoso.com-")
        reused = refresh(fake, first["refresh_token"], GRAPH_SEND)
        assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"


def test_graph_without_consent_is_refused_until_an_admin_grants_it(fake: FakeEntra) -> None:
    """A sign-in for Outlook alone cannot be redeemed for Graph, unless admin consent covers it."""
    tokens = sign_in(fake, "offline_access")
    refused = refresh(fake, tokens["refresh_token"], GRAPH_SEND)
    assert refused.status_code == 400 and refused.json()["error_codes"] == [65001]
    fake.add_app(TENANT, APP_ID, redirect_uris=["http://localhost:8765/"],
                 admin_consent=(GRAPH_SEND,))
    granted = refresh(fake, tokens["refresh_token"], GRAPH_SEND).json()
    assert claims_of(granted["access_token"])["scp"] == "Mail.Send"


def device_code(fake: FakeEntra, scope: str) -> tuple[str, str]:
    """(device_code, user_code) of a device code request for `scope`."""
    url = fake.token_url(TENANT).replace("/token", "/devicecode")
    answer = http.post(url, data={"client_id": APP_ID, "scope": scope}, timeout=2)
    assert answer.status_code == 200, answer.text
    return answer.json()["device_code"], answer.json()["user_code"]


def poll(fake: FakeEntra, code: str) -> requests.Response:
    return post_token(fake, {"grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                             "client_id": APP_ID, "device_code": code})


def test_device_code_for_two_resources_gets_consent_but_no_token(fake: FakeEntra) -> None:
    """A device code for Outlook and Graph scopes is issued and the user consents to all, but
    redeeming it fails with AADSTS28000; a device code for one resource then works, and its
    refresh token is redeemed for the other resource on the consent given the first time."""
    both, user_code = device_code(fake, f"{IMAP} {GRAPH_SEND} offline_access")
    fake.approve_device(user_code, "alice@contoso.com")
    refused = poll(fake, both)
    assert refused.status_code == 400 and refused.json()["error_codes"] == [28000]
    one, user_code = device_code(fake, f"{IMAP} offline_access")
    fake.approve_device(user_code, "alice@contoso.com")
    outlook = poll(fake, one).json()
    graph = refresh(fake, outlook["refresh_token"], GRAPH_SEND)
    assert graph.status_code == 200, graph.text
    assert claims_of(graph.json()["access_token"])["scp"] == "Mail.Send"


def test_consent_is_the_users_not_the_sign_ins(fake: FakeEntra) -> None:
    """Consent given in one sign-in (Graph, by device code) lets the refresh token of a later
    sign-in for Outlook alone be redeemed for Graph."""
    code, user_code = device_code(fake, f"{GRAPH_SEND} offline_access")
    fake.approve_device(user_code, "alice@contoso.com")
    assert poll(fake, code).status_code == 200
    later = sign_in(fake, "offline_access")
    assert refresh(fake, later["refresh_token"], GRAPH_SEND).status_code == 200
