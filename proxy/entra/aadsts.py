"""Entra ID error answers turned into one plain sentence: what happened, and what to do.

Entra ID answers a refused token request with an OAuth2 `error` ("invalid_client"), an
`error_description` that starts with an AADSTS number and carries trace ids and a timestamp, and
`error_codes` (the AADSTS numbers). Administrators search the web for those numbers, so the
sentence keeps the number at its end; the trace ids are dropped (they only help Microsoft support,
and they make every log line unique).
"""

from __future__ import annotations

import re

# The account name is not known here: callers that need "run: xoauth2-proxy account add USER"
# (NeedsReauthorisation) add it themselves, so these sentences say "authorise the account again".
EXPLANATIONS: dict[int, str] = {
    50011: "The redirect URI is not registered on the app; add it under Authentication "
    "(Mobile and desktop applications) in the app registration, or set redirect_uri in the config",
    50020: "The user belongs to another tenant (a guest or a personal Microsoft account) and "
    "cannot sign in here; use the user's own tenant",
    50034: "The user account does not exist in this tenant; check the user name used to sign in "
    "and the tenant setting",
    50055: "The user's password has expired; the user must change it in a browser, then "
    "authorise the account again",
    50057: "The user account is disabled; an administrator must enable it",
    50076: "Microsoft requires multi-factor authentication again for this user; authorise the "
    "account again and complete the MFA prompt",
    50079: "The user must register for multi-factor authentication; sign in once in a browser to "
    "set it up, then authorise the account again",
    50105: "The user is not assigned to this app; an administrator must assign the user under "
    "Enterprise applications, Users and groups",
    50126: "Microsoft rejected the user name or password at its own sign-in page (this is not the "
    "proxy's local password); check the Microsoft account password",
    50148: "The PKCE code verifier did not match the sign-in request; start the sign-in again",
    50173: "The stored sign-in was revoked (password changed or sessions revoked by an "
    "administrator); authorise the account again",
    53003: "Access was blocked by a Conditional Access policy; an administrator must allow this "
    "app, location or device in Conditional Access",
    54005: "This authorisation code was already used; start the sign-in again",
    65001: "The app has no consent for the requested permissions; an administrator must grant "
    "admin consent under API permissions, or the user must consent when signing in",
    65004: "The user declined to consent to the app's permissions; sign in again and accept",
    70008: "The authorisation code or stored sign-in has expired; authorise the account again",
    70011: "The requested scope is not valid for this app; check the scopes setting",
    70016: "The user has not finished signing in yet",
    70019: "The device code expired before the sign-in was completed; start the sign-in again",
    70020: "The device code expired before the sign-in was completed; start the sign-in again",
    70043: "The stored sign-in expired under the tenant's sign-in frequency policy (Conditional "
    "Access); authorise the account again",
    90002: "The tenant was not found; check the tenant setting (domain or GUID) and the authority "
    "(worldwide, US Government or China cloud)",
    500011: "Exchange Online was not found in this tenant; check the tenant setting and that the "
    "tenant has Exchange Online licences",
    700016: "The application (client_id) was not found in this tenant; check client_id and tenant, "
    "or have an administrator add the app to the tenant",
    700024: "The certificate assertion is outside its valid time range; check this machine's clock "
    "(it must be within a few minutes of the real time)",
    700027: "The certificate assertion was refused: the certificate is not registered on the app "
    "or its signature does not match; upload the certificate to the app registration",
    700082: "The stored sign-in expired after 90 days without use; authorise the account again",
    1002012: "Client credentials need a scope ending in /.default; use "
    "https://outlook.office365.com/.default",
    7000112: "The application is disabled in this tenant; an administrator must enable it",
    7000215: "The client secret is wrong (often the secret's ID was copied instead of its value); "
    "create a new secret in the app registration and update client_secret",
    7000218: "The app registration does not allow public client flows; set 'Allow public client "
    "flows' to Yes under Authentication in the app registration",
    7000222: "The client secret has expired; create a new secret under Certificates & secrets in "
    "the app registration and update client_secret",
    9001023: "Client credentials cannot use the tenant 'common' or 'organizations'; set tenant to "
    "your tenant's domain or GUID",
    9002313: "Microsoft rejected the request as malformed (often a damaged stored sign-in or one "
    "that belongs to another app); authorise the account again",
}

# Used when no AADSTS number is known: the OAuth2 error name alone.
ERROR_EXPLANATIONS: dict[str, str] = {
    "invalid_client": "Microsoft refused the app's credentials (client secret or certificate); "
    "check them in the app registration",
    "unauthorized_client": "This app is not allowed to use this sign-in flow; check the app "
    "registration",
    "invalid_scope": "The requested scopes are not valid for this app; check the scopes setting",
    "invalid_grant": "Microsoft refused the stored sign-in; authorise the account again",
    "interaction_required": "Microsoft requires the user to sign in interactively again",
    "consent_required": "The app needs consent for its permissions; an administrator must grant "
    "admin consent under API permissions",
    "login_required": "Microsoft requires the user to sign in interactively again",
    "access_denied": "The sign-in was declined or cancelled",
    "authorization_declined": "The sign-in was declined at Microsoft",
    "expired_token": "The device code expired before the sign-in was completed; start the sign-in "
    "again",
    "bad_verification_code": "Microsoft did not recognise the device code; start the sign-in again",
    "temporarily_unavailable": "Microsoft's sign-in service is temporarily unavailable; try again "
    "later",
    "server_error": "Microsoft's sign-in service had an internal error; try again later",
}

_AADSTS = re.compile(r"AADSTS(\d+)")
_MAX_DETAIL = 200


def error_codes(description: str, codes: list[int]) -> list[int]:
    """The AADSTS numbers of an answer: its error_codes, else the ones named in its description."""
    if codes:
        return list(codes)
    return [int(number) for number in _AADSTS.findall(description)]


def first_line(description: str) -> str:
    """Entra's description without its trace id, correlation id and timestamp lines."""
    line = description.replace("\r\n", "\n").split("\n", 1)[0]
    line = re.split(r"\s+(?:Trace ID|Correlation ID|Timestamp):", line, maxsplit=1)[0].strip()
    if len(line) > _MAX_DETAIL:
        line = line[: _MAX_DETAIL - 3].rstrip() + "..."
    return line


def explain(error: str, description: str, codes: list[int]) -> str:
    """One plain sentence for an Entra ID error answer, ending with its AADSTS number if any."""
    numbers = error_codes(description, codes)
    for number in numbers:
        if number in EXPLANATIONS:
            return f"{EXPLANATIONS[number]} (AADSTS{number})"
    first = f"AADSTS{numbers[0]}" if numbers else ""
    detail = first_line(description)
    if first and first not in detail:
        detail = f"{first}: {detail}" if detail else first
    if error in ERROR_EXPLANATIONS:
        # Microsoft's own words help when the number is not in the table above.
        return ERROR_EXPLANATIONS[error] + (f" (Microsoft says: {detail})" if detail else "")
    named = error or "an unknown error"
    return f"Microsoft's sign-in service refused the request ({named})" + (
        f": {detail}" if detail else ""
    )
