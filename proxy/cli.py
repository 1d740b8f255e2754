"""Command line: serve, and the account commands an administrator runs."""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TextIO

import requests

from . import __version__
from .config import AccountConfig, Config, default_config_path, load_config
from .errors import ConfigError, ProxyError, WrongPassword
from .logs import start_logging
from .oauth import EntraClient, TokenSet
from .store import AccountMeta, Secrets, Store

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xoauth2-proxy",
        description="Lets password-only mail clients use Microsoft 365 through OAuth2.",
    )
    parser.add_argument("--config", type=Path, help="configuration file (default: "
                        "$XOAUTH2_PROXY_CONFIG, then the per-user config folder)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("serve", help="run every listener in the config (the default)")

    account = commands.add_parser("account", help="authorise and manage accounts")
    actions = account.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="authorise USER, set its local password, store it")
    add.add_argument("user")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the new local password from the first line of standard input")
    add.add_argument("--no-browser", action="store_true",
                     help="auth_code: do not open a browser; paste the final redirect URL")
    passwd = actions.add_parser("passwd", help="change the local password of USER")
    passwd.add_argument("user")
    passwd.add_argument("--password-stdin", action="store_true",
                        help="read the old password, then the new one, from standard input")
    actions.add_parser("list", help="accounts, their flow, token state and expiry")
    remove = actions.add_parser("remove", help="forget the stored credentials of USER")
    remove.add_argument("user")
    check = actions.add_parser("check", help="sign in upstream on every listener, end to end")
    check.add_argument("user")
    check.add_argument("--password-stdin", action="store_true",
                       help="read the local password from the first line of standard input")
    demo = commands.add_parser("demo", help="a self-contained local demonstration "
                               "(no Microsoft account needed)")
    demo.add_argument("--self-test", action="store_true",
                      help="drive the demo with scripted clients; exit 0 when all checks pass")
    return parser


def main(argv: list[str] | None = None) -> NoReturn:
    args = build_parser().parse_args(argv)
    # The self-test's check lines say what happened; the log adds only warnings and errors.
    quiet = args.command == "account" or (args.command == "demo" and args.self_test)
    start_logging(verbose=args.verbose, quiet=quiet)
    try:
        if args.command == "demo":  # needs no config file: it writes its own
            from .demo import run_demo

            code = run_demo(self_test=args.self_test)
        else:
            config = load_config(args.config or default_config_path())
            code = _dispatch(args, config)
    except (ConfigError, UsageError) as e:
        print(f"xoauth2-proxy: {e}", file=sys.stderr)
        code = EXIT_USAGE
    except ProxyError as e:
        print(f"xoauth2-proxy: {e.message}", file=sys.stderr)
        code = EXIT_FAILED
    except KeyboardInterrupt:
        code = EXIT_FAILED
    sys.exit(code)


def _dispatch(args: argparse.Namespace, config: Config) -> int:
    if args.command in (None, "serve"):
        from .serve import serve

        return serve(config)
    store = Store(config.store_path)
    if args.action == "list":
        return account_list(config, store, sys.stdout)
    account = config.account(args.user)
    if args.action == "add":
        return account_add(config, account, store, _password_source(args), args.no_browser)
    if args.action == "passwd":
        return account_passwd(account, store, _password_source(args))
    if args.action == "remove":
        return account_remove(account, store)
    if args.action == "check":
        from .check import check_account

        password = _password_source(args)("Local password: ", False)
        return check_account(config, account, store, password, sys.stdout)
    raise UsageError(f"unknown action {args.action}")


# -- passwords --

PasswordSource = Callable[[str, bool], str]  # (prompt, confirm) -> password


def _password_source(args: argparse.Namespace) -> PasswordSource:
    if args.password_stdin:
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


# -- account commands --


def account_add(
    config: Config, account: AccountConfig, store: Store, ask: PasswordSource, no_browser: bool
) -> int:
    password = ask(f"New local password for {account.username}: ", True)
    client = EntraClient(account, requests.Session())
    tokens = _authorise(client, account, no_browser)
    key = store.new_key(password)
    meta = AccountMeta(username=account.username, mailbox=account.mailbox, flow=account.flow)
    secrets = Secrets(tokens.refresh_token, tokens.access_token, tokens.expires_at)
    store.save(account.username, key, secrets, meta)
    print(f"{account.username}: authorised ({account.flow}); credentials stored encrypted in "
          f"{store.path(account.username)}")
    print(f"Legacy clients log in as {account.username} with the local password just set.")
    return EXIT_OK


def _authorise(client: EntraClient, account: AccountConfig, no_browser: bool) -> TokenSet:
    if account.flow == "client_credentials":
        return client.client_credentials()
    if account.flow == "device_code":
        from .authorise import device_code_flow

        return device_code_flow(client, sys.stdout)
    from .authorise import auth_code_flow

    return auth_code_flow(client, account, sys.stdout, sys.stdin, open_browser=not no_browser)


def account_passwd(account: AccountConfig, store: Store, ask: PasswordSource) -> int:
    old = ask(f"Current local password for {account.username}: ", False)
    new = ask(f"New local password for {account.username}: ", True)
    try:
        store.change_password(account.username, old, new)
    except WrongPassword:
        print(f"xoauth2-proxy: wrong current password for {account.username}; nothing changed",
              file=sys.stderr)
        return EXIT_FAILED
    print(f"{account.username}: local password changed")
    return EXIT_OK


def account_remove(account: AccountConfig, store: Store) -> int:
    if store.remove(account.username):
        print(f"{account.username}: stored credentials removed")
        return EXIT_OK
    print(f"xoauth2-proxy: {account.username} has no stored credentials", file=sys.stderr)
    return EXIT_FAILED


def account_list(config: Config, store: Store, out: TextIO) -> int:
    stored = {meta.username.lower(): meta for meta in store.list_meta()}
    rows = [("USER", "FLOW", "MAILBOX", "STATE", "ACCESS TOKEN")]
    for name, account in sorted(config.accounts.items()):
        meta = stored.pop(name, None)
        rows.append((account.username, account.flow, account.mailbox, *_describe(meta)))
    for meta in stored.values():  # stored, but no longer in the config
        rows.append((meta.username, meta.flow, meta.mailbox, "not in config", "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip() + "\n")
    for row in rows[1:]:
        if row[3] == NEEDS_REAUTH:
            out.write(f"{row[0]}: Microsoft refused its stored sign-in; "
                      f"run: xoauth2-proxy account add {row[0]}\n")
    return EXIT_OK


NEEDS_REAUTH = "needs re-authorisation"


def _describe(meta: AccountMeta | None) -> tuple[str, str]:
    if meta is None:
        return "not added", "-"
    state = NEEDS_REAUTH if meta.state == "needs_reauth" else "ok"
    expires = meta.access_expires_at
    if expires is None:
        token = "none"
    elif expires <= time.time():
        token = "expired (renewed at next login)"
    else:
        token = "valid until " + time.strftime("%Y-%m-%d %H:%M", time.localtime(expires))
    return state, token
