"""The first run: `serve` without a configuration file, and the file its setup page writes.

This is the only time the proxy writes its configuration. The text explains itself to whoever
edits it next; the reader checks it before it is written (proxy.config.reader.parse_config).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from .model import (
    DEFAULT_ADMIN_LISTEN,
    DEFAULT_AUTHORITY,
    AdminConfig,
    Config,
    default_store_path,
)

DEFAULT_PORTS = {"imap": 1143, "pop3": 1110, "smtp": 1587}
DEFAULT_UPSTREAMS = {
    "imap": "tls:outlook.office365.com:993",
    "pop3": "tls:outlook.office365.com:995",
    "smtp": "tcp:smtp.office365.com:587",
}


def first_run_config(path: Path) -> Config:
    """What runs before the setup: no listener, no account, the admin page."""
    return Config(path, default_store_path(), (), {}, admin=AdminConfig())


@dataclass(frozen=True)
class FirstRun:
    """The setup page's answers."""

    protocol: str  # imap | pop3 | smtp
    port: int
    username: str
    tenant: str
    client_id: str
    flow: str
    mailbox: str | None = None
    client_secret: str | None = None
    upstream: str | None = None  # None: Microsoft 365's server for the protocol
    upstream_ca: str | None = None
    authority: str | None = None
    admin_listen: str = DEFAULT_ADMIN_LISTEN


def first_config_text(answers: FirstRun, written_at: float | None = None) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(written_at or time.time()))
    protocol = answers.protocol
    lines = [
        f"# xoauth2-proxy configuration, written by the setup page on {when}.",
        "# The proxy never rewrites this file. Edit it, then reload: the admin page's Reload",
        "# button, `xoauth2-proxy reload`, or SIGHUP. The README explains every key.",
        "",
        "# The admin page, /metrics and /healthz (loopback only). Without token_file, a new",
        "# random token is printed at every start, in the page's address.",
        "[admin]",
        f"listen = {_string(answers.admin_listen)}",
        '# token_file = "/etc/xoauth2-proxy/admin-token"',
        "",
        f"# Where devices connect with {protocol.upper()} and their local password (this machine",
        "# only; README, \"Running on a LAN\", shows how to serve a network).",
        "[[listener]]",
        f"protocol = {_string(protocol)}",
        f"listen = {_string(f'tcp:{answers.port}:interface=127.0.0.1')}",
        "# The Microsoft 365 server the proxy signs in to for them, over verified TLS.",
        f"upstream = {_string(answers.upstream or DEFAULT_UPSTREAMS[protocol])}",
    ]
    if answers.upstream_ca:
        lines += ["# The CAs that upstream's certificate is checked against, instead of the "
                  "system's.", f"upstream_ca = {_string(answers.upstream_ca)}"]
    lines += [
        "",
        "# The account devices log in as. Its local password is set when it is authorised",
        "# (the admin page, or `xoauth2-proxy account add USER`), and never stored here.",
        "[[account]]",
        f"username = {_string(answers.username)}",
    ]
    if answers.mailbox and answers.mailbox.lower() != answers.username.lower():
        lines.append(f"mailbox = {_string(answers.mailbox)}  # the mailbox it signs in to")
    lines += [
        f"tenant = {_string(answers.tenant)}",
        f"client_id = {_string(answers.client_id)}  # the app registration in Entra ID",
        f"flow = {_string(answers.flow)}  # device_code | auth_code | client_credentials",
    ]
    if answers.client_secret:
        lines.append(f"client_secret = {_string(answers.client_secret)}  # only this file's "
                     "owner can read it; client_secret_file works too")
    if answers.authority and answers.authority.rstrip("/") != DEFAULT_AUTHORITY:
        lines.append(f"authority = {_string(answers.authority)}")
    return "\n".join(lines) + "\n"


def _string(value: str) -> str:
    """A TOML basic string: JSON's escapes are all valid TOML escapes."""
    return json.dumps(value)
