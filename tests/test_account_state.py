"""Each resource's access-token expiry on the admin page: from the readable meta to the
Tokens column of the overview, with the times of a record from before per-resource expiries."""

from __future__ import annotations

from twisted.internet.defer import Deferred

from proxy.account_state import AccountState, ResourceToken, local_time, tokens_by_resource
from proxy.config import AccountConfig
from proxy.resources import GRAPH, GRAPH_SEND_SCOPES, NAMES, OUTLOOK
from proxy.runtime_view import RuntimeView
from proxy.store import AccountMeta
from proxy.web.overview import AccountRow, Overview
from proxy.web.pages import overview_page

ALICE = "alice@contoso.com"
EXCHANGE_FIRST, GRAPH_LATER = 1_900_000_000.0, 1_900_003_000.0
ACCOUNT = AccountConfig(ALICE, "contoso.com", "client-id", "device_code", ALICE,
                        ("https://outlook.office.com/SMTP.Send", *GRAPH_SEND_SCOPES,
                         "offline_access"))


def _meta(access_expires_at: float, access_expiries: dict[str, float] | None = None,
          ) -> AccountMeta:
    return AccountMeta(ALICE, ALICE, "device_code", access_expires_at=access_expires_at,
                       access_expiries=access_expiries or {})


def test_each_resource_shows_its_own_expiry() -> None:
    """Exchange's and Graph's tokens each show their own expiry, not the earliest for both."""
    meta = _meta(access_expires_at=EXCHANGE_FIRST,
                 access_expiries={OUTLOOK: EXCHANGE_FIRST, GRAPH: GRAPH_LATER})
    assert tokens_by_resource(ACCOUNT, meta) == (
        ResourceToken(NAMES[OUTLOOK], EXCHANGE_FIRST), ResourceToken(NAMES[GRAPH], GRAPH_LATER))


def test_a_resource_without_a_token_shows_none() -> None:
    """Exchange's token is there, Graph's is not fetched yet (its first send asks for it)."""
    meta = _meta(access_expires_at=EXCHANGE_FIRST, access_expiries={OUTLOOK: EXCHANGE_FIRST})
    assert tokens_by_resource(ACCOUNT, meta) == (
        ResourceToken(NAMES[OUTLOOK], EXCHANGE_FIRST), ResourceToken(NAMES[GRAPH], None))


def test_a_record_from_before_shows_its_one_expiry_for_each() -> None:
    """Only the earliest expiry is known until the next refresh writes the record again; no
    record, no expiry."""
    meta = _meta(access_expires_at=EXCHANGE_FIRST)
    assert [t.expires_at for t in tokens_by_resource(ACCOUNT, meta)] == [EXCHANGE_FIRST] * 2
    assert [t.expires_at for t in tokens_by_resource(ACCOUNT, None)] == [None, None]


def _page(meta: AccountMeta) -> str:
    row = AccountRow(ACCOUNT, AccountState("valid", "valid"), tokens_by_resource(ACCOUNT, meta),
                     None)
    view = RuntimeView("config.toml", "store", None, False, (), (), 0, (ALICE,), None)
    pages: list[bytes] = []
    Deferred.fromCoroutine(overview_page(Overview(view, (row,), (), ()), None)).addCallback(
        pages.append)
    return pages[0].decode()


def test_the_overview_page_shows_both_expiries() -> None:
    """The Tokens column of the page renders each resource with its own time."""
    page = _page(_meta(access_expires_at=EXCHANGE_FIRST,
                       access_expiries={OUTLOOK: EXCHANGE_FIRST, GRAPH: GRAPH_LATER}))
    assert f"{NAMES[OUTLOOK]}</code>: until {local_time(EXCHANGE_FIRST)}" in page
    assert f"{NAMES[GRAPH]}</code>: until {local_time(GRAPH_LATER)}" in page


def test_a_token_that_has_expired_says_so() -> None:
    """Not "until" a time gone by: the next login fetches a new one."""
    past = 1_700_000_000.0
    page = _page(_meta(access_expires_at=past, access_expiries={OUTLOOK: past, GRAPH: GRAPH_LATER}))
    assert f"{NAMES[OUTLOOK]}</code>: expired {local_time(past)}" in page
    assert f"{NAMES[GRAPH]}</code>: until {local_time(GRAPH_LATER)}" in page
