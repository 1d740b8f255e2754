"""`xoauth2-proxy account add | passwd | list | remove`: authorising accounts and keeping
their stored credentials."""

from __future__ import annotations

import sys
import time
from typing import TextIO

import requests

from ..account_state import local_time
from ..config import AccountConfig, Config
from ..entra.answers import TokenSet
from ..entra.client import EntraClient
from ..entra.prompts import needs_own_consent
from ..errors import WrongPassword
from ..resources import NAMES, OUTLOOK, resources_in
from ..store import AccountMeta, Secrets, Store
from ..tokens.authorisation import store_authorisation, tokens_while_consented, with_tokens
from . import EXIT_FAILED, EXIT_OK
from .passwords import PasswordSource

NEEDS_REAUTH = "needs re-authorisation"


def account_add(
    config: Config, account: AccountConfig, store: Store, ask: PasswordSource, no_browser: bool
) -> int:
    password = ask(f"New local password for {account.username}: ", True)
    client = EntraClient(account, requests.Session())
    resources = resources_in(account.scopes) or (OUTLOOK,)
    secrets, pending = Secrets(), resources
    if account.flow != "client_credentials":
        secrets = with_tokens(secrets, resources[0],
                              _sign_in(client, account, no_browser, resources[0]))
        pending = resources[1:]
    # One sign-in consents to everything with auth_code (the authorisation request names every
    # scope); without admin consent a device code sign-in is needed per resource.
    secrets, pending = tokens_while_consented(client, account, pending, secrets)
    while pending:
        print(f"{needs_own_consent(pending[0])}; one more sign-in asks for it.", flush=True)
        secrets = with_tokens(secrets, pending[0],
                              _sign_in(client, account, no_browser, pending[0]))
        secrets, pending = tokens_while_consented(client, account, pending[1:], secrets)
    store_authorisation(store, account, store.new_key(password), secrets)
    print(f"{account.username}: authorised ({account.flow}) for "
          f"{' and '.join(NAMES[r] for r in resources)}; credentials stored encrypted in "
          f"{store.location(account.username)}")
    print(f"Legacy clients log in as {account.username} with the local password just set.")
    return EXIT_OK


def _sign_in(client: EntraClient, account: AccountConfig, no_browser: bool,
             resource: str) -> TokenSet:
    """A person's sign-in; a device code is for `resource` alone, an authorisation request
    names every scope of the account."""
    if account.flow == "device_code":
        from ..entra.device_code import device_code_flow

        return device_code_flow(client, sys.stdout, resource=resource)
    from ..entra.auth_code import auth_code_flow

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
        token = "valid until " + local_time(expires)
    return state, token
