"""The error tree. A class's docstring is the text the user sees unless a message is given.

Every failure that can end a login belongs to one of two kinds, because devices act on the
difference: a *credentials* failure makes many clients forget the saved password, so it is
reserved for a wrong local password (and a refresh token Entra ID refused for good); everything
else is *temporary* and is answered as "try again later".
"""

from __future__ import annotations

from enum import Enum


class FailureKind(Enum):
    CREDENTIALS = "credentials"
    TEMPORARY = "temporary"


class ProxyError(Exception):
    """Something went wrong."""

    kind = FailureKind.TEMPORARY

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConfigError(ProxyError):
    """The configuration file is not valid."""


class UsageError(Exception):
    """The command line cannot be carried out as given (exit code 2, like a ConfigError)."""


# -- credentials: the device's password is wrong, or the account must be authorised again --


class WrongPassword(ProxyError):
    """Wrong user name or password."""

    kind = FailureKind.CREDENTIALS


class NeedsReauthorisation(ProxyError):
    """Microsoft refused the stored sign-in for good; the account must be authorised again."""

    kind = FailureKind.CREDENTIALS

    def __init__(self, username: str, detail: str = "") -> None:
        text = f"Stored sign-in for {username} is no longer valid"
        if detail:
            text += f" ({detail})"
        super().__init__(f"{text}; run: xoauth2-proxy account add {username}")


# -- temporary: the password was right, something else is in the way --


class TemporaryFailure(ProxyError):
    """Temporary failure, please try again later."""


class TokenEndpointUnavailable(TemporaryFailure):
    """Microsoft's sign-in service could not be reached; try again later."""


class TokenRequestRefused(TemporaryFailure):
    """Microsoft's sign-in service refused the request; the administrator must check the account."""


class ConsentMissing(TokenRequestRefused):
    """Nobody consented to the app's permissions for this service (AADSTS65001): an account that
    serves a second service (Microsoft Graph besides Exchange) needs consent for both. The
    stored sign-in is still good for the first; account add asks for the missing consent."""


class UpstreamUnavailable(TemporaryFailure):
    """The mail server could not be reached; try again later."""


class UpstreamRejected(TemporaryFailure):
    """The mail server refused the access token; the administrator should run: xoauth2-proxy account check."""


class Throttled(TemporaryFailure):
    """Too many requests; try again later."""


class LockedOut(Throttled):
    """Too many failed logins; try again later."""


class AccountNotReady(TemporaryFailure):
    """This account has no stored credentials yet; run: xoauth2-proxy account add."""


# -- the credential store (proxy.store) --


class StoreFileInvalid(ProxyError):
    """An account file in the credential store cannot be used."""

    def __init__(self, path: object, problem: str, advice: str) -> None:
        self.path = path
        super().__init__(f"{path}: {problem}. {advice}")


class StoreUnavailable(TemporaryFailure):
    """The account database could not be reached; try again later."""


class StaleKey(WrongPassword):
    """The account's local password was changed since this key was derived."""


# -- OAuth2 (proxy.entra): throttling with a delay, and interactive sign-in outcomes --


class TokenEndpointThrottled(Throttled):
    """Microsoft's sign-in service asked for fewer requests; try again later."""

    def __init__(self, retry_after: float | None = None, message: str | None = None) -> None:
        super().__init__(message)
        # Seconds Microsoft asked us to wait (its Retry-After header), or None when it named none.
        self.retry_after = retry_after


class SlowDown(TemporaryFailure):
    """Device code polled too often; wait 5 seconds longer between polls (RFC 8628)."""


class AuthorisationFailed(ProxyError):
    """Signing in to Microsoft did not complete; run xoauth2-proxy account add again."""


class AuthorisationDeclined(AuthorisationFailed):
    """The sign-in was declined at Microsoft; run xoauth2-proxy account add again to retry."""


class AuthorisationExpired(AuthorisationFailed):
    """The sign-in was not completed in time; run xoauth2-proxy account add again."""
