"""proxy.graph.read_grant: what a Graph token allows, in plain words, for `account check`."""

from __future__ import annotations

import pytest

from proxy.graph import read_grant
from tests.support.fake_entra import FakeEntra
from tests.support.graph_setup import MAILBOX, app_token, entra_fixture  # noqa: F401 - fixture
from tests.support.graph_tokens import mint_graph_token
from tests.support.jwt import mint_hs256


@pytest.mark.parametrize(("roles", "words"), [
    (("Mail.Send", "Mail.ReadWrite"), "can send messages of any size"),
    (("Mail.Send",), "up to about 3 MB. Larger ones need the application Graph permission "
                     "Mail.ReadWrite"),
    ((), "has no Mail.Send permission"),
])
def test_app_only_tokens(entra: FakeEntra, roles: tuple[str, ...], words: str) -> None:
    """Roles of a client-credentials token from Entra are read and explained."""
    grant = read_grant(app_token(entra, roles=roles))
    assert grant is not None and grant.app_only and grant.for_graph
    assert grant.permissions == set(roles)
    assert words in grant.explain(MAILBOX)
    if not roles:
        assert "unless Exchange RBAC for Applications grants it" in grant.explain(MAILBOX)


def test_delegated_token() -> None:
    """A delegated token's scp is read; the advice names delegated permissions."""
    token = mint_graph_token(b"k" * 32, tenant="t", client_id="c", now=0, lifetime=60,
                             mailbox=MAILBOX, scp=["Mail.Send", "User.Read"])
    grant = read_grant(token)
    assert grant is not None and not grant.app_only
    assert grant.permissions == {"Mail.Send", "User.Read"}
    assert "delegated Graph permission Mail.ReadWrite" in grant.explain(MAILBOX)


def test_a_token_for_another_resource_is_named() -> None:
    """An Outlook token is not mistaken for a Graph one."""
    grant = read_grant(mint_hs256(b"k", {"aud": "https://outlook.office.com", "scp": "SMTP.Send"}))
    assert grant is not None and not grant.for_graph
    assert "https://outlook.office.com, not Microsoft Graph" in grant.explain(MAILBOX)


@pytest.mark.parametrize("token", ["opaque", "a.b.c", "a.bm90IGpzb24.c", "a.WzFd.c"])
def test_unreadable_tokens(token: str) -> None:
    """Anything but a JWT with a JSON object payload gives None."""
    assert read_grant(token) is None
