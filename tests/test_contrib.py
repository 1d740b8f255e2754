"""The shipped examples stay valid as the code changes."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest
import yaml

from proxy.config import load_config
from tests.support.haproxy import check_config, haproxy_available

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


SEVERAL = ROOT / "contrib" / "several-instances"


def test_compose_runs_two_proxies_postgresql_and_haproxy() -> None:
    """The compose file parses and has two proxies on one database behind HAProxy, whose
    address is the one the proxies' config accepts PROXY headers from."""
    compose = yaml.safe_load((SEVERAL / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "proxy1", "proxy2", "haproxy"} <= set(services)
    assert services["proxy1"]["build"] == services["proxy2"]["build"] == "../.."
    balancer = services["haproxy"]["networks"]["backend"]["ipv4_address"]
    config = load_config(SEVERAL / "config.toml")
    assert config.store_config.backend == "postgresql"
    for listener in config.listeners:
        assert listener.behind_balancer
        assert [str(n) for n in listener.proxy_protocol_from] == [balancer + "/32"]


def test_compose_haproxy_config_is_valid_and_sends_proxy_v2() -> None:
    """`haproxy -c` accepts contrib's haproxy.cfg, and every server gets send-proxy-v2."""
    text = (SEVERAL / "haproxy.cfg").read_text()
    servers = [line for line in text.splitlines() if line.strip().startswith("server ")]
    assert servers and all("send-proxy-v2" in line for line in servers)
    reason = haproxy_available()
    if reason:
        pytest.skip(reason)
    checked = check_config(SEVERAL / "haproxy.cfg")
    assert checked.returncode == 0, checked.stderr


def test_kubernetes_example_has_two_replicas_and_the_dsn_from_a_secret(tmp_path: Path) -> None:
    """The manifests parse: a Deployment of two replicas whose config reads the DSN from the
    mounted Secret, and a Service in front; the embedded config is valid."""
    documents = list(yaml.safe_load_all(
        (ROOT / "contrib" / "kubernetes" / "xoauth2-proxy.yaml").read_text()))
    kinds = {document["kind"]: document for document in documents}
    assert {"ConfigMap", "Deployment", "Service"} <= set(kinds)
    deployment = kinds["Deployment"]["spec"]
    assert deployment["replicas"] == 2
    volumes = {v["name"]: v for v in deployment["template"]["spec"]["volumes"]}
    assert volumes["dsn"]["secret"]["secretName"] == "xoauth2-proxy-dsn"
    mounts = {m["name"]: m["mountPath"]
              for m in deployment["template"]["spec"]["containers"][0]["volumeMounts"]}
    path = tmp_path / "config.toml"
    path.write_text(kinds["ConfigMap"]["data"]["config.toml"])
    store = load_config(path).store_config
    assert store.backend == "postgresql"
    assert str(store.dsn_file) == mounts["dsn"] + "/dsn"
    assert kinds["Service"]["spec"]["selector"] == deployment["selector"]["matchLabels"]
