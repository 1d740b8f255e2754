"""OAuth2 against Microsoft Entra ID (v2.0 endpoints), with no Twisted in it.

`EntraClient` runs one account's flows with an injected `requests.Session` and clock, so tests
drive it synchronously and the proxy calls it from a thread pool. Every failure becomes an error
from `proxy.errors`, and which one matters, because the caller acts on it:

- the token endpoint cannot be reached, times out, answers 5xx or throttles (429):
  TokenEndpointUnavailable / TokenEndpointThrottled. Temporary: keep every stored token.
- Entra ID refuses a refresh token for good (invalid_grant, interaction_required):
  NeedsReauthorisation. The stored refresh token is dead; only `account add` helps.
- anything else Entra ID refuses (bad or expired secret, no consent, unknown app, bad scope):
  TokenRequestRefused, with one plain sentence (proxy.entra.aadsts). The stored tokens are still good.

No exception message and no log line carries a secret, token, assertion, code or code verifier.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests

from ..config import AccountConfig
from ..errors import (
    AuthorisationDeclined,
    AuthorisationExpired,
    AuthorisationFailed,
    ConfigError,
    ConsentMissing,
    NeedsReauthorisation,
    ProxyError,
    SlowDown,
    TokenEndpointThrottled,
    TokenEndpointUnavailable,
    TokenRequestRefused,
)
from ..resources import resources_in, scopes_for
from .aadsts import error_codes, explain
from .answers import (
    AuthRequest,
    DeviceCode,
    TokenSet,
    code_from_redirect,
    parse_device_code_response,
    parse_token_response,
    retry_after_seconds,
)
from .assertion import b64url, client_assertion, load_signing_certificate
from .polling import DevicePolling

log = logging.getLogger(__name__)

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
NO_CONSENT = 65001  # AADSTS number: no consent for (some of) the requested scopes
# 4xx answers that still mean "try again later".
TEMPORARY_ERRORS = frozenset({"temporarily_unavailable", "server_error"})
# What a dead refresh token looks like: nothing but a new interactive sign-in helps.
REAUTHORISE_ERRORS = frozenset(
    {"invalid_grant", "interaction_required", "login_required", "consent_required"}
)
# Form fields whose values must never reach a message, even if Entra echoes them back.
SENSITIVE_FIELDS = frozenset(
    {"client_secret", "client_assertion", "refresh_token", "code", "device_code", "code_verifier"}
)


class _ErrorAnswer(Exception):
    """An OAuth2 error answer (4xx with JSON `error`); never leaves this module."""

    def __init__(self, status: int, error: str, description: str, codes: list[int]) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.description = description
        self.codes = codes

    def explain(self, form: Mapping[str, str]) -> str:
        return _explain(self.error, self.description, self.codes, form)


class EntraClient:
    """One account's OAuth2 flows against Entra ID. Holds no state of its own: thread-safe as
    far as the session is, and every call reads the secret or certificate file afresh (so a
    rotated secret is picked up without a restart)."""

    def __init__(
        self,
        account: AccountConfig,
        session: requests.Session,
        clock: Callable[[], float] = time.time,
        timeout: float = 20,
        assertion_algorithm: str = "RS256",
    ) -> None:
        self.account = account
        self.session = session
        self.clock = clock
        self.timeout = timeout
        self.assertion_algorithm = assertion_algorithm

    def endpoint(self, name: str) -> str:
        """`{authority}/{tenant}/oauth2/v2.0/{name}` for token, devicecode and authorize."""
        return f"{self.account.authority}/{self.account.tenant}/oauth2/v2.0/{name}"

    @property
    def scope(self) -> str:
        """Every scope of the account, of all resources: what an authorisation request asks
        consent for. A token request names one resource only (scope_for)."""
        return " ".join(self.account.scopes)

    def scope_for(self, resource: str | None) -> str:
        """The scopes of one token request: `resource`'s (None: the first the account names)."""
        chosen = resource or next(iter(resources_in(self.account.scopes)), None)
        return " ".join(scopes_for(self.account.scopes, chosen)) if chosen else self.scope

    # -- app-only and refresh: called at login time, from the proxy's thread pool --

    def client_credentials(self, resource: str | None = None) -> TokenSet:
        """An app-only token for `resource` (None: the account's first), with the client
        secret or a certificate assertion."""
        authentication = self._client_authentication()
        if not authentication:
            raise ConfigError(
                f"account {self.account.username}: client_credentials needs client_secret, "
                "client_secret_file or certificate"
            )
        form = {"grant_type": "client_credentials", "client_id": self.account.client_id,
                "scope": self.scope_for(resource), **authentication}
        return self._token(form, self._refused)

    def refresh(self, refresh_token: str, resource: str | None = None) -> TokenSet:
        """New tokens for a refresh token, the access token for `resource` (None: the first).
        Entra rotates refresh tokens: the TokenSet carries the new one (or the old one if the
        answer has none), and it must be stored before use. ConsentMissing: nobody consented
        to `resource`'s scopes (the refresh token itself is still good)."""
        form = {"grant_type": "refresh_token", "client_id": self.account.client_id,
                "refresh_token": refresh_token, "scope": self.scope_for(resource),
                **self._client_authentication()}

        def refused(answer: _ErrorAnswer, text: str) -> ProxyError:
            if NO_CONSENT in error_codes(answer.description, answer.codes):
                return ConsentMissing(f"{self.account.username}: {text}")
            if answer.error in REAUTHORISE_ERRORS:
                return NeedsReauthorisation(self.account.username, text)
            return self._refused(answer, text)

        tokens = self._token(form, refused)
        if tokens.refresh_token is None:
            tokens = dataclasses.replace(tokens, refresh_token=refresh_token)
        return tokens

    # -- device code: `account add` on a machine without a browser --

    def start_device_code(self, resource: str | None = None) -> DeviceCode:
        """Ask for a user code; TokenRequestRefused (e.g. unknown app) or a temporary error.
        One resource (None: the account's first): Entra ID takes a device code for scopes of
        several resources, but refuses to redeem it (AADSTS28000)."""
        form = {"client_id": self.account.client_id, "scope": self.scope_for(resource)}
        sent_at = self.clock()
        try:
            payload = self._post(self.endpoint("devicecode"), form)
        except _ErrorAnswer as answer:
            raise self._refused(answer, answer.explain(form)) from None
        return parse_device_code_response(payload, sent_at)

    def poll_device_code(self, device: DeviceCode) -> TokenSet | None:
        """One poll: tokens once the user has signed in, None while pending. Raises SlowDown
        (wait longer from now on), AuthorisationDeclined,
        AuthorisationExpired or AuthorisationFailed."""
        form = {"grant_type": DEVICE_CODE_GRANT, "client_id": self.account.client_id,
                "device_code": device.device_code, **self._client_authentication()}

        def refused(answer: _ErrorAnswer, text: str) -> ProxyError:
            if answer.error == "slow_down":
                return SlowDown()
            if answer.error in ("authorization_declined", "access_denied"):
                return AuthorisationDeclined(text)
            if answer.error in ("expired_token", "code_expired"):
                return AuthorisationExpired(text)
            if answer.error in ("bad_verification_code", "invalid_grant"):
                return AuthorisationFailed(text)
            return self._refused(answer, text)

        try:
            return self._token(form, refused, pending_is_none=True)
        except _Pending:
            return None

    def wait_for_device_code(
        self, device: DeviceCode, sleep: Callable[[float], None] = time.sleep
    ) -> TokenSet:
        """Poll until the user signs in, honouring interval and slow_down; AuthorisationExpired
        once expires_in has passed (see DevicePolling)."""
        polling = DevicePolling(self, device)
        while True:
            sleep(polling.next_pause())
            tokens = polling.poll()
            if tokens is not None:
                return tokens

    # -- authorisation code with PKCE: `account add` with a browser --

    def authorization_request(
        self, redirect_uri: str | None = None, *, login_hint: str | None = None,
        prompt: str | None = None,
    ) -> AuthRequest:
        """The URL to open, with a fresh state and PKCE (S256) verifier."""
        redirect = redirect_uri or self.account.redirect_uri
        if not redirect:
            raise ValueError("authorization_request needs a redirect_uri")
        verifier = secrets.token_urlsafe(64)  # 86 characters; RFC 7636 wants 43 to 128
        state = secrets.token_urlsafe(24)
        query = {
            "client_id": self.account.client_id, "response_type": "code",
            "redirect_uri": redirect, "response_mode": "query", "scope": self.scope,
            "state": state, "code_challenge_method": "S256",
            "code_challenge": b64url(hashlib.sha256(verifier.encode("ascii")).digest()),
        }
        if login_hint:
            query["login_hint"] = login_hint
        if prompt:
            query["prompt"] = prompt
        url = f"{self.endpoint('authorize')}?{urlencode(query)}"
        return AuthRequest(url=url, state=state, redirect_uri=redirect, code_verifier=verifier)

    def redeem_code(self, request: AuthRequest, redirect_url_or_code: str,
                    resource: str | None = None) -> TokenSet:
        """Tokens for the final redirect URL (state checked, `error` surfaced) or a bare code;
        the access token is for `resource` (None: the first), consent was for every scope."""
        code = code_from_redirect(request, redirect_url_or_code)
        form = {"grant_type": "authorization_code", "client_id": self.account.client_id,
                "code": code, "redirect_uri": request.redirect_uri,
                "code_verifier": request.code_verifier, "scope": self.scope_for(resource),
                **self._client_authentication()}

        def refused(answer: _ErrorAnswer, text: str) -> ProxyError:
            if answer.error == "invalid_grant":
                return AuthorisationFailed(text)
            return self._refused(answer, text)

        return self._token(form, refused)

    # -- plumbing --

    def _client_authentication(self) -> dict[str, str]:
        """The secret or a fresh certificate assertion, if the account has one (confidential
        clients); {} for public clients."""
        account = self.account
        if account.certificate is not None:
            signing = load_signing_certificate(account.certificate, account.private_key)
            assertion = client_assertion(signing, account.client_id, self.endpoint("token"),
                                         self.clock(), self.assertion_algorithm)
            return {"client_assertion_type": JWT_BEARER_ASSERTION, "client_assertion": assertion}
        if account.client_secret is not None or account.client_secret_file is not None:
            return {"client_secret": account.read_client_secret()}
        return {}

    def _refused(self, answer: _ErrorAnswer, text: str) -> ProxyError:
        return TokenRequestRefused(f"{self.account.username}: {text}")

    def _token(
        self,
        form: dict[str, str],
        refused: Callable[[_ErrorAnswer, str], ProxyError],
        pending_is_none: bool = False,
    ) -> TokenSet:
        # The clock is read before sending, so expires_at errs on the early side.
        sent_at = self.clock()
        try:
            payload = self._post(self.endpoint("token"), form)
        except _ErrorAnswer as answer:
            if pending_is_none and answer.error == "authorization_pending":
                raise _Pending() from None
            text = answer.explain(form)
            log.info("%s: %s request refused: HTTP %d %s %s", self.account.username,
                     form["grant_type"], answer.status, answer.error, answer.codes)
            raise refused(answer, text) from None
        return parse_token_response(payload, sent_at)

    def _post(self, url: str, form: Mapping[str, str]) -> dict[str, Any]:
        """POST a form; the JSON object of a 2xx answer, else an error from proxy.errors or
        _ErrorAnswer for an OAuth2 error answer."""
        host = urlsplit(url).netloc
        service = f"Microsoft's sign-in service ({host})"
        log.debug("%s: POST %s (%s)", self.account.username, urlsplit(url).path,
                  form.get("grant_type", "-"))
        try:
            response = self.session.post(
                url, data=dict(form), timeout=self.timeout, allow_redirects=False,
                headers={"Accept": "application/json"},
            )
        except requests.Timeout:
            raise TokenEndpointUnavailable(
                f"{service} did not answer within {self.timeout:g} seconds; try again later"
            ) from None
        except requests.exceptions.SSLError:
            raise TokenEndpointUnavailable(
                f"{service}: its TLS certificate could not be verified (a TLS-inspecting "
                "network needs its CA in the system store or REQUESTS_CA_BUNDLE)"
            ) from None
        except requests.RequestException as e:
            raise TokenEndpointUnavailable(
                f"{service} could not be reached ({_connection_problem(e)}); try again later"
            ) from None
        status = response.status_code
        if status == 429:
            retry_after = retry_after_seconds(response.headers.get("Retry-After"), self.clock())
            when = f"in {retry_after:g} seconds" if retry_after is not None else "later"
            raise TokenEndpointThrottled(
                retry_after, f"{service} is throttling requests; try again {when}"
            )
        if status >= 500:
            raise TokenEndpointUnavailable(f"{service} answered HTTP {status}; try again later")
        payload = _json_object(response)
        if 200 <= status < 300:
            if payload is None:
                raise TokenEndpointUnavailable(
                    f"{service} answered HTTP {status} without a JSON object; check the "
                    "authority setting and any web proxy in between"
                )
            return payload
        if payload is not None and isinstance(payload.get("error"), str):
            error = payload["error"]
            description = payload.get("error_description")
            description = description if isinstance(description, str) else ""
            codes = [c for c in payload.get("error_codes") or [] if isinstance(c, int)]
            if error in TEMPORARY_ERRORS:
                text = _explain(error, description, codes, form)
                raise TokenEndpointUnavailable(f"{service}: {text}")
            raise _ErrorAnswer(status, error, description, codes)
        if 300 <= status < 400:
            raise TokenEndpointUnavailable(
                f"{service} answered with a redirect (HTTP {status}); a captive portal or web "
                "proxy may be in the way; try again later"
            )
        raise TokenRequestRefused(
            f"{service} answered HTTP {status}, which is not an OAuth2 answer; check the "
            f"authority ({self.account.authority}) and tenant ({self.account.tenant}) settings"
        )


class _Pending(Exception):
    """authorization_pending: the user has not finished signing in."""


def _explain(error: str, description: str, codes: list[int], form: Mapping[str, str]) -> str:
    """explain(), with any secret we sent blanked out in case Entra ever echoes one back."""
    text = explain(error, description, codes)
    for name in SENSITIVE_FIELDS & form.keys():
        if form[name]:
            text = text.replace(form[name], "[redacted]")
    return text


def _json_object(response: requests.Response) -> dict[str, Any] | None:
    try:
        payload = response.json()
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def _connection_problem(error: BaseException) -> str:
    """A few words for a connection failure (requests' own text is long and names internals)."""
    text = str(error).lower()
    for needles, words in (
        (("name or service not known", "nodename nor servname", "name resolution",
          "getaddrinfo", "no address associated"), "host name not found"),
        (("refused",), "connection refused"),
        (("timed out",), "timed out"),
        (("reset", "aborted", "remote end closed", "remotedisconnected", "without response"),
         "connection closed by the other side"),
        (("unreachable",), "network unreachable"),
    ):
        if any(needle in text for needle in needles):
            return words
    return "network error"
