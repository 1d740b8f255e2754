"""Entra ID's answers read into frozen dataclasses: token and device code answers, the final
redirect of an authorisation code sign-in, and Retry-After.

Pure: no I/O and no clock; `now` is passed in. repr() of these never shows a token or code.
"""

from __future__ import annotations

import contextlib
import hmac
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..errors import AuthorisationDeclined, AuthorisationFailed, TokenEndpointUnavailable
from .aadsts import explain

DEFAULT_EXPIRES_IN = 3600  # Entra always sends expires_in; an hour is its usual value
DEFAULT_DEVICE_EXPIRES_IN = 900
DEFAULT_POLL_INTERVAL = 5


@dataclass(frozen=True)
class TokenSet:
    """What a token request returns; repr() never shows the tokens."""

    access_token: str = field(repr=False)
    expires_at: float  # epoch seconds, no margin taken off: the caller picks its refresh margin
    refresh_token: str | None = field(repr=False)
    scope: str = ""


@dataclass(frozen=True)
class DeviceCode:
    """A started device code sign-in: show `message` (or the URI and user code) to the user."""

    device_code: str = field(repr=False)
    user_code: str
    verification_uri: str
    expires_in: int
    interval: int
    message: str
    expires_at: float  # epoch seconds, from the clock when the code was asked for


@dataclass(frozen=True)
class AuthRequest:
    """A started authorisation code sign-in: open `url`, then pass the final redirect back."""

    url: str
    state: str
    redirect_uri: str
    code_verifier: str = field(repr=False)


def parse_token_response(payload: Mapping[str, Any], now: float) -> TokenSet:
    """The TokenSet in a successful token answer; expires_at = now + expires_in exactly."""
    access_token = payload.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise TokenEndpointUnavailable(
            "Microsoft's sign-in service answered without an access token; try again later"
        )
    token_type = payload.get("token_type", "Bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise TokenEndpointUnavailable(
            "Microsoft's sign-in service answered a token that is not a Bearer token"
        )
    expires_in = parse_seconds(payload.get("expires_in"), DEFAULT_EXPIRES_IN, "expires_in")
    refresh_token = payload.get("refresh_token")
    if not isinstance(refresh_token, str) or not refresh_token:
        refresh_token = None
    scope = payload.get("scope")
    return TokenSet(
        access_token=access_token,
        expires_at=now + expires_in,
        refresh_token=refresh_token,
        scope=scope if isinstance(scope, str) else "",
    )


def parse_device_code_response(payload: Mapping[str, Any], now: float) -> DeviceCode:
    """The DeviceCode in a successful /devicecode answer."""
    fields = {}
    for name, alternative in (("device_code", ""), ("user_code", ""),
                              ("verification_uri", "verification_url")):
        value = payload.get(name, payload.get(alternative) if alternative else None)
        if not isinstance(value, str) or not value:
            raise TokenEndpointUnavailable(
                f"Microsoft's sign-in service answered the device code request without {name}"
            )
        fields[name] = value
    expires_in = int(
        parse_seconds(payload.get("expires_in"), DEFAULT_DEVICE_EXPIRES_IN, "expires_in")
    )
    interval = int(parse_seconds(payload.get("interval"), DEFAULT_POLL_INTERVAL, "interval"))
    message = payload.get("message")
    if not isinstance(message, str) or not message:
        message = (f"To sign in, open {fields['verification_uri']} in a web browser and enter "
                   f"the code {fields['user_code']}.")
    return DeviceCode(
        device_code=fields["device_code"], user_code=fields["user_code"],
        verification_uri=fields["verification_uri"], expires_in=expires_in, interval=interval,
        message=message, expires_at=now + expires_in,
    )


def parse_seconds(value: object, default: float, name: str) -> float:
    """A non-negative number of seconds; Entra's v1 endpoints sent them as strings."""
    if value is None:
        return default
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < math.inf:
        return float(value)
    raise TokenEndpointUnavailable(
        f"Microsoft's sign-in service answered {name} that is not a number of seconds"
    )


def code_from_redirect(request: AuthRequest, pasted: str) -> str:
    """The code in the final redirect URL (checking state), or the pasted bare code."""
    text = pasted.strip()
    if not text:
        raise AuthorisationFailed(
            "Nothing was given; paste the full address the browser shows after signing in"
        )
    if "?" in text or "#" in text:
        parts = urlsplit(text)
        query = "&".join(p for p in (parts.query, parts.fragment) if p)
    elif "=" in text:
        query = text
    else:
        return text  # a bare code: there is no state to check
    params = {key: values[0] for key, values in parse_qs(query).items()}
    state = params.get("state", "")
    if not hmac.compare_digest(state.encode(), request.state.encode()):
        raise AuthorisationFailed(
            "The address does not belong to this sign-in (its state does not match); start the "
            "sign-in again and use the address the browser shows at its end"
        )
    if "error" in params:
        text = explain(params["error"], params.get("error_description", ""), [])
        if params["error"] == "access_denied":
            raise AuthorisationDeclined(text)
        raise AuthorisationFailed(text)
    code = params.get("code")
    if not code:
        raise AuthorisationFailed(
            "The address carries no authorisation code; paste the full address the browser "
            "shows after signing in"
        )
    return code


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Retry-After in seconds: either delay-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None
