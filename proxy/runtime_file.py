"""The runtime file: how `xoauth2-proxy reload` (and any local tool) finds a running proxy.

`serve` writes STORE/runtime.json (mode 0600, in the 0700 store folder, so only the proxy's
user can read it) with its process id, the address of its control endpoint (HTTP on a free
loopback port) and a random token that endpoint requires, as Jupyter does for its servers.
Windows has no SIGHUP; this works the same on every platform. The file is removed at a clean
stop; one left by a crash names a process that no longer answers.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .private_files import make_private_folder, write_atomically

FILE_NAME = "runtime.json"


@dataclass(frozen=True)
class RuntimeFile:
    pid: int
    control_url: str  # "http://127.0.0.1:PORT/"
    token: str = field(repr=False)
    config: str  # the configuration file the proxy reloads


def runtime_file_path(store_path: Path) -> Path:
    return store_path / FILE_NAME


def write_runtime_file(store_path: Path, info: RuntimeFile) -> None:
    store_path.parent.mkdir(parents=True, exist_ok=True)
    make_private_folder(store_path, tighten_existing=False)  # as the store itself does
    write_atomically(runtime_file_path(store_path), json.dumps(asdict(info)).encode())


def read_runtime_file(store_path: Path) -> RuntimeFile | None:
    """The running proxy's file, or None when there is none (or it is not one of ours)."""
    try:
        data = json.loads(runtime_file_path(store_path).read_text(encoding="utf-8"))
        return RuntimeFile(int(data["pid"]), str(data["control_url"]), str(data["token"]),
                           str(data["config"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_runtime_file(store_path: Path) -> None:
    """At a clean stop: only this process's file (another proxy may have started since)."""
    info = read_runtime_file(store_path)
    if info is not None and info.pid == os.getpid():
        with contextlib.suppress(OSError):
            os.unlink(runtime_file_path(store_path))
