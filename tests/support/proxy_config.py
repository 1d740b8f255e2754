"""The config of a test's own proxy as TOML text, one table at a time: concatenate
store_toml(), limits_toml(), listener_toml() and alice_account_toml() for ProxyProcess."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.world import ALICE, ALICE_SECRET, TENANT

Value = str | Path | bool | int | list[str] | None


def _value(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    return json.dumps(str(value))  # a TOML basic string


def _table(header: str, keys: dict[str, Value]) -> str:
    """`header` and a `key = value` line for each key whose value is not None."""
    lines = [header, *(f"{key} = {_value(value)}" for key, value in keys.items() if value is not None)]
    return "\n".join(lines) + "\n\n"


def store_toml(path: Path) -> str:
    return _table("[store]", {"path": path})


def limits_toml(**limits: int) -> str:
    return _table("[limits]", dict(limits))


def listener_toml(protocol: str, listen: str, upstream: str, upstream_ca: str | Path,
                  **keys: Value) -> str:
    """One [[listener]]; `keys` are its other settings (tls, allow_from, ...), None leaves one out."""
    return _table("[[listener]]", {"protocol": protocol, "listen": listen, "upstream": upstream,
                                   "upstream_ca": upstream_ca, **keys})


def client_credentials_account_toml(username: str, client_id: str, secret: str, authority: str) -> str:
    """An [[account]] of TENANT using client_credentials with `secret` at `authority`."""
    return _table("[[account]]", {"username": username, "tenant": TENANT, "client_id": client_id,
                                  "flow": "client_credentials", "client_secret": secret,
                                  "authority": authority})


def alice_account_toml(authority: str) -> str:
    """ALICE's [[account]]: client_credentials with ALICE_SECRET at the fake Entra ID `authority`."""
    return client_credentials_account_toml(ALICE, "app-alice", ALICE_SECRET, authority)
