"""The configuration as frozen dataclasses, with its names, defaults and default paths.

proxy.config.reader fills them from the TOML file; everything else only reads them.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from ..errors import ConfigError
from ..resources import GRAPH, GRAPH_URL, OUTLOOK, RESOURCES

APP_NAME = "xoauth2-proxy"
CONFIG_ENV = "XOAUTH2_PROXY_CONFIG"
DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
PROTOCOLS = ("imap", "pop3", "smtp")
FLOWS = ("device_code", "auth_code", "client_credentials")
TLS_MODES = ("none", "starttls", "implicit")
TLS_VERSIONS = ("1.0", "1.1", "1.2", "1.3")
STORE_BACKENDS = ("files", "postgresql")
BALANCER_PREFIX = "haproxy:"  # Twisted's PROXY protocol endpoint prefix
EXCHANGE_SCOPE_PREFIX = "https://outlook.office.com/"
DELEGATED_SCOPES = {
    "imap": EXCHANGE_SCOPE_PREFIX + "IMAP.AccessAsUser.All",
    "pop3": EXCHANGE_SCOPE_PREFIX + "POP.AccessAsUser.All",
    "smtp": EXCHANGE_SCOPE_PREFIX + "SMTP.Send",
}
APP_ONLY_SCOPE = "https://outlook.office365.com/.default"
LOOPBACK_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
ADMIN_PORT = 8025
DEFAULT_ADMIN_LISTEN = f"tcp:{ADMIN_PORT}:interface=127.0.0.1"
GRAPH_UPSTREAM = "graph"  # upstream = "graph": an smtp listener that sends through Microsoft Graph
# Exchange Online's default message size limit, and the highest an administrator can set.
DEFAULT_MAX_MESSAGE_MB = 35
MAX_MESSAGE_MB = 150

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
    proxy_protocol_from: tuple[Network, ...] = ()  # the balancers, for a haproxy: listener
    graph_url: str = GRAPH_URL  # upstream = "graph" only
    max_message_mb: int = DEFAULT_MAX_MESSAGE_MB  # upstream = "graph" only

    @property
    def name(self) -> str:
        return f"{self.protocol} {self.listen}"

    @property
    def behind_balancer(self) -> bool:
        """Connections come from a load balancer that names the device in a PROXY header."""
        return self.listen.startswith(BALANCER_PREFIX)

    @property
    def sends_through_graph(self) -> bool:
        return self.upstream == GRAPH_UPSTREAM

    @property
    def resource(self) -> str:
        """Which service its access tokens are for (proxy.resources)."""
        return GRAPH if self.sends_through_graph else OUTLOOK

    @property
    def max_message_size(self) -> int:
        """Bytes a Graph listener accepts per message (Exchange counts MB as MiB)."""
        return self.max_message_mb * 1024 * 1024

    @property
    def loopback_only(self) -> bool:
        """Listens on a loopback address only, so nothing it receives crossed a network. A
        balancer on this machine still forwards devices from elsewhere."""
        return not self.behind_balancer and _is_loopback_listen(self.listen)


@dataclass(frozen=True)
class StoreConfig:
    """[store]: where the accounts' encrypted records are kept."""

    path: Path  # the files backend's folder; generated TLS certificates live here too
    backend: str = "files"
    dsn: str | None = field(default=None, repr=False)  # may hold a database password
    dsn_file: Path | None = None

    def read_dsn(self) -> str:
        """The PostgreSQL connection string, from the config or from its file."""
        if self.dsn is not None:
            return self.dsn
        if self.dsn_file is None:
            raise ConfigError("[store]: the postgresql backend needs dsn or dsn_file")
        try:
            return self.dsn_file.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"[store]: cannot read dsn_file {self.dsn_file}: {e.strerror}") from None


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
    def delegate(self) -> str | None:
        """The user who signs in for another's mailbox (see delegate_of)."""
        return delegate_of(self.flow, self.username, self.mailbox)

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
    shutdown_grace_seconds: int = 10  # on stop, for open sessions to end before they are closed


# [limits] keys for which 0 makes sense (stop without waiting); every other one is at least 1.
LIMITS_ALLOWING_ZERO = frozenset({"shutdown_grace_seconds"})


@dataclass(frozen=True)
class AdminConfig:
    """[admin]: the admin page, /metrics and /healthz. Read at start; a reload keeps them."""

    listen: str = DEFAULT_ADMIN_LISTEN
    token_file: Path | None = None  # None: a random token, printed at start in the page address

    @property
    def loopback_only(self) -> bool:
        return _is_loopback_listen(self.listen)


@dataclass(frozen=True)
class Config:
    path: Path
    store_path: Path
    listeners: tuple[ListenerConfig, ...]
    accounts: dict[str, AccountConfig]
    limits: Limits = Limits()
    store: StoreConfig | None = None  # None: the files backend at store_path
    admin: AdminConfig | None = None

    @property
    def store_config(self) -> StoreConfig:
        return self.store or StoreConfig(self.store_path)

    @property
    def resources(self) -> tuple[str, ...]:
        """The services the listeners need tokens for, in proxy.resources order."""
        needed = {listener.resource for listener in self.listeners}
        return tuple(r for r in RESOURCES if r in needed)

    def account(self, username: str) -> AccountConfig:
        try:
            return self.accounts[username.lower()]
        except KeyError:
            raise ConfigError(
                f"{self.path}: no [[account]] with username = {username!r}"
            ) from None


def delegate_of(flow: str, username: str, mailbox: str) -> str | None:
    """`username` when a user signs in (a delegated flow) for a mailbox not the user's own, e.g.
    a shared one: Microsoft Graph then wants the .Shared permissions, and Exchange a Send As
    grant. None for the user's own mailbox and for client credentials (nobody signs in)."""
    if flow == "client_credentials" or mailbox.lower() == username.lower():
        return None
    return username


def default_config_path() -> Path:
    """--config is handled by the caller; then $XOAUTH2_PROXY_CONFIG, then the platform's."""
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def default_store_path() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME))


def endpoint_parts(description: str) -> tuple[str, list[str], dict[str, str]]:
    """Split a Twisted endpoint string into its type, positional and keyword parts."""
    from twisted.internet.endpoints import _parse

    # Twisted's own splitter, so its escaping rules (backslash before a colon) hold here too.
    args, kwargs = _parse(description)
    return str(args[0]), [str(a) for a in args[1:]], {str(k): str(v) for k, v in kwargs.items()}


def _is_loopback_listen(listen: str) -> bool:
    kind, args, kwargs = endpoint_parts(listen)
    if kind not in ("tcp", "tcp6", "ssl"):
        return True  # unix sockets and the like never leave the machine
    try:
        address = ipaddress.ip_address(kwargs.get("interface", ""))
    except ValueError:
        return False  # a host name or "" (every interface)
    return address.is_loopback


