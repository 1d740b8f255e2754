"""Configuration for several instances: [store] backend, dsn or dsn_file, and listeners behind
a load balancer (haproxy: with proxy_protocol_from)."""

from __future__ import annotations

import subprocess
import sys
from ipaddress import ip_network
from pathlib import Path

import pytest

from proxy.errors import ConfigError
from tests.test_config import LISTENER, load, write

BALANCED = """
[[listener]]
protocol = "imap"
listen = "haproxy:tcp:1143:interface=10.0.0.5"
upstream = "tls:outlook.office365.com:993"
allow_from = ["192.168.1.0/24"]
allow_plaintext = true
proxy_protocol_from = ["10.0.0.2/32", "10.0.0.3"]
"""
ROOT = Path(__file__).resolve().parents[1]


def test_postgresql_store_with_a_dsn_file(tmp_path: Path) -> None:
    """backend = "postgresql" with dsn_file: the DSN is read from the file when needed."""
    (tmp_path / "dsn").write_text("postgresql://proxy:pw@db.example/proxy\n")
    config = load(tmp_path, '[store]\nbackend = "postgresql"\ndsn_file = "dsn"\n' + LISTENER)
    store = config.store_config
    assert (store.backend, store.dsn_file) == ("postgresql", tmp_path / "dsn")
    assert store.read_dsn() == "postgresql://proxy:pw@db.example/proxy"
    assert "pw" not in repr(load(tmp_path, '[store]\ndsn = "postgresql://u:pw@h/d"\n' + LISTENER))


def test_the_default_store_is_the_files_backend(tmp_path: Path) -> None:
    """Without [store] backend nothing changes: the files under path."""
    config = load(tmp_path, LISTENER)
    assert config.store_config.backend == "files"
    assert config.store_config.path == config.store_path


@pytest.mark.parametrize("store, fragment", [
    ('backend = "postgresql"\n', 'backend = "postgresql" needs dsn'),
    ('backend = "mysql"\n', "backend = 'mysql': expected one of files, postgresql"),
    ('dsn = "postgresql://h/d"\ndsn_file = "x"\n', "dsn and dsn_file are both set"),
])
def test_store_errors(tmp_path: Path, store: str, fragment: str) -> None:
    """A [store] that cannot work names the key and what is expected."""
    with pytest.raises(ConfigError, match="\\[store\\]") as caught:
        load(tmp_path, "[store]\n" + store + LISTENER)
    assert fragment in caught.value.message


def test_a_balanced_listener(tmp_path: Path) -> None:
    """A haproxy: listener keeps its prefix, names its balancers, and is never taken for a
    loopback-only listener (the devices are elsewhere)."""
    (listener,) = load(tmp_path, BALANCED).listeners
    assert listener.behind_balancer and not listener.loopback_only
    assert listener.proxy_protocol_from == (ip_network("10.0.0.2/32"), ip_network("10.0.0.3/32"))
    (local,) = load(tmp_path, BALANCED.replace("interface=10.0.0.5", "interface=127.0.0.1")
                    ).listeners
    assert not local.loopback_only
    (default,) = load(tmp_path, BALANCED.replace(":interface=10.0.0.5", "")).listeners
    assert default.listen == "haproxy:tcp:1143:interface=127.0.0.1"


@pytest.mark.parametrize("text, fragment", [
    (BALANCED.replace('proxy_protocol_from = ["10.0.0.2/32", "10.0.0.3"]\n', ""),
     "set proxy_protocol_from"),
    (LISTENER + 'proxy_protocol_from = ["10.0.0.2"]\n', "proxy_protocol_from needs"),
    (BALANCED.replace("allow_plaintext = true\n", ""), "allow_plaintext"),
    (BALANCED.replace("haproxy:tcp:", "haproxy:ssl:"), 'tls = "implicit"'),
])
def test_balanced_listener_errors(tmp_path: Path, text: str, fragment: str) -> None:
    """proxy_protocol_from is required on a haproxy: listener and refused on any other;
    plaintext from devices elsewhere needs allow_plaintext."""
    with pytest.raises(ConfigError, match="\\[\\[listener\\]\\] #1") as caught:
        load(tmp_path, text)
    assert fragment in caught.value.message


def test_a_missing_psycopg_is_a_usage_error_naming_the_extra(tmp_path: Path) -> None:
    """With backend = "postgresql" and no psycopg, commands exit 2 saying what to install."""
    config = write(tmp_path, '[store]\nbackend = "postgresql"\ndsn = "postgresql://h/d"\n'
                   + LISTENER)
    script = ("import sys; sys.modules['psycopg'] = None; from proxy.cli import main; "
              f"main(['--config', {str(config)!r}, 'account', 'list'])")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert result.returncode == 2
    assert "pip install 'xoauth2-proxy[postgresql]'" in result.stderr
