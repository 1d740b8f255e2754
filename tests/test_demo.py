"""`xoauth2-proxy demo`: the self-contained demonstration, run as a user runs it."""

from __future__ import annotations

import imaplib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECK_LINES = (
    "ok    IMAP  LOGIN demo@example.com",
    "ok    IMAP  LIST shows INBOX",
    "ok    IMAP  SELECT INBOX: 3 messages; FETCH 1 (RFC822)",
    "ok    IMAP  a wrong local password is refused ([AUTHENTICATIONFAILED])",
    "ok    POP3  USER/PASS demo@example.com",
    "ok    POP3  STAT: 3 messages",
    "ok    SMTP  AUTH LOGIN demo@example.com (235)",
    "ok    SMTP  MAIL FROM, RCPT TO, DATA accepted",
    "ok    SMTP  the demo mail server stored",
    "ok    SCAN  AUTH LOGIN demo@example.com on the Graph listener",
    "ok    SCAN  the scan \"Scan from the demo self-test",
    "self-test passed",
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("XOAUTH2_PROXY_CONFIG", None)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _default_sigint() -> None:
    # A shell's background job inherits SIGINT ignored; Ctrl-C is what this test stands for.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_self_test_passes_every_check() -> None:
    """`demo --self-test` drives IMAP, POP3, SMTP and a scan through Graph via the proxy and
    exits 0."""
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "demo", "--self-test"],
        capture_output=True, text=True, timeout=60, env=_env(), cwd=ROOT,
    )
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    lines = output.splitlines()
    for expected in CHECK_LINES:
        assert any(line.startswith(expected) for line in lines), (expected, output)
    assert not any(line.startswith("FAIL") for line in lines), output
    folder = re.search(r"Demo stopped; removed (\S+)", output)
    assert folder is not None and not Path(folder.group(1)).exists()


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_demo_serves_until_stopped_then_cleans_up(stop_signal: signal.Signals) -> None:
    """`demo` prints its ports, serves a real IMAP login, stops cleanly on Ctrl-C or SIGTERM
    and removes its temporary folder."""
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy", "demo"], stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True, env=_env(), cwd=ROOT,
        preexec_fn=_default_sigint,
    )
    try:
        assert process.stdout is not None
        printed: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            printed.append(line)
            if "Press Ctrl-C to stop" in line:
                break
        text = "".join(printed)
        port = re.search(r"curl imap://127\.0\.0\.1:(\d+)/ --user demo@example\.com:demo", text)
        folder = re.search(r"^Demo folder: (\S+)$", text, re.MULTILINE)
        assert port is not None and folder is not None, text
        assert Path(folder.group(1), "config.toml").is_file()

        with imaplib.IMAP4("127.0.0.1", int(port.group(1)), timeout=10) as imap:
            imap.login("demo@example.com", "demo")
            status, data = imap.select("INBOX")
            assert status == "OK" and int(data[0] or 0) >= 3
            imap.logout()

        process.send_signal(stop_signal)
        rest, _ = process.communicate(timeout=20)
        assert process.returncode == 0, text + rest
        assert f"Demo stopped; removed {folder.group(1)}" in rest
        assert not Path(folder.group(1)).exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
