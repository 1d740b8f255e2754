"""The shipped examples stay valid as the code changes."""

from __future__ import annotations

import configparser
from pathlib import Path

from proxy.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def test_example_config_loads() -> None:
    """contrib/config.example.toml is a valid configuration with every protocol."""
    config = load_config(ROOT / "contrib" / "config.example.toml")
    assert {listener.protocol for listener in config.listeners} == {"imap", "pop3", "smtp"}
    assert str(config.store_path) == "/var/lib/xoauth2-proxy"


def test_systemd_unit_runs_serve_with_the_store_it_creates() -> None:
    """The unit starts `serve` with the config the README names and owns the store folder."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(ROOT / "contrib" / "xoauth2-proxy.service")
    service = unit["Service"]
    assert service["ExecStart"].endswith("--config /etc/xoauth2-proxy/config.toml serve")
    assert service["StateDirectory"] == "xoauth2-proxy"
    assert service["User"] == "xoauth2-proxy"
