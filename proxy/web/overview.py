"""The picture the admin page and /metrics show: the runtime's view, every account's state (read
from the store in the thread pool), the listeners' login counts and the lockouts in force."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from ..account_state import (
    AccountState,
    ResourceToken,
    describe_account,
    tokens_by_resource,
)
from ..config import AccountConfig
from ..errors import ProxyError
from ..glue.runtime import Runtime
from ..metrics import LastLogin
from ..runtime_view import ListenerView, RuntimeView
from ..store import AccountMeta
from ..throttle import Lockout


@dataclass(frozen=True)
class AccountRow:
    account: AccountConfig
    state: AccountState
    tokens: tuple[ResourceToken, ...]
    last_login: LastLogin | None


@dataclass(frozen=True)
class ListenerRow:
    view: ListenerView
    logins: dict[str, int]  # by result, since start


@dataclass(frozen=True)
class Overview:
    runtime: RuntimeView
    accounts: tuple[AccountRow, ...]
    listeners: tuple[ListenerRow, ...]
    lockouts: tuple[Lockout, ...]

    @property
    def healthy(self) -> bool:
        return bool(self.runtime.listeners) and not self.runtime.listeners_down


async def gather(runtime: Runtime) -> Overview:
    """Also sets the metrics of the present (sessions open, listeners up, accounts by state,
    lockouts), so a scrape and the page agree."""
    accounts = dict(runtime.config.accounts)
    metas = await runtime.run_blocking(lambda: _read_metas(runtime, accounts))
    now = time.time()
    rows = []
    for name, account in sorted(accounts.items()):
        meta = metas.get(name)
        if isinstance(meta, ProxyError):
            state = AccountState("needs_authorisation", "its stored record cannot be used",
                                 meta.message)
            meta = None
        else:
            state = describe_account(account, meta, runtime.broker.trouble.get(name), now)
        rows.append(AccountRow(account, state, tokens_by_resource(account, meta),
                               runtime.metrics.last_logins.get(name)))
    view = runtime.view()
    lockouts = tuple(runtime.throttle.lockouts())
    listeners = {listener.name: (listener.sessions_open, True) for listener in view.listeners}
    listeners.update({name: (0, False) for name in view.listeners_down})
    runtime.metrics.set_present(listeners, Counter(row.state.label for row in rows),
                                Counter(lockout.kind for lockout in lockouts))
    return Overview(
        runtime=view,
        accounts=tuple(rows),
        listeners=tuple(ListenerRow(listener, runtime.metrics.logins_of(listener.name))
                        for listener in view.listeners),
        lockouts=lockouts,
    )


def _read_metas(runtime: Runtime, accounts: dict[str, AccountConfig],
                ) -> dict[str, AccountMeta | ProxyError | None]:
    """Blocking: one small read per account; a record that cannot be read is reported as such."""
    metas: dict[str, AccountMeta | ProxyError | None] = {}
    for name, account in accounts.items():
        try:
            metas[name] = runtime.store.read_meta(account.username)
        except ProxyError as e:
            metas[name] = e
    return metas
