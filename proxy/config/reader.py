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
from ..resources import (
    GRAPH,
    GRAPH_APP_SCOPE,
    GRAPH_SEND_SCOPES,
    GRAPH_SHARED_SCOPES,
    NAMES,
    resources_in,
)
from ..urls import secure_or_loopback, service_base_url
from .endpoints import client_endpoint, server_endpoint
from .model import (
    APP_ONLY_SCOPE,
    BALANCER_PREFIX,
    DEFAULT_ADMIN_LISTEN,
    DEFAULT_AUTHORITY,
    DEFAULT_MAX_MESSAGE_MB,
    DELEGATED_SCOPES,
    FLOWS,
    GRAPH_UPSTREAM,
    LIMITS_ALLOWING_ZERO,
    LOOPBACK_NETWORKS,
    MAX_MESSAGE_MB,
    PROTOCOLS,
    STORE_BACKENDS,
    TLS_MODES,
    TLS_VERSIONS,
    AccountConfig,
    AdminConfig,
    Config,
    Limits,
    ListenerConfig,
    Network,
    StoreConfig,
    default_store_path,
    delegate_of,
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
        store = self.store(self.table(data, "store", "[store]"))

        listeners = tuple(
            self.listener(f"[[listener]] #{i}", item)
            for i, item in enumerate(self.array(data, "listener"), 1)
        )
        if not listeners:
            raise self.fail("[[listener]]", "at least one listener is required")
        accounts: dict[str, AccountConfig] = {}
        for i, item in enumerate(self.array(data, "account"), 1):
            account = self.account(f"[[account]] #{i}", item, listeners)
            key = account.username.lower()
            if key in accounts:
                raise self.fail(f"[[account]] #{i}", f"username {account.username!r} appears twice")
            accounts[key] = account
        return Config(self.path, store.path, listeners, accounts, self.limits(data), store,
                      self.admin(data))

    def store(self, table: dict[str, Any]) -> StoreConfig:
        where = "[store]"
        self.check_keys(where, table, {"path", "backend", "dsn", "dsn_file"})
        store = StoreConfig(
            path=self.optional(table, "path", where, self.as_path) or default_store_path(),
            backend=self.choice(table, "backend", where, STORE_BACKENDS, default="files"),
            dsn=self.optional(table, "dsn", where, self.as_str),
            dsn_file=self.optional(table, "dsn_file", where, self.as_path),
        )
        if store.dsn is not None and store.dsn_file is not None:
            raise self.fail(where, "dsn and dsn_file are both set; keep one")
        if store.backend == "postgresql" and store.dsn is None and store.dsn_file is None:
            raise self.fail(where, 'backend = "postgresql" needs dsn = "postgresql://..." '
                            "or dsn_file = PATH (a file holding it)")
        return store

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
        return AdminConfig(server_endpoint(self.fail, "[admin]", listen, allow_ssl=True), token_file)

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
             "allow_from", "allow_plaintext", "proxy_protocol_from", "graph_url",
             "max_message_mb"},
        )
        protocol = self.choice(item, "protocol", where, PROTOCOLS)
        listen = server_endpoint(self.fail, where, self.required(item, "listen", where, str))
        upstream = self.required(item, "upstream", where, str)
        if upstream == GRAPH_UPSTREAM:
            graph = self.graph_settings(where, protocol, item)
        else:
            upstream = client_endpoint(self.fail, where, upstream)
            self.upstream_security(where, protocol, upstream)
            for key in ("graph_url", "max_message_mb"):
                if key in item:
                    raise self.fail(where, f'{key} is for upstream = "graph" only')
            graph = {}
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
            proxy_protocol_from=self.optional(
                item, "proxy_protocol_from", where, lambda v, w: self.networks(v, w)) or (),
            **graph,
        )
        self.balancers(where, listener, "proxy_protocol_from" in item)
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

    def balancers(self, where: str, listener: ListenerConfig, given: bool) -> None:
        """A PROXY header names any address its sender likes: only named balancers may send one."""
        if listener.behind_balancer and not listener.proxy_protocol_from:
            raise self.fail(where, f"listen = {listener.listen!r} takes the PROXY protocol: set "
                            'proxy_protocol_from = ["ADDRESS/32", ...] to the load balancers '
                            "(anyone else could claim any address)")
        if given and not listener.behind_balancer:
            raise self.fail(where, "proxy_protocol_from needs a listen address with the "
                            f'{BALANCER_PREFIX} prefix (e.g. "haproxy:tcp:1143:interface=...")')

    def graph_settings(self, where: str, protocol: str, item: dict[str, Any]) -> dict[str, Any]:
        """graph_url and max_message_mb of an smtp listener with upstream = "graph"."""
        if protocol != "smtp":
            raise self.fail(where, f'upstream = "graph" sends mail through Microsoft Graph, '
                            f"which only smtp listeners do; {protocol} needs tls:HOST:PORT")
        settings: dict[str, Any] = {}
        if "graph_url" in item:
            url = self.as_str(item["graph_url"], f"{where}: graph_url")
            try:
                settings["graph_url"] = service_base_url(url, "graph_url",
                                                         "https://graph.microsoft.com")
            except ValueError as e:
                raise self.fail(where, str(e)) from None
        size = item.get("max_message_mb", DEFAULT_MAX_MESSAGE_MB)
        if type(size) is not int or not 1 <= size <= MAX_MESSAGE_MB:
            raise self.fail(where, f"max_message_mb = {size!r}: expected a whole number from 1 "
                            f"to {MAX_MESSAGE_MB} (Exchange Online's highest limit)")
        settings["max_message_mb"] = size
        return settings

    def account(self, where: str, item: dict[str, Any],
                listeners: tuple[ListenerConfig, ...]) -> AccountConfig:
        self.check_keys(
            where,
            item,
            {"username", "mailbox", "tenant", "client_id", "flow", "scopes", "client_secret",
             "client_secret_file", "certificate", "private_key", "authority", "redirect_uri"},
        )
        username = self.required(item, "username", where, str)
        where = f"[[account]] {username!r}"
        flow = self.choice(item, "flow", where, FLOWS)
        mailbox = self.optional(item, "mailbox", where, self.as_str) or username
        scopes = self.optional(item, "scopes", where, self.strings)
        if not scopes:
            scopes = _default_scopes(flow, listeners, delegate_of(flow, username, mailbox))
        self.scopes_cover(where, scopes, listeners)
        authority = self.optional(item, "authority", where, self.as_str) or DEFAULT_AUTHORITY
        if not secure_or_loopback(authority):
            raise self.fail(where, f"authority = {authority!r}: expected an https:// URL")
        account = AccountConfig(
            username=username,
            tenant=self.required(item, "tenant", where, str),
            client_id=self.required(item, "client_id", where, str),
            flow=flow,
            mailbox=mailbox,
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

    def scopes_cover(self, where: str, scopes: list[str],
                     listeners: tuple[ListenerConfig, ...]) -> None:
        """Every service a listener needs has scopes: one token per service comes from them."""
        named = resources_in(scopes)
        for listener in listeners:
            if listener.resource not in named:
                example = ("https://graph.microsoft.com/Mail.Send" if listener.resource == GRAPH
                           else DELEGATED_SCOPES[listener.protocol])
                raise self.fail(where, f"scopes name nothing for {NAMES[listener.resource]}, "
                                f"which the {listener.name} listener needs (add e.g. {example}, "
                                "or remove scopes to get the defaults)")

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

    def upstream_security(self, where: str, protocol: str, upstream: str) -> None:
        """IMAP and POP3 have no STARTTLS step here: a tcp: upstream would send the access
        token in the clear."""
        if protocol in ("imap", "pop3") and not upstream.startswith("tls:"):
            raise self.fail(
                where, f"upstream = {upstream!r}: {protocol} needs tls:HOST:PORT (implicit TLS, "
                "e.g. tls:outlook.office365.com:993); the token must never cross in the clear"
            )


def _default_scopes(flow: str, listeners: tuple[ListenerConfig, ...],
                    delegate: str | None) -> list[str]:
    """What the listeners need: per relaying protocol its Exchange scope (client credentials:
    Exchange's .default), for Graph listeners Mail.Send and Mail.ReadWrite (.default; their
    .Shared forms when a user signs in for another's mailbox)."""
    relayed = {listener.protocol for listener in listeners if not listener.sends_through_graph}
    graph = any(listener.sends_through_graph for listener in listeners)
    if flow == "client_credentials":
        return [APP_ONLY_SCOPE] * bool(relayed) + [GRAPH_APP_SCOPE] * graph
    delegated = [DELEGATED_SCOPES[p] for p in PROTOCOLS if p in relayed]
    send = GRAPH_SHARED_SCOPES if delegate else GRAPH_SEND_SCOPES
    return delegated + list(send) * graph + ["offline_access"]
