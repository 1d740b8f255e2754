"""Where the account commands get a local password: standard input or the terminal."""

from __future__ import annotations

import getpass
import sys
from collections.abc import Callable

from ..errors import UsageError

PasswordSource = Callable[[str, bool], str]  # (prompt, confirm) -> password


def password_source(from_stdin: bool) -> PasswordSource:
    """--password-stdin reads one line per password; otherwise the terminal asks (not echoed)."""
    if from_stdin:
        return lambda prompt, confirm: _read_stdin_line()
    return _ask_password


def _read_stdin_line() -> str:
    line = sys.stdin.readline()
    if not line:
        raise UsageError("--password-stdin: standard input ended before a password line")
    password = line.rstrip("\r\n")
    if not password:
        raise UsageError("--password-stdin: the password line is empty")
    return password


def _ask_password(prompt: str, confirm: bool) -> str:
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask for the password; use --password-stdin")
    while True:
        password = getpass.getpass(prompt)
        if not password:
            print("The password must not be empty.", file=sys.stderr)
            continue
        if not confirm or getpass.getpass("Again: ") == password:
            return password
        print("The two passwords differ; try again.", file=sys.stderr)
