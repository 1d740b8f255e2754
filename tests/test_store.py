"""The encrypted per-account store: format, keys, atomic writes, modes, locking, clear errors."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.errors import AccountNotReady, StaleKey, StoreFileInvalid, WrongPassword
from proxy.store import AccountMeta, Argon2Params, FileStore, ScryptParams, Secrets, UnlockKey

FAST = ScryptParams(n=16, r=1, p=1)
ALICE = "alice@contoso.com"
SECRETS = Secrets(
    refresh_token="R-secret-refresh",
    access_token="A-secret-access",
    access_expires_at=1_900_000_000.5,
    extra={"id_token_claims": {"oid": "123"}},
)


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "store", kdf=FAST)


def add(store: FileStore, username: str = ALICE, password: str = "pw", **meta: Any) -> UnlockKey:
    key = store.new_key(password)
    store.save(username, key, SECRETS, AccountMeta(username, username, "device_code", **meta))
    return key


def document(store: FileStore, username: str = ALICE) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(store.path(username).read_bytes())
    return data


def rewrite(store: FileStore, data: dict[str, Any], username: str = ALICE) -> None:
    store.path(username).write_text(json.dumps(data))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def test_round_trip(store: FileStore) -> None:
    """Secrets saved under a password come back with a key derived from the same password."""
    add(store)
    assert store.load(ALICE, store.derive_key(ALICE, "pw")) == SECRETS


def test_wrong_password_leaves_file_untouched(store: FileStore) -> None:
    """A wrong password raises WrongPassword and leaves the file byte-identical, no temp files."""
    add(store)
    before = store.path(ALICE).read_bytes()
    listing = sorted(os.listdir(store.accounts))
    with pytest.raises(WrongPassword) as caught:
        store.load(ALICE, store.derive_key(ALICE, "not pw"))
    assert type(caught.value) is WrongPassword
    assert store.path(ALICE).read_bytes() == before
    assert sorted(os.listdir(store.accounts)) == listing


@pytest.mark.parametrize("umask", [0, 0o777], indirect=True)
def test_modes_regardless_of_umask(tmp_path: Path, umask: int) -> None:
    """Folders are 0700 and the account and lock files 0600 whatever the umask is."""
    store = FileStore(tmp_path / "store", kdf=FAST)
    add(store)
    store.update_meta(ALICE, state="needs_reauth")
    assert mode(store.root) == 0o700
    assert mode(store.accounts) == 0o700
    assert mode(store.path(ALICE)) == 0o600
    assert mode(store.path(ALICE).with_suffix(".lock")) == 0o600


def test_existing_accounts_folder_is_tightened(store: FileStore) -> None:
    """An accounts folder found with looser permissions is set back to 0700 on the next write."""
    store.accounts.mkdir(parents=True)
    store.accounts.chmod(0o755)
    add(store)
    assert mode(store.accounts) == 0o700


def test_meta_readable_without_password(store: FileStore) -> None:
    """Meta (user, mailbox, flow, state, expiry, token presence) is readable without the password."""
    key = store.new_key("pw")
    store.save(ALICE, key, SECRETS, AccountMeta(ALICE, "shared@contoso.com", "auth_code"))
    meta = store.read_meta(ALICE)
    assert meta is not None
    assert (meta.username, meta.mailbox, meta.flow, meta.state) == (
        ALICE,
        "shared@contoso.com",
        "auth_code",
        "ok",
    )
    assert meta.access_expires_at == SECRETS.access_expires_at
    assert meta.refresh_token_present is True
    assert store.update_meta(ALICE, state="needs_reauth").state == "needs_reauth"
    assert store.read_meta(ALICE) == store.list_meta()[0]
    assert store.list_meta()[0].state == "needs_reauth"
    assert b"R-secret-refresh" not in store.path(ALICE).read_bytes()


def test_meta_follows_secrets(store: FileStore) -> None:
    """save() takes access_expires_at and refresh_token_present from the secrets, not the caller."""
    key = add(store)
    meta = store.save(ALICE, key, Secrets(access_token="a", access_expires_at=5.0))
    assert (meta.refresh_token_present, meta.access_expires_at) == (False, 5.0)
    assert store.read_meta(ALICE) == meta


def test_missing_account(store: FileStore) -> None:
    """An account without a file: exists False, no meta, and AccountNotReady naming the fix."""
    assert not store.exists(ALICE)
    assert store.read_meta(ALICE) is None
    assert store.list_meta() == []
    with pytest.raises(AccountNotReady, match="account add alice@contoso.com"):
        store.derive_key(ALICE, "pw")
    with pytest.raises(AccountNotReady):
        store.load(ALICE, store.new_key("pw"))
    with pytest.raises(AccountNotReady):
        store.update_meta(ALICE, state="ok")
    assert not store.root.exists()  # reading never creates the store


def test_update_meta_keeps_ciphertext(store: FileStore) -> None:
    """update_meta changes meta only: the ciphertext is unchanged and still decrypts."""
    key = add(store)
    before = document(store)
    store.update_meta(ALICE, state="needs_reauth", access_expires_at=None)
    after = document(store)
    assert {k: v for k, v in after.items() if k != "meta"} == {
        k: v for k, v in before.items() if k != "meta"
    }
    assert after["meta"]["state"] == "needs_reauth"
    assert store.load(ALICE, key) == SECRETS


def test_update_meta_rejects_bad_changes(store: FileStore) -> None:
    """update_meta refuses unknown or fixed fields and invalid states, and writes nothing."""
    add(store)
    before = store.path(ALICE).read_bytes()
    with pytest.raises(TypeError):
        store.update_meta(ALICE, colour="blue")
    with pytest.raises(TypeError, match="cannot change created_at"):
        store.update_meta(ALICE, created_at=0.0)
    with pytest.raises(ValueError):
        store.update_meta(ALICE, state="broken")
    assert store.path(ALICE).read_bytes() == before


def test_file_copied_to_other_account_fails(store: FileStore) -> None:
    """A file copied onto another account fails to decrypt even with its meta edited to match."""
    add(store)
    bob = "bob@contoso.com"
    store.path(bob).write_bytes(store.path(ALICE).read_bytes())
    with pytest.raises(StoreFileInvalid, match="holds the account 'alice@contoso.com'"):
        store.read_meta(bob)
    data = document(store, bob)
    data["meta"]["username"] = bob
    rewrite(store, data, bob)
    with pytest.raises(WrongPassword):
        store.load(bob, store.derive_key(bob, "pw"))


def test_change_password(store: FileStore) -> None:
    """change_password re-encrypts under a new salt: the new password works, the old does not."""
    old_key = add(store)
    new_key = store.change_password(ALICE, "pw", "new pw")
    assert new_key.salt != old_key.salt
    assert store.load(ALICE, store.derive_key(ALICE, "new pw")) == SECRETS
    with pytest.raises(WrongPassword):
        store.load(ALICE, store.derive_key(ALICE, "pw"))
    with pytest.raises(StaleKey):
        store.load(ALICE, old_key)


def test_change_password_wrong_old_password(store: FileStore) -> None:
    """change_password with a wrong old password raises WrongPassword and changes nothing."""
    add(store)
    before = store.path(ALICE).read_bytes()
    with pytest.raises(WrongPassword):
        store.change_password(ALICE, "guess", "new pw")
    assert store.path(ALICE).read_bytes() == before


def test_remove(store: FileStore) -> None:
    """remove() deletes the account's file and says whether there was one."""
    add(store)
    add(store, "bob@contoso.com")
    assert store.remove(ALICE) is True
    assert store.remove(ALICE) is False
    assert not store.exists(ALICE)
    assert store.read_meta(ALICE) is None
    assert [m.username for m in store.list_meta()] == ["bob@contoso.com"]


def test_crash_before_replace_keeps_old_file(store: FileStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure between writing the temp file and os.replace leaves the old file intact."""
    key = add(store)
    before = store.path(ALICE).read_bytes()

    def crash(src: object, dst: object) -> None:
        raise OSError("simulated crash")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        store.save(ALICE, key, Secrets(refresh_token="new"))
    monkeypatch.undo()
    assert store.path(ALICE).read_bytes() == before
    assert store.load(ALICE, key) == SECRETS
    assert not list(store.accounts.glob("*.tmp"))


def test_leftover_temp_file_ignored_then_cleaned(store: FileStore) -> None:
    """A temp file left by a crash is ignored by list_meta and removed by the next save."""
    key = add(store)
    leftover = store.accounts / f"{store.path(ALICE).stem}.abc_123.tmp"
    leftover.write_bytes(store.path(ALICE).read_bytes()[:40])
    assert [m.username for m in store.list_meta()] == [ALICE]
    store.save(ALICE, key, SECRETS)
    assert not leftover.exists()
    assert store.load(ALICE, key) == SECRETS


def test_fresh_nonce_every_save(store: FileStore) -> None:
    """Saving the same secrets with the same key twice uses a new nonce each time."""
    key = add(store)
    first = document(store)
    store.save(ALICE, key, SECRETS)
    second = document(store)
    assert first["nonce"] != second["nonce"]
    assert first["ciphertext"] != second["ciphertext"]
    assert first["kdf"] == second["kdf"]


def test_user_names_are_case_insensitive_and_safe(store: FileStore) -> None:
    """User names are lower-cased, and any name maps to a fixed-length file inside accounts/."""
    key = add(store, "Alice@Contoso.COM")
    assert store.read_meta(ALICE) is not None
    assert store.load("ALICE@contoso.com", key) == SECRETS
    for name in ("../../etc/passwd", "/abs", ".", "..", "a\0b", "é" * 300):
        path = store.path(name)
        assert path.parent == store.accounts
        assert len(path.name) == 64 + len(".json")
    with pytest.raises(ValueError):
        store.path("")


def test_unknown_format_version(store: FileStore) -> None:
    """A file with a newer format version gives StoreFileInvalid naming the file and the fix."""
    add(store)
    data = document(store)
    data["format"] = 2
    rewrite(store, data)
    for attempt in (
        lambda: store.read_meta(ALICE),
        lambda: store.derive_key(ALICE, "pw"),
        store.list_meta,
    ):
        with pytest.raises(StoreFileInvalid) as caught:
            attempt()
        assert not isinstance(caught.value, WrongPassword)
        assert str(store.path(ALICE)) in caught.value.message
        assert "format 2" in caught.value.message
        assert "upgrade xoauth2-proxy" in caught.value.message


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [("kdf", {"name": "balloon"}, "'balloon'"), ("cipher", "ChaCha20-Poly1305", "ChaCha20")],
)
def test_unknown_kdf_or_cipher(store: FileStore, field: str, value: object, expected: str) -> None:
    """An unknown key derivation or cipher gives StoreFileInvalid naming it and the file."""
    add(store)
    data = document(store)
    data[field] = value
    rewrite(store, data)
    with pytest.raises(StoreFileInvalid, match=expected) as caught:
        store.read_meta(ALICE)
    assert str(store.path(ALICE)) in caught.value.message


def test_truncated_file(store: FileStore) -> None:
    """A truncated file gives StoreFileInvalid naming the file and how to recover, not a traceback."""
    add(store)
    raw = store.path(ALICE).read_bytes()
    store.path(ALICE).write_bytes(raw[: len(raw) // 2])
    for attempt in (
        lambda: store.read_meta(ALICE),
        lambda: store.derive_key(ALICE, "pw"),
        store.list_meta,
    ):
        with pytest.raises(StoreFileInvalid, match="not valid JSON") as caught:
            attempt()
        assert str(store.path(ALICE)) in caught.value.message
        assert "account remove" in caught.value.message


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.pop("nonce"),
        lambda d: d["kdf"].update(n=3),
        lambda d: d["kdf"].update(salt="!!"),
        lambda d: d["meta"].update(state="odd"),
        lambda d: d.update(format="1"),
    ],
)
def test_damaged_fields(store: FileStore, damage: Any) -> None:
    """Missing or invalid fields give StoreFileInvalid, never a KeyError or a WrongPassword."""
    add(store)
    data = document(store)
    damage(data)
    rewrite(store, data)
    with pytest.raises(StoreFileInvalid):
        store.derive_key(ALICE, "pw")


def test_tampered_ciphertext_is_wrong_password(store: FileStore) -> None:
    """A flipped ciphertext bit fails authentication like a wrong password, and nothing is written."""
    key = add(store)
    data = document(store)
    blob = bytearray(base64.b64decode(data["ciphertext"]))
    blob[0] ^= 1
    data["ciphertext"] = base64.b64encode(bytes(blob)).decode()
    rewrite(store, data)
    before = store.path(ALICE).read_bytes()
    with pytest.raises(WrongPassword):
        store.load(ALICE, key)
    assert store.path(ALICE).read_bytes() == before


def test_default_argon2id_parameters(tmp_path: Path) -> None:
    """By default keys use Argon2id at OWASP's minimum (46 MiB, t=1, p=1) with a 16-byte salt,
    recorded in the file."""
    store = FileStore(tmp_path)
    started = time.perf_counter()
    key = store.new_key("pw")
    elapsed = time.perf_counter() - started
    assert key.params == Argon2Params(memory_kib=46 * 1024, iterations=1, lanes=1)
    assert len(key.salt) == 16 and len(key.key) == 32
    store.save(ALICE, key, SECRETS, AccountMeta(ALICE, ALICE, "device_code"))
    assert document(store)["kdf"] == {
        "name": "argon2id",
        "memory_kib": 46 * 1024,
        "iterations": 1,
        "lanes": 1,
        "salt": base64.b64encode(key.salt).decode(),
    }
    assert store.derive_key(ALICE, "pw") == key
    assert not store.outdated(key)
    assert elapsed > 0.005  # a real cost, not a no-op


def test_file_parameters_win_over_store_defaults(tmp_path: Path) -> None:
    """derive_key uses the salt and cost recorded in the file, so defaults can change later."""
    old = FileStore(tmp_path, kdf=ScryptParams(n=32, r=2, p=1))
    key = add(old)
    newer = FileStore(tmp_path, kdf=FAST)
    assert newer.derive_key(ALICE, "pw") == key
    assert newer.load(ALICE, newer.derive_key(ALICE, "pw")) == SECRETS


def test_reprs_hide_secrets(store: FileStore) -> None:
    """repr of Secrets and UnlockKey never shows tokens, extra values or key bytes."""
    key = store.new_key("pw")
    text = repr(SECRETS) + str(SECRETS) + repr(key)
    for secret in ("R-secret-refresh", "A-secret-access", "123", repr(key.key)):
        assert secret not in text
    assert "access_expires_at=1900000000.5" in repr(SECRETS)


TRY_LOCK = """
import sys
from filelock import FileLock, Timeout
try:
    FileLock(sys.argv[1], timeout=0).acquire()
except Timeout:
    sys.exit(3)
"""


def _other_process_gets_lock(path: Path) -> bool:
    result = subprocess.run([sys.executable, "-c", TRY_LOCK, str(path)], timeout=60, check=False)
    assert result.returncode in (0, 3)
    return result.returncode == 0


def test_lock_excludes_other_processes(store: FileStore) -> None:
    """While lock() is held, another process cannot take the account's lock; after, it can."""
    lock_file = store.path(ALICE).with_suffix(".lock")
    with store.lock(ALICE):
        assert not _other_process_gets_lock(lock_file)
    assert _other_process_gets_lock(lock_file)


def test_lock_is_reentrant_and_excludes_threads(store: FileStore) -> None:
    """The same thread may save inside lock(); another thread waits until it is released."""
    key = add(store)
    events: list[str] = []

    def other() -> None:
        with store.lock(ALICE):
            events.append("other")

    with store.lock(ALICE):
        store.save(ALICE, key, SECRETS)  # nested: must not deadlock
        thread = threading.Thread(target=other)
        thread.start()
        thread.join(0.2)
        events.append("main done")
    thread.join(5)
    assert events == ["main done", "other"]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    secrets=st.builds(
        Secrets,
        refresh_token=st.none() | st.text(),
        access_token=st.none() | st.text(),
        access_expires_at=st.none() | st.floats(allow_nan=False, allow_infinity=False),
        extra=st.dictionaries(st.text(), json_values, max_size=5),
    ),
    password=st.text(),
)
def test_arbitrary_secrets_round_trip(store: FileStore, secrets: Secrets, password: str) -> None:
    """Any Secrets (any text tokens and JSON extra) and any password round-trip exactly."""
    store.save(ALICE, store.new_key(password), secrets, AccountMeta(ALICE, ALICE, "auth_code"))
    assert store.load(ALICE, store.derive_key(ALICE, password)) == secrets


def test_store_copy_keeps_working(tmp_path: Path) -> None:
    """A store folder copied elsewhere (backup, restore) still opens with the same password."""
    store = FileStore(tmp_path / "a", kdf=FAST)
    add(store)
    shutil.copytree(store.root, tmp_path / "b")
    copy = FileStore(tmp_path / "b", kdf=FAST)
    assert copy.load(ALICE, copy.derive_key(ALICE, "pw")) == SECRETS
