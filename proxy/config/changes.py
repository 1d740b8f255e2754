"""What a reload changes: the running listeners against a new configuration, and its accounts.

A listener is known by its `listen` address. One whose settings, [limits] or TLS certificate
differ is *changed*: it keeps its port, new connections get the new settings, and sessions
already open go on with the old ones. The store cannot change under a running proxy; the admin
page's own address and token wait for a restart (a reload from the page must not cut off the
page that asked for it), and the summary says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .model import AccountConfig, Config, Limits, ListenerConfig


@dataclass(frozen=True)
class ListenerSpec:
    """Everything a listener's connections are served with."""

    config: ListenerConfig
    limits: Limits
    fingerprint: str | None = None  # of its TLS certificate, when it has TLS

    @property
    def key(self) -> str:
        return self.config.listen


@dataclass(frozen=True)
class ConfigChanges:
    added: tuple[ListenerSpec, ...] = ()
    changed: tuple[ListenerSpec, ...] = ()
    removed: tuple[ListenerSpec, ...] = ()  # as they ran
    accounts_added: tuple[str, ...] = ()
    accounts_changed: tuple[str, ...] = ()
    accounts_removed: tuple[str, ...] = ()
    admin_changed: bool = False  # [admin] differs from what the admin page runs with

    def summary(self) -> str:
        """One line for the log and for `xoauth2-proxy reload`."""
        parts = [
            _listed("listener added", [spec.config.name for spec in self.added]),
            _listed("listener changed", [spec.config.name for spec in self.changed]),
            _listed("listener removed", [spec.config.name for spec in self.removed]),
            _listed("account added", list(self.accounts_added)),
            _listed("account changed", list(self.accounts_changed)),
            _listed("account removed", list(self.accounts_removed)),
            "[admin] changed: restart the proxy to apply it" if self.admin_changed else "",
        ]
        return "; ".join(p for p in parts if p) or "nothing changed"


def config_changes(
    running: Mapping[str, ListenerSpec],
    wanted: Iterable[ListenerSpec],
    old_accounts: Mapping[str, AccountConfig],
    new_accounts: Mapping[str, AccountConfig],
) -> ConfigChanges:
    wanted = list(wanted)
    wanted_keys = {spec.key for spec in wanted}
    return ConfigChanges(
        added=tuple(spec for spec in wanted if spec.key not in running),
        changed=tuple(spec for spec in wanted if spec.key in running and running[spec.key] != spec),
        removed=tuple(spec for key, spec in running.items() if key not in wanted_keys),
        accounts_added=_names(new_accounts, [name for name in new_accounts if name not in old_accounts]),
        accounts_changed=_names(new_accounts, [name for name in new_accounts if name in old_accounts
                                               and old_accounts[name] != new_accounts[name]]),
        accounts_removed=_names(old_accounts, [name for name in old_accounts if name not in new_accounts]),
    )


def store_change(old: Config, new: Config) -> str | None:
    """Why `new` cannot be applied to a proxy running with `old`'s store, or None."""
    if old.store_path != new.store_path:
        return (f"[store] path changed from {old.store_path} to {new.store_path}; a running "
                "proxy keeps its store: restart it to use another")
    before, after = old.store_config, new.store_config
    if (before.backend, before.dsn, before.dsn_file) != (after.backend, after.dsn, after.dsn_file):
        # Never the DSN itself in the message: it may carry a database password.
        return ("[store] backend or database changed; a running proxy keeps its store: "
                "restart it to use another")
    return None


def _names(accounts: Mapping[str, AccountConfig], keys: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(accounts[key].username for key in keys))


def _listed(what: str, names: list[str]) -> str:
    if not names:
        return ""
    return f"{len(names)} {what if len(names) == 1 else what.replace(' ', 's ', 1)}: {', '.join(names)}"
