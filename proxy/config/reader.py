"""Reading the TOML configuration file into the frozen dataclasses of proxy.config.model.

Every error names the file, the table and the key, and says what is expected; the caller turns
it into exit code 2.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ConfigError
from .model import (
    APP_ONLY_SCOPE,
    DEFAULT_ADMIN_LISTEN,
    DEFAULT_AUTHORITY,
    DELEGATED_SCOPES,
    FLOWS,
    LIMITS_ALLOWING_ZERO,
    LOOPBACK_NETWORKS,
    PROTOCOLS,
    TLS_MODES,
    TLS_VERSIONS,
    AccountConfig,
    AdminConfig,
    Config,
    Limits,
    ListenerConfig,
    Network,
    default_store_path,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


def load_config(path: Path) -> Config:
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such file; write one (see README) or pass --config PATH"
        ) from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 ({e.reason})") from None
    return parse_config(text, path)


def parse_config(text: str, path: Path) -> Config:
    """The configuration `text` would be as the file `path` (relative paths start from its
    folder), with the same checks and messages as load_config."""
    try:
        data = tomllib.loads(text)
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
        self.check_keys("top level", data, {"store", "listener", "account", "limits", "admin"})
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
        return Config(self.path, store_path, listeners, accounts, self.limits(data),
                      self.admin(data))

    def admin(self, data: dict[str, Any]) -> AdminConfig | None:
        if "admin" not in data:
            return None
        table = self.table(data, "admin", "[admin]")
        self.check_keys("[admin]", table, {"listen", "token_file"})
        listen = self.optional(table, "listen", "[admin]", self.as_str) or DEFAULT_ADMIN_LISTEN
        token_file = self.optional(table, "token_file", "[admin]", self.as_path)
        if token_file is not None and not token_file.is_file():
            raise self.fail("[admin]", f"token_file {token_file} does not exist")
        # ssl:PORT:privateKey=...: HTTPS for a page reached across a network.
        return AdminConfig(self.server_endpoint("[admin]", listen, allow_ssl=True), token_file)

    def limits(self, data: dict[str, Any]) -> Limits:
        table = self.table(data, "limits", "[limits]")
        fields = Limits.__dataclass_fields__
        self.check_keys("[limits]", table, set(fields))
        values = {}
        for key, value in table.items():
            least = 0 if key in LIMITS_ALLOWING_ZERO else 1
            if type(value) is not int or value < least:
                raise self.fail("[limits]", f"{key} must be a whole number of at least {least}")
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

    def server_endpoint(self, where: str, listen: str, allow_ssl: bool = False) -> str:
        from twisted.internet import reactor
        from twisted.internet.endpoints import serverFromString

        if listen.startswith("ssl:") and not allow_ssl:
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


def _default_interface(listen: str) -> str:
    """A tcp listener without interface= would bind every address; bind loopback instead."""
    kind, _, _ = listen.partition(":")
    if kind in ("tcp", "tcp6", "ssl") and "interface=" not in listen:
        # Colons in an endpoint string's value are escaped with a backslash.
        return listen + ":interface=" + ("\\:\\:1" if kind == "tcp6" else "127.0.0.1")
    return listen


def _default_scopes(flow: str, protocols: set[str]) -> list[str]:
    if flow == "client_credentials":
        return [APP_ONLY_SCOPE]
    return [DELEGATED_SCOPES[p] for p in PROTOCOLS if p in protocols] + ["offline_access"]
