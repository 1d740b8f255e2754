"""The TOML configuration: defaults, relative paths, and errors that name the file, table and key."""

from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path

import pytest
import requests

from proxy.config import (
    APP_ONLY_SCOPE,
    DEFAULT_AUTHORITY,
    LOOPBACK_NETWORKS,
    AdminConfig,
    Config,
    default_store_path,
    endpoint_parts,
    load_config,
    parse_config,
)
from proxy.config.first_run import FirstRun, first_config_text
from proxy.entra.client import EntraClient
from proxy.errors import ConfigError

IMAP_SCOPE = "https://outlook.office.com/IMAP.AccessAsUser.All"
POP_SCOPE = "https://outlook.office.com/POP.AccessAsUser.All"
SMTP_SCOPE = "https://outlook.office.com/SMTP.Send"

LISTENER = """
[[listener]]
protocol = "imap"
listen = "tcp:1143:interface=127.0.0.1"
upstream = "tls:outlook.office365.com:993"
"""

ACCOUNT = """
[[account]]
username = "alice@contoso.com"
tenant = "contoso.onmicrosoft.com"
client_id = "00000000-0000-0000-0000-000000000000"
flow = "device_code"
"""

FULL = """
[store]
path = "/var/lib/xoauth2-proxy"

[[listener]]
protocol = "imap"
listen = "tcp:1143:interface=127.0.0.1"
upstream = "tls:outlook.office365.com:993"
tls = "starttls"
tls_cert = "lan.pem"
tls_minimum = "1.0"
upstream_ca = "ca.pem"

[[listener]]
protocol = "pop3"
listen = "tcp:1110:interface=192.168.1.10"
upstream = "tls:outlook.office365.com:995"
allow_from = ["192.168.1.0/24", "10.0.0.1"]
allow_plaintext = true

[[listener]]
protocol = "smtp"
listen = "tcp:1465:interface=192.168.1.10"
upstream = "tcp:smtp.office365.com:587"
tls = "implicit"

[[account]]
username = "alice@contoso.com"
mailbox = "shared@contoso.com"
tenant = "contoso.onmicrosoft.com"
client_id = "00000000-0000-0000-0000-000000000000"
flow = "device_code"

[[account]]
username = "Bob@Contoso.com"
tenant = "11111111-2222-3333-4444-555555555555"
client_id = "00000000-0000-0000-0000-000000000001"
flow = "auth_code"
redirect_uri = "http://localhost:8765/"
scopes = ["https://outlook.office.com/IMAP.AccessAsUser.All", "offline_access"]

[[account]]
username = "printer@contoso.com"
tenant = "contoso.onmicrosoft.com"
client_id = "00000000-0000-0000-0000-000000000002"
flow = "client_credentials"
client_secret_file = "secrets/printer.txt"
authority = "https://login.microsoftonline.us/"

[[account]]
username = "scanner@contoso.com"
tenant = "contoso.onmicrosoft.com"
client_id = "00000000-0000-0000-0000-000000000003"
flow = "client_credentials"
certificate = "app.pem"

[[account]]
username = "fax@contoso.com"
tenant = "contoso.onmicrosoft.com"
client_id = "00000000-0000-0000-0000-000000000004"
flow = "client_credentials"
client_secret = "very-secret"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str) -> Config:
    return load_config(write(tmp_path, text))


def test_full_config(tmp_path: Path) -> None:
    """Every key INTERFACE.md names loads into the expected values."""
    (tmp_path / "ca.pem").write_text("not checked here\n")
    (tmp_path / "lan.pem").write_text("not checked here\n")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "printer.txt").write_text("s3cret-from-file\n")
    config = load(tmp_path, FULL)
    assert config.path == tmp_path / "config.toml"
    assert config.store_path == Path("/var/lib/xoauth2-proxy")

    imap, pop3, smtp = config.listeners
    assert (imap.protocol, imap.listen, imap.upstream) == (
        "imap",
        "tcp:1143:interface=127.0.0.1",
        "tls:outlook.office365.com:993",
    )
    assert imap.tls == "starttls" and imap.tls_minimum == "1.0"
    assert imap.tls_cert == tmp_path / "lan.pem" and imap.loopback_only
    assert imap.upstream_ca == tmp_path / "ca.pem"
    assert imap.allow_from == LOOPBACK_NETWORKS and imap.allow_plaintext is False
    assert pop3.allow_from == (
        ipaddress.ip_network("192.168.1.0/24"),
        ipaddress.ip_network("10.0.0.1/32"),
    )
    assert pop3.allow_plaintext is True and pop3.tls_minimum == "1.2"
    assert pop3.tls == "none" and not pop3.loopback_only
    assert smtp.upstream == "tcp:smtp.office365.com:587"
    assert smtp.tls == "implicit" and smtp.tls_cert is None and not smtp.allow_plaintext
    assert imap.name == "imap tcp:1143:interface=127.0.0.1"

    assert sorted(config.accounts) == [
        "alice@contoso.com",
        "bob@contoso.com",
        "fax@contoso.com",
        "printer@contoso.com",
        "scanner@contoso.com",
    ]
    alice = config.account("ALICE@contoso.com")
    assert alice.mailbox == "shared@contoso.com"
    assert alice.scopes == (IMAP_SCOPE, POP_SCOPE, SMTP_SCOPE, "offline_access")
    assert alice.authority == DEFAULT_AUTHORITY
    assert EntraClient(alice, requests.Session()).endpoint("token") == (
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    )
    bob = config.account("bob@contoso.com")
    assert bob.username == "Bob@Contoso.com" and bob.mailbox == "Bob@Contoso.com"
    assert bob.flow == "auth_code" and bob.redirect_uri == "http://localhost:8765/"
    assert bob.scopes == (IMAP_SCOPE, "offline_access")
    printer = config.account("printer@contoso.com")
    assert printer.scopes == (APP_ONLY_SCOPE,)
    assert printer.authority == "https://login.microsoftonline.us"
    assert printer.client_secret_file == tmp_path / "secrets" / "printer.txt"
    assert printer.read_client_secret() == "s3cret-from-file"
    assert config.account("scanner@contoso.com").certificate == tmp_path / "app.pem"
    fax = config.account("fax@contoso.com")
    assert fax.read_client_secret() == "very-secret"
    assert "very-secret" not in repr(fax)


def test_minimal_config_defaults(tmp_path: Path) -> None:
    """Defaults: platform store path, mailbox = username, tls none, TLS 1.2, loopback clients only."""
    config = load(tmp_path, LISTENER + ACCOUNT)
    assert config.store_path == default_store_path()
    (listener,) = config.listeners
    assert listener.tls == "none" and listener.tls_minimum == "1.2"
    assert listener.upstream_ca is None and listener.allow_plaintext is False
    assert listener.tls_cert is None
    assert listener.allow_from == LOOPBACK_NETWORKS
    account = config.account("alice@contoso.com")
    assert account.mailbox == "alice@contoso.com"
    assert account.authority == DEFAULT_AUTHORITY
    assert account.redirect_uri is None and account.client_secret is None


def test_accounts_are_optional(tmp_path: Path) -> None:
    """A config with listeners and no account loads (accounts are added later)."""
    assert load(tmp_path, LISTENER).accounts == {}


def test_imap_and_pop3_need_a_tls_upstream(tmp_path: Path) -> None:
    """A tcp: upstream for IMAP or POP3 would carry the token in the clear: refused; SMTP's
    tcp: means STARTTLS and is accepted."""
    for protocol in ("imap", "pop3"):
        listener = f'[[listener]]\nprotocol = "{protocol}"\nlisten = "tcp:2000"\nupstream = "tcp:h:1"\n'
        with pytest.raises(ConfigError, match=rf"{protocol} needs tls:HOST:PORT"):
            load(tmp_path, listener)
    smtp = '[[listener]]\nprotocol = "smtp"\nlisten = "tcp:2000"\nupstream = "tcp:h:587"\n'
    assert load(tmp_path, smtp).listeners[0].upstream == "tcp:h:587"


@pytest.mark.parametrize(
    "protocols, flow, expected",
    [
        (["imap"], "device_code", (IMAP_SCOPE, "offline_access")),
        (["pop3"], "auth_code", (POP_SCOPE, "offline_access")),
        (["smtp", "imap"], "device_code", (IMAP_SCOPE, SMTP_SCOPE, "offline_access")),
        (
            ["smtp", "pop3", "imap"],
            "auth_code",
            (IMAP_SCOPE, POP_SCOPE, SMTP_SCOPE, "offline_access"),
        ),
        (["imap", "imap"], "device_code", (IMAP_SCOPE, "offline_access")),
        (["imap", "smtp"], "client_credentials", (APP_ONLY_SCOPE,)),
    ],
)
def test_default_scopes(
    tmp_path: Path, protocols: list[str], flow: str, expected: tuple[str, ...]
) -> None:
    """Delegated flows ask for the configured protocols + offline_access; client_credentials for .default."""
    listeners = "".join(
        f'[[listener]]\nprotocol = "{p}"\nlisten = "tcp:{2000 + i}"\nupstream = "tls:h:1"\n'
        for i, p in enumerate(protocols)
    )
    account = ACCOUNT.replace('"device_code"', f'"{flow}"')
    if flow == "client_credentials":
        account += 'client_secret = "x"\n'
    assert load(tmp_path, listeners + account).account("alice@contoso.com").scopes == expected


@pytest.mark.parametrize(
    "listen, expected",
    [
        ("tcp:1143", "tcp:1143:interface=127.0.0.1"),
        ("tcp:port=1143", "tcp:port=1143:interface=127.0.0.1"),
        ("tcp:1143:interface=127.0.0.2", "tcp:1143:interface=127.0.0.2"),
        ("unix:/tmp/xoauth2-proxy.sock", "unix:/tmp/xoauth2-proxy.sock"),
    ],
)
def test_listen_interface_default(tmp_path: Path, listen: str, expected: str) -> None:
    """A tcp listen without interface= binds loopback; other endpoints are kept as written."""
    text = LISTENER.replace("tcp:1143:interface=127.0.0.1", listen)
    assert load(tmp_path, text).listeners[0].listen == expected


def test_tcp6_listen_without_interface(tmp_path: Path) -> None:
    """tcp6:1143 binds ::1 by default, written with Twisted's escaped colons."""
    text = LISTENER.replace("tcp:1143:interface=127.0.0.1", "tcp6:1143")
    listen = load(tmp_path, text).listeners[0].listen
    assert endpoint_parts(listen) == ("tcp6", ["1143"], {"interface": "::1"})


def test_relative_paths_follow_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relative paths are resolved against the config file's folder, not the working directory."""
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "ca").mkdir()
    monkeypatch.chdir(tmp_path)
    text = (
        '[store]\npath = "data"\n'
        + LISTENER.replace('upstream = "tls', 'upstream_ca = "ca"\nupstream = "tls')
        + ACCOUNT.replace('"device_code"', '"client_credentials"')
        + 'client_secret_file = "../run/secret"\n'
    )
    config = load(folder, text)
    assert config.store_path == folder / "data"
    assert config.listeners[0].upstream_ca == folder / "ca"
    assert config.account("alice@contoso.com").client_secret_file == folder / "../run/secret"


def test_home_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A path starting with ~ is in the user's home folder."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = load(tmp_path, '[store]\npath = "~/mail-proxy"\n' + LISTENER)
    assert config.store_path == tmp_path / "home" / "mail-proxy"


def test_unknown_account_lookup(tmp_path: Path) -> None:
    """Asking for an account that is not configured raises ConfigError naming the file and user."""
    path = write(tmp_path, LISTENER + ACCOUNT)
    with pytest.raises(ConfigError) as info:
        load_config(path).account("mallory@contoso.com")
    assert str(path) in info.value.message and "mallory@contoso.com" in info.value.message


def test_client_secret_file_unreadable(tmp_path: Path) -> None:
    """A missing client_secret_file is reported when read, naming the account and the file."""
    text = (
        ACCOUNT.replace('"device_code"', '"client_credentials"') + 'client_secret_file = "gone"\n'
    )
    account = load(tmp_path, LISTENER + text).account("alice@contoso.com")
    with pytest.raises(ConfigError, match="alice@contoso.com.*cannot read client_secret_file"):
        account.read_client_secret()


def replace(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


CC_ACCOUNT = ACCOUNT.replace('"device_code"', '"client_credentials"')

# (config text, substrings the error message must contain besides the file name)
ERRORS = [
    pytest.param(
        "bogus = 1\n" + LISTENER, ["top level", "unknown key 'bogus'"], id="unknown-top-key"
    ),
    pytest.param(
        '[store]\npaht = "x"\n' + LISTENER,
        ["[store]", "unknown key 'paht'"],
        id="unknown-store-key",
    ),
    pytest.param(
        LISTENER + 'colour = "red"\n',
        ["[[listener]] #1", "unknown key 'colour'"],
        id="unknown-listener-key",
    ),
    pytest.param(
        LISTENER + ACCOUNT + 'scope = ["x"]\n',
        ["[[account]] #1", "unknown key 'scope'"],
        id="unknown-account-key",
    ),
    pytest.param(
        LISTENER + LISTENER.replace("1143", "1144") + 'tls_certificate = "x.pem"\n',
        ["[[listener]] #2", "unknown key 'tls_certificate'"],
        id="unknown-key-second-listener",
    ),
    pytest.param(
        replace(LISTENER, 'upstream = "tls:outlook.office365.com:993"\n', ""),
        ["[[listener]] #1", "missing key 'upstream'"],
        id="missing-upstream",
    ),
    pytest.param(
        replace(LISTENER, 'protocol = "imap"\n', ""),
        ["[[listener]] #1", "missing key 'protocol'"],
        id="missing-protocol",
    ),
    pytest.param(
        LISTENER + replace(ACCOUNT, 'tenant = "contoso.onmicrosoft.com"\n', ""),
        ["[[account]] 'alice@contoso.com'", "missing key 'tenant'"],
        id="missing-tenant",
    ),
    pytest.param(
        LISTENER + replace(ACCOUNT, 'username = "alice@contoso.com"\n', ""),
        ["[[account]] #1", "missing key 'username'"],
        id="missing-username",
    ),
    pytest.param(
        LISTENER + replace(ACCOUNT, 'flow = "device_code"\n', ""),
        ["[[account]] 'alice@contoso.com'", "missing key 'flow'"],
        id="missing-flow",
    ),
    pytest.param("", ["[[listener]]", "at least one listener"], id="no-listener"),
    pytest.param(
        replace(LISTENER, '"tcp:1143:interface=127.0.0.1"', "1143"),
        ["[[listener]] #1", "listen must be a non-empty str"],
        id="listen-not-string",
    ),
    pytest.param(
        replace(LISTENER, '"tcp:1143:interface=127.0.0.1"', '"  "'),
        ["[[listener]] #1", "listen must be a non-empty str"],
        id="listen-blank",
    ),
    pytest.param(
        LISTENER + 'allow_plaintext = "yes"\n',
        ["[[listener]] #1", "allow_plaintext", "true or false"],
        id="bool-wrong-type",
    ),
    pytest.param(
        LISTENER + 'allow_from = "192.168.1.0/24"\n',
        ["[[listener]] #1", "allow_from", "list of strings"],
        id="allow-from-not-list",
    ),
    pytest.param(
        LISTENER + 'allow_from = ["192.168.1.0/33"]\n',
        ["[[listener]] #1", "allow_from", "192.168.1.0/33"],
        id="allow-from-bad-network",
    ),
    pytest.param(
        LISTENER + 'upstream_ca = "missing-ca.pem"\n',
        ["[[listener]] #1", "upstream_ca", "does not exist"],
        id="upstream-ca-missing",
    ),
    pytest.param(
        LISTENER + ACCOUNT + 'scopes = "offline_access"\n',
        ["[[account]] 'alice@contoso.com'", "scopes", "list of strings"],
        id="scopes-not-list",
    ),
    pytest.param(
        LISTENER + ACCOUNT + "mailbox = 5\n",
        ["[[account]] 'alice@contoso.com'", "mailbox", "non-empty string"],
        id="mailbox-wrong-type",
    ),
    pytest.param(
        LISTENER + ACCOUNT.replace('"alice@contoso.com"', "7"),
        ["[[account]] #1", "username must be a non-empty str"],
        id="username-wrong-type",
    ),
    pytest.param('store = "x"\n' + LISTENER, ["[store]", "expected a table"], id="store-not-table"),
    pytest.param('listener = "x"\n', ["[[listener]]", "array of tables"], id="listener-not-array"),
    pytest.param(
        'account = {username = "x"}\n' + LISTENER,
        ["[[account]]", "array of tables"],
        id="account-not-array",
    ),
    pytest.param(
        replace(LISTENER, '"imap"', '"ftp"'),
        ["[[listener]] #1", "protocol = 'ftp'", "imap, pop3, smtp"],
        id="bad-protocol",
    ),
    pytest.param(
        replace(LISTENER, '"imap"', '"IMAP"'),
        ["[[listener]] #1", "protocol = 'IMAP'"],
        id="protocol-is-case-sensitive",
    ),
    pytest.param(
        LISTENER + 'tls = "ssl"\n',
        ["[[listener]] #1", "tls = 'ssl'", "none, starttls, implicit"],
        id="bad-tls",
    ),
    pytest.param(
        LISTENER + 'tls = "STARTTLS"\n',
        ["[[listener]] #1", "tls = 'STARTTLS'"],
        id="tls-is-case-sensitive",
    ),
    pytest.param(
        LISTENER + 'tls = "starttls"\ntls_cert = "missing.pem"\n',
        ["[[listener]] #1", "tls_cert", "missing.pem", "does not exist"],
        id="tls-cert-missing",
    ),
    pytest.param(
        LISTENER + 'tls_cert = "config.toml"\n',
        ["[[listener]] #1", 'tls_cert is set but tls = "none"'],
        id="tls-cert-without-tls",
    ),
    pytest.param(
        LISTENER + 'tls_minimum = "1.4"\n',
        ["[[listener]] #1", "tls_minimum = '1.4'", "1.0, 1.1, 1.2, 1.3"],
        id="bad-tls-minimum",
    ),
    pytest.param(
        LISTENER + "tls_minimum = 1.2\n",
        ["[[listener]] #1", "tls_minimum must be a non-empty str"],
        id="tls-minimum-float",
    ),
    pytest.param(
        LISTENER + ACCOUNT.replace('"device_code"', '"password"'),
        [
            "[[account]] 'alice@contoso.com'",
            "flow = 'password'",
            "device_code, auth_code, client_credentials",
        ],
        id="bad-flow",
    ),
    pytest.param(
        replace(LISTENER, '"tcp:1143:interface=127.0.0.1"', '"bogus:1143"'),
        ["[[listener]] #1", "listen = 'bogus:1143'", "not a Twisted server endpoint"],
        id="listen-unknown-type",
    ),
    pytest.param(
        replace(LISTENER, '"tcp:1143:interface=127.0.0.1"', '"tcp:imap"'),
        ["[[listener]] #1", "listen = 'tcp:imap", "not a Twisted server endpoint"],
        id="listen-bad-port",
    ),
    pytest.param(
        replace(LISTENER, '"tcp:1143:interface=127.0.0.1"', '"tcp:1143:colour=red"'),
        ["[[listener]] #1", "listen = 'tcp:1143:colour=red", "not a Twisted server endpoint"],
        id="listen-bad-keyword",
    ),
    pytest.param(
        replace(LISTENER, '"tls:outlook.office365.com:993"', '"tls:outlook.office365.com"'),
        [
            "[[listener]] #1",
            "upstream = 'tls:outlook.office365.com'",
            "not a Twisted client endpoint",
        ],
        id="upstream-no-port",
    ),
    pytest.param(
        replace(LISTENER, '"tls:outlook.office365.com:993"', '"outlook.office365.com:993"'),
        ["[[listener]] #1", "upstream = 'outlook.office365.com:993'"],
        id="upstream-no-type",
    ),
    pytest.param(
        replace(LISTENER, '"tls:outlook.office365.com:993"', '"tls:outlook.office365.com:imaps"'),
        ["[[listener]] #1", "upstream", "not a Twisted client endpoint"],
        id="upstream-bad-port",
    ),
    pytest.param(
        replace(LISTENER, '"tls:outlook.office365.com:993"', '"unix:/run/imap.sock"'),
        ["[[listener]] #1", "upstream = 'unix:/run/imap.sock'", "tls:HOST:PORT or tcp:HOST:PORT"],
        id="upstream-not-tcp-or-tls",
    ),
    pytest.param(
        replace(LISTENER, "interface=127.0.0.1", "interface=0.0.0.0"),
        ["[[listener]] #1", "listen = 'tcp:1143:interface=0.0.0.0'", "allow_plaintext = true"],
        id="all-interfaces-plaintext",
    ),
    pytest.param(
        replace(LISTENER, "interface=127.0.0.1", "interface=192.168.1.10")
        + "allow_plaintext = false\n",
        ["[[listener]] #1", "not a loopback address", "allow_plaintext"],
        id="lan-plaintext",
    ),
    pytest.param(
        LISTENER + CC_ACCOUNT,
        ["[[account]] 'alice@contoso.com'", "exactly one of client_secret", "found: none"],
        id="client-credentials-no-secret",
    ),
    pytest.param(
        LISTENER + CC_ACCOUNT + 'client_secret = "a"\ncertificate = "app.pem"\n',
        ["[[account]] 'alice@contoso.com'", "exactly one", "found: client_secret, certificate"],
        id="client-credentials-two-secrets",
    ),
    pytest.param(
        LISTENER
        + replace(CC_ACCOUNT, '"contoso.onmicrosoft.com"', '"common"')
        + 'client_secret = "a"\n',
        ["[[account]] 'alice@contoso.com'", "tenant = 'common'", "AADSTS9001023"],
        id="client-credentials-common",
    ),
    pytest.param(
        LISTENER
        + replace(CC_ACCOUNT, '"contoso.onmicrosoft.com"', '"Organizations"')
        + 'client_secret = "a"\n',
        ["[[account]] 'alice@contoso.com'", "tenant = 'Organizations'"],
        id="client-credentials-organizations",
    ),
    pytest.param(
        LISTENER + ACCOUNT + 'authority = "http://login.example.com"\n',
        ["[[account]] 'alice@contoso.com'", "authority", "https://"],
        id="authority-not-https",
    ),
    pytest.param(
        LISTENER + ACCOUNT + ACCOUNT.replace("alice@", "ALICE@"),
        ["[[account]] #2", "'ALICE@contoso.com' appears twice"],
        id="duplicate-username",
    ),
    pytest.param('[[listener]\nprotocol = "imap"\n', ["not valid TOML"], id="invalid-toml"),
    pytest.param(LISTENER + 'protocol = "pop3"\n', ["not valid TOML"], id="duplicate-key-toml"),
]


@pytest.mark.parametrize("text, fragments", ERRORS)
def test_config_errors(tmp_path: Path, text: str, fragments: list[str]) -> None:
    """An invalid config raises ConfigError whose message names the file, the table and the key."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = info.value.message
    assert message.startswith(f"{path}: ")
    for fragment in fragments:
        assert fragment in message


def test_loopback_and_plaintext_allowed(tmp_path: Path) -> None:
    """tls = "none" is fine on loopback, unix sockets or with allow_plaintext; TLS listeners may face the LAN."""
    for listen, extra in [
        ("tcp:1143:interface=127.0.0.5", ""),
        ("tcp:1143:interface=0.0.0.0", "allow_plaintext = true\n"),
        ("unix:/tmp/proxy.sock", ""),
        ("tcp:1143:interface=0.0.0.0", 'tls = "starttls"\n'),
        ("tcp:1143:interface=192.168.1.10", 'tls = "implicit"\n'),
    ]:
        load(tmp_path, LISTENER.replace("tcp:1143:interface=127.0.0.1", listen) + extra)


def test_missing_file(tmp_path: Path) -> None:
    """A missing config file raises ConfigError naming the file and --config."""
    path = tmp_path / "nowhere" / "config.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in info.value.message and "--config" in info.value.message


def test_config_is_a_folder(tmp_path: Path) -> None:
    """A folder given as the config file raises ConfigError, not an OSError."""
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(tmp_path) in info.value.message


@pytest.mark.parametrize(
    "key, value",
    [
        pytest.param("listen", "ssl:1993", id="ssl-listen-without-key-file"),
        pytest.param(
            "upstream",
            "tls:outlook.office365.com:993:trustRoots=/nonexistent",
            id="missing-trust-roots",
        ),
        pytest.param("listen", "systemd:domain=INET:index=0", id="systemd-without-socket"),
    ],
)
def test_endpoint_errors_are_config_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str, value: str
) -> None:
    """Any endpoint string Twisted refuses gives a ConfigError naming the listener and the key."""
    monkeypatch.delenv("LISTEN_FDS", raising=False)
    monkeypatch.delenv("LISTEN_PID", raising=False)
    old = "tcp:1143:interface=127.0.0.1" if key == "listen" else "tls:outlook.office365.com:993"
    path = write(tmp_path, LISTENER.replace(old, value))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in info.value.message and f"{key} = " in info.value.message


def test_admin_table_takes_listen_and_token_file_and_defaults_to_loopback(tmp_path: Path) -> None:
    """[admin] listen without an interface binds loopback; token_file is relative to the config."""
    (tmp_path / "admin-token").write_text("t" * 32)
    path = write(tmp_path, '[admin]\nlisten = "tcp:9025"\ntoken_file = "admin-token"\n' + LISTENER)
    admin = load_config(path).admin
    assert admin == AdminConfig("tcp:9025:interface=127.0.0.1", tmp_path / "admin-token")
    assert admin.loopback_only
    assert load_config(write(tmp_path, "[admin]\n" + LISTENER)).admin == AdminConfig()
    assert load_config(write(tmp_path, LISTENER)).admin is None


@pytest.mark.parametrize("table, message", [
    ('[admin]\ntoken_flie = "x"\n', "[admin]: unknown key 'token_flie'"),
    ('[admin]\ntoken_file = "missing"\n', "[admin]: token_file"),
    ('[admin]\nlisten = "tcp:notaport"\n', "[admin]: listen = "),
])
def test_admin_table_errors_name_the_key(tmp_path: Path, table: str, message: str) -> None:
    """A wrong [admin] table is refused with the file, the table and the key."""
    path = write(tmp_path, table + LISTENER)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in info.value.message and message in info.value.message


@pytest.mark.parametrize("flow", ["device_code", "auth_code", "client_credentials"])
def test_first_run_config_text_reads_back_as_what_was_answered(tmp_path: Path, flow: str) -> None:
    """The setup page's file is valid, commented TOML that reads back as the answers, whatever
    characters the answers hold."""
    answers = FirstRun(protocol="smtp", port=2525, username="scan@contoso.com",
                       mailbox="Shared \"Sales\" \\ é@contoso.com", tenant="contoso.com",
                       client_id="app-1", flow=flow,
                       client_secret='s3cr"et\\' if flow == "client_credentials" else None,
                       upstream_ca="ca.pem", authority="http://127.0.0.1:9/",
                       admin_listen="tcp:8026:interface=127.0.0.1")
    (tmp_path / "ca.pem").write_text("")
    text = first_config_text(answers)
    config = parse_config(text, tmp_path / "config.toml")
    assert text.count("\n# ") >= 5  # explains itself
    [listener] = config.listeners
    assert (listener.protocol, listener.listen, listener.upstream, listener.upstream_ca) == (
        "smtp", "tcp:2525:interface=127.0.0.1", "tcp:smtp.office365.com:587", tmp_path / "ca.pem")
    account = config.account("scan@contoso.com")
    assert (account.mailbox, account.tenant, account.flow, account.authority) == (
        answers.mailbox, "contoso.com", flow, "http://127.0.0.1:9")
    assert account.client_secret == answers.client_secret
    assert config.admin == AdminConfig("tcp:8026:interface=127.0.0.1")


@pytest.mark.parametrize(
    "description, expected",
    [
        ("tcp:1143:interface=127.0.0.1", ("tcp", ["1143"], {"interface": "127.0.0.1"})),
        ("tls:outlook.office365.com:993", ("tls", ["outlook.office365.com", "993"], {})),
        ("tcp6:1143:interface=\\:\\:1", ("tcp6", ["1143"], {"interface": "::1"})),
        ("tcp:port=1143", ("tcp", [], {"port": "1143"})),
        ("unix:/run/proxy.sock:mode=600", ("unix", ["/run/proxy.sock"], {"mode": "600"})),
        (
            "tls:mail.example.com:993:trustRoots=/etc/ca",
            ("tls", ["mail.example.com", "993"], {"trustRoots": "/etc/ca"}),
        ),
    ],
)
def test_endpoint_parts(description: str, expected: tuple[str, list[str], dict[str, str]]) -> None:
    """endpoint_parts splits a Twisted endpoint string by Twisted's own rules (escaped colons too)."""
    assert endpoint_parts(description) == expected
