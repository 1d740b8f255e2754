"""What a reload changes: listeners added, changed, removed; accounts; the store; the grace."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from proxy.config import Config, Limits, ListenerConfig, load_config
from proxy.config.changes import ListenerSpec, config_changes, store_change
from proxy.errors import ConfigError
from tests.test_config import ACCOUNT, LISTENER

IMAP = ListenerConfig("imap", "tcp:1143:interface=127.0.0.1", "tls:outlook.office365.com:993")
POP3 = ListenerConfig("pop3", "tcp:1110:interface=127.0.0.1", "tls:outlook.office365.com:995")
SMTP = ListenerConfig("smtp", "tcp:1587:interface=127.0.0.1", "tcp:smtp.office365.com:587",
                      tls="starttls")


def _config(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_config(path)


def test_listeners_are_added_changed_removed_or_kept_by_address() -> None:
    """Same address and settings: kept; other settings, limits or certificate: changed; new
    address: added; gone: removed."""
    running = {spec.key: spec for spec in (ListenerSpec(IMAP, Limits()), ListenerSpec(POP3, Limits()),
                                           ListenerSpec(SMTP, Limits(), "AA:BB"))}
    wanted = [
        ListenerSpec(IMAP, Limits()),  # kept
        ListenerSpec(dataclasses.replace(POP3, upstream="tls:other.example:995"), Limits()),
        ListenerSpec(SMTP, Limits(), "CC:DD"),  # a renewed certificate
        ListenerSpec(dataclasses.replace(IMAP, listen="tcp:1144:interface=127.0.0.1"), Limits()),
    ]
    changes = config_changes(running, wanted, {}, {})
    assert [spec.key for spec in changes.added] == ["tcp:1144:interface=127.0.0.1"]
    assert [spec.key for spec in changes.changed] == [POP3.listen, SMTP.listen]
    assert changes.removed == ()
    gone = config_changes(running, [ListenerSpec(IMAP, Limits(max_sessions=5))], {}, {})
    assert [spec.key for spec in gone.changed] == [IMAP.listen]
    assert [spec.config.name for spec in gone.removed] == [POP3.name, SMTP.name]


def test_accounts_added_changed_and_removed_and_the_summary(tmp_path: Path) -> None:
    """Accounts are compared by user name; the summary names every change, or says none."""
    old = _config(tmp_path, LISTENER + ACCOUNT)
    new = _config(tmp_path, LISTENER + ACCOUNT.replace("device_code", "auth_code")
                  + ACCOUNT.replace("alice", "bob"))
    changes = config_changes({}, [], old.accounts, new.accounts)
    assert changes.accounts_added == ("bob@contoso.com",)
    assert changes.accounts_changed == ("alice@contoso.com",)
    assert changes.summary() == ("1 account added: bob@contoso.com; "
                                 "1 account changed: alice@contoso.com")
    removed = config_changes({}, [], new.accounts, old.accounts)
    assert removed.accounts_removed == ("bob@contoso.com",)
    assert config_changes({}, [], old.accounts, old.accounts).summary() == "nothing changed"
    admin = dataclasses.replace(changes, admin_changed=True)
    assert admin.summary().endswith("; [admin] changed: restart the proxy to apply it")


def test_a_new_store_path_cannot_be_reloaded(tmp_path: Path) -> None:
    """A running proxy keeps its store: a reload that moves it is refused with the reason."""
    old = _config(tmp_path, LISTENER)
    assert store_change(old, old) is None
    moved = _config(tmp_path, '[store]\npath = "/elsewhere"\n' + LISTENER)
    why = store_change(old, moved)
    assert why is not None and "restart" in why and "/elsewhere" in why


def test_a_new_store_backend_or_database_cannot_be_reloaded(tmp_path: Path) -> None:
    """Moving to PostgreSQL, or to another database, needs a restart; the refusal never
    quotes the DSN, which may hold a password."""
    old = _config(tmp_path, LISTENER)
    database = '[store]\nbackend = "postgresql"\ndsn = "postgresql://u:s3cret@db/x"\n'
    moved = _config(tmp_path, database + LISTENER)
    why = store_change(old, moved)
    assert why is not None and "restart" in why and "s3cret" not in why
    other = _config(tmp_path, database.replace("db/x", "db/y") + LISTENER)
    assert store_change(moved, other) is not None
    assert store_change(moved, _config(tmp_path, database + LISTENER)) is None


def test_shutdown_grace_defaults_to_10_and_may_be_0(tmp_path: Path) -> None:
    """[limits] shutdown_grace_seconds is 10 by default, 0 stops at once, below 0 is an error."""
    assert _config(tmp_path, LISTENER).limits.shutdown_grace_seconds == 10
    zero = _config(tmp_path, "[limits]\nshutdown_grace_seconds = 0\n" + LISTENER)
    assert zero.limits.shutdown_grace_seconds == 0
    with pytest.raises(ConfigError, match="shutdown_grace_seconds must be a whole number of at least 0"):
        _config(tmp_path, "[limits]\nshutdown_grace_seconds = -1\n" + LISTENER)
    with pytest.raises(ConfigError, match="max_sessions must be a whole number of at least 1"):
        _config(tmp_path, "[limits]\nmax_sessions = 0\n" + LISTENER)
