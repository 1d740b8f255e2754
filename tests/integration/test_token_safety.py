"""Tokens that are never lost: a refresh storm, refresh token rotation across restarts and
processes, and kill -9 during refreshes, through proxy subprocesses to the real Dovecot.

These tests run their own fake Entra ID (strict rotation where the test says so: an old refresh
token is refused once exchanged) and their own proxy processes; only Dovecot is shared.

What the real Entra ID does with a rotated refresh token
--------------------------------------------------------
Every refresh answer carries a new refresh token, but Microsoft's documentation says "The
Microsoft identity platform doesn't revoke old refresh tokens when used to fetch new access
tokens" (learn.microsoft.com/entra/identity-platform/refresh-tokens): the old one stays valid
until its own 90-day inactivity expiry (or a revocation). The fake's default
(invalidate_rotated_refresh_tokens=False) behaves like that; True is a stricter server (RFC 9700
refresh token rotation with reuse detection, as some other providers do it).

The crash window
----------------
The proxy saves the rotated refresh token (atomic replace, fsync) before it uses the new access
token, so a crash leaves either the old or the new token set on disk, always decryptable. But
there is an unavoidable window: after the server has issued the new refresh token and before
the proxy has written it (the answer in flight, being parsed, the file being written), the new
token exists only in the server's answer. A kill -9 there keeps the *old* token set. With the
real Entra ID that is harmless: the old refresh token still works, and the next refresh simply
rotates again (test_crash_in_the_rotation_window[entra], test_kill_9_loop). With strict
rotation the old token is dead and the account needs `account add` (the [strict] case pins
that down). No client can close this window: the same happens without any crash when the answer
is lost on the network after the server processed the request. What the proxy guarantees is
that such a loss is reported plainly (NO [AUTHENTICATIONFAILED] naming `account add`, and
`account list` says so), never a corrupt store and never a silent retry loop.
"""

from __future__ import annotations

import contextlib
import imaplib
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from proxy.store import FileStore
from tests.integration.conftest import TENANT
from tests.support.dovecot import Dovecot
from tests.support.fake_entra import FakeEntra
from tests.support.flows import (
    PASSWORD,
    account_block,
    assert_lists,
    device_code_add,
    imap_login,
    login_refusal,
    proxy_config,
)
from tests.support.ports import free_port
from tests.support.proxy_process import ProxyProcess

pytestmark = pytest.mark.integration

STORM = "storm@contoso.example"
ROTATE = "rota@contoso.example"
SHARED_STORE = "shay@contoso.example"
KILL = "kilian@contoso.example"
WINDOW = "wendy@contoso.example"
USERS = (STORM, ROTATE, SHARED_STORE, KILL, WINDOW)
SHORT = 60  # seconds: inside the broker's refresh margin, so every login refreshes
STORM_LOGINS = 20
KILL_ITERATIONS = 15


@dataclass
class Minted:
    """The access tokens the fake handed out, newest last; `hook` runs inside the token
    request, after the fake has rotated the refresh token and before it answers."""

    tokens: list[str] = field(default_factory=list)
    hook: Callable[[], None] | None = None


@dataclass
class Safety:
    dovecot: Dovecot
    entra: FakeEntra
    minted: Minted
    workdir: Path
    port: int
    config_text: str

    def proxy(self, name: str = "proxy", port: int | None = None) -> ProxyProcess:
        workdir = self.workdir / name
        text = self.config_text if port is None else self.config_text.replace(
            f"tcp:{self.port}:", f"tcp:{port}:")
        # Every proxy shares the one store, whatever its own folder.
        return ProxyProcess(workdir, text)

    @property
    def config(self) -> Path:
        return self.workdir / "proxy" / "config.toml"

    def store_secrets(self, user: str) -> tuple[str | None, str | None]:
        """(refresh token, access token) in the account's file, decrypted with the password."""
        store = FileStore(self.workdir / "store")
        secrets = store.load(user, store.derive_key(user, PASSWORD))
        return secrets.refresh_token, secrets.access_token


@pytest.fixture(scope="module")
def safety(
    dovecot_server: Dovecot, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Safety]:
    minted = Minted()

    def mint(mailbox: str, lifetime: int) -> str:
        token = dovecot_server.token(mailbox, lifetime)
        minted.tokens.append(token)
        if minted.hook is not None:
            minted.hook()
        return token

    entra = FakeEntra(mint, access_token_lifetime=SHORT)
    entra.start()
    try:
        workdir = tmp_path_factory.mktemp("safety")
        port = free_port()
        accounts = []
        for user in USERS:
            accounts.append(account_block(user, f"app-{user}", "device_code", entra.authority))
            entra.add_user(TENANT, f"app-{user}", user)
        text = proxy_config(workdir, dovecot_server, port, accounts)
        safety = Safety(dovecot_server, entra, minted, workdir, port, text)
        safety.proxy()  # writes proxy/config.toml for the CLI
        yield safety
    finally:
        entra.stop()


@pytest.fixture
def strict(safety: Safety) -> Iterator[FakeEntra]:
    """The fake refuses a refresh token once it has been exchanged, for this test only."""
    safety.entra.invalidate_rotated_refresh_tokens = True
    try:
        yield safety.entra
    finally:
        safety.entra.invalidate_rotated_refresh_tokens = False


def _login_and_list(port: int, user: str) -> None:
    client = imap_login(port, user, PASSWORD)
    try:
        assert client.list()[0] == "OK"
    finally:
        client.logout()


def test_refresh_storm_makes_one_token_request(safety: Safety, strict: FakeEntra) -> None:
    """20 simultaneous logins on an expired access token cause exactly one refresh request,
    and every login succeeds."""
    device_code_add(safety.config, strict, STORM, STORM)  # stores a 60 s token: stale
    strict.access_token_lifetime = 3600  # the refreshed token then lasts
    proxy = safety.proxy()
    proxy.start(safety.port)
    try:
        before = strict.token_requests("refresh_token")
        barrier = threading.Barrier(STORM_LOGINS)
        errors: list[BaseException] = []
        clients: list[imaplib.IMAP4] = []
        lock = threading.Lock()

        def one() -> None:
            try:
                client = imaplib.IMAP4("127.0.0.1", safety.port, timeout=30)
                barrier.wait(timeout=30)
                client.login(STORM, PASSWORD)
                with lock:
                    clients.append(client)
            except BaseException as e:  # noqa: BLE001 - reported below
                with lock:
                    errors.append(e)

        threads = [threading.Thread(target=one) for _ in range(STORM_LOGINS)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        elapsed = time.monotonic() - started
        for client in clients:
            client.logout()
        assert not errors, errors
        assert len(clients) == STORM_LOGINS
        assert strict.token_requests("refresh_token") - before == 1
        print(f"refresh storm: {STORM_LOGINS} logins in {elapsed:.2f} s, "
              f"{strict.token_requests('refresh_token') - before} refresh request")
    finally:
        strict.access_token_lifetime = SHORT
        proxy.stop()


def test_rotation_survives_refreshes_and_a_restart(safety: Safety, strict: FakeEntra) -> None:
    """With strict rotation, several refreshes in a row each use the newest refresh token, and
    a restarted proxy carries on with the rotated one from the store."""
    device_code_add(safety.config, strict, ROTATE, ROTATE)
    seen = {safety.store_secrets(ROTATE)[0]}
    proxy = safety.proxy()
    for _restart in range(2):
        proxy.start(safety.port)
        try:
            for _ in range(3):
                before = strict.token_requests("refresh_token")
                _login_and_list(safety.port, ROTATE)
                assert strict.token_requests("refresh_token") == before + 1
                seen.add(safety.store_secrets(ROTATE)[0])
        finally:
            proxy.stop()
    assert len(seen) == 7  # every refresh stored a new refresh token


def test_two_processes_sharing_a_store_never_use_a_stale_token(
    safety: Safety, strict: FakeEntra
) -> None:
    """Two proxies on one store, logins alternating and overlapping, with strict rotation:
    each refresh re-reads the file under its lock, so no refresh token is ever used twice."""
    device_code_add(safety.config, strict, SHARED_STORE, SHARED_STORE)
    other_port = free_port()
    first, second = safety.proxy("first"), safety.proxy("second", other_port)
    first.start(safety.port)
    second.start(other_port)
    try:
        errors: list[BaseException] = []

        def logins(port: int) -> None:
            try:
                for _ in range(4):
                    _login_and_list(port, SHARED_STORE)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=logins, args=(port,))
                   for port in (safety.port, other_port, safety.port, other_port)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors, errors
    finally:
        first.stop()
        second.stop()
    assert "needs re-authorisation" not in _list_row(safety, SHARED_STORE)


def _list_row(safety: Safety, user: str) -> str:
    listing = safety.proxy().cli("account", "list")
    assert listing.returncode == 0, listing.stderr
    return next(line for line in listing.stdout.splitlines() if line.startswith(user))


def test_kill_9_loop_never_loses_the_account(safety: Safety) -> None:
    """SIGKILL at random moments around refreshes, 15 times: the account file always decrypts,
    `account list` shows it, and a fresh proxy logs in (Entra's rotation semantics)."""
    entra = safety.entra
    device_code_add(safety.config, entra, KILL, KILL)
    rng = random.Random(20261122)
    proxy = safety.proxy()
    # Where each kill landed: before the refresh request, between the fake's answer and the
    # save (the newest token set lost, the old one kept), or after the save.
    landed = {"before refresh": 0, "answer unsaved": 0, "after save": 0}
    for iteration in range(KILL_ITERATIONS):
        proxy.start(safety.port)
        requests_before = entra.token_requests("refresh_token")
        minted_before = len(safety.minted.tokens)
        login = threading.Thread(target=_attempt_login, args=(safety.port, KILL), daemon=True)
        login.start()
        if iteration % 2:
            # Aim at the refresh itself: kill 0-5 ms after the fake has seen the request.
            deadline = time.monotonic() + 10
            while (entra.token_requests("refresh_token") == requests_before
                   and time.monotonic() < deadline):
                time.sleep(0.0002)
            time.sleep(rng.uniform(0, 0.005))
        else:
            time.sleep(rng.uniform(0, 0.4))  # anywhere: KDF, request, save, upstream login
        proxy.kill()
        login.join(timeout=30)
        refresh_token, access_token = safety.store_secrets(KILL)  # decrypts, or raises
        assert refresh_token
        if len(safety.minted.tokens) == minted_before:
            landed["before refresh"] += 1
        elif access_token != safety.minted.tokens[-1]:
            landed["answer unsaved"] += 1
        else:
            landed["after save"] += 1
    assert "ok" in _list_row(safety, KILL).split()
    proxy.start(safety.port)
    try:
        assert_lists(safety.port, KILL, PASSWORD)
    finally:
        proxy.stop()
    print(f"kill -9 loop: {KILL_ITERATIONS} kills: {landed}")


def _attempt_login(port: int, user: str) -> None:
    with contextlib.suppress(OSError, imaplib.IMAP4.error):  # the proxy may be killed under it
        _login_and_list(port, user)


@pytest.mark.parametrize("strict_rotation", [False, True], ids=["entra", "strict"])
def test_crash_in_the_rotation_window(safety: Safety, strict_rotation: bool) -> None:
    """A SIGKILL after the server rotated the refresh token but before the proxy saved it keeps
    the old token set: harmless with Entra's semantics, fatal (reported plainly) with strict
    rotation. See the module docstring."""
    entra = safety.entra
    device_code_add(safety.config, entra, WINDOW, WINDOW)
    old_refresh, _ = safety.store_secrets(WINDOW)
    proxy = safety.proxy()
    proxy.start(safety.port)
    entra.invalidate_rotated_refresh_tokens = strict_rotation
    killed = threading.Event()

    def kill_in_the_window() -> None:  # runs inside the token request, after rotation
        proxy.kill()
        killed.set()

    safety.minted.hook = kill_in_the_window
    try:
        _attempt_login(safety.port, WINDOW)
        assert killed.wait(10)
    finally:
        safety.minted.hook = None
    assert safety.store_secrets(WINDOW)[0] == old_refresh  # the old set survived, intact
    proxy.start(safety.port)
    try:
        if strict_rotation:
            refused = login_refusal(safety.port, WINDOW, PASSWORD)
            assert refused.startswith("[AUTHENTICATIONFAILED]")
            assert f"run: xoauth2-proxy account add {WINDOW}" in refused
            assert "needs re-authorisation" in _list_row(safety, WINDOW)
        else:
            assert_lists(safety.port, WINDOW, PASSWORD)
            assert safety.store_secrets(WINDOW)[0] != old_refresh
    finally:
        entra.invalidate_rotated_refresh_tokens = False
        proxy.stop()
