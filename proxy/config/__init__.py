"""The configuration: frozen dataclasses (model) and the TOML file read into them (reader)."""

from .model import (
    APP_ONLY_SCOPE,
    BALANCER_PREFIX,
    DEFAULT_ADMIN_LISTEN,
    DEFAULT_AUTHORITY,
    DELEGATED_SCOPES,
    LOOPBACK_NETWORKS,
    AccountConfig,
    AdminConfig,
    Config,
    Limits,
    ListenerConfig,
    Network,
    StoreConfig,
    default_config_path,
    default_store_path,
    endpoint_parts,
)
from .reader import load_config, parse_config

__all__ = [
    "APP_ONLY_SCOPE", "BALANCER_PREFIX", "DEFAULT_ADMIN_LISTEN", "DEFAULT_AUTHORITY",
    "DELEGATED_SCOPES", "LOOPBACK_NETWORKS", "AccountConfig", "AdminConfig", "Config", "Limits",
    "ListenerConfig", "Network", "StoreConfig", "default_config_path", "default_store_path",
    "endpoint_parts", "load_config", "parse_config",
]
