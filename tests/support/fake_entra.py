"""A local fake of Entra ID's v2.0 endpoints, served over real HTTP on 127.0.0.1.

It answers like the real service where a client can tell the difference: the JSON shapes
(token answers; errors with error, error_description "AADSTSnnn: ...", error_codes, timestamp,
trace_id, correlation_id), the HTTP statuses (400 for grant errors, 401 for invalid_client),
refresh token rotation, single-use authorisation codes bound to a PKCE challenge, device code
polling with authorization_pending / slow_down / expired_token, and certificate assertions
checked against the registered certificate. Outlook access tokens come from a `mint(mailbox,
lifetime)` function, so tests can hand out tokens a real upstream (Dovecot) accepts; Microsoft Graph
tokens (audience https://graph.microsoft.com, `scp` for a signed-in user, `roles` for an app) are
signed with `graph_token_key`, which the fake Graph checks them with.

One token is for one resource, as in Entra ID: a token request whose scopes name Outlook and Graph
together is refused (AADSTS28000; AADSTS70011 for client credentials), while the same refresh
token can be redeemed for each resource in turn. Consent is kept per user and app, as Entra ID
keeps it: a sign-in consents to the scopes it asked for, and a refresh token is redeemed for any
scope the user (or an administrator, `admin_consent`) consented to. /authorize takes scopes of
several resources (it gathers consent for all of them); the code is then redeemed for one.
/devicecode takes them too and the user consents to all, but the device code cannot be redeemed
(AADSTS28000), as Microsoft's own issue tracker reports (MicrosoftDocs/azure-docs#42565): a
second device code for one resource then works, and so do refreshes for the other.

Endpoints: POST /{tenant}/oauth2/v2.0/token, POST /{tenant}/oauth2/v2.0/devicecode,
GET /{tenant}/oauth2/v2.0/authorize (answers at once with a 302 to redirect_uri: there is no
browser), GET /devicelogin (the verification page). `fail_next()` injects outages.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import hmac
import html
import json
import secrets
import string
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.support.graph_tokens import (
    GRAPH,
    NON_RESOURCE_SCOPES,
    mint_graph_token,
    permission_name,
    resource_of,
    resources,
)
from tests.support.local_http import JsonHandler, LocalService

Mint = Callable[[str, int], str]

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
FAILURE_KINDS = (
    "500", "503", "429", "timeout", "reset", "invalid_grant", "invalid_client",
    "interaction_required",
)
CLOCK_SKEW = 300  # Entra tolerates five minutes between its clock and an assertion's
CODE_LIFETIME = 600
GENERAL_TENANTS = {"common", "organizations", "consumers"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class EntraError(Exception):
    """An error answer, in Entra's shape."""

    def __init__(self, status: int, error: str, code: int, text: str) -> None:
        super().__init__(f"{error} AADSTS{code}")
        self.status = status
        self.error = error
        self.code = code
        self.text = text


@dataclass
class App:
    tenant: str
    client_id: str
    secret: str | None = None
    certificate: x509.Certificate | None = None
    mailbox: str | None = None  # whose mailbox app-only (client credentials) tokens name
    redirect_uris: tuple[str, ...] | None = None  # None: any http://localhost or 127.0.0.1 URL
    users: list[str] = field(default_factory=list)
    graph_roles: tuple[str, ...] = ("Mail.Send", "Mail.ReadWrite")  # application permissions
    admin_consent: tuple[str, ...] = ()  # delegated scopes granted for every user
    consents: dict[str, list[str]] = field(default_factory=dict)  # user -> scopes consented to

    def consent(self, mailbox: str, scopes: tuple[str, ...]) -> None:
        given = self.consents.setdefault(mailbox.lower(), [])
        given += [scope for scope in scopes if scope not in given]

    def consented(self, mailbox: str) -> tuple[str, ...]:
        return tuple(self.consents.get(mailbox.lower(), [])) + self.admin_consent


@dataclass
class RefreshGrant:
    client_id: str
    mailbox: str
    scopes: tuple[str, ...]
    issued_at: float
    rotated: bool = False
    revoked: bool = False
    expired: bool = False


@dataclass
class DeviceAuthorisation:
    client_id: str
    user_code: str
    scopes: tuple[str, ...]
    expires_at: float
    interval: float
    state: str = "pending"  # pending | approved | declined | redeemed
    mailbox: str | None = None
    last_poll: float | None = None


@dataclass
class AuthorisationCode:
    client_id: str
    redirect_uri: str
    code_challenge: str
    scopes: tuple[str, ...]
    mailbox: str
    expires_at: float
    redeemed: bool = False


class FakeEntra(LocalService):
    """The fake service; start() it, point an account's `authority` at `.authority`."""

    thread_name = "fake-entra"

    def __init__(
        self,
        mint: Mint,
        *,
        access_token_lifetime: int = 3600,
        device_interval: float = 1,
        device_expires_in: int = 900,
        invalidate_rotated_refresh_tokens: bool = False,
        retry_after: int = 1,
        hang_seconds: float = 5.0,
        clock: Callable[[], float] = time.time,
        graph_token_key: bytes | None = None,
    ) -> None:
        self.mint = mint
        self.graph_token_key = graph_token_key or secrets.token_bytes(32)
        self.access_token_lifetime = access_token_lifetime
        self.device_interval = device_interval
        self.device_expires_in = device_expires_in
        self.invalidate_rotated_refresh_tokens = invalidate_rotated_refresh_tokens
        self.retry_after = retry_after
        self.hang_seconds = hang_seconds  # "timeout" failures hold the request this long, at most
        self.clock = clock
        super().__init__()
        self._lock = threading.RLock()
        self._apps: dict[tuple[str, str], App] = {}
        self._refresh_grants: dict[str, RefreshGrant] = {}
        self.reused_refresh_tokens = 0  # rotated ones presented again (strict rotation refuses)
        self._devices: dict[str, DeviceAuthorisation] = {}
        self._codes: dict[str, AuthorisationCode] = {}
        self._failures: collections.deque[str] = collections.deque()
        self._requests: list[tuple[str, str | None]] = []
        self._authorize_result: tuple[str | None, str | None, str] = (None, None, "")

    @property
    def authority(self) -> str:
        return self.url

    def token_url(self, tenant: str) -> str:
        return f"{self.authority}/{tenant}/oauth2/v2.0/token"

    # -- set-up by tests --

    def add_app(
        self,
        tenant: str,
        client_id: str,
        secret: str | None = None,
        certificate_pem: bytes | str | None = None,
        mailbox: str | None = None,
        redirect_uris: list[str] | None = None,
        graph_roles: tuple[str, ...] = ("Mail.Send", "Mail.ReadWrite"),
        admin_consent: tuple[str, ...] = (),
    ) -> None:
        """Register an app; client-credentials tokens name `mailbox` (else the client_id) and
        carry `graph_roles` for Graph; `admin_consent` (delegated scopes) lets a refresh token
        be redeemed for them although the user's sign-in did not ask for them."""
        certificate = None
        if certificate_pem is not None:
            pem = certificate_pem.encode() if isinstance(certificate_pem, str) else certificate_pem
            certificate = x509.load_pem_x509_certificates(pem)[0]
        with self._lock:
            app = self._apps.setdefault((tenant, client_id), App(tenant, client_id))
            app.secret = secret
            app.certificate = certificate
            app.mailbox = mailbox
            app.redirect_uris = tuple(redirect_uris) if redirect_uris is not None else None
            app.graph_roles = tuple(graph_roles)
            app.admin_consent = tuple(admin_consent)

    def add_user(self, tenant: str, client_id: str, mailbox: str) -> None:
        """A user who may sign in to the app (registered as a public client if new)."""
        with self._lock:
            app = self._apps.setdefault((tenant, client_id), App(tenant, client_id))
            if mailbox not in app.users:
                app.users.append(mailbox)

    def set_authorize_result(
        self, mailbox: str | None = None, error: str | None = None, description: str = ""
    ) -> None:
        """What /authorize does: sign in as mailbox (None: the app's first user) or redirect
        with error (e.g. "access_denied") and description."""
        with self._lock:
            self._authorize_result = (mailbox, error, description)

    def approve_device(self, user_code: str, mailbox: str | None = None) -> None:
        """The user entered user_code and signed in as mailbox (None: the app's first user)."""
        with self._lock:
            device = self._device_by_user_code(user_code)
            device.state = "approved"
            device.mailbox = mailbox or self._first_user(device.client_id)
            for app in self._apps.values():
                if app.client_id == device.client_id:
                    app.consent(device.mailbox, device.scopes)

    def decline_device(self, user_code: str) -> None:
        with self._lock:
            self._device_by_user_code(user_code).state = "declined"

    def expire_device(self, user_code: str) -> None:
        with self._lock:
            self._device_by_user_code(user_code).expires_at = self.clock() - 1

    @property
    def user_codes(self) -> list[str]:
        """User codes handed out so far, oldest first."""
        with self._lock:
            return [d.user_code for d in self._devices.values()]

    def revoke_refresh_tokens(self, mailbox: str) -> None:
        """Every refresh token of mailbox is refused from now on (AADSTS50173)."""
        with self._lock:
            for grant in self._refresh_grants.values():
                if grant.mailbox == mailbox:
                    grant.revoked = True

    def expire_refresh_tokens(self, mailbox: str) -> None:
        """Every refresh token of mailbox has expired from inactivity (AADSTS700082)."""
        with self._lock:
            for grant in self._refresh_grants.values():
                if grant.mailbox == mailbox:
                    grant.expired = True

    def fail_next(self, n: int, kind: str) -> None:
        """The next n POSTs (token, devicecode) fail: 500, 503, 429 (with Retry-After),
        timeout (held hang_seconds, then closed unanswered), reset (RST), or an OAuth error
        answer: invalid_grant, invalid_client, interaction_required."""
        if kind not in FAILURE_KINDS:
            raise ValueError(f"kind must be one of {', '.join(FAILURE_KINDS)}")
        with self._lock:
            self._failures.extend([kind] * n)

    @property
    def requests(self) -> list[tuple[str, str | None]]:
        """(path, grant_type) of every request so far (grant_type None where there is none)."""
        with self._lock:
            return list(self._requests)

    def token_requests(self, grant_type: str | None = None) -> int:
        """How many token requests were made (of one grant type, if given)."""
        with self._lock:
            return sum(
                1 for path, grant in self._requests
                if path.endswith("/token") and (grant_type is None or grant == grant_type)
            )

    # -- the service, called by the handler threads --

    def _record(self, path: str, grant_type: str | None) -> str | None:
        """Count the request; the failure to inject, if one is queued."""
        with self._lock:
            self._requests.append((path, grant_type))
            return self._failures.popleft() if self._failures else None

    def _app(self, tenant: str, client_id: str) -> App:
        if tenant in GENERAL_TENANTS:
            for candidate in self._apps.values():
                if candidate.client_id == client_id:
                    return candidate
        elif tenant not in {t for t, _ in self._apps}:
            raise EntraError(400, "invalid_request", 90002, f"Tenant '{tenant}' not found. Check "
                             "to make sure you have the correct tenant ID and are signing into "
                             "the correct cloud.")
        app = self._apps.get((tenant, client_id))
        if app is None:
            raise EntraError(400, "unauthorized_client", 700016, f"Application with identifier "
                             f"'{client_id}' was not found in the directory '{tenant}'.")
        return app

    def _first_user(self, client_id: str) -> str:
        for app in self._apps.values():
            if app.client_id == client_id and app.users:
                return app.users[0]
        raise ValueError(f"no user was added for app {client_id}")

    def _device_by_user_code(self, user_code: str) -> DeviceAuthorisation:
        for device in self._devices.values():
            if device.user_code == user_code:
                return device
        raise KeyError(f"no device code with user code {user_code}")

    def token(self, tenant: str, form: dict[str, str]) -> dict[str, Any]:
        grant_type = form.get("grant_type", "")
        with self._lock:
            if grant_type == "client_credentials" and tenant in GENERAL_TENANTS:
                raise EntraError(400, "invalid_request", 9001023, f"The provided instance "
                                 f"'{tenant}' is not supported for client credentials; use a "
                                 "tenant-specific endpoint.")
            app = self._app(tenant, form.get("client_id", ""))
            self._authenticate_client(app, tenant, form, grant_type == "client_credentials")
            _one_resource(form.get("scope", ""), grant_type == "client_credentials")
            if grant_type == "client_credentials":
                return self._client_credentials(app, form)
            if grant_type == "refresh_token":
                return self._refresh(app, form)
            if grant_type == "authorization_code":
                return self._redeem_code(app, form)
            if grant_type == DEVICE_CODE_GRANT:
                return self._poll_device(app, form)
            raise EntraError(400, "unsupported_grant_type", 70003, "The app requested an "
                             f"unsupported grant type '{grant_type}'.")

    def _authenticate_client(
        self, app: App, tenant: str, form: dict[str, str], required: bool
    ) -> None:
        if "client_assertion" in form:
            if form.get("client_assertion_type") != JWT_BEARER_ASSERTION:
                raise EntraError(400, "invalid_request", 50027, "Invalid client_assertion_type.")
            self._verify_assertion(app, tenant, form["client_assertion"])
        elif "client_secret" in form:
            if app.secret is None or not hmac.compare_digest(form["client_secret"], app.secret):
                raise EntraError(401, "invalid_client", 7000215, "Invalid client secret "
                                 "provided. Ensure the secret being sent in the request is the "
                                 "client secret value, not the client secret ID, for a secret "
                                 f"added to app '{app.client_id}'.")
        elif required:
            raise EntraError(401, "invalid_client", 7000218, "The request body must contain "
                             "the following parameter: 'client_assertion' or 'client_secret'.")

    def _verify_assertion(self, app: App, tenant: str, assertion: str) -> None:
        try:
            header_part, claims_part, signature_part = assertion.split(".")
            header = json.loads(_b64url_decode(header_part))
            claims = json.loads(_b64url_decode(claims_part))
            signature = _b64url_decode(signature_part)
        except (ValueError, binascii.Error):
            raise EntraError(401, "invalid_client", 50027, "JWT token is invalid or is "
                             "malformed.") from None
        certificate = app.certificate
        if certificate is None or not isinstance(header, dict) or not isinstance(claims, dict):
            raise EntraError(401, "invalid_client", 700027, "Client assertion failed signature "
                             "validation. [Reason - The key was not found.]")
        sha256 = b64url(certificate.fingerprint(hashes.SHA256()))
        sha1 = b64url(certificate.fingerprint(hashes.SHA1()))
        named = [header.get("x5t#S256"), header.get("x5t")]
        if named == [None, None] or named[0] not in (None, sha256) or named[1] not in (None, sha1):
            raise EntraError(401, "invalid_client", 700027, "Client assertion failed signature "
                             "validation. [Reason - The key was not found.]")
        pads: dict[str, padding.AsymmetricPadding] = {
            "RS256": padding.PKCS1v15(),
            "PS256": padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO),
        }
        public_key = certificate.public_key()
        if header.get("alg") not in pads or not isinstance(public_key, rsa.RSAPublicKey):
            raise EntraError(401, "invalid_client", 5002730, "Invalid JWT token. Unsupported "
                             "key for the signing algorithm.")
        signed = f"{header_part}.{claims_part}".encode()
        try:
            public_key.verify(signature, signed, pads[header["alg"]], hashes.SHA256())
        except InvalidSignature:
            raise EntraError(401, "invalid_client", 700027, "Client assertion contains an "
                             "invalid signature.") from None
        if claims.get("aud") != self.token_url(tenant):
            raise EntraError(401, "invalid_client", 700212, "The audience of the client "
                             "assertion is not the token endpoint.")
        if claims.get("iss") != app.client_id or claims.get("sub") != app.client_id:
            raise EntraError(401, "invalid_client", 700021, "Client assertion application "
                             "identifier doesn't match 'client_id' parameter.")
        now, nbf, exp = self.clock(), claims.get("nbf"), claims.get("exp")
        if not isinstance(nbf, (int, float)) or not isinstance(exp, (int, float)):
            raise EntraError(401, "invalid_client", 50027, "JWT token is invalid or is "
                             "malformed: nbf and exp are required.")
        if now + CLOCK_SKEW < nbf or now - CLOCK_SKEW >= exp:
            raise EntraError(401, "invalid_client", 700024, "Client assertion is not within "
                             f"its valid time range. Current time: {_iso(now)}, assertion valid "
                             f"from {_iso(nbf)}, expiry time of assertion {_iso(exp)}.")

    def _client_credentials(self, app: App, form: dict[str, str]) -> dict[str, Any]:
        scopes = form.get("scope", "").split()
        if not scopes or not all(s.endswith("/.default") for s in scopes):
            raise EntraError(400, "invalid_scope", 1002012, f"The provided value for scope "
                             f"{form.get('scope', '')} is not valid. Client credential flows "
                             "must have a scope value with /.default suffixed to the resource "
                             "identifier (application ID URI).")
        answer = self._issue(app, app.mailbox or app.client_id, tuple(scopes), (),
                             offline=False)
        del answer["scope"]  # Entra sends no scope for app-only tokens
        return answer

    def _refresh(self, app: App, form: dict[str, str]) -> dict[str, Any]:
        grant = self._refresh_grants.get(form.get("refresh_token", ""))
        if grant is None or grant.client_id != app.client_id:
            raise EntraError(400, "invalid_grant", 9002313, "Invalid request. Request is "
                             "malformed or invalid.")
        if grant.revoked:
            raise EntraError(400, "invalid_grant", 50173, "The provided grant has expired due "
                             "to it being revoked, a fresh auth token is needed. The user might "
                             "have changed or reset their password.")
        if grant.expired:
            raise EntraError(400, "invalid_grant", 700082, "The refresh token has expired due "
                             "to inactivity. The token was issued on "
                             f"{_iso(grant.issued_at)} and was inactive for 90.00:00:00.")
        if grant.rotated and self.invalidate_rotated_refresh_tokens:
            self.reused_refresh_tokens += 1
            raise EntraError(400, "invalid_grant", 70000, "Provided grant is invalid or "
                             "malformed: this refresh token was already exchanged.")
        requested = tuple(form.get("scope", "").split())
        if not set(requested) - NON_RESOURCE_SCOPES <= set(app.consented(grant.mailbox)):
            raise EntraError(400, "invalid_grant", 65001, "The user or administrator has not "
                             f"consented to use the application with ID '{app.client_id}'. "
                             "Send an interactive authorization request for this user and "
                             "resource.")
        grant.rotated = True
        return self._issue(app, grant.mailbox, requested, app.consented(grant.mailbox),
                           offline="offline_access" in grant.scopes)

    def _redeem_code(self, app: App, form: dict[str, str]) -> dict[str, Any]:
        code = self._codes.get(form.get("code", ""))
        if code is None or code.client_id != app.client_id:
            raise EntraError(400, "invalid_grant", 9002313, "Invalid request. Request is "
                             "malformed or invalid.")
        if code.redeemed:
            raise EntraError(400, "invalid_grant", 54005, "OAuth2 Authorization code was "
                             "already redeemed, please retry with a new valid code or use an "
                             "existing refresh token.")
        code.redeemed = True  # any attempt uses it up
        if form.get("redirect_uri") != code.redirect_uri:
            raise EntraError(400, "invalid_grant", 70000, "The redirect_uri does not match the "
                             "one of the authorization request.")
        if self.clock() >= code.expires_at:
            raise EntraError(400, "invalid_grant", 70008, "The provided authorization code or "
                             "refresh token has expired due to inactivity.")
        verifier = form.get("code_verifier", "")
        if b64url(hashlib.sha256(verifier.encode()).digest()) != code.code_challenge:
            raise EntraError(400, "invalid_grant", 50148, "The code_verifier does not match "
                             "the code_challenge supplied in the authorization request for PKCE.")
        return self._issue(app, code.mailbox, tuple(form.get("scope", "").split()), code.scopes,
                           offline="offline_access" in code.scopes)

    def device_code(self, tenant: str, form: dict[str, str]) -> dict[str, Any]:
        with self._lock:
            app = self._app(tenant, form.get("client_id", ""))
            scopes = tuple(form.get("scope", "").split())
            if not scopes:
                raise EntraError(400, "invalid_request", 900144, "The request body must "
                                 "contain the following parameter: 'scope'.")
            device_code = secrets.token_urlsafe(48)
            user_code = "".join(secrets.choice(string.ascii_uppercase) for _ in range(9))
            self._devices[device_code] = DeviceAuthorisation(
                app.client_id, user_code, scopes, self.clock() + self.device_expires_in,
                self.device_interval,
            )
            uri = f"{self.authority}/devicelogin"
            return {
                "device_code": device_code, "user_code": user_code, "verification_uri": uri,
                "expires_in": self.device_expires_in, "interval": self.device_interval,
                "message": f"To sign in, use a web browser to open the page {uri} and enter "
                f"the code {user_code} to authenticate.",
            }

    def _poll_device(self, app: App, form: dict[str, str]) -> dict[str, Any]:
        device = self._devices.get(form.get("device_code", ""))
        if device is None or device.client_id != app.client_id:
            raise EntraError(400, "bad_verification_code", 70000, "The device code is not "
                             "valid.")
        now = self.clock()
        if device.state == "redeemed":
            raise EntraError(400, "invalid_grant", 54005, "The device code was already "
                             "redeemed.")
        if now >= device.expires_at:
            raise EntraError(400, "expired_token", 70020, "The provided value for the input "
                             "parameter 'device_code' is not valid. This device code has expired.")
        if device.state == "declined":
            raise EntraError(400, "authorization_declined", 65004, "User declined to consent "
                             "to access the app.")
        if device.state == "pending":
            too_soon = device.last_poll is not None and now - device.last_poll < device.interval
            device.last_poll = now
            if too_soon:
                raise EntraError(400, "slow_down", 70016, "OAuth 2.0 device flow error. Polled "
                                 "faster than the interval.")
            raise EntraError(400, "authorization_pending", 70016, "OAuth 2.0 device flow "
                             "error. Authorization is pending. Continue polling.")
        device.state = "redeemed"
        assert device.mailbox is not None
        _one_resource(" ".join(device.scopes), client_credentials=False)  # consent is given
        return self._issue(app, device.mailbox, device.scopes, device.scopes,
                           offline="offline_access" in device.scopes)

    def authorize(self, tenant: str, query: dict[str, str]) -> tuple[int, str]:
        """(302, redirect URL) or (400, error page text) for GET /authorize."""
        with self._lock:
            try:
                app = self._app(tenant, query.get("client_id", ""))
            except EntraError as e:
                return 400, f"AADSTS{e.code}: {e.text}"
            redirect_uri = query.get("redirect_uri", "")
            if not _redirect_allowed(app, redirect_uri):
                return 400, (f"AADSTS50011: The redirect URI '{redirect_uri}' specified in the "
                             "request does not match the redirect URIs configured for the "
                             f"application '{app.client_id}'.")
            state = query.get("state")

            def refuse(error: str, description: str) -> tuple[int, str]:
                params = {"error": error, "error_description": description}
                if state:
                    params["state"] = state
                return 302, _with_query(redirect_uri, params)

            if query.get("response_type") != "code":
                return refuse("unsupported_response_type", "AADSTS700054: response_type "
                              f"'{query.get('response_type')}' is not enabled for the app.")
            if not query.get("scope"):
                return refuse("invalid_request", "AADSTS900144: The request body must contain "
                              "the following parameter: 'scope'.")
            if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
                return refuse("invalid_request", "AADSTS9002325: Proof Key for Code Exchange "
                              "(S256) is required.")
            if not state:
                return refuse("invalid_request", "AADSTS900144: The request must contain "
                              "'state' (this fake insists).")
            mailbox, error, description = self._authorize_result
            if error:
                return refuse(error, description or "AADSTS65004: User declined to consent to "
                              "access the app.")
            try:
                mailbox = mailbox or self._first_user(app.client_id)
            except ValueError:
                return refuse("invalid_request", "AADSTS50034: The user account does not exist "
                              "in the directory.")
            code = secrets.token_urlsafe(48)
            app.consent(mailbox, tuple(query["scope"].split()))
            self._codes[code] = AuthorisationCode(
                app.client_id, redirect_uri, query["code_challenge"],
                tuple(query["scope"].split()), mailbox, self.clock() + CODE_LIFETIME,
            )
            return 302, _with_query(redirect_uri, {"code": code, "state": state,
                                                   "session_state": str(uuid.uuid4())})

    def _issue(
        self, app: App, mailbox: str, requested: tuple[str, ...], consented: tuple[str, ...],
        offline: bool,
    ) -> dict[str, Any]:
        """A token for the resource of `requested` (else the first one consented to), with
        every consented scope of that resource; a refresh token keeps all of `consented`."""
        lifetime = self.access_token_lifetime
        resource = (resources(requested) or resources(consented) or [None])[0]
        granted = [s for s in consented + app.admin_consent if resource_of(s) == resource]
        granted = list(dict.fromkeys(granted))
        if resource != GRAPH:
            access_token = self.mint(mailbox, lifetime)
        elif not consented:  # client credentials: the app's application permissions
            access_token = mint_graph_token(
                self.graph_token_key, tenant=app.tenant, client_id=app.client_id,
                now=self.clock(), lifetime=lifetime, roles=list(app.graph_roles))
        else:
            access_token = mint_graph_token(
                self.graph_token_key, tenant=app.tenant, client_id=app.client_id,
                now=self.clock(), lifetime=lifetime, mailbox=mailbox,
                scp=[permission_name(s) for s in granted])
        answer: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": " ".join(granted),
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": access_token,
        }
        if offline:
            refresh_token = secrets.token_urlsafe(64)
            self._refresh_grants[refresh_token] = RefreshGrant(
                app.client_id, mailbox, consented, self.clock()
            )
            answer["refresh_token"] = refresh_token
        return answer

    def error_body(self, e: EntraError) -> dict[str, Any]:
        timestamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
        trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
        return {
            "error": e.error,
            "error_description": f"AADSTS{e.code}: {e.text}\r\nTrace ID: {trace_id}\r\n"
            f"Correlation ID: {correlation_id}\r\nTimestamp: {timestamp}",
            "error_codes": [e.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"{self.authority}/error?code={e.code}",
        }


INJECTED_ERRORS = {
    "invalid_grant": EntraError(400, "invalid_grant", 70000, "Provided grant is invalid or "
                                "malformed."),
    "invalid_client": EntraError(401, "invalid_client", 7000222, "The provided client secret "
                                 "keys for app are expired."),
    "interaction_required": EntraError(400, "invalid_grant", 50076, "Due to a configuration "
                                       "change made by your administrator, or because you "
                                       "moved to a new location, you must use multi-factor "
                                       "authentication."),
    "500": EntraError(500, "server_error", 50000, "There was an error issuing a token or an "
                      "issue with our sign-in service."),
    "429": EntraError(429, "temporarily_unavailable", 50196, "The server terminated an "
                      "operation because it encountered a client request loop."),
}


class _Handler(JsonHandler):
    server_version = "FakeEntra/1.0"

    @property
    def fake(self) -> FakeEntra:
        return self.server.fake  # type: ignore[attr-defined, no-any-return]

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.fake._record(parts.path, None)
        segments = parts.path.strip("/").split("/")
        if len(segments) == 4 and segments[1:] == ["oauth2", "v2.0", "authorize"]:
            status, target = self.fake.authorize(segments[0], query)
            if status == 302:
                self._send(302, b"", "text/plain", {"Location": target})
            else:
                self._send(status, _page(target), "text/html; charset=utf-8")
        elif parts.path == "/devicelogin":
            self._send(200, _page("Enter the code shown by the application."),
                       "text/html; charset=utf-8")
        else:
            self._send(404, _page("Not found."), "text/html; charset=utf-8")

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        form = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
        failure = self.fake._record(parts.path, form.get("grant_type"))
        segments = parts.path.strip("/").split("/")
        if len(segments) != 4 or segments[1:3] != ["oauth2", "v2.0"] or \
                segments[3] not in ("token", "devicecode"):
            self._send(404, _page("Not found."), "text/html; charset=utf-8")
            return
        if failure is not None and self._inject(failure):
            return
        try:
            if segments[3] == "token":
                answer = self.fake.token(segments[0], form)
            else:
                answer = self.fake.device_code(segments[0], form)
        except EntraError as e:
            self._send_json(e.status, self.fake.error_body(e))
            return
        self._send_json(200, answer)

    def _inject(self, kind: str) -> bool:
        """Carry out an injected failure; False if the request is to be answered after all."""
        if kind == "timeout":
            self._hold(self.fake._stopping, self.fake.hang_seconds)
        elif kind == "reset":
            self._reset()
        elif kind == "503":
            self._send(503, _page("Service Unavailable"), "text/html; charset=utf-8")
        else:
            error = INJECTED_ERRORS[kind]
            headers = {"Retry-After": str(self.fake.retry_after)} if kind == "429" else {}
            self._send_json(error.status, self.fake.error_body(error), headers)
        return True


def _one_resource(scope: str, client_credentials: bool) -> None:
    """Refuse a scope list naming more than one resource, as Entra ID does."""
    if len(resources(scope.split())) <= 1:
        return
    if client_credentials:
        raise EntraError(400, "invalid_scope", 70011, "The provided request must include a "
                         "'scope' input parameter. The provided value for the input parameter "
                         f"'scope' is not valid. The scope {scope} is not valid.")
    raise EntraError(400, "invalid_scope", 28000, "Provided value for the input parameter "
                     "scope is not valid because it contains more than one resource. Scope "
                     f"{scope} is not valid.")


def _redirect_allowed(app: App, redirect_uri: str) -> bool:
    if app.redirect_uris is not None:
        return redirect_uri in app.redirect_uris
    # Entra lets public clients use any port on a loopback redirect URI.
    parts = urlsplit(redirect_uri)
    return parts.scheme == "http" and parts.hostname in ("localhost", "127.0.0.1")


def _with_query(url: str, params: dict[str, str]) -> str:
    return url + ("&" if "?" in url else "?") + urlencode(params)


def _page(text: str) -> bytes:
    return f"<!doctype html><title>Fake Entra ID</title><p>{html.escape(text)}</p>".encode()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%m/%d/%Y %H:%M:%S")


FakeEntra.handler = _Handler  # defined below the service it serves
