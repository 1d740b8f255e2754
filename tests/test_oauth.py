"""proxy.entra: answer parsing, error explanations, and every flow against a local fake Entra ID."""

from __future__ import annotations

import base64
import datetime
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from email.utils import format_datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from proxy.config import APP_ONLY_SCOPE, DELEGATED_SCOPES, AccountConfig
from proxy.entra.aadsts import EXPLANATIONS, explain, first_line
from proxy.entra.answers import (
    AuthRequest,
    DeviceCode,
    TokenSet,
    parse_device_code_response,
    parse_token_response,
    retry_after_seconds,
)
from proxy.entra.client import EntraClient
from proxy.errors import (
    AuthorisationDeclined,
    AuthorisationExpired,
    AuthorisationFailed,
    ConfigError,
    ConsentMissing,
    FailureKind,
    NeedsReauthorisation,
    ProxyError,
    SlowDown,
    TemporaryFailure,
    TokenEndpointThrottled,
    TokenEndpointUnavailable,
    TokenRequestRefused,
)
from proxy.resources import GRAPH, GRAPH_APP_SCOPE, GRAPH_SEND_SCOPES, OUTLOOK, resources_in
from tests.support.fake_entra import FakeEntra
from tests.support.jwt import mint_hs256
from tests.support.ports import free_port

TENANT = "contoso.onmicrosoft.com"
APP_ID = "11111111-2222-3333-4444-555555555555"
USER = "alice@contoso.com"
SECRET = "s3cr3t~VALUE.that.must.never.leak"
DELEGATED = (DELEGATED_SCOPES["imap"], DELEGATED_SCOPES["smtp"], "offline_access")
KEY = secrets.token_bytes(32)
NOW = 1_700_000_000.0


def mint(mailbox: str, lifetime: int) -> str:
    now = int(time.time())
    return mint_hs256(KEY, {"sub": mailbox, "email": mailbox, "iat": now, "exp": now + lifetime,
                            "jti": secrets.token_hex(8)})


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


class RecordingSession(requests.Session):
    """A real session that remembers every secret it sent or received, for the leak scan."""

    def __init__(self) -> None:
        super().__init__()
        self.trust_env = False  # straight to 127.0.0.1, whatever HTTP_PROXY the environment sets
        self.secrets: set[str] = set()
        self.forms: list[dict[str, str]] = []

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any
                ) -> requests.Response:
        form = dict(kwargs.get("data") or {})
        self.forms.append(form)
        for name in ("client_secret", "client_assertion", "refresh_token", "code",
                     "device_code", "code_verifier"):
            if form.get(name):
                self.secrets.add(form[name])
        response = super().request(method, url, *args, **kwargs)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if isinstance(answer, dict):
            for name in ("access_token", "refresh_token", "device_code", "id_token"):
                if isinstance(answer.get(name), str):
                    self.secrets.add(answer[name])
        location = response.headers.get("Location", "")
        for value in parse_qs(urlsplit(location).query).get("code", []):
            self.secrets.add(value)
        return response


class StubSession:
    """Answers every POST with one canned response, or raises one exception."""

    def __init__(self, status: int = 200, body: Any = None, headers: dict[str, str] | None = None,
                 raises: Exception | None = None) -> None:
        self.status, self.body, self.headers, self.raises = status, body, headers or {}, raises
        self.forms: list[dict[str, str]] = []

    def post(self, url: str, data: dict[str, str], **kwargs: Any) -> requests.Response:
        self.forms.append(data)
        if self.raises is not None:
            raise self.raises
        response = requests.Response()
        response.status_code = self.status
        response.headers.update(self.headers)
        if isinstance(self.body, bytes):
            response._content = self.body
        else:
            response._content = json.dumps(self.body).encode()
        return response


def stub_client(stub: StubSession, flow: str = "client_credentials", **kwargs: Any
                ) -> EntraClient:
    """An EntraClient talking to a StubSession instead of the network."""
    return EntraClient(account_for("https://login.example", flow), cast(requests.Session, stub),
                       **kwargs)


def make_certificate(common_name: str = "xoauth2-proxy test app") -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) of a fresh self-signed RSA certificate."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.fixture(scope="module")
def certificate() -> tuple[bytes, bytes]:
    return make_certificate()


@pytest.fixture
def fake() -> Iterator[FakeEntra]:
    with FakeEntra(mint, device_interval=0, hang_seconds=2) as service:
        service.add_app(TENANT, APP_ID, secret=SECRET, mailbox="printer@contoso.com")
        service.add_user(TENANT, APP_ID, USER)
        yield service


@pytest.fixture
def session() -> Iterator[RecordingSession]:
    with RecordingSession() as s:
        yield s


def account_for(authority: str, flow: str = "client_credentials", **overrides: Any
                ) -> AccountConfig:
    settings: dict[str, Any] = {
        "username": USER, "tenant": TENANT, "client_id": APP_ID, "flow": flow, "mailbox": USER,
        "scopes": (APP_ONLY_SCOPE,) if flow == "client_credentials" else DELEGATED,
        "authority": authority,
    }
    if flow == "client_credentials" and not {"certificate", "client_secret_file"} & set(overrides):
        settings["client_secret"] = SECRET
    settings.update(overrides)
    return AccountConfig(**settings)


def client_for(fake: FakeEntra, session: requests.Session, flow: str = "client_credentials",
               timeout: float = 2, clock: Callable[[], float] = time.time, **overrides: Any
               ) -> EntraClient:
    return EntraClient(account_for(fake.authority, flow, **overrides), session, clock=clock,
                       timeout=timeout)


def signed_in(fake: FakeEntra, client: EntraClient) -> TokenSet:
    """Tokens from a device code sign-in approved at once."""
    device = client.start_device_code()
    fake.approve_device(device.user_code, USER)
    tokens = client.poll_device_code(device)
    assert tokens is not None
    return tokens


# -- parse_token_response and friends: pure tables --

@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"token_type": "Bearer", "access_token": "AT", "expires_in": 3599, "refresh_token": "RT",
          "scope": "a b"}, TokenSet("AT", NOW + 3599, "RT", "a b")),
        ({"token_type": "bearer", "access_token": "AT", "expires_in": "4000"},
         TokenSet("AT", NOW + 4000, None, "")),
        ({"access_token": "AT", "expires_in": 0, "refresh_token": ""},
         TokenSet("AT", NOW, None, "")),
        ({"token_type": "Bearer", "access_token": "AT"}, TokenSet("AT", NOW + 3600, None, "")),
        ({"token_type": "Bearer", "access_token": "AT", "expires_in": 5400.0, "scope": None},
         TokenSet("AT", NOW + 5400, None, "")),
    ],
)
def test_parse_token_response_table(answer: dict[str, Any], expected: TokenSet) -> None:
    """A token answer becomes a TokenSet with expires_at = now + expires_in, nothing subtracted."""
    assert parse_token_response(answer, NOW) == expected


@pytest.mark.parametrize(
    "answer",
    [
        {},
        {"access_token": "", "expires_in": 60},
        {"access_token": 42, "expires_in": 60},
        {"access_token": "AT", "token_type": "pop", "expires_in": 60},
        {"access_token": "AT", "expires_in": -5},
        {"access_token": "AT", "expires_in": "soon"},
        {"access_token": "AT", "expires_in": True},
        {"access_token": "AT", "expires_in": "inf"},
        {"access_token": "AT", "expires_in": "nan"},
    ],
)
def test_parse_token_response_rejects_malformed_answers(answer: dict[str, Any]) -> None:
    """An answer without a usable Bearer token or lifetime is a temporary failure, not a crash."""
    with pytest.raises(TokenEndpointUnavailable) as raised:
        parse_token_response(answer, NOW)
    assert raised.value.kind is FailureKind.TEMPORARY


def test_token_set_repr_hides_tokens() -> None:
    """repr() of a TokenSet, DeviceCode or AuthRequest never shows a token, code or verifier."""
    shown = repr(TokenSet("ACCESS-xyz", NOW, "REFRESH-xyz", "s"))
    shown += repr(DeviceCode("DEVICE-xyz", "ABC", "http://x", 900, 5, "m", NOW))
    shown += repr(AuthRequest("http://x", "state", "http://localhost/", "VERIFIER-xyz"))
    for hidden in ("ACCESS-xyz", "REFRESH-xyz", "DEVICE-xyz", "VERIFIER-xyz"):
        assert hidden not in shown


def test_parse_device_code_response_defaults() -> None:
    """A device code answer without interval, expires_in or message gets RFC 8628's defaults."""
    device = parse_device_code_response(
        {"device_code": "D", "user_code": "U", "verification_url": "https://x/devicelogin"}, NOW
    )
    assert (device.interval, device.expires_in, device.expires_at) == (5, 900, NOW + 900)
    assert "https://x/devicelogin" in device.message and "U" in device.message


@pytest.mark.parametrize(
    ("value", "expected"),
    [("7", 7.0), (" 120 ", 120.0), (None, None), ("", None), ("soon", None),
     (format_datetime(datetime.datetime.fromtimestamp(NOW + 30, datetime.timezone.utc),
                      usegmt=True), 30.0),
     (format_datetime(datetime.datetime.fromtimestamp(NOW - 30, datetime.timezone.utc),
                      usegmt=True), 0.0)],
)
def test_retry_after_forms(value: str | None, expected: float | None) -> None:
    """Retry-After is read as delay-seconds or as an HTTP date; anything else is ignored."""
    assert retry_after_seconds(value, NOW) == expected


# -- explain: one plain sentence per AADSTS number --

REQUIRED_CODES = {
    7000215: "secret", 7000222: "expired", 700016: "client_id", 65001: "consent",
    50076: "multi-factor", 50079: "register", 53003: "Conditional Access", 700082: "90 days",
    70043: "sign-in frequency", 50173: "revoked", 54005: "already used", 90002: "tenant",
    9001023: "common", 700024: "clock", 50126: "password",
}


@pytest.mark.parametrize(("code", "keyword"), sorted(REQUIRED_CODES.items()))
def test_explain_known_codes(code: int, keyword: str) -> None:
    """Each AADSTS number users hit gets one sentence naming the cause and ending in the number."""
    description = f"AADSTS{code}: Something technical.\r\nTrace ID: 1\r\nTimestamp: 2"
    text = explain("invalid_grant", description, [code])
    assert keyword in text
    assert text.endswith(f"(AADSTS{code})")
    assert "Trace ID" not in text and "\n" not in text


@pytest.mark.parametrize(
    ("error", "description", "codes", "expected"),
    [
        ("invalid_client", "AADSTS7000222: expired secret", [],
         f"{EXPLANATIONS[7000222]} (AADSTS7000222)"),
        ("invalid_client", "", [], ("Microsoft refused the app's credentials (client secret or "
         "certificate); check them in the app registration")),
        ("invalid_client", "AADSTS1234567: A new one.\r\nTrace ID: x", [1234567],
         ("Microsoft refused the app's credentials (client secret or certificate); check them in "
         "the app registration (Microsoft says: AADSTS1234567: A new one.)")),
        ("invalid_request", "AADSTS900144: The request body must contain 'scope'. Trace ID: x",
         [900144], ("Microsoft's sign-in service refused the request (invalid_request): "
         "AADSTS900144: The request body must contain 'scope'.")),
        ("odd_error", "", [42], ("Microsoft's sign-in service refused the request (odd_error): "
         "AADSTS42")),
        ("", "", [], "Microsoft's sign-in service refused the request (an unknown error)"),
    ],
)
def test_explain_fallbacks(error: str, description: str, codes: list[int], expected: str) -> None:
    """Without a known number the sentence comes from the error name, then Microsoft's words."""
    assert explain(error, description, codes) == expected


def test_first_line_is_bounded() -> None:
    """Microsoft's own description is cut to its first line and a bounded length."""
    assert len(first_line("AADSTS1: " + "x" * 1000)) <= 200


# -- client credentials --

def test_client_credentials_with_secret(fake: FakeEntra, session: RecordingSession) -> None:
    """A client secret buys an app-only token for the app's mailbox; no refresh token."""
    tokens = client_for(fake, session, clock=lambda: NOW).client_credentials()
    assert claims_of(tokens.access_token)["email"] == "printer@contoso.com"
    assert tokens.expires_at == NOW + 3600
    assert tokens.refresh_token is None
    assert session.forms[0]["scope"] == APP_ONLY_SCOPE
    assert fake.token_requests("client_credentials") == 1


def test_client_credentials_with_secret_file(fake: FakeEntra, session: RecordingSession,
                                             tmp_path: Path) -> None:
    """client_secret_file is read (and stripped) when a token is needed."""
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    client = client_for(fake, session, client_secret_file=secret_file)
    assert client.client_credentials().access_token


def test_client_credentials_wrong_secret(fake: FakeEntra, session: RecordingSession) -> None:
    """A wrong secret is TokenRequestRefused with the AADSTS7000215 sentence, not the secret."""
    client = client_for(fake, session, client_secret="not-the-secret-value")
    with pytest.raises(TokenRequestRefused) as raised:
        client.client_credentials()
    assert "AADSTS7000215" in str(raised.value) and "client secret" in str(raised.value)
    assert str(raised.value).startswith(USER)
    assert "not-the-secret-value" not in str(raised.value)


@pytest.mark.parametrize("algorithm", ["RS256", "PS256"])
def test_client_credentials_with_certificate(fake: FakeEntra, session: RecordingSession,
                                             certificate: tuple[bytes, bytes], tmp_path: Path,
                                             algorithm: str) -> None:
    """A PEM holding certificate and key signs an assertion the fake accepts (RS256 and PS256)."""
    cert_pem, key_pem = certificate
    fake.add_app(TENANT, APP_ID, certificate_pem=cert_pem, mailbox="scanner@contoso.com")
    pem = tmp_path / "app.pem"
    pem.write_bytes(cert_pem + key_pem)
    client = EntraClient(account_for(fake.authority, certificate=pem), session,
                         assertion_algorithm=algorithm)
    assert claims_of(client.client_credentials().access_token)["email"] == "scanner@contoso.com"
    assert "client_secret" not in session.forms[0]


def test_assertion_header_and_claims(fake: FakeEntra, session: RecordingSession,
                                     certificate: tuple[bytes, bytes], tmp_path: Path) -> None:
    """The assertion names the certificate (x5t#S256, x5t) and carries aud, iss, sub, jti, nbf,
    iat and exp = +10 minutes, and its RS256 signature verifies with the certificate."""
    cert_pem, key_pem = certificate
    fake.add_app(TENANT, APP_ID, certificate_pem=cert_pem, mailbox=USER)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    client = client_for(fake, session, certificate=tmp_path / "cert.pem",
                        private_key=tmp_path / "key.pem")
    client.client_credentials()
    form = session.forms[0]
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    header_part, claims_part, signature_part = form["client_assertion"].split(".")
    header = claims_of(f"x.{header_part}.x")
    claims = claims_of(f"x.{claims_part}.x")
    cert = x509.load_pem_x509_certificate(cert_pem)
    sha256 = base64.urlsafe_b64encode(cert.fingerprint(hashes.SHA256())).rstrip(b"=").decode()
    assert header["alg"] == "RS256" and header["x5t#S256"] == sha256 and "x5t" in header
    assert claims["aud"] == fake.token_url(TENANT)
    assert claims["iss"] == claims["sub"] == APP_ID
    assert claims["exp"] - claims["nbf"] == 600 and claims["iat"] == claims["nbf"]
    assert len(claims["jti"]) == 36
    public_key = cert.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    signature = base64.urlsafe_b64decode(signature_part + "=" * (-len(signature_part) % 4))
    public_key.verify(signature, f"{header_part}.{claims_part}".encode(), padding.PKCS1v15(),
                      hashes.SHA256())


def test_unregistered_certificate_is_refused(fake: FakeEntra, session: RecordingSession,
                                             certificate: tuple[bytes, bytes],
                                             tmp_path: Path) -> None:
    """A certificate the app does not know is TokenRequestRefused with AADSTS700027."""
    fake.add_app(TENANT, APP_ID, certificate_pem=certificate[0], mailbox=USER)
    other_cert, other_key = make_certificate("someone else")
    pem = tmp_path / "other.pem"
    pem.write_bytes(other_cert + other_key)
    with pytest.raises(TokenRequestRefused, match="AADSTS700027"):
        client_for(fake, session, certificate=pem).client_credentials()


def test_assertion_with_wrong_clock(fake: FakeEntra, session: RecordingSession,
                                    certificate: tuple[bytes, bytes], tmp_path: Path) -> None:
    """An assertion from a clock an hour slow is refused with the 'check the clock' sentence."""
    fake.add_app(TENANT, APP_ID, certificate_pem=certificate[0], mailbox=USER)
    pem = tmp_path / "app.pem"
    pem.write_bytes(certificate[0] + certificate[1])
    client = client_for(fake, session, certificate=pem, clock=lambda: time.time() - 3600)
    with pytest.raises(TokenRequestRefused) as raised:
        client.client_credentials()
    assert "AADSTS700024" in str(raised.value) and "clock" in str(raised.value)


@pytest.mark.parametrize(
    ("pem_parts", "problem"),
    [(("cert",), "no PEM private key"), (("key",), "no PEM certificate"),
     (("cert", "other_key"), "matches the private key")],
)
def test_certificate_file_problems(fake: FakeEntra, session: RecordingSession,
                                   certificate: tuple[bytes, bytes], tmp_path: Path,
                                   pem_parts: tuple[str, ...], problem: str) -> None:
    """A certificate file without a key, without a certificate, or with a foreign key is a
    ConfigError naming the file, and nothing is sent."""
    parts = {"cert": certificate[0], "key": certificate[1], "other_key": make_certificate()[1]}
    pem = tmp_path / "app.pem"
    pem.write_bytes(b"".join(parts[p] for p in pem_parts))
    with pytest.raises(ConfigError, match=problem) as raised:
        client_for(fake, session, certificate=pem).client_credentials()
    assert str(pem) in str(raised.value)
    assert fake.requests == []


@pytest.mark.parametrize(
    ("overrides", "code"),
    [({"tenant": "common"}, "AADSTS9001023"), ({"tenant": "fabrikam.com"}, "AADSTS90002"),
     ({"client_id": "99999999-0000-0000-0000-000000000000"}, "AADSTS700016"),
     ({"scopes": ("https://outlook.office.com/IMAP.AccessAsUser.All",)}, "AADSTS1002012")],
)
def test_configuration_mistakes_are_refused(fake: FakeEntra, session: RecordingSession,
                                            overrides: dict[str, Any], code: str) -> None:
    """Wrong tenant, unknown app, /common or a delegated scope for client credentials each give
    TokenRequestRefused naming the AADSTS number."""
    with pytest.raises(TokenRequestRefused, match=code):
        client_for(fake, session, **overrides).client_credentials()


# -- temporary failures: the caller keeps every stored token --

@pytest.mark.parametrize(
    ("kind", "error", "words"),
    [("500", TokenEndpointUnavailable, "HTTP 500"), ("503", TokenEndpointUnavailable, "HTTP 503"),
     ("429", TokenEndpointThrottled, "in 1 seconds"),
     ("timeout", TokenEndpointUnavailable, "did not answer within 0.5 seconds"),
     ("reset", TokenEndpointUnavailable, "connection closed")],
)
def test_outages_are_temporary(fake: FakeEntra, session: RecordingSession, kind: str,
                               error: type[TemporaryFailure], words: str) -> None:
    """5xx, 429, a timeout and a reset connection are temporary failures (429 keeps Retry-After)."""
    fake.fail_next(1, kind)
    with pytest.raises(error) as raised:
        client_for(fake, session, timeout=0.5).client_credentials()
    assert raised.value.kind is FailureKind.TEMPORARY
    assert words in str(raised.value)
    if kind == "429":
        assert isinstance(raised.value, TokenEndpointThrottled) and raised.value.retry_after == 1


def test_connection_refused_is_temporary(session: RecordingSession) -> None:
    """Nothing listening on the authority's port is TokenEndpointUnavailable."""
    account = account_for(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(TokenEndpointUnavailable, match="connection refused"):
        EntraClient(account, session, timeout=1).client_credentials()


@pytest.mark.parametrize(
    ("raised", "words"),
    [(requests.ConnectionError("Failed to resolve 'login.example' ([Errno -2] Name or service "
                               "not known)"), "host name not found"),
     (requests.exceptions.SSLError("certificate verify failed"), "TLS certificate"),
     (requests.exceptions.ReadTimeout("read timed out"), "did not answer")],
)
def test_network_errors_are_temporary(raised: Exception, words: str) -> None:
    """DNS failure, TLS verification failure and timeouts are TokenEndpointUnavailable."""
    client = stub_client(StubSession(raises=raised))
    with pytest.raises(TokenEndpointUnavailable, match=words):
        client.client_credentials()


@pytest.mark.parametrize(
    ("status", "body", "headers", "error", "words"),
    [(200, b"<html>portal</html>", {}, TokenEndpointUnavailable, "without a JSON object"),
     (302, b"", {"Location": "http://portal/"}, TokenEndpointUnavailable, "redirect"),
     (404, b"<html>Not Found</html>", {}, TokenRequestRefused, "not an OAuth2 answer"),
     (400, {"error": "temporarily_unavailable", "error_description": "AADSTS1: busy"}, {},
      TokenEndpointUnavailable, "temporarily unavailable"),
     (429, {}, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, TokenEndpointThrottled,
      "try again in 0 seconds"),
     (429, {}, {}, TokenEndpointThrottled, "try again later")],
)
def test_odd_answers(status: int, body: Any, headers: dict[str, str], error: type[ProxyError],
                     words: str) -> None:
    """Non-JSON, redirects, 404 pages and 4xx 'temporarily_unavailable' map to clear errors."""
    client = stub_client(StubSession(status, body, headers))
    with pytest.raises(error, match=words):
        client.client_credentials()


# -- refresh --

def test_refresh_rotates(fake: FakeEntra, session: RecordingSession) -> None:
    """A refresh returns a new access token and a new refresh token, for the same scopes."""
    client = client_for(fake, session, "device_code")
    first = signed_in(fake, client)
    second = client.refresh(first.refresh_token or "")
    assert second.refresh_token and second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token
    assert claims_of(second.access_token)["email"] == USER
    assert session.forms[-1]["scope"] == " ".join(DELEGATED)
    assert fake.token_requests("refresh_token") == 1


def test_refresh_keeps_old_token_when_none_returned() -> None:
    """An answer without refresh_token leaves the old one in the TokenSet."""
    stub = StubSession(200, {"token_type": "Bearer", "access_token": "AT", "expires_in": 60})
    client = stub_client(stub, "device_code", clock=lambda: NOW)
    assert client.refresh("OLD-RT") == TokenSet("AT", NOW + 60, "OLD-RT", "")


def test_rotated_refresh_token_invalidated(fake: FakeEntra, session: RecordingSession) -> None:
    """With strict rotation the old refresh token is dead (NeedsReauthorisation); the new works."""
    fake.invalidate_rotated_refresh_tokens = True
    client = client_for(fake, session, "device_code")
    first = signed_in(fake, client)
    second = client.refresh(first.refresh_token or "")
    with pytest.raises(NeedsReauthorisation):
        client.refresh(first.refresh_token or "")
    assert client.refresh(second.refresh_token or "").access_token


@pytest.mark.parametrize(
    ("spoil", "code"),
    [("revoke_refresh_tokens", "AADSTS50173"), ("expire_refresh_tokens", "AADSTS700082")],
)
def test_dead_refresh_token_needs_reauthorisation(fake: FakeEntra, session: RecordingSession,
                                                  spoil: str, code: str) -> None:
    """A revoked or expired refresh token is NeedsReauthorisation (a credentials failure) whose
    text names the cause and the command that fixes it."""
    client = client_for(fake, session, "device_code")
    tokens = signed_in(fake, client)
    getattr(fake, spoil)(USER)
    with pytest.raises(NeedsReauthorisation) as raised:
        client.refresh(tokens.refresh_token or "")
    assert raised.value.kind is FailureKind.CREDENTIALS
    assert code in str(raised.value)
    assert f"run: xoauth2-proxy account add {USER}" in str(raised.value)


@pytest.mark.parametrize(
    ("kind", "error", "code"),
    [("invalid_grant", NeedsReauthorisation, "AADSTS70000"),
     ("interaction_required", NeedsReauthorisation, "AADSTS50076"),
     ("invalid_client", TokenRequestRefused, "AADSTS7000222"),
     ("500", TokenEndpointUnavailable, "HTTP 500")],
)
def test_refresh_error_kinds(fake: FakeEntra, session: RecordingSession, kind: str,
                             error: type[ProxyError], code: str) -> None:
    """Only a refused grant ends the stored sign-in; a bad app secret or an outage leaves the
    refresh token usable, as the next refresh shows."""
    client = client_for(fake, session, "device_code")
    tokens = signed_in(fake, client)
    fake.fail_next(1, kind)
    with pytest.raises(error, match=code):
        client.refresh(tokens.refresh_token or "")
    if error is not NeedsReauthorisation:
        assert client.refresh(tokens.refresh_token or "").access_token


def test_refresh_with_unknown_token(fake: FakeEntra, session: RecordingSession) -> None:
    """A refresh token Entra never issued is NeedsReauthorisation."""
    with pytest.raises(NeedsReauthorisation, match="AADSTS9002313"):
        client_for(fake, session, "device_code").refresh("made-up-refresh-token")


# -- device code --

def test_device_code_pending_then_approved(fake: FakeEntra, session: RecordingSession) -> None:
    """Polling gives None while pending, tokens once approved, and the code works only once."""
    client = client_for(fake, session, "device_code")
    device = client.start_device_code()
    assert device.verification_uri == f"{fake.authority}/devicelogin"
    assert device.user_code in device.message and device.interval == 0
    assert session.get(device.verification_uri, timeout=2).status_code == 200
    assert client.poll_device_code(device) is None
    fake.approve_device(device.user_code, USER)
    tokens = client.poll_device_code(device)
    assert tokens is not None and tokens.refresh_token
    assert claims_of(tokens.access_token)["email"] == USER
    with pytest.raises(AuthorisationFailed, match="AADSTS54005"):
        client.poll_device_code(device)


def test_device_code_slow_down(fake: FakeEntra, session: RecordingSession) -> None:
    """Polling faster than the interval raises SlowDown."""
    fake.device_interval = 1
    client = client_for(fake, session, "device_code")
    device = client.start_device_code()
    assert client.poll_device_code(device) is None
    with pytest.raises(SlowDown):
        client.poll_device_code(device)


@pytest.mark.parametrize(
    ("act", "error", "code"),
    [("decline_device", AuthorisationDeclined, "AADSTS65004"),
     ("expire_device", AuthorisationExpired, "AADSTS70020")],
)
def test_device_code_declined_or_expired(fake: FakeEntra, session: RecordingSession, act: str,
                                         error: type[ProxyError], code: str) -> None:
    """A declined or expired device code raises its own error with a sentence."""
    client = client_for(fake, session, "device_code")
    device = client.start_device_code()
    getattr(fake, act)(device.user_code)
    with pytest.raises(error, match=code):
        client.poll_device_code(device)


def test_device_code_unknown(fake: FakeEntra, session: RecordingSession) -> None:
    """A device code Entra does not know is AuthorisationFailed (bad_verification_code)."""
    client = client_for(fake, session, "device_code")
    device = DeviceCode("made-up-device-code", "X", "http://x", 900, 0, "m", time.time() + 900)
    with pytest.raises(AuthorisationFailed, match="did not recognise"):
        client.poll_device_code(device)


def test_wait_for_device_code_honours_interval_and_slow_down(fake: FakeEntra,
                                                             session: RecordingSession) -> None:
    """wait_for_device_code sleeps the interval before each poll and 5 s more after slow_down."""
    fake.device_interval = 1
    client = client_for(fake, session, "device_code")
    device = client.start_device_code()
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            fake.approve_device(device.user_code)

    tokens = client.wait_for_device_code(device, sleep=sleep)
    assert tokens.refresh_token
    assert sleeps == [1.0, 1.0, 6.0]


@pytest.mark.parametrize("kind", ["500", "429", "reset"])
def test_wait_for_device_code_rides_out_outages(fake: FakeEntra, session: RecordingSession,
                                                kind: str) -> None:
    """An outage or throttling during the wait costs a pause of at least a second, not the
    sign-in."""
    client = client_for(fake, session, "device_code")
    device = client.start_device_code()
    fake.fail_next(1, kind)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            fake.approve_device(device.user_code)

    assert client.wait_for_device_code(device, sleep=sleep).access_token
    assert sleeps == [0.0, 1.0]


def test_wait_for_device_code_stops_on_refusal(fake: FakeEntra,
                                               session: RecordingSession) -> None:
    """A refusal (here an expired app secret) ends the wait at once."""
    client = client_for(fake, session, "device_code")
    device = client.start_device_code()
    fake.fail_next(1, "invalid_client")
    with pytest.raises(TokenRequestRefused, match="AADSTS7000222"):
        client.wait_for_device_code(device, sleep=lambda s: None)


def test_wait_for_device_code_gives_up_at_expiry(fake: FakeEntra,
                                                 session: RecordingSession) -> None:
    """Once expires_in has passed on the client's clock, waiting ends without another poll."""
    now = [NOW]
    client = client_for(fake, session, "device_code", clock=lambda: now[0])
    device = client.start_device_code()
    now[0] += device.expires_in
    with pytest.raises(AuthorisationExpired):
        client.wait_for_device_code(device, sleep=lambda s: None)
    assert fake.token_requests() == 0


def test_device_code_for_unknown_app(fake: FakeEntra, session: RecordingSession) -> None:
    """Starting a device code for an app not in the tenant is TokenRequestRefused (700016)."""
    client = client_for(fake, session, "device_code", client_id="0000-unknown")
    with pytest.raises(TokenRequestRefused, match="AADSTS700016"):
        client.start_device_code()


# -- authorisation code with PKCE --

REDIRECT = "http://localhost:8765/"


def authorise(session: requests.Session, request: AuthRequest) -> str:
    """What the browser would do: follow the authorisation URL to the final redirect."""
    answer = session.get(request.url, allow_redirects=False, timeout=2)
    assert answer.status_code == 302, answer.text
    return answer.headers["Location"]


def test_auth_code_flow(fake: FakeEntra, session: RecordingSession) -> None:
    """The authorisation URL carries state and an S256 challenge; the redirect redeems to tokens."""
    client = client_for(fake, session, "auth_code")
    request = client.authorization_request(REDIRECT)
    query = parse_qs(urlsplit(request.url).query)
    assert request.url.startswith(f"{fake.authority}/{TENANT}/oauth2/v2.0/authorize?")
    assert query["code_challenge_method"] == ["S256"] and query["state"] == [request.state]
    assert query["redirect_uri"] == [REDIRECT] and query["scope"] == [" ".join(DELEGATED)]
    location = authorise(session, request)
    assert location.startswith(REDIRECT)
    tokens = client.redeem_code(request, location)
    assert tokens.refresh_token and claims_of(tokens.access_token)["email"] == USER
    assert client.refresh(tokens.refresh_token).access_token


def test_auth_code_bare_code(fake: FakeEntra, session: RecordingSession) -> None:
    """A pasted bare code (no URL) is redeemed as it is."""
    client = client_for(fake, session, "auth_code", redirect_uri=REDIRECT)
    request = client.authorization_request()
    code = parse_qs(urlsplit(authorise(session, request)).query)["code"][0]
    assert client.redeem_code(request, f"  {code}\n").access_token


def test_auth_code_state_mismatch(fake: FakeEntra, session: RecordingSession) -> None:
    """A redirect from another sign-in (state differs) is refused before any token request."""
    client = client_for(fake, session, "auth_code")
    mine = client.authorization_request(REDIRECT)
    other = client.authorization_request(REDIRECT)
    with pytest.raises(AuthorisationFailed, match="state does not match"):
        client.redeem_code(mine, authorise(session, other))
    with pytest.raises(AuthorisationFailed, match="state does not match"):
        client.redeem_code(mine, authorise(session, other).replace("state=", "x="))
    assert fake.token_requests() == 0


def test_auth_code_single_use(fake: FakeEntra, session: RecordingSession) -> None:
    """An authorisation code works once; the second redemption fails with AADSTS54005."""
    client = client_for(fake, session, "auth_code")
    request = client.authorization_request(REDIRECT)
    location = authorise(session, request)
    client.redeem_code(request, location)
    with pytest.raises(AuthorisationFailed, match="AADSTS54005"):
        client.redeem_code(request, location)


def test_auth_code_pkce_verifier_checked(fake: FakeEntra, session: RecordingSession) -> None:
    """Redeeming with a verifier other than the challenged one fails with AADSTS50148."""
    client = client_for(fake, session, "auth_code")
    request = client.authorization_request(REDIRECT)
    forged = AuthRequest(request.url, request.state, request.redirect_uri, "x" * 64)
    with pytest.raises(AuthorisationFailed, match="AADSTS50148"):
        client.redeem_code(forged, authorise(session, request))


@pytest.mark.parametrize(
    ("error", "description", "raised", "words"),
    [("access_denied", "AADSTS65004: User declined to consent.", AuthorisationDeclined,
      "declined"),
     ("consent_required", "AADSTS65001: The user or administrator has not consented.",
      AuthorisationFailed, "admin consent")],
)
def test_auth_code_error_redirect(fake: FakeEntra, session: RecordingSession, error: str,
                                  description: str, raised: type[ProxyError], words: str) -> None:
    """An error in the final redirect is surfaced as a sentence; nothing is redeemed."""
    fake.set_authorize_result(error=error, description=description)
    client = client_for(fake, session, "auth_code")
    request = client.authorization_request(REDIRECT)
    with pytest.raises(raised, match=words):
        client.redeem_code(request, authorise(session, request))
    assert fake.token_requests() == 0


@pytest.mark.parametrize("pasted", ["", "   ", f"{REDIRECT}?state=S&session_state=1"])
def test_auth_code_nothing_usable_pasted(pasted: str) -> None:
    """An empty paste or a redirect without code or error is AuthorisationFailed, not a crash."""
    client = EntraClient(account_for("https://login.example", "auth_code"), requests.Session())
    request = AuthRequest("https://x", "S", REDIRECT, "v" * 43)
    with pytest.raises(AuthorisationFailed):
        client.redeem_code(request, pasted)


def test_authorization_request_needs_a_redirect_uri() -> None:
    """Without redirect_uri in the call or the config, authorization_request is a ValueError."""
    client = EntraClient(account_for("https://login.example", "auth_code"), requests.Session())
    with pytest.raises(ValueError):
        client.authorization_request()


# -- nothing secret in any message or log line --

def test_no_secret_in_any_error_or_log(fake: FakeEntra, session: RecordingSession,
                                       certificate: tuple[bytes, bytes], tmp_path: Path,
                                       caplog: pytest.LogCaptureFixture) -> None:
    """No secret, token, assertion, code or verifier appears in any raised error or log line."""
    caplog.set_level(logging.DEBUG)
    raised: list[BaseException] = []

    def attempt(action: Callable[[], object]) -> None:
        try:
            action()
        except ProxyError as e:
            raised.append(e)

    delegated = client_for(fake, session, "device_code")
    tokens = signed_in(fake, delegated)
    assert tokens.refresh_token
    for kind in ("invalid_grant", "invalid_client", "interaction_required", "429", "reset"):
        fake.fail_next(1, kind)
        attempt(lambda: delegated.refresh(tokens.refresh_token or ""))
    fake.revoke_refresh_tokens(USER)
    attempt(lambda: delegated.refresh(tokens.refresh_token or ""))
    attempt(lambda: client_for(fake, session, client_secret=SECRET + "x").client_credentials())
    fake.add_app(TENANT, APP_ID, secret=SECRET, certificate_pem=make_certificate()[0],
                 mailbox=USER)
    pem = tmp_path / "app.pem"
    pem.write_bytes(certificate[0] + certificate[1])
    attempt(lambda: client_for(fake, session, certificate=pem).client_credentials())
    device = delegated.start_device_code()
    fake.decline_device(device.user_code)
    attempt(lambda: delegated.poll_device_code(device))
    auth = client_for(fake, session, "auth_code")
    request = auth.authorization_request(REDIRECT)
    location = authorise(session, request)
    attempt(lambda: auth.redeem_code(auth.authorization_request(REDIRECT), location))
    forged = AuthRequest(request.url, request.state, REDIRECT, "y" * 64)
    attempt(lambda: auth.redeem_code(forged, location))
    attempt(lambda: auth.redeem_code(request, location))

    assert len(raised) == 12, raised
    secrets_seen = {s for s in session.secrets if len(s) >= 8} | {SECRET, SECRET + "x"}
    assert len(secrets_seen) >= 8
    texts = [f"{e} {e!r} {e.args}" for e in raised] + [caplog.text]
    for text in texts:
        for secret in secrets_seen:
            assert secret not in text


def test_echoed_secret_is_redacted() -> None:
    """If Entra's description ever echoes a sent secret, the message shows [redacted] instead."""
    stub = StubSession(400, {"error": "invalid_request",
                             "error_description": f"AADSTS90014: The value '{SECRET}' is bad."})
    client = stub_client(stub)
    with pytest.raises(TokenRequestRefused) as raised:
        client.client_credentials()
    assert SECRET not in str(raised.value) and "[redacted]" in str(raised.value)


# -- an account serving two resources: Exchange and Microsoft Graph --

BOTH = (*DELEGATED[:-1], *GRAPH_SEND_SCOPES, "offline_access")


def test_each_request_names_one_resource(fake: FakeEntra, session: RecordingSession) -> None:
    """The device code asks for Exchange's scopes only; the refresh for Graph (admin consent
    given) names Graph's scopes only; both carry offline_access; the Graph token has Mail.Send."""
    fake.add_app(TENANT, APP_ID, secret=SECRET, mailbox="printer@contoso.com",
                 admin_consent=GRAPH_SEND_SCOPES)
    client = client_for(fake, session, "device_code", scopes=BOTH)
    tokens = signed_in(fake, client)
    graph = client.refresh(tokens.refresh_token or "", GRAPH)
    sent = [set(form["scope"].split()) for form in session.forms if "scope" in form]
    for scopes in sent:
        assert len(resources_in(scopes)) == 1 and "offline_access" in scopes
    assert sent[-1] == {*GRAPH_SEND_SCOPES, "offline_access"}
    assert "Mail.Send" in claims_of(graph.access_token)["scp"].split()


def test_graph_without_consent_is_consent_missing(fake: FakeEntra,
                                                  session: RecordingSession) -> None:
    """A sign-in that consented to Exchange only cannot be redeemed for Graph: ConsentMissing
    (temporary, naming AADSTS65001); the refresh token still works for Exchange."""
    tokens = signed_in(fake, client_for(fake, session, "device_code"))
    client = client_for(fake, session, "device_code", scopes=BOTH)
    with pytest.raises(ConsentMissing, match="AADSTS65001") as raised:
        client.refresh(tokens.refresh_token or "", GRAPH)
    assert isinstance(raised.value, TokenRequestRefused)
    assert client.refresh(tokens.refresh_token or "", OUTLOOK).access_token


def test_client_credentials_per_resource(fake: FakeEntra, session: RecordingSession) -> None:
    """An app-only account asks Exchange's .default or Graph's .default, one at a time."""
    client = client_for(fake, session, scopes=(APP_ONLY_SCOPE, GRAPH_APP_SCOPE))
    graph = client.client_credentials(GRAPH)
    assert claims_of(graph.access_token)["aud"] == "https://graph.microsoft.com"
    assert client.client_credentials(OUTLOOK).access_token
    assert [form["scope"] for form in session.forms] == [GRAPH_APP_SCOPE, APP_ONLY_SCOPE]
