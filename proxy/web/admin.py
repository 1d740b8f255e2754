"""Starting and stopping the admin page's listener ([admin] listen; on the first run 8025 on
loopback, or a free port when that one is taken) with its token."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.web import resource

from ..config import AdminConfig
from ..errors import ConfigError
from ..glue.runtime import Runtime
from .auth import TOKEN_CHARACTERS
from .http import QuietSite
from .site import AdminPage, AdminResource

log = Logger(namespace="xoauth2-proxy")

MIN_TOKEN = 16
FREE_LOOPBACK_PORT = "tcp:0:interface=127.0.0.1"


@dataclass
class RunningAdmin:
    port: IListeningPort
    url: str  # "http://127.0.0.1:8025/", without the token
    page: AdminPage
    token: str = field(repr=False)
    token_from_file: bool
    config: AdminConfig  # as it runs: on the first run maybe another port than asked for

    @property
    def url_with_token(self) -> str:
        return f"{self.url}?token={self.token}"

    async def stop(self) -> None:
        self.page.flows.stop()
        await defer.maybeDeferred(self.port.stopListening)


def read_token(path: Path) -> str:
    """The token in `token_file` (blocking: a few bytes, read once at start)."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"[admin] token_file {path}: cannot read it ({e})") from None
    if len(token) < MIN_TOKEN or not TOKEN_CHARACTERS.fullmatch(token):
        raise ConfigError(f"[admin] token_file {path}: expected one line of {MIN_TOKEN} to 512 "
                          "characters from A-Z a-z 0-9 . _ ~ + / = -")
    return token


async def start_admin(reactor: Any, runtime: Runtime, admin: AdminConfig,
                      first_run: bool) -> RunningAdmin:
    """Listen for the admin page; ConfigError when its address cannot be used."""
    token = read_token(admin.token_file) if admin.token_file else secrets.token_urlsafe(32)
    site = QuietSite(resource.Resource())  # type: ignore[no-untyped-call]
    fell_back = False
    try:
        port = await serverFromString(reactor, admin.listen).listen(site)
    except Exception as e:  # CannotListenError, or an endpoint's own errors
        if not first_run:
            raise ConfigError(f"[admin] listen = {admin.listen!r}: cannot listen there: "
                              f"{getattr(e, 'socketError', None) or e}") from None
        port = await serverFromString(reactor, FREE_LOOPBACK_PORT).listen(site)
        fell_back = True
    address = port.getHost()
    number = int(getattr(address, "port", 0))
    if fell_back:  # what the setup page writes into [admin] listen, so a reload sees no change
        admin = replace(admin, listen=f"tcp:{number}:interface=127.0.0.1")
    host = str(getattr(address, "host", "127.0.0.1"))
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    scheme = "https" if admin.listen.startswith("ssl:") else "http"
    shown = f"[{host}]" if ":" in host else host
    page = AdminPage(runtime, token, number, setup_pending=first_run)
    site.resource = AdminResource(page)
    if not admin.loopback_only and scheme == "http":
        log.warn("the admin page listens on {listen} without TLS: its token crosses the network "
                 "in the clear; prefer loopback (and an SSH tunnel) or an ssl: endpoint",
                 listen=admin.listen, event="admin_plaintext")
    return RunningAdmin(port, f"{scheme}://{shown}:{number}/", page, token,
                        admin.token_file is not None, admin)
