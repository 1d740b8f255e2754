"""proxy.graph.read_grant: what a Graph token allows, in plain words, for `account check`."""

from __future__ import annotations

import io

import pytest

from proxy.commands.check import _check_graph
from proxy.config import ListenerConfig
from proxy.graph import read_grant
from proxy.tokens.broker import Grant
from tests.support.fake_entra import FakeEntra
from tests.support.graph_setup import (  # noqa: F401 - fixture
    APP_ID,
    MAILBOX,
    app_token,
    entra_fixture,
)
from tests.support.graph_tokens import mint_graph_token
from tests.support.jwt import mint_hs256


@pytest.mark.parametrize(("roles", "verdict", "words"), [
    (("Mail.Send", "Mail.ReadWrite"), "ok", "can send messages of any size"),
    (("Mail.Send",), "ok", "up to about 3 MB. Larger ones need the application Graph "
                           "permission Mail.ReadWrite"),
    (("Mail.ReadWrite",), "note", "Mail.Send is not in the token"),
    ((), "note", "Mail.Send (and Mail.ReadWrite, for messages over about 3 MB) to the app"),
])
def test_app_only_tokens(entra: FakeEntra, roles: tuple[str, ...], verdict: str,
                         words: str) -> None:
    """Roles of a client-credentials token from Entra are read and explained; an app with no
    role at all has no `roles` claim and is still known as app-only."""
    grant = read_grant(app_token(entra, roles=roles))
    assert grant is not None and grant.app_only and grant.for_graph
    assert grant.permissions == set(roles) and grant.verdict == verdict
    assert words in grant.explain(MAILBOX)


def test_app_only_without_mail_send_says_how_to_verify_rbac(entra: FakeEntra) -> None:
    """Exchange RBAC for Applications grants Mail.Send outside the token: a note (not a
    failure) names the command that shows the grant, for this app and mailbox."""
    grant = read_grant(app_token(entra, roles=()))
    assert grant is not None and grant.verdict == "note"
    text = grant.explain(MAILBOX)
    assert "Exchange RBAC for Applications, which never shows in the token" in text
    assert f"Test-ServicePrincipalAuthorization -Identity {APP_ID} -Resource {MAILBOX}" in text
    assert "grant admin consent" in text


@pytest.mark.parametrize(("scp", "verdict"), [
    (["Mail.Send", "User.Read"], "ok"), (["User.Read"], "FAILED")])
def test_delegated_token(scp: list[str], verdict: str) -> None:
    """A delegated token's scp is read; the advice names delegated permissions, and without
    Mail.Send it is a failure: nothing outside the token grants a user's app more."""
    token = mint_graph_token(b"k" * 32, tenant="t", client_id="c", now=0, lifetime=60,
                             mailbox=MAILBOX, scp=scp)
    grant = read_grant(token)
    assert grant is not None and not grant.app_only and grant.verdict == verdict
    assert grant.permissions == set(scp)
    words = ("delegated Graph permission Mail.ReadWrite" if verdict == "ok" else
             "no Mail.Send permission")
    assert words in grant.explain(MAILBOX) and "RBAC" not in grant.explain(MAILBOX)


@pytest.mark.parametrize(("scp", "line", "failed"), [
    (None, "smtp graph (https://graph.microsoft.com): note: Mail.Send is not in the token", False),
    (["User.Read"], "smtp graph (https://graph.microsoft.com): FAILED: The token has no "
                    "Mail.Send", True),
])
def test_account_check_fails_only_a_delegated_token_without_mail_send(
        scp: list[str] | None, line: str, failed: bool) -> None:
    """`account check` on a Graph listener: an app-only token without Mail.Send is a note (the
    command exits 0), a delegated one a failure (it exits 1)."""
    token = mint_graph_token(b"k" * 32, tenant="t", client_id=APP_ID, now=0, lifetime=60,
                             mailbox=MAILBOX, scp=scp)
    listener = ListenerConfig("smtp", "tcp:1587", "graph")
    failures: list[str] = []
    out = io.StringIO()
    _check_graph(listener, Grant(MAILBOX, token, fresh=True), failures, out)
    assert out.getvalue().startswith(line) and bool(failures) is failed


@pytest.mark.parametrize(("claims", "app_only"), [
    ({"idtyp": "app", "roles": ["Mail.Send"]}, True),
    ({"idtyp": "user", "scp": "Mail.Send"}, False),
    ({}, True),  # no scp: only an app's token lacks it
    ({"scp": "Mail.Send"}, False),
])
def test_app_only_is_read_from_idtyp_else_from_scp(claims: dict[str, object],
                                                   app_only: bool) -> None:
    """`idtyp` says whose token it is; without it, only a user's token has `scp` (an app with no
    application permission has no `roles` either)."""
    grant = read_grant(mint_hs256(b"k", {"aud": "https://graph.microsoft.com", **claims}))
    assert grant is not None and grant.app_only is app_only


def test_a_token_for_another_resource_is_named() -> None:
    """An Outlook token is not mistaken for a Graph one."""
    grant = read_grant(mint_hs256(b"k", {"aud": "https://outlook.office.com", "scp": "SMTP.Send"}))
    assert grant is not None and not grant.for_graph
    assert "https://outlook.office.com, not Microsoft Graph" in grant.explain(MAILBOX)


@pytest.mark.parametrize("token", ["opaque", "a.b.c", "a.bm90IGpzb24.c", "a.WzFd.c"])
def test_unreadable_tokens(token: str) -> None:
    """Anything but a JWT with a JSON object payload gives None."""
    assert read_grant(token) is None


SHARED = "shared@contoso.com"
ALICE = "alice@contoso.com"
SEND_AS = f"Add-RecipientPermission -Identity {SHARED} -Trustee {ALICE} -AccessRights SendAs"


def user_grant(*scp: str) -> str:
    return mint_graph_token(b"k" * 32, tenant="t", client_id=APP_ID, now=0, lifetime=60,
                            mailbox=ALICE, scp=list(scp))


@pytest.mark.parametrize(("scp", "verdict", "words"), [
    (("Mail.Send", "Mail.ReadWrite"), "FAILED",
     "no Mail.Send.Shared permission (it has Mail.Send, which covers alice@contoso.com's own "
     "mailbox only)"),
    ((), "FAILED", "add the delegated Graph permissions Mail.Send.Shared and "
                   "Mail.ReadWrite.Shared (for messages over about 3 MB) to the app registration, "
                   "grant admin consent"),
    (("Mail.Send.Shared",), "ok", "messages up to about 3 MB; larger ones need the delegated "
                                  "Graph permission Mail.ReadWrite.Shared"),
    (("Mail.Send.Shared", "Mail.ReadWrite.Shared"), "ok", "messages of any size"),
])
def test_a_users_token_for_a_shared_mailbox(scp: tuple[str, ...], verdict: str,
                                             words: str) -> None:
    """For another's mailbox only the .Shared permissions count; the explanation names them,
    and the Full Access and Send As the user needs in Exchange, which no token shows."""
    grant = read_grant(user_grant(*scp), delegate=ALICE)
    assert grant is not None and grant.verdict == verdict
    text = grant.explain(SHARED)
    assert words in text and SEND_AS in text, text
    assert f"Add-MailboxPermission -Identity {SHARED} -User {ALICE} -AccessRights FullAccess" \
        in text


def test_shared_permissions_cover_the_users_own_mailbox() -> None:
    """Mail.Send.Shared alone is enough for the user's own mailbox (no delegate)."""
    grant = read_grant(user_grant("Mail.Send.Shared", "Mail.ReadWrite.Shared"))
    assert grant is not None and grant.verdict == "ok"
    assert "of any size" in grant.explain(ALICE) and "Send As" not in grant.explain(ALICE)


def test_an_app_only_token_needs_no_shared_permission(entra: FakeEntra) -> None:
    """Client credentials send for any mailbox with Mail.Send: a delegate changes nothing."""
    grant = read_grant(app_token(entra, roles=("Mail.Send", "Mail.ReadWrite")), delegate=ALICE)
    assert grant is not None and grant.verdict == "ok" and "Shared" not in grant.explain(SHARED)


def test_account_check_fails_a_shared_mailbox_without_mail_send_shared() -> None:
    """`account check` knows from the grant that its user signs in for another's mailbox."""
    token = user_grant("Mail.Send", "Mail.ReadWrite")
    listener = ListenerConfig("smtp", "tcp:1587", "graph")
    failures: list[str] = []
    out = io.StringIO()
    grant = Grant(SHARED, token, fresh=True, username=ALICE, delegate=ALICE)
    _check_graph(listener, grant, failures, out)
    assert out.getvalue().startswith("smtp graph (https://graph.microsoft.com): FAILED: The "
                                      "token has no Mail.Send.Shared permission")
    assert failures and SEND_AS in out.getvalue()
