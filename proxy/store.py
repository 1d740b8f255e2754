"""Encrypted per-account credential files. Plain synchronous code, called from a thread pool.

Layout: ROOT/accounts/<sha256 hex of the lower-cased user name>.json, with a <same>.lock sidecar
for fcntl.flock. Hashing makes any user name (dots, slashes, unicode, 254 characters) a safe
file name of fixed length; the user name itself is kept in the file's readable "meta".

A file (format 1) is JSON:
    {"format": 1,
     "kdf": {"name": "scrypt", "n": 32768, "r": 8, "p": 1, "salt": "<base64>"},
     "cipher": "AES-256-GCM", "nonce": "<base64>", "ciphertext": "<base64>",
     "meta": {"username": ..., "mailbox": ..., "flow": ..., "state": "ok", ...}}
The ciphertext holds the Secrets as JSON. Its GCM associated data names the format and the
account, so a file copied onto another account does not decrypt there. "meta" is deliberately
not authenticated: the proxy changes state and expiry without knowing the password, and
whoever can write the file can delete it anyway.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import threading
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .errors import AccountNotReady, StaleKey, StoreFileInvalid, WrongPassword
from .private_files import fsync_dir, make_private_folder, open_private, write_atomically

FORMAT = 1
KDF_NAME = "scrypt"
CIPHER = "AES-256-GCM"
SALT_BYTES = 16
NONCE_BYTES = 12
KEY_BYTES = 32
MAX_FILE_BYTES = 1 << 20  # a real file is about 1 KiB; refuse to parse anything absurd

State = Literal["ok", "needs_reauth"]
STATES: tuple[str, ...] = get_args(State)


@dataclass(frozen=True)
class ScryptParams:
    """scrypt cost, stored in each file so it can be raised later without breaking old files.

    The default needs 32 MiB and took 97-137 ms (about 110 ms typical) per derivation on one
    core of a 2-vCPU AMD EPYC VM with cryptography 50; n=2**14 took about 45 ms, 2**16 about
    225 ms. A derivation happens only when the proxy has no cached key for the account.
    """

    n: int = 2**15
    r: int = 8
    p: int = 1

    def __post_init__(self) -> None:
        for name in ("n", "r", "p"):
            if type(getattr(self, name)) is not int:
                raise ValueError(f"scrypt {name} must be an integer")
        # Upper bounds stop a tampered file from asking for gigabytes of memory.
        if not (2 <= self.n <= 2**20 and self.n & (self.n - 1) == 0):
            raise ValueError("scrypt n must be a power of two between 2 and 2**20")
        if not (1 <= self.r <= 32 and 1 <= self.p <= 16):
            raise ValueError("scrypt r must be 1..32 and p 1..16")


@dataclass(frozen=True)
class UnlockKey:
    """An AES key derived from a local password, with the salt and cost it was derived with."""

    key: bytes = field(repr=False)
    salt: bytes
    params: ScryptParams


@dataclass(frozen=True)
class AccountMeta:
    """What anyone with read access to the store may know about an account; never a secret."""

    username: str
    mailbox: str
    flow: str
    state: State = "ok"
    access_expires_at: float | None = None
    refresh_token_present: bool = False
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        for name in ("username", "mailbox", "flow"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a string")
        if self.state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}")
        if type(self.refresh_token_present) is not bool:
            raise ValueError("refresh_token_present must be true or false")
        for name in ("access_expires_at", "created_at", "updated_at"):
            value = getattr(self, name)
            if value is None and name == "access_expires_at":
                continue
            if type(value) not in (int, float):
                raise ValueError(f"{name} must be a number")
            object.__setattr__(self, name, float(value))


@dataclass(frozen=True, repr=False)
class Secrets:
    """The encrypted part of an account. `extra` is free for flows that need more."""

    refresh_token: str | None = None
    access_token: str | None = None
    access_expires_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        def hidden(value: object) -> str:
            return "None" if value is None else "<hidden>"

        return (
            f"Secrets(refresh_token={hidden(self.refresh_token)}, "
            f"access_token={hidden(self.access_token)}, "
            f"access_expires_at={self.access_expires_at!r}, "
            f"extra=<{len(self.extra)} hidden item(s)>)"
        )


@dataclass(frozen=True)
class _Document:
    params: ScryptParams
    salt: bytes
    nonce: bytes
    ciphertext: bytes
    meta: AccountMeta


@dataclass
class _HeldLock:
    rlock: threading.RLock = field(default_factory=threading.RLock)
    depth: int = 0
    fd: int = -1


class Store:
    """The account files under `root`. Safe to share between threads of one process."""

    def __init__(self, root: Path, kdf: ScryptParams = ScryptParams()) -> None:
        self.root = Path(root)
        self.accounts = self.root / "accounts"
        self.kdf = kdf
        self._mutex = threading.Lock()
        self._locks: dict[str, _HeldLock] = {}

    # -- reading, no password needed --

    def path(self, username: str) -> Path:
        """The account's file (which may not exist)."""
        digest = hashlib.sha256(_name(username).encode("utf-8")).hexdigest()
        return self.accounts / f"{digest}.json"

    def exists(self, username: str) -> bool:
        return self.path(username).is_file()

    def read_meta(self, username: str) -> AccountMeta | None:
        """The account's meta, or None when it has no file. No KDF, no decryption."""
        document = self._read(self.path(username), _name(username))
        return document.meta if document else None

    def list_meta(self) -> list[AccountMeta]:
        """Every account's meta, sorted by user name; left-over temporary files are ignored."""
        found = []
        for path in sorted(self.accounts.glob("*.json")):
            document = self._read(path, None)
            if document is None:  # removed while we were listing
                continue
            if self.path(document.meta.username) != path:
                raise StoreFileInvalid(
                    path,
                    f"holds the account {document.meta.username!r} but is not named after it",
                    f"Move it back to {self.path(document.meta.username).name} or delete it",
                )
            found.append(document.meta)
        return sorted(found, key=lambda meta: meta.username)

    # -- keys --

    def new_key(self, password: str) -> UnlockKey:
        """A key for a new account or a new password: fresh salt, this store's scrypt cost. Slow."""
        return _derive(password, os.urandom(SALT_BYTES), self.kdf)

    def derive_key(self, username: str, password: str) -> UnlockKey:
        """The key `password` gives for the account's file, using the file's salt and cost. Slow.

        Raises AccountNotReady when the account has no file. Any password gives a key; only
        load() tells whether it was the right one.
        """
        document = self._require(username)
        return _derive(password, document.salt, document.params)

    # -- secrets --

    def load(self, username: str, key: UnlockKey) -> Secrets:
        """Decrypt the account's secrets. Never writes anything.

        Raises WrongPassword when the key does not open the file, StaleKey (a WrongPassword)
        when the key was derived for an earlier version of the file (the password has been
        changed since), AccountNotReady when there is no file, StoreFileInvalid when it is broken.
        """
        name = _name(username)
        document = self._require(name)
        if key.salt != document.salt or key.params != document.params:
            raise StaleKey()
        try:
            plain = AESGCM(key.key).decrypt(document.nonce, document.ciphertext, _aad(name))
        except InvalidTag:
            raise WrongPassword() from None
        return _decode_secrets(self.path(name), plain, name)

    def save(
        self, username: str, key: UnlockKey, secrets: Secrets, meta: AccountMeta | None = None
    ) -> AccountMeta:
        """Encrypt `secrets` with `key` (fresh nonce) and replace the account's file atomically.

        `meta` defaults to the file's current meta (AccountNotReady if there is none); its
        access_expires_at and refresh_token_present are taken from `secrets`. Returns the meta
        written. Takes the account lock itself, so it is safe inside or outside lock().
        """
        name = _name(username)
        plain = _encode_secrets(secrets)
        with self.lock(name):
            if meta is None:
                meta = self._require(name).meta
            elif _name(meta.username) != name:
                raise ValueError(f"meta is for {meta.username!r}, not {name!r}")
            meta = dataclasses.replace(
                meta,
                username=name,
                access_expires_at=secrets.access_expires_at,
                refresh_token_present=bool(secrets.refresh_token),
                updated_at=time.time(),
            )
            nonce = os.urandom(NONCE_BYTES)
            ciphertext = AESGCM(key.key).encrypt(nonce, plain, _aad(name))
            self._write(name, _Document(key.params, key.salt, nonce, ciphertext, meta))
            return meta

    def update_meta(self, username: str, **changes: Any) -> AccountMeta:
        """Change meta fields (state, access_expires_at, ...) without the password, atomically.

        The ciphertext is kept as it is. Raises AccountNotReady when there is no file,
        TypeError for unknown or fixed fields, ValueError for bad values.
        """
        fixed = {"username", "created_at", "updated_at"} & changes.keys()
        if fixed:
            raise TypeError(f"update_meta cannot change {', '.join(sorted(fixed))}")
        name = _name(username)
        self._require(name)  # before lock(), which would create the store's folders
        with self.lock(name):
            document = self._require(name)
            meta = dataclasses.replace(document.meta, **changes, updated_at=time.time())
            self._write(name, dataclasses.replace(document, meta=meta))
            return meta

    def remove(self, username: str) -> bool:
        """Delete the account's file; False when there was none.

        The .lock sidecar stays: deleting a lock file while another process waits on it would
        let two processes hold "the" lock at once.
        """
        name = _name(username)
        if not self.accounts.is_dir():
            return False
        with self.lock(name):
            self._clean_temporaries(name)
            try:
                os.unlink(self.path(name))
            except FileNotFoundError:
                return False
            fsync_dir(self.accounts)
            return True

    def change_password(self, username: str, old_password: str, new_password: str) -> UnlockKey:
        """Re-encrypt the account under `new_password` with a new salt; returns the new key.

        Raises WrongPassword (nothing changed) when `old_password` is wrong.
        """
        name = _name(username)
        with self.lock(name):
            secrets = self.load(name, self.derive_key(name, old_password))
            key = self.new_key(new_password)
            self.save(name, key, secrets)
            return key

    @contextlib.contextmanager
    def lock(self, username: str) -> Iterator[None]:
        """Hold the account's exclusive lock (fcntl.flock on its .lock sidecar).

        Other processes and other threads wait; the same thread may nest it. Hold it around a
        read-modify-write such as load, refresh, save.
        """
        name = _name(username)
        with self._mutex:
            held = self._locks.setdefault(name, _HeldLock())
        with held.rlock:
            if held.depth == 0:
                self._make_folders()
                held.fd = open_private(self.path(name).with_suffix(".lock"))
                try:
                    fcntl.flock(held.fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(held.fd)
                    raise
            held.depth += 1
            try:
                yield
            finally:
                held.depth -= 1
                if held.depth == 0:
                    os.close(held.fd)  # releases the flock
                    held.fd = -1

    # -- internals --

    def _require(self, username: str) -> _Document:
        name = _name(username)
        document = self._read(self.path(name), name)
        if document is None:
            raise AccountNotReady(
                f"No stored credentials for {name}; run: xoauth2-proxy account add {name}"
            )
        return document

    def _read(self, path: Path, name: str | None) -> _Document | None:
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreFileInvalid(
                path, f"cannot be read ({e.strerror})", "Check the owner and mode of the store"
            ) from None
        return _parse(path, raw, name)

    def _make_folders(self) -> None:
        self.root.parent.mkdir(parents=True, exist_ok=True)
        make_private_folder(self.root, tighten_existing=False)  # may be a shared volume
        make_private_folder(self.accounts, tighten_existing=True)

    def _clean_temporaries(self, name: str) -> None:
        """Remove this account's temporary files left by a crash (we hold its lock)."""
        for path in self.accounts.glob(f"{self.path(name).stem}.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _write(self, name: str, document: _Document) -> None:
        """Replace the account's file: a crash at any point leaves the old or the new file."""
        self._make_folders()
        self._clean_temporaries(name)
        write_atomically(self.path(name), _document_bytes(document))


# -- helpers --


def _name(username: str) -> str:
    if not isinstance(username, str) or not username.strip():
        raise ValueError("a user name must be a non-empty string")
    return username.lower()


def _aad(name: str) -> bytes:
    return f"xoauth2-proxy account file, format {FORMAT}\0{name}".encode()


def _derive(password: str, salt: bytes, params: ScryptParams) -> UnlockKey:
    # NFC: the same password typed on two systems may arrive composed or decomposed.
    secret = unicodedata.normalize("NFC", password).encode("utf-8")
    key = Scrypt(salt=salt, length=KEY_BYTES, n=params.n, r=params.r, p=params.p).derive(secret)
    return UnlockKey(key, salt, params)


def _encode_secrets(secrets: Secrets) -> bytes:
    payload = {
        "refresh_token": secrets.refresh_token,
        "access_token": secrets.access_token,
        "access_expires_at": secrets.access_expires_at,
        "extra": secrets.extra,
    }
    return json.dumps(payload, allow_nan=False, separators=(",", ":")).encode("utf-8")


def _decode_secrets(path: Path, plain: bytes, name: str) -> Secrets:
    try:
        data = json.loads(plain)
        refresh, access = data["refresh_token"], data["access_token"]
        expires, extra = data["access_expires_at"], data["extra"]
        if not all(v is None or isinstance(v, str) for v in (refresh, access)):
            raise ValueError("tokens must be strings")
        if not (expires is None or type(expires) in (int, float)) or not isinstance(extra, dict):
            raise ValueError("bad expiry or extra")
    except (ValueError, KeyError, TypeError) as e:
        raise StoreFileInvalid(path, f"decrypts to unexpected content ({e})", _fix(name)) from None
    return Secrets(refresh, access, None if expires is None else float(expires), extra)


def _fix(name: str | None, first: str = "Restore it from a backup, or") -> str:
    user = name or "USER"
    return (
        f"{first} run: xoauth2-proxy account remove {user} "
        f"and then: xoauth2-proxy account add {user}"
    )


def _parse(path: Path, raw: bytes, name: str | None) -> _Document:
    def broken(problem: str) -> StoreFileInvalid:
        return StoreFileInvalid(path, problem, _fix(name))

    def unsupported(problem: str) -> StoreFileInvalid:
        upgrade = "It was probably written by a newer xoauth2-proxy: upgrade xoauth2-proxy, or"
        return StoreFileInvalid(path, problem, _fix(name, upgrade))

    if len(raw) > MAX_FILE_BYTES:
        raise broken("is far too large to be an account file")
    try:
        data = json.loads(raw.decode("utf-8"))
    except ValueError:  # includes UnicodeDecodeError and JSONDecodeError
        raise broken("is not valid JSON (truncated or corrupted)") from None
    if not isinstance(data, dict):
        raise broken("is not a JSON object")
    version = data.get("format")
    if type(version) is not int:
        raise broken("has no valid 'format' field")
    if version != FORMAT:
        raise unsupported(f"has format {version}; this version reads format {FORMAT} only")
    kdf = data.get("kdf")
    if not isinstance(kdf, dict) or kdf.get("name") != KDF_NAME:
        shown = kdf.get("name") if isinstance(kdf, dict) else kdf
        raise unsupported(f"uses key derivation {shown!r}; this version knows only {KDF_NAME}")
    if data.get("cipher") != CIPHER:
        raise unsupported(f"uses cipher {data.get('cipher')!r}; this version knows only {CIPHER}")
    try:
        params = ScryptParams(kdf["n"], kdf["r"], kdf["p"])
        salt = _unb64(kdf["salt"], "salt")
        nonce = _unb64(data["nonce"], "nonce")
        ciphertext = _unb64(data["ciphertext"], "ciphertext")
        if len(salt) < SALT_BYTES or len(nonce) != NONCE_BYTES or len(ciphertext) < 16:
            raise ValueError("salt, nonce or ciphertext has the wrong length")
        fields = data["meta"]
        if not isinstance(fields, dict):
            raise TypeError("'meta' is not an object")
        known = {f.name for f in dataclasses.fields(AccountMeta)}
        meta = AccountMeta(**{k: v for k, v in fields.items() if k in known})
    except KeyError as e:
        raise broken(f"lacks the field {e}") from None
    except (ValueError, TypeError) as e:
        raise broken(f"has an invalid field ({e})") from None
    if name is not None and meta.username != name:
        raise broken(f"holds the account {meta.username!r}, not {name!r}")
    return _Document(params, salt, nonce, ciphertext, meta)


def _unb64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"{what} is not a string")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise ValueError(f"{what} is not base64") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _document_bytes(document: _Document) -> bytes:
    data = {
        "format": FORMAT,
        "kdf": {
            "name": KDF_NAME,
            "n": document.params.n,
            "r": document.params.r,
            "p": document.params.p,
            "salt": _b64(document.salt),
        },
        "cipher": CIPHER,
        "nonce": _b64(document.nonce),
        "ciphertext": _b64(document.ciphertext),
        "meta": dataclasses.asdict(document.meta),
    }
    return json.dumps(data, indent=2, allow_nan=False).encode("utf-8") + b"\n"
