"""The TOML configuration file, read into frozen dataclasses and checked with clear errors."""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import platformdirs

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

APP_NAME = "xoauth2-proxy"
CONFIG_ENV = "XOAUTH2_PROXY_CONFIG"
DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
PROTOCOLS = ("imap", "pop3", "smtp")
FLOWS = ("device_code", "auth_code", "client_credentials")
TLS_MODES = ("none", "starttls", "implicit")
TLS_VERSIONS = ("1.0", "1.1", "1.2", "1.3")
OUTLOOK = "https://outlook.office.com/"
DELEGATED_SCOPES = {
    "imap": OUTLOOK + "IMAP.AccessAsUser.All",
    "pop3": OUTLOOK + "POP.AccessAsUser.All",
    "smtp": OUTLOOK + "SMTP.Send",
}
APP_ONLY_SCOPE = "https://outlook.office365.com/.default"
LOOPBACK_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class ListenerConfig:
    protocol: str
    listen: str
    upstream: str
    upstream_ca: Path | None = None
    tls: str = "none"
    tls_cert: Path | None = None
    tls_minimum: str = "1.2"
    allow_from: tuple[Network, ...] = LOOPBACK_NETWORKS
    allow_plaintext: bool = False

    @property
    def name(self) -> str:
        return f"{self.protocol} {self.listen}"

    @property
    def loopback_only(self) -> bool:
        """Listens on a loopback address only, so nothing it receives crossed a network."""
        return _is_loopback_listen(self.listen)


@dataclass(frozen=True)
class AccountConfig:
    username: str
    tenant: str
    client_id: str
    flow: str
    mailbox: str
    scopes: tuple[str, ...]
    authority: str = DEFAULT_AUTHORITY
    redirect_uri: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    client_secret_file: Path | None = None
    certificate: Path | None = None
    private_key: Path | None = None

    @property
    def token_url(self) -> str:
        return f"{self.authority}/{self.tenant}/oauth2/v2.0/token"

    def read_client_secret(self) -> str:
        """The client secret, from the config or from its file (read when needed)."""
        if self.client_secret is not None:
            return self.client_secret
        if self.client_secret_file is None:
            raise ConfigError(f"account {self.username}: no client_secret or client_secret_file")
        try:
            return self.client_secret_file.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(
                f"account {self.username}: cannot read client_secret_file "
                f"{self.client_secret_file}: {e.strerror}"
            ) from None


@dataclass(frozen=True)
class Limits:
    """[limits]: how much one listener, one address and one guesser may take."""

    max_sessions: int = 200  # per listener, at once
    max_sessions_per_address: int = 20  # per listener and client address, at once
    pre_login_seconds: int = 120  # to log in after connecting
    failures_before_delay: int = 3  # wrong passwords per address before answers slow down
    failures_before_lockout: int = 10  # wrong passwords per address before it is refused
    account_failures_before_lockout: int = 30  # per account, from addresses not known to it
    lockout_minutes: int = 15  # cooling-off period; also how long failures are remembered
    upstream_timeout_seconds: int = 30  # to connect upstream, and then to sign in there


@dataclass(frozen=True)
class Config:
    path: Path
    store_path: Path
    listeners: tuple[ListenerConfig, ...]
    accounts: dict[str, AccountConfig]
    limits: Limits = Limits()

    def account(self, username: str) -> AccountConfig:
        try:
            return self.accounts[username.lower()]
        except KeyError:
            raise ConfigError(
                f"{self.path}: no [[account]] with username = {username!r}"
            ) from None


def default_config_path() -> Path:
    """--config is handled by the caller; then $XOAUTH2_PROXY_CONFIG, then the platform's."""
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def default_store_path() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME))


def load_config(path: Path) -> Config:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such file; write one (see README) or pass --config PATH"
        ) from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return _Reader(path).config(data)


T = TypeVar("T")


class _Reader:
    """Turns the parsed TOML into a Config; every error names the file, the table and the key."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.base = path.parent

    def fail(self, where: str, message: str) -> ConfigError:
        return ConfigError(f"{self.path}: {where}: {message}")

    def config(self, data: dict[str, Any]) -> Config:
        if "admin" in data:
            raise self.fail("[admin]", "the admin page is not part of this version of "
                            "xoauth2-proxy; remove the [admin] table")
        self.check_keys("top level", data, {"store", "listener", "account", "limits"})
        store = self.table(data, "store", "[store]")
        self.check_keys("[store]", store, {"path"})
        store_path = self.optional(store, "path", "[store]", self.as_path) or default_store_path()

        listeners = tuple(
            self.listener(f"[[listener]] #{i}", item)
            for i, item in enumerate(self.array(data, "listener"), 1)
        )
        if not listeners:
            raise self.fail("[[listener]]", "at least one listener is required")
        protocols = {listener.protocol for listener in listeners}

        accounts: dict[str, AccountConfig] = {}
        for i, item in enumerate(self.array(data, "account"), 1):
            account = self.account(f"[[account]] #{i}", item, protocols)
            key = account.username.lower()
            if key in accounts:
                raise self.fail(f"[[account]] #{i}", f"username {account.username!r} appears twice")
            accounts[key] = account
        return Config(self.path, store_path, listeners, accounts, self.limits(data))

    def limits(self, data: dict[str, Any]) -> Limits:
        table = self.table(data, "limits", "[limits]")
        fields = Limits.__dataclass_fields__
        self.check_keys("[limits]", table, set(fields))
        values = {}
        for key, value in table.items():
            if type(value) is not int or value < 1:
                raise self.fail("[limits]", f"{key} must be a whole number of at least 1")
            values[key] = value
        return Limits(**values)

    def listener(self, where: str, item: dict[str, Any]) -> ListenerConfig:
        self.check_keys(
            where,
            item,
            {"protocol", "listen", "upstream", "upstream_ca", "tls", "tls_cert", "tls_minimum",
             "allow_from", "allow_plaintext"},
        )
        protocol = self.choice(item, "protocol", where, PROTOCOLS)
        listen = self.server_endpoint(where, self.required(item, "listen", where, str))
        upstream = self.client_endpoint(where, self.required(item, "upstream", where, str))
        self.upstream_security(where, protocol, upstream)
        tls = self.choice(item, "tls", where, TLS_MODES, default="none")
        allow_from = self.optional(item, "allow_from", where, lambda v, w: self.networks(v, w))
        listener = ListenerConfig(
            protocol=protocol,
            listen=listen,
            upstream=upstream,
            upstream_ca=self.optional(item, "upstream_ca", where, self.as_path),
            tls=tls,
            tls_cert=self.optional(item, "tls_cert", where, self.as_path),
            tls_minimum=self.choice(item, "tls_minimum", where, TLS_VERSIONS, default="1.2"),
            allow_from=allow_from or LOOPBACK_NETWORKS,
            allow_plaintext=self.optional(item, "allow_plaintext", where, self.as_bool) or False,
        )
        for key in ("upstream_ca", "tls_cert"):
            path = getattr(listener, key)
            if path is not None and not path.exists():
                raise self.fail(where, f"{key} {path} does not exist")
        if listener.tls_cert is not None and tls == "none":
            raise self.fail(where, 'tls_cert is set but tls = "none"; set tls = "starttls" or "implicit"')
        if tls == "none" and not listener.allow_plaintext and not listener.loopback_only:
            raise self.fail(
                where,
                f"listen = {listen!r} is not a loopback address and tls = \"none\": passwords "
                "would cross the network in the clear; set allow_plaintext = true to accept that",
            )
        return listener

    def account(self, where: str, item: dict[str, Any], protocols: set[str]) -> AccountConfig:
        self.check_keys(
            where,
            item,
            {"username", "mailbox", "tenant", "client_id", "flow", "scopes", "client_secret",
             "client_secret_file", "certificate", "private_key", "authority", "redirect_uri"},
        )
        username = self.required(item, "username", where, str)
        where = f"[[account]] {username!r}"
        flow = self.choice(item, "flow", where, FLOWS)
        scopes = self.optional(item, "scopes", where, self.strings)
        if not scopes:
            scopes = _default_scopes(flow, protocols)
        authority = self.optional(item, "authority", where, self.as_str) or DEFAULT_AUTHORITY
        if not authority.startswith(("https://", "http://127.0.0.1", "http://localhost")):
            raise self.fail(where, f"authority = {authority!r}: expected an https:// URL")
        account = AccountConfig(
            username=username,
            tenant=self.required(item, "tenant", where, str),
            client_id=self.required(item, "client_id", where, str),
            flow=flow,
            mailbox=self.optional(item, "mailbox", where, self.as_str) or username,
            scopes=tuple(scopes),
            authority=authority.rstrip("/"),
            redirect_uri=self.optional(item, "redirect_uri", where, self.as_str),
            client_secret=self.optional(item, "client_secret", where, self.as_str),
            client_secret_file=self.optional(item, "client_secret_file", where, self.as_path),
            certificate=self.optional(item, "certificate", where, self.as_path),
            private_key=self.optional(item, "private_key", where, self.as_path),
        )
        if flow == "client_credentials":
            given = [k for k in ("client_secret", "client_secret_file", "certificate") if k in item]
            if len(given) != 1:
                raise self.fail(
                    where,
                    "client_credentials takes exactly one of client_secret, client_secret_file "
                    f"or certificate (found: {', '.join(given) or 'none'})",
                )
            if account.tenant.lower() in ("common", "organizations", "consumers"):
                raise self.fail(
                    where,
                    f"tenant = {account.tenant!r}: client_credentials needs the tenant's "
                    "domain or GUID (Entra ID answers AADSTS9001023 otherwise)",
                )
        return account

    # -- typed accessors --

    def check_keys(self, where: str, table: dict[str, Any], allowed: set[str]) -> None:
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise self.fail(
                where,
                f"unknown key {unknown[0]!r} (expected one of: {', '.join(sorted(allowed))})",
            )

    def table(self, data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(where, "expected a table")
        return value

    def array(self, data: dict[str, Any], key: str) -> list[dict[str, Any]]:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.fail(f"[[{key}]]", "expected an array of tables ([[" + key + "]])")
        return value

    def required(self, item: dict[str, Any], key: str, where: str, kind: type[T]) -> T:
        if key not in item:
            raise self.fail(where, f"missing key {key!r}")
        value = item[key]
        if not isinstance(value, kind) or (isinstance(value, str) and not value.strip()):
            raise self.fail(where, f"{key} must be a non-empty {kind.__name__}")
        return value

    def optional(
        self, item: dict[str, Any], key: str, where: str, convert: Callable[[Any, str], T]
    ) -> T | None:
        if key not in item:
            return None
        return convert(item[key], f"{where}: {key}")

    def choice(
        self, item: dict[str, Any], key: str, where: str, allowed: tuple[str, ...],
        default: str | None = None,
    ) -> str:
        if key not in item and default is not None:
            return default
        value = self.required(item, key, where, str)
        if value not in allowed:
            raise self.fail(where, f"{key} = {value!r}: expected one of {', '.join(allowed)}")
        return value

    def as_str(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{self.path}: {where}: expected a non-empty string")
        return value

    def as_bool(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{self.path}: {where}: expected true or false")
        return value

    def as_path(self, value: Any, where: str) -> Path:
        path = Path(self.as_str(value, where)).expanduser()
        return path if path.is_absolute() else self.base / path

    def strings(self, value: Any, where: str) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{self.path}: {where}: expected a list of strings")
        return value

    def networks(self, value: Any, where: str) -> tuple[Network, ...]:
        try:
            return tuple(ipaddress.ip_network(v, strict=False) for v in self.strings(value, where))
        except ValueError as e:
            raise ConfigError(f"{self.path}: {where}: {e}") from None

    def server_endpoint(self, where: str, listen: str) -> str:
        from twisted.internet import reactor
        from twisted.internet.endpoints import serverFromString

        if listen.startswith("ssl:"):
            raise self.fail(where, f'listen = {listen!r}: use tcp: with tls = "implicit" (and '
                            "tls_cert, or a generated certificate) for TLS from the first byte")
        listen = _default_interface(listen)
        try:
            serverFromString(reactor, listen)
        except Exception as e:  # each endpoint type raises its own kinds for bad arguments
            raise self.fail(
                where, f"listen = {listen!r} is not a Twisted server endpoint "
                f"(expected e.g. \"tcp:1143:interface=127.0.0.1\"): {e}"
            ) from None
        return listen

    def client_endpoint(self, where: str, upstream: str) -> str:
        from twisted.internet import reactor
        from twisted.internet.endpoints import clientFromString

        try:
            clientFromString(reactor, upstream)
        except Exception as e:  # each endpoint type raises its own kinds for bad arguments
            raise self.fail(
                where, f"upstream = {upstream!r} is not a Twisted client endpoint "
                f"(expected e.g. \"tls:outlook.office365.com:993\"): {e}"
            ) from None
        if not upstream.startswith(("tls:", "tcp:")):
            raise self.fail(where, f"upstream = {upstream!r}: expected tls:HOST:PORT or tcp:HOST:PORT")
        return upstream

    def upstream_security(self, where: str, protocol: str, upstream: str) -> None:
        """IMAP and POP3 have no STARTTLS step here: a tcp: upstream would send the access
        token in the clear."""
        if protocol in ("imap", "pop3") and not upstream.startswith("tls:"):
            raise self.fail(
                where, f"upstream = {upstream!r}: {protocol} needs tls:HOST:PORT (implicit TLS, "
                "e.g. tls:outlook.office365.com:993); the token must never cross in the clear"
            )


def endpoint_parts(description: str) -> tuple[str, list[str], dict[str, str]]:
    """Split a Twisted endpoint string into its type, positional and keyword parts."""
    from twisted.internet.endpoints import _parse

    # Twisted's own splitter, so its escaping rules (backslash before a colon) hold here too.
    args, kwargs = _parse(description)
    return str(args[0]), [str(a) for a in args[1:]], {str(k): str(v) for k, v in kwargs.items()}


def _default_interface(listen: str) -> str:
    """A tcp listener without interface= would bind every address; bind loopback instead."""
    kind, _, _ = listen.partition(":")
    if kind in ("tcp", "tcp6") and "interface=" not in listen:
        # Colons in an endpoint string's value are escaped with a backslash.
        return listen + ":interface=" + ("\\:\\:1" if kind == "tcp6" else "127.0.0.1")
    return listen


def _is_loopback_listen(listen: str) -> bool:
    kind, args, kwargs = endpoint_parts(listen)
    if kind not in ("tcp", "tcp6", "ssl"):
        return True  # unix sockets and the like never leave the machine
    try:
        address = ipaddress.ip_address(kwargs.get("interface", ""))
    except ValueError:
        return False  # a host name or "" (every interface)
    return address.is_loopback


def _default_scopes(flow: str, protocols: set[str]) -> list[str]:
    if flow == "client_credentials":
        return [APP_ONLY_SCOPE]
    return [DELEGATED_SCOPES[p] for p in PROTOCOLS if p in protocols] + ["offline_access"]
