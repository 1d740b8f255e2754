"""`xoauth2-proxy reload`: ask the running proxy to re-read its configuration, on every platform.

The proxy for this configuration is found through the runtime file in its store folder; the
request goes to its control endpoint on loopback with the file's token. Exit 0 when the new
configuration is applied, 2 when the proxy refused it (the message names the file and the key;
the proxy keeps the old one), 1 when no proxy answers.
"""

from __future__ import annotations

import http.client
import json
from typing import Any, TextIO
from urllib.parse import urlsplit

from ..config import Config
from ..errors import ConfigError, ProxyError
from ..runtime_file import RuntimeFile, read_runtime_file, runtime_file_path
from . import EXIT_OK

TIMEOUT = 60.0  # a reload reads certificates and binds ports: seconds at most


def reload_running(config: Config, out: TextIO) -> int:
    info = read_runtime_file(config.store_path)
    if info is None:
        raise ProxyError(
            f"no running xoauth2-proxy found for this configuration (no "
            f"{runtime_file_path(config.store_path)}); start it with: xoauth2-proxy serve"
        )
    status, answer = control_request(info, "POST", "reload")
    if status == 200 and answer.get("ok"):
        print(f"reloaded {info.config}: {answer.get('changes')}", file=out)
        return EXIT_OK
    if status == 422:
        raise ConfigError(f"the running proxy (pid {info.pid}) kept its configuration: "
                          f"{answer.get('error')}")
    raise ProxyError(f"the running proxy (pid {info.pid}) answered {status}: "
                     f"{answer.get('error', 'no reason given')}")


def control_request(info: RuntimeFile, method: str, action: str) -> tuple[int, dict[str, Any]]:
    """One request to the control endpoint; ProxyError when nothing answers there."""
    url = urlsplit(info.control_url)
    # http.client, not requests: no web proxy from the environment may stand in between.
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=TIMEOUT)
    try:
        connection.request(method, f"/{action}", headers={"Authorization": f"Bearer {info.token}"})
        response = connection.getresponse()
        body = response.read()
    except OSError as e:
        raise ProxyError(
            f"the proxy for {info.config} (pid {info.pid}) does not answer at "
            f"{info.control_url} ({e}); is it still running?"
        ) from None
    finally:
        connection.close()
    try:
        answer = json.loads(body)
    except ValueError:
        answer = {}
    return response.status, answer if isinstance(answer, dict) else {}

