"""Command line: parse, start logging, run the command, turn errors into exit codes."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

from . import __version__
from .commands import EXIT_FAILED, EXIT_USAGE, accounts
from .commands.passwords import password_source
from .config import Config, default_config_path, load_config
from .config.model import CONFIG_ENV
from .errors import ConfigError, ProxyError, UsageError
from .logs import FORMATS, start_logging
from .store import Store, open_store


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xoauth2-proxy",
        description="Lets password-only mail clients use Microsoft 365 through OAuth2.",
    )
    parser.add_argument("--config", type=Path, help="configuration file (default: "
                        "$XOAUTH2_PROXY_CONFIG, then the per-user config folder)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    parser.add_argument("--log-format", choices=FORMATS, default="text",
                        help="text lines (the default) or one JSON object per line")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("serve", help="run every listener in the config (the default)")
    commands.add_parser("reload", help="make the running proxy re-read its config "
                        "(like SIGHUP, on every platform)")
    commands.add_parser("health", help="exit 0 when every configured listener accepts a "
                        "connection and greets")

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
    store = commands.add_parser("store", help="the credential store as a whole")
    store_actions = store.add_subparsers(dest="action", metavar="ACTION", required=True)
    copy = store_actions.add_parser(
        "copy", help="copy every account, still encrypted, between the files under [store] "
        "path and the database of [store] dsn")
    copy.add_argument("--to", choices=("postgresql", "files"), required=True,
                      help="where the accounts go (they come from the other one)")
    demo = commands.add_parser("demo", help="a self-contained local demonstration "
                               "(no Microsoft account needed)")
    demo.add_argument("--self-test", action="store_true",
                      help="drive the demo with scripted clients; exit 0 when all checks pass")
    return parser


def main(argv: list[str] | None = None) -> NoReturn:
    args = build_parser().parse_args(argv)
    # The self-test's check lines say what happened; the log adds only warnings and errors.
    quiet = args.command in ("account", "store", "reload", "health") or (
        args.command == "demo" and args.self_test)
    start_logging(verbose=args.verbose, quiet=quiet, log_format=args.log_format)
    try:
        if args.command == "demo":  # needs no config file: it writes its own
            from .demo import run_demo

            code = run_demo(self_test=args.self_test)
        elif args.command in (None, "serve") and _first_run(args.config):
            from .commands.serve import serve
            from .config.first_run import first_run_config

            code = serve(first_run_config(default_config_path()), first_run=True)
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


def _first_run(explicit: Path | None) -> bool:
    """`serve` with no configuration file at the default path: the admin page offers the setup.
    A path named by --config or $XOAUTH2_PROXY_CONFIG must exist (scripts expect exit 2)."""
    return explicit is None and not os.environ.get(CONFIG_ENV) and not default_config_path().exists()


def _dispatch(args: argparse.Namespace, config: Config) -> int:
    if args.command in (None, "serve"):
        from .commands.serve import serve

        return serve(config)
    if args.command == "reload":
        from .commands.reload import reload_running

        return reload_running(config, sys.stdout)
    if args.command == "health":
        from .commands.health import check_health

        return check_health(config, sys.stdout)
    if args.command == "store":
        from .commands.store_copy import store_copy

        return store_copy(config, args.to, sys.stdout)
    store = open_store(config)
    try:
        return _account_action(args, config, store)
    finally:
        store.close()


def _account_action(args: argparse.Namespace, config: Config, store: Store) -> int:
    if args.action == "list":
        return accounts.account_list(config, store, sys.stdout)
    account = config.account(args.user)
    ask = password_source(getattr(args, "password_stdin", False))
    if args.action == "add":
        return accounts.account_add(config, account, store, ask, args.no_browser)
    if args.action == "passwd":
        return accounts.account_passwd(account, store, ask)
    if args.action == "remove":
        return accounts.account_remove(account, store)
    if args.action == "check":
        from .commands.check import check_account

        return check_account(config, account, store, ask("Local password: ", False), sys.stdout)
    raise UsageError(f"unknown action {args.action}")
