"""The proxy as a real subprocess: `python -m proxy --config FILE ...`, started and stopped by
the tests, its log kept in a file for assertions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .ports import wait_for_port


class ProxyProcess:
    def __init__(self, workdir: Path, config_text: str,
                 env: dict[str, str] | None = None, source: Path | None = None) -> None:
        """`env`: variables to set for the proxy beyond the test's own (TMPDIR, say); `source`:
        the folder whose `proxy` package runs (default: this checkout's)."""
        self.workdir = workdir
        self.extra_env = env or {}
        self.source = source or Path(__file__).resolve().parents[2]
        # `python -m` imports from the working folder first: run another source from there.
        self._cwd = source
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "config.toml"
        self.config.write_text(config_text)
        self.log_path = workdir / "proxy.log"
        self._process: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str, stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run one command (account add, list, ...) to completion."""
        return subprocess.run(
            [sys.executable, "-m", "proxy", "--config", str(self.config), *args],
            input=stdin, capture_output=True, text=True, timeout=timeout, env=self._env(),
            cwd=self._cwd,
        )

    def start(self, *wait_ports: int, verbose: bool = False, options: tuple[str, ...] = ()) -> None:
        """Start `serve` (with -v when `verbose`, and the global `options`) and wait until the
        given ports accept."""
        options = ("-v", *options) if verbose else options
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "proxy", "--config", str(self.config), *options, "serve"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self._env(),
                cwd=self._cwd,
            )
        try:
            for port in wait_ports:
                wait_for_port(port)
        except TimeoutError:
            self.stop()
            raise RuntimeError("the proxy did not start:\n" + self.log_text()) from None

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def send_signal(self, number: int) -> None:
        if self._process is None:
            raise RuntimeError("the proxy is not running")
        self._process.send_signal(number)

    def wait_for_exit(self, timeout: float) -> int:
        """The exit code, once `serve` has ended by itself (TimeoutExpired otherwise)."""
        if self._process is None:
            raise RuntimeError("the proxy was not started")
        code = self._process.wait(timeout=timeout)
        self._process = None
        return code

    def wait_for_log(self, text: str, timeout: float = 30, after: int = 0) -> str:
        """The log from offset `after` once it contains `text`; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.log_text()[after:]
            if text in log:
                return log
            if time.monotonic() > deadline:
                raise TimeoutError(f"{text!r} not in the proxy's log:\n{log}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, whatever the proxy was doing."""
        process = self._process
        if process is not None:
            process.kill()
            process.wait()
            self._process = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        """The running proxy's process id; RuntimeError when it is not running."""
        process = self._process
        if process is None or process.poll() is not None:
            raise RuntimeError("the proxy is not running")
        return process.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("XOAUTH2_PROXY_CONFIG", None)
        # Run the checkout's package (or `source`'s), whatever is installed.
        env["PYTHONPATH"] = str(self.source) + os.pathsep + env.get("PYTHONPATH", "")
        env.update(self.extra_env)
        return env
