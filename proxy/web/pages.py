"""The overview page: accounts, listeners, lockouts, and the reload button."""

from __future__ import annotations

import time
from urllib.parse import urlencode

from twisted.web.template import Tag, tags

from ..account_state import local_time
from ..runtime_view import ReloadOutcome
from .auth import AdminSession
from .layout import Child, button, post_form, render_page, table
from .overview import AccountRow, ListenerRow, Overview


def authorise_link(username: str) -> str:
    return "/authorise?" + urlencode({"account": username})


async def overview_page(overview: Overview, session: AdminSession | None) -> bytes:
    view = overview.runtime
    started = local_time(view.started_at) if view.started_at else "starting"
    body: list[Child] = [
        tags.h1("Overview"),
        tags.section(class_="toolbar")(
            tags.div(tags.span("Configuration ", class_="muted"), tags.code(view.config_path),
                     tags.small(f"running since {started}")),
            post_form("/reload", session, button("Reload configuration"), class_="inline"),
            tags.a("Metrics", href="/metrics"),
            _last_reload(view.last_reload),
        ),
        *[tags.p(f"{name} is not listening (see the log)", class_="notice failed")
          for name in view.listeners_down],
        tags.h2("Accounts"),
        tags.section(table(
            ["Account", "Flow", "State", "Tokens", "Last login", ""],
            [_account_row(row) for row in overview.accounts],
            "No account is configured.")),
        tags.h2("Listeners"),
        tags.section(table(
            ["Listener", "Upstream", "TLS", "Sessions open", "Logins since start"],
            [_listener_row(row) for row in overview.listeners],
            "No listener is running.")),
        tags.h2("Locked out now"),
        tags.section(table(
            ["What", "Who", "For", ""],
            [[lockout.kind, tags.code(lockout.key), _minutes(lockout.seconds_left),
              post_form("/lockouts/lift", session,
                        tags.input(type="hidden", name="kind", value=lockout.kind),
                        tags.input(type="hidden", name="key", value=lockout.key),
                        button("Lift", class_="quiet"), class_="inline")]
             for lockout in overview.lockouts],
            "No address or account is locked out.")),
    ]
    return await render_page("Overview", body, session)


def _last_reload(outcome: ReloadOutcome | None) -> Tag | str:
    if outcome is None:
        return ""
    when = time.strftime("%H:%M:%S", time.localtime(outcome.at))
    text = f"Last reload at {when}: " + (outcome.summary if outcome.ok
                                        else f"refused, old configuration kept: {outcome.summary}")
    return tags.small(text, class_="reload-ok" if outcome.ok else "reload-failed")


def _account_row(row: AccountRow) -> list[Child]:
    account = row.account
    who: list[Child] = [account.username]
    if account.mailbox.lower() != account.username.lower():
        who.append(tags.small(f"mailbox {account.mailbox}"))
    state: list[Child] = [tags.span(row.state.words, class_=f"state-{row.state.label}")]
    if row.state.detail:
        state.append(tags.small(row.state.detail))
    tokens = [tags.div(tags.code(token.resource), ": ", _expiry(token.expires_at))
              for token in row.tokens]
    last = row.last_login
    login: Child = (
        [local_time(last.at), tags.small(f"from {last.source} on {last.listener}")]
        if last else tags.span("none since start", class_="muted"))
    action = "Authorise" if row.state.needs_authorisation else "Authorise again"
    link = tags.a(action, href=authorise_link(account.username),
                  class_="button" if row.state.needs_authorisation else "")
    return [who, account.flow, state, tokens, login, link]


def _expiry(expires_at: float | None) -> str:
    if expires_at is None:
        return "none"
    # An expired token is no fault: the next login fetches a new one.
    return f"{'until' if expires_at > time.time() else 'expired'} {local_time(expires_at)}"


def _listener_row(row: ListenerRow) -> list[Child]:
    view = row.view
    tls: list[Child] = [view.tls]
    if view.tls_fingerprint:
        tls.append(tags.small(tags.code(f"SHA-256 {view.tls_fingerprint}")))
    logins = row.logins
    counts = (f"ok {logins['ok']} · failed {logins['wrong_password']} · needs authorisation "
              f"{logins['needs_authorisation']} · temporary {logins['temporary']} · "
              f"throttled {logins['throttled']}")
    return [
        [tags.strong(view.protocol.upper()), " ", tags.code(view.address),
         tags.small(view.listen)],
        tags.code(view.upstream),
        tls,
        str(view.sessions_open),
        counts,
    ]


def _minutes(seconds: float) -> str:
    minutes = max(1, round(seconds / 60))
    return f"{minutes} more minute{'s' * (minutes != 1)}"
