"""Servers the benchmark runs as subprocesses beside Dovecot and this proxy: the light IMAP
upstream and email-oauth2-proxy (`emailproxy`), each with its own log file, on free ports of
127.0.0.1, stopped with SIGTERM (then SIGKILL) whatever happens."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.certs import TestCA
from tests.support.ports import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]


class Subprocess:
    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = env
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, *ports: int) -> None:
        """Start it and wait until every one of `ports` accepts connections."""
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.env, cwd=ROOT, start_new_session=True,
            )
        try:
            for port in ports:
                wait_for_port(port, timeout=30)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"{self.name} did not start:\n{self.log_tail()}") from None

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    @property
    def pid(self) -> int:
        process = self._process
        if process is None or process.poll() is not None:
            raise RuntimeError(f"{self.name} is not running:\n{self.log_tail()}")
        return process.pid

    def log_tail(self, size: int = 2000) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-size:]


class LightImap(Subprocess):
    """tests/bench/light_imap.py over TLS with a certificate from `ca`, checking tokens with `jwt_key`."""

    def __init__(self, workdir: Path, ca: TestCA, jwt_key: bytes) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        cert, key = ca.issue(workdir, "light-imap", ["127.0.0.1", "localhost"])
        key_file = workdir / "jwt.key"
        key_file.write_bytes(jwt_key)
        key_file.chmod(0o600)
        self.port = free_port()
        argv = [sys.executable, "-m", "tests.bench.light_imap", "--port", str(self.port),
                "--cert", str(cert), "--key", str(key), "--jwt-key-file", str(key_file)]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        super().__init__("the light IMAP server", argv, workdir / "light-imap.log", env)

    def start(self, *ports: int) -> None:
        super().start(self.port, *ports)


def emailproxy_config(servers: list[tuple[str, int, int]], accounts: list[dict[str, str]]) -> str:
    """emailproxy's INI config: `servers` as (IMAP|POP|SMTP, local port, upstream port) on
    127.0.0.1 (SMTP upstreams get STARTTLS, the others implicit TLS); `accounts` as the options
    of one [USER] section each, `username` naming it."""
    text = ""
    for kind, local_port, upstream_port in servers:
        text += (f"[{kind}-{local_port}]\nlocal_address = 127.0.0.1\nserver_address = 127.0.0.1\n"
                 f"server_port = {upstream_port}\n")
        if kind == "SMTP":
            text += "server_starttls = True\n"
        text += "\n"
    for account in accounts:
        options = dict(account)
        text += f"[{options.pop('username')}]\n"
        text += "".join(f"{key} = {value}\n" for key, value in options.items()) + "\n"
    return text


class EmailProxy(Subprocess):
    """email-oauth2-proxy run headless (`--no-gui`) from its own virtual environment, trusting
    the test CA through SSL_CERT_FILE."""

    def __init__(self, executable: Path, workdir: Path, config_text: str, ca_file: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "emailproxy.config"
        self.config.write_text(config_text)
        argv = [str(executable), "--no-gui", "--config-file", str(self.config),
                "--log-file", str(workdir / "emailproxy-own.log")]
        env = dict(os.environ, SSL_CERT_FILE=str(ca_file))
        super().__init__("emailproxy", argv, workdir / "emailproxy.log", env)


def emailproxy_version(executable: Path) -> str:
    result = subprocess.run([str(executable), "--version"], capture_output=True, text=True,
                            timeout=60, check=False)
    return (result.stdout or result.stderr).strip().splitlines()[-1] if result.returncode == 0 else "?"
