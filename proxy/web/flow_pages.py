"""The pages of a sign-in (the password form, the device code, the authorisation code's link
and its pasted-address fallback, the redirect's landing page) and of the first-run setup."""

from __future__ import annotations

import time

from twisted.web.template import tags

from ..config import AccountConfig
from ..config.first_run import DEFAULT_PORTS
from ..entra.prompts import needs_own_consent, who_signs_in
from .auth import AdminSession
from .authorise import Flow, Outcome
from .layout import Child, button, choice, field, post_form, render_page

DEVICE_PAGE_REFRESH = 3  # seconds: how soon the page notices the sign-in without JavaScript

FLOW_WORDS = {
    "device_code": "You get a code to enter at Microsoft's sign-in page, on any device.",
    "auth_code": "You sign in at Microsoft in this browser; it then comes back here.",
    "client_credentials": "The app's secret or certificate from the configuration is used "
                          "at once; nobody signs in.",
}


async def password_page(account: AccountConfig, session: AdminSession | None,
                        problem: str | None = None) -> bytes:
    body: list[Child] = [
        tags.h1(f"Authorise {account.username}"),
        tags.p(problem, class_="notice failed") if problem else "",
        tags.section(
            tags.p(FLOW_WORDS[account.flow]),
            post_form(
                "/authorise", session,
                tags.input(type="hidden", name="account", value=account.username),
                field("New local password", "password", "password",
                      hint="What devices will log in with, as " + account.username + ".",
                      autocomplete="new-password", required="required"),
                field("The same password again", "password_again", "password",
                      autocomplete="new-password", required="required"),
                button("Authorise"),
            ),
        ),
    ]
    return await render_page("Authorise", body, session)


async def device_code_page(flow: Flow, session: AdminSession | None) -> bytes:
    device = flow.device
    assert device is not None
    left = max(0, int(device.expires_at - time.time()))
    body: list[Child] = [
        tags.h1(f"Authorise {flow.account.username}"),
        tags.section(
            tags.p(f"{needs_own_consent(flow.consent_for)}; sign in once more.",
                   class_="notice", id="consent") if flow.consent_for else "",
            tags.p(f"{who_signs_in(flow.account)}: open ",
                   tags.a(device.verification_uri, href=device.verification_uri,
                          target="_blank", rel="noopener noreferrer"),
                   " on any device and enter this code:"),
            tags.p(device.user_code, class_="code", id="user-code"),
            tags.p("Time left: ",
                   tags.strong(f"{left // 60}:{left % 60:02d}", id="countdown",
                               **{"data-expires": str(int(device.expires_at))})),
            tags.small("This page follows the sign-in and moves on by itself when it is done."),
        ),
    ]
    return await render_page("Authorise", body, session, refresh=DEVICE_PAGE_REFRESH)


async def auth_code_page(flow: Flow, session: AdminSession | None) -> bytes:
    request = flow.request
    assert request is not None
    body: list[Child] = [
        tags.h1(f"Authorise {flow.account.username}"),
        tags.section(
            tags.p(f"{who_signs_in(flow.account)}:"),
            tags.p(tags.a("Sign in at Microsoft", href=request.url, class_="button",
                          id="sign-in")),
            tags.small(f"After the sign-in the browser comes back to {request.redirect_uri}."),
        ),
        tags.section(
            tags.p("If that address cannot be reached from this browser (the page runs on "
                   "another machine), the browser ends on an error page: copy its whole "
                   "address from the address bar and paste it here."),
            post_form(
                "/authorise/redirect", session,
                tags.input(type="hidden", name="account", value=flow.account.username),
                field("The address the browser ended on", "url", autocomplete="off",
                      required="required"),
                button("Finish the sign-in"),
            ),
        ),
    ]
    return await render_page("Authorise", body, session)


async def landing_page(outcome: Outcome | None) -> bytes:
    """Where the browser lands after Microsoft's sign-in: it arrives from another site, so the
    session cookie (SameSite=Strict) is not sent, and the page says only how it ended."""
    if outcome is None:
        text = "This address does not belong to a sign-in in progress."
        ok = False
    else:
        text, ok = outcome.text, outcome.ok
    body: list[Child] = [
        tags.h1("Signed in" if ok else "Sign-in not completed"),
        tags.p(text, class_="notice ok" if ok else "notice failed"),
        tags.p(tags.a("Back to the admin page", href="/", class_="button")),
    ]
    return await render_page("Sign-in", body, None)


async def setup_page(session: AdminSession | None, values: dict[str, str],
                     problem: str | None = None) -> bytes:
    """The first run: one listener and one account, written to the configuration file."""
    def value(name: str, default: str = "") -> str:
        return values.get(name, default)

    body: list[Child] = [
        tags.h1("Welcome: set up the first listener and account"),
        tags.p(problem, class_="notice failed") if problem else "",
        tags.p("No configuration file was found. What you enter here is written to it (readable "
               "by this user only); the listener starts at once and the account is authorised "
               "on the next page."),
        post_form(
            "/setup", session,
            tags.fieldset(
                tags.legend("The device side"),
                choice("Protocol the device speaks", "protocol",
                       [("imap", "IMAP (reading mail)"), ("pop3", "POP3 (fetching mail)"),
                        ("smtp", "SMTP (sending, e.g. scan to e-mail)")],
                       value("protocol", "imap")),
                field("Port on this machine", "port", "number", value("port"),
                      hint="Default: " + ", ".join(f"{p.upper()} {n}"
                                                   for p, n in DEFAULT_PORTS.items()) + ".",
                      min="1", max="65535"),
            ),
            tags.fieldset(
                tags.legend("The Microsoft 365 account"),
                field("User name devices log in with", "username", "email",
                      value("username"), hint="Usually the mailbox address.",
                      required="required"),
                field("Mailbox (if another, e.g. a shared mailbox)", "mailbox", "email",
                      value("mailbox")),
                field("Tenant", "tenant", value=value("tenant"),
                      hint="Domain or directory (tenant) ID, e.g. contoso.onmicrosoft.com.",
                      required="required"),
                field("Application (client) ID", "client_id", value=value("client_id"),
                      hint="Of the app registration in Entra ID (README, \"Quick start\").",
                      required="required"),
                choice("How the account signs in", "flow",
                       [("device_code", "Device code (a person signs in, on any device)"),
                        ("auth_code", "Authorisation code (a person signs in, in this "
                                      "browser)"),
                        ("client_credentials", "Client credentials (app-only, no person)")],
                       value("flow", "device_code")),
                field("Client secret (client credentials only)", "client_secret", "password",
                      autocomplete="off"),
            ),
            tags.details(
                tags.summary("Advanced: other clouds, private CAs"),
                field("Upstream", "upstream", value=value("upstream"),
                      hint="A Twisted client endpoint; default: Microsoft 365's server for "
                           "the protocol."),
                field("Upstream CA file", "upstream_ca", value=value("upstream_ca")),
                field("Authority", "authority", "url", value("authority"),
                      hint="Default: https://login.microsoftonline.com"),
            ),
            button("Write the configuration and start"),
        ),
    ]
    return await render_page("First run", body, session)
