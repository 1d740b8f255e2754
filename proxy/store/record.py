"""The encrypted account record: the same bytes wherever a backend keeps them (a file, a row).

A record (format 1) is JSON:
    {"format": 1,
     "kdf": {"name": "argon2id", "memory_kib": 47104, "iterations": 1, "lanes": 1,
             "salt": "<base64>"},   (or {"name": "scrypt", "n": ..., "r": ..., "p": ...})
     "cipher": "AES-256-GCM", "nonce": "<base64>", "ciphertext": "<base64>",
     "meta": {"username": ..., "mailbox": ..., "flow": ..., "state": "ok", ...,
             "access_expiries": {"outlook": ..., "graph": ...}}}
The ciphertext holds the Secrets as JSON: the refresh token, the Exchange Online access token and
its expiry (the fields every record has), and, for an account that also sends through Microsoft
Graph, "access_tokens": {"graph": {"access_token": ..., "access_expires_at": ...}} (absent when
empty, so records written before it existed read the same). Its GCM associated data names the
format and the account, so a record copied onto another account does not decrypt there. "meta"
is deliberately not authenticated: the proxy changes state and expiry without knowing the
password, and whoever can write the record can delete it anyway. Meta's "access_expiries" holds
each resource's expiry (only the time, for the admin page), and is absent when empty: records
written before it existed have only "access_expires_at", the earliest of them.

Pure: no files, no locks, no clock but the timestamps in meta. Key derivation is slow
(proxy.store.kdf): call it from a thread pool.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import StaleKey, StoreFileInvalid, WrongPassword
from ..resources import OUTLOOK
from .kdf import KDF_NAMES, KdfParams, derive, params_from_json

FORMAT = 1
CIPHER = "AES-256-GCM"
SALT_BYTES = 16
NONCE_BYTES = 12
MAX_RECORD_BYTES = 1 << 20  # a real record is about 1 KiB; refuse to parse anything absurd

State = Literal["ok", "needs_reauth"]
STATES: tuple[str, ...] = get_args(State)




@dataclass(frozen=True)
class UnlockKey:
    """An AES key derived from a local password, with the salt and cost it was derived with."""

    key: bytes = field(repr=False)
    salt: bytes
    params: KdfParams


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
    # Each resource's access-token expiry (proxy.resources name -> time), only the times;
    # access_expires_at is the earliest. Empty in records written before it existed.
    access_expiries: dict[str, float] = field(default_factory=dict, hash=False)

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
        expiries = self.access_expiries
        if not isinstance(expiries, dict) or not all(
                isinstance(k, str) and type(v) in (int, float) for k, v in expiries.items()):
            raise ValueError("access_expiries must map resource names to numbers")
        object.__setattr__(self, "access_expiries", {k: float(v) for k, v in expiries.items()})

    def to_json(self) -> dict[str, Any]:
        """The meta as the record keeps it: without access_expiries when it is empty, so a
        record from before it existed is written back byte for byte."""
        data = dataclasses.asdict(self)
        if not self.access_expiries:
            del data["access_expiries"]
        return data


@dataclass(frozen=True)
class AccessToken:
    """An access token for one resource (proxy.resources) and when it expires."""

    token: str = field(repr=False)
    expires_at: float | None = None


@dataclass(frozen=True, repr=False)
class Secrets:
    """The encrypted part of an account. `access_token` is for Exchange Online (OUTLOOK); other
    resources' tokens are in `other_tokens`, by resource. `extra` is free for flows that need
    more."""

    refresh_token: str | None = None
    access_token: str | None = None
    access_expires_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    other_tokens: dict[str, AccessToken] = field(default_factory=dict)

    def token_for(self, resource: str) -> AccessToken | None:
        if resource == OUTLOOK:
            token = self.access_token
            return None if token is None else AccessToken(token, self.access_expires_at)
        return self.other_tokens.get(resource)

    def with_token(self, resource: str, token: AccessToken, refresh_token: str | None) -> Secrets:
        """These secrets with `resource`'s access token and the refresh token replaced."""
        if resource == OUTLOOK:
            return dataclasses.replace(self, refresh_token=refresh_token,
                                       access_token=token.token,
                                       access_expires_at=token.expires_at)
        others = {**self.other_tokens, resource: token}
        return dataclasses.replace(self, refresh_token=refresh_token, other_tokens=others)

    @property
    def expiries(self) -> dict[str, float]:
        """When each resource's access token expires (for meta): the tokens with an expiry."""
        tokens = {OUTLOOK: self.token_for(OUTLOOK), **self.other_tokens}
        return {resource: t.expires_at for resource, t in tokens.items()
                if t is not None and t.expires_at is not None}

    @property
    def first_expiry(self) -> float | None:
        """When the first of the access tokens expires (for meta), None without any."""
        return min(self.expiries.values(), default=None)

    def __repr__(self) -> str:
        def hidden(value: object) -> str:
            return "None" if value is None else "<hidden>"

        return (
            f"Secrets(refresh_token={hidden(self.refresh_token)}, "
            f"access_token={hidden(self.access_token)}, "
            f"access_expires_at={self.access_expires_at!r}, "
            f"extra=<{len(self.extra)} hidden item(s)>, "
            f"other_tokens=<{', '.join(sorted(self.other_tokens)) or 'none'}>)"
        )


def account_name(username: str) -> str:
    """The name an account's record is kept under: the user name, lower-cased."""
    if not isinstance(username, str) or not username.strip():
        raise ValueError("a user name must be a non-empty string")
    return username.lower()


def new_key(password: str, params: KdfParams) -> UnlockKey:
    """A key for a new account or a new password: fresh salt. Slow."""
    return _derive(password, os.urandom(SALT_BYTES), params)


@dataclass(frozen=True)
class Record:
    """One account's record: the KDF's salt and cost, the sealed secrets, the readable meta."""

    params: KdfParams
    salt: bytes
    nonce: bytes
    ciphertext: bytes
    meta: AccountMeta

    @classmethod
    def seal(cls, key: UnlockKey, secrets: Secrets, meta: AccountMeta) -> Record:
        """Encrypt `secrets` with `key` (fresh nonce) for the account `meta` names; meta's
        access_expires_at, access_expiries, refresh_token_present and updated_at are taken from
        `secrets` and now."""
        name = account_name(meta.username)
        meta = dataclasses.replace(
            meta,
            username=name,
            access_expires_at=secrets.first_expiry,
            access_expiries=secrets.expiries,
            refresh_token_present=bool(secrets.refresh_token),
            updated_at=time.time(),
        )
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = AESGCM(key.key).encrypt(nonce, _encode_secrets(secrets), _aad(name))
        return cls(key.params, key.salt, nonce, ciphertext, meta)

    def derive_key(self, password: str) -> UnlockKey:
        """The key `password` gives for this record, with its salt and cost. Slow. Any password
        gives a key; only open() tells whether it was the right one."""
        return _derive(password, self.salt, self.params)

    def open(self, key: UnlockKey, where: object) -> Secrets:
        """Decrypt the secrets. Raises WrongPassword when the key does not open the record,
        StaleKey (a WrongPassword) when the key was derived for an earlier version of it (the
        password has been changed since), StoreFileInvalid (naming `where`) when it is broken."""
        if key.salt != self.salt or key.params != self.params:
            raise StaleKey()
        name = self.meta.username
        try:
            plain = AESGCM(key.key).decrypt(self.nonce, self.ciphertext, _aad(name))
        except InvalidTag:
            raise WrongPassword() from None
        return _decode_secrets(where, plain, name)

    def with_meta(self, **changes: Any) -> Record:
        """The same sealed secrets with meta fields changed (no password needed). TypeError for
        unknown or fixed fields, ValueError for bad values."""
        check_meta_changes(changes)
        meta = dataclasses.replace(self.meta, **changes, updated_at=time.time())
        return dataclasses.replace(self, meta=meta)

    def to_bytes(self) -> bytes:
        data = {
            "format": FORMAT,
            "kdf": {**self.params.to_json(), "salt": _b64(self.salt)},
            "cipher": CIPHER,
            "nonce": _b64(self.nonce),
            "ciphertext": _b64(self.ciphertext),
            "meta": self.meta.to_json(),
        }
        return json.dumps(data, indent=2, allow_nan=False).encode("utf-8") + b"\n"

    @classmethod
    def parse(cls, raw: bytes, where: object, name: str | None) -> Record:
        """The record in `raw`; StoreFileInvalid naming `where` (a path, a row) and the fix when
        it is broken, of a newer format, or (with `name`) holds another account."""
        return _parse(raw, where, name)


def check_meta_changes(changes: dict[str, Any]) -> None:
    """TypeError for meta fields that only sealing may set."""
    fixed = {"username", "created_at", "updated_at"} & changes.keys()
    if fixed:
        raise TypeError(f"update_meta cannot change {', '.join(sorted(fixed))}")


def repair_advice(name: str | None, first: str = "Restore it from a backup, or") -> str:
    user = name or "USER"
    return (
        f"{first} run: xoauth2-proxy account remove {user} "
        f"and then: xoauth2-proxy account add {user}"
    )


# -- helpers --


def _aad(name: str) -> bytes:
    return f"xoauth2-proxy account file, format {FORMAT}\0{name}".encode()


def _derive(password: str, salt: bytes, params: KdfParams) -> UnlockKey:
    return UnlockKey(derive(password, salt, params), salt, params)


def _encode_secrets(secrets: Secrets) -> bytes:
    payload: dict[str, Any] = {
        "refresh_token": secrets.refresh_token,
        "access_token": secrets.access_token,
        "access_expires_at": secrets.access_expires_at,
        "extra": secrets.extra,
    }
    if secrets.other_tokens:
        payload["access_tokens"] = {
            resource: {"access_token": t.token, "access_expires_at": t.expires_at}
            for resource, t in secrets.other_tokens.items()
        }
    return json.dumps(payload, allow_nan=False, separators=(",", ":")).encode("utf-8")


def _decode_secrets(where: object, plain: bytes, name: str) -> Secrets:
    try:
        data = json.loads(plain)
        refresh, access = data["refresh_token"], data["access_token"]
        expires, extra = data["access_expires_at"], data["extra"]
        if not all(v is None or isinstance(v, str) for v in (refresh, access)):
            raise ValueError("tokens must be strings")
        if not (expires is None or type(expires) in (int, float)) or not isinstance(extra, dict):
            raise ValueError("bad expiry or extra")
        others = {resource: _access_token(entry)
                  for resource, entry in data.get("access_tokens", {}).items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise StoreFileInvalid(
            where, f"decrypts to unexpected content ({e})", repair_advice(name)
        ) from None
    return Secrets(refresh, access, None if expires is None else float(expires), extra, others)


def _access_token(entry: Any) -> AccessToken:
    token, expires = entry["access_token"], entry["access_expires_at"]
    if not isinstance(token, str) or not (expires is None or type(expires) in (int, float)):
        raise ValueError("bad access token of a resource")
    return AccessToken(token, None if expires is None else float(expires))


def _parse(raw: bytes, where: object, name: str | None) -> Record:
    def broken(problem: str) -> StoreFileInvalid:
        return StoreFileInvalid(where, problem, repair_advice(name))

    def unsupported(problem: str) -> StoreFileInvalid:
        upgrade = "It was probably written by a newer xoauth2-proxy: upgrade xoauth2-proxy, or"
        return StoreFileInvalid(where, problem, repair_advice(name, upgrade))

    if len(raw) > MAX_RECORD_BYTES:
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
    if not isinstance(kdf, dict) or kdf.get("name") not in KDF_NAMES:
        shown = kdf.get("name") if isinstance(kdf, dict) else kdf
        raise unsupported(f"uses key derivation {shown!r}; this version knows only "
                          f"{' and '.join(KDF_NAMES)}")
    if data.get("cipher") != CIPHER:
        raise unsupported(f"uses cipher {data.get('cipher')!r}; this version knows only {CIPHER}")
    try:
        params = params_from_json(kdf)
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
    return Record(params, salt, nonce, ciphertext, meta)


def _unb64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"{what} is not a string")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise ValueError(f"{what} is not base64") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
