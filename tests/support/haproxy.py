"""A real HAProxy (Debian's package) in front of proxy instances, in TCP mode with the PROXY
protocol v2 towards them: its config written to a temporary folder, checked with `haproxy -c`,
run in the foreground and stopped by the tests."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

from tests.support.ports import free_port, wait_for_port

PACKAGE = "haproxy"


def haproxy_available() -> str | None:
    if shutil.which("haproxy") is None:
        return f"haproxy is not installed (apt-get install {PACKAGE})"
    return None


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    """`haproxy -c -f PATH`: HAProxy's own validation of a config file."""
    return subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True,
                          timeout=30)


class HAProxy:
    """Listens on 127.0.0.1:port and sends each connection, round robin, to `backends`."""

    def __init__(self, workdir: Path, backends: list[int]) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = workdir / "haproxy.cfg"
        self.log_path = workdir / "haproxy.log"
        servers = "".join(f"    server proxy{n} 127.0.0.1:{port} send-proxy-v2\n"
                          for n, port in enumerate(backends, 1))
        self.config.write_text(f"""global
    maxconn 2000

defaults
    mode tcp
    timeout connect 5s
    timeout client 120s
    timeout server 120s

frontend mail
    bind 127.0.0.1:{self.port}
    default_backend proxies

backend proxies
    balance roundrobin
{servers}""")
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        checked = check_config(self.config)
        if checked.returncode != 0:
            raise RuntimeError(f"haproxy -c refused its config: {checked.stderr}")
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(["haproxy", "-db", "-f", str(self.config)],
                                             stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL)
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise RuntimeError("HAProxy did not start:\n" + self.log_path.read_text()) from None

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
