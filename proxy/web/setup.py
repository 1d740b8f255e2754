"""The first-run setup: the form's answers become the configuration file (checked by the reader
before it is written: mode 0600, replaced atomically), which the runtime then applies without a
restart. If the listener cannot start, the file is removed again and the form shown again."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..config import Config, parse_config
from ..config.first_run import DEFAULT_PORTS, FirstRun, first_config_text
from ..config.model import FLOWS, PROTOCOLS
from ..errors import ConfigError
from ..glue.runtime import Runtime
from ..private_files import make_private_folder, write_atomically


def answers_from_form(form: dict[str, str], admin_listen: str) -> FirstRun:
    """The setup form's fields; ConfigError says which one is missing or wrong."""
    def text(name: str) -> str | None:
        value = form.get(name, "").strip()
        return value or None

    def required(name: str, what: str) -> str:
        value = text(name)
        if value is None:
            raise ConfigError(f"{what} is required")
        return value

    protocol = required("protocol", "the protocol")
    flow = required("flow", "the sign-in flow")
    if protocol not in PROTOCOLS or flow not in FLOWS:
        raise ConfigError("choose a protocol and a sign-in flow from the lists")
    port_text = text("port") or str(DEFAULT_PORTS[protocol])
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError("the port must be a number from 1 to 65535")
    secret = form.get("client_secret") or None
    if flow == "client_credentials" and secret is None:
        raise ConfigError("client credentials need the app's client secret (or, after the "
                          "setup, a certificate in the configuration file)")
    return FirstRun(
        protocol=protocol, port=int(port_text),
        username=required("username", "the user name"), tenant=required("tenant", "the tenant"),
        client_id=required("client_id", "the application (client) ID"), flow=flow,
        mailbox=text("mailbox"), client_secret=secret if flow == "client_credentials" else None,
        upstream=text("upstream"), upstream_ca=text("upstream_ca"),
        authority=text("authority"), admin_listen=admin_listen,
    )


async def apply_setup(runtime: Runtime, answers: FirstRun) -> Config:
    """Write the configuration and start it; ConfigError (nothing written) if either fails."""
    path = runtime.config.path
    text = first_config_text(answers)
    config = parse_config(text, path)
    await runtime.run_blocking(lambda: _write(path, text))
    try:
        await runtime.reload(config)
    except ConfigError:
        await runtime.run_blocking(lambda: _remove(path))
        raise
    return config


def _write(path: Path, text: str) -> None:
    if path.exists():
        raise ConfigError(f"{path} exists already; the setup never replaces a configuration")
    path.parent.parent.mkdir(parents=True, exist_ok=True)
    make_private_folder(path.parent, tighten_existing=False)
    write_atomically(path, text.encode("utf-8"))


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
