"""The encrypted account record on its own, with no file around it: the format 1 bytes that
existing stores hold open and are written back unchanged, whatever backend keeps them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from proxy.errors import StaleKey, StoreFileInvalid, WrongPassword
from proxy.resources import GRAPH, OUTLOOK
from proxy.store import AccessToken, FileStore, Secrets
from proxy.store.record import Record, new_key
from proxy.store.record import _aad as record_aad

# An account file as xoauth2-proxy 0.1.0 wrote it (scrypt n=16, to stay fast), for the user
# name "Alice@Example.com" and the local password "pässwörd".
FORMAT_1 = b"""{
  "format": 1,
  "kdf": {
    "name": "scrypt",
    "n": 16,
    "r": 8,
    "p": 1,
    "salt": "8VpU1DC4d7G+RbACq2fNmg=="
  },
  "cipher": "AES-256-GCM",
  "nonce": "pn2NSbrclG+wYKb4",
  "ciphertext": "iFziu026b6HaVBDJTTvgpAN3S2adNfGXrUa57967hgMnHVfsPP9SJ+t5XMsTKhPC5FhV6nQbGnvhBMRSeLaPbjt3QIdmYZUYBLNwA3iW9e6sjf5Zz0q/I8ZcDBXbPVpcCcS/2bvfzU3Q9ErWpXNQl3xeTlZhvIhP",
  "meta": {
    "username": "alice@example.com",
    "mailbox": "shared@example.com",
    "flow": "device_code",
    "state": "ok",
    "access_expires_at": 1900000000.5,
    "refresh_token_present": true,
    "created_at": 1800000000.0,
    "updated_at": 1796404664.993043
  }
}
"""
PASSWORD = "pässwörd"
SECRETS = Secrets("R-refresh", "A-access", 1_900_000_000.5, {"x": 1})
FILE_NAME = "ff8d9819fc0e12bf0d24892e45987e249a28dce836a85cad60e28eaaa8c6d976.json"


def test_format_1_record_opens_and_serialises_to_the_same_bytes() -> None:
    """A stored record parses, decrypts with its password and comes back byte for byte."""
    record = Record.parse(FORMAT_1, "a database row", "alice@example.com")
    assert record.to_bytes() == FORMAT_1
    assert record.open(record.derive_key(PASSWORD), "a database row") == SECRETS
    with pytest.raises(WrongPassword):
        record.open(record.derive_key("wrong"), "a database row")


def test_record_errors_name_where_the_record_is() -> None:
    """A record for another account, or a key for another salt, is refused with its place."""
    with pytest.raises(StoreFileInvalid, match="^the row of bob: holds the account"):
        Record.parse(FORMAT_1, "the row of bob", "bob@example.com")
    record = Record.parse(FORMAT_1, "row", None)
    with pytest.raises(StaleKey):
        record.open(new_key(PASSWORD, record.params), "row")


def test_sealed_record_round_trips_without_files() -> None:
    """seal, to_bytes, parse and open need nothing but bytes: any backend can keep them."""
    key = new_key(PASSWORD, Record.parse(FORMAT_1, "row", None).params)
    meta = Record.parse(FORMAT_1, "row", None).meta
    raw = Record.seal(key, SECRETS, meta).to_bytes()
    assert Record.parse(raw, "row", "alice@example.com").open(key, "row") == SECRETS


def test_existing_store_file_keeps_working(tmp_path: Path) -> None:
    """A store folder from before opens as it is: same file name, same password, same secrets."""
    store = FileStore(tmp_path)
    assert store.path("Alice@Example.com").name == FILE_NAME
    store.accounts.mkdir(parents=True)
    store.path("alice@example.com").write_bytes(FORMAT_1)
    assert store.load("ALICE@example.com", store.derive_key("alice@example.com", PASSWORD)) == SECRETS
    assert [meta.mailbox for meta in store.list_meta()] == ["shared@example.com"]


def test_graph_token_joins_an_existing_record() -> None:
    """A record from before per-resource tokens takes a Microsoft Graph token beside its
    Exchange one; both come back, and meta shows the earlier expiry."""
    record = Record.parse(FORMAT_1, "row", "alice@example.com")
    key = record.derive_key(PASSWORD)
    old = record.open(key, "row")
    assert old.other_tokens == {} and old.token_for(GRAPH) is None
    both = old.with_token(GRAPH, AccessToken("G-access", 1_800_000_000.0), "R-rotated")
    assert both.token_for(OUTLOOK) == AccessToken("A-access", 1_900_000_000.5)
    sealed = Record.seal(key, both, record.meta)
    assert sealed.meta.access_expires_at == 1_800_000_000.0
    reopened = Record.parse(sealed.to_bytes(), "row", "alice@example.com").open(key, "row")
    assert reopened == both and reopened.refresh_token == "R-rotated"
    assert reopened.token_for(GRAPH) == AccessToken("G-access", 1_800_000_000.0)
    assert "G-access" not in repr(reopened) and "graph" in repr(reopened)


def test_record_without_graph_tokens_keeps_the_old_plaintext() -> None:
    """Secrets without other tokens encrypt to exactly the fields earlier versions wrote, so
    an older proxy still reads a record this one saved."""
    key = new_key(PASSWORD, Record.parse(FORMAT_1, "row", None).params)
    sealed = Record.seal(key, SECRETS, Record.parse(FORMAT_1, "row", None).meta)
    plain = AESGCM(key.key).decrypt(sealed.nonce, sealed.ciphertext,
                                    record_aad("alice@example.com"))
    assert set(json.loads(plain)) == {"refresh_token", "access_token", "access_expires_at", "extra"}


def test_broken_graph_token_entry_is_a_broken_record() -> None:
    """An access_tokens entry without its fields is reported as a damaged record."""
    key = new_key(PASSWORD, Record.parse(FORMAT_1, "row", None).params)
    meta = Record.parse(FORMAT_1, "row", None).meta
    payload = json.dumps({"refresh_token": None, "access_token": None, "access_expires_at": None,
                          "extra": {}, "access_tokens": {"graph": {"access_token": 5}}}).encode()
    nonce = b"\0" * 12
    ciphertext = AESGCM(key.key).encrypt(nonce, payload, record_aad("alice@example.com"))
    broken = Record(key.params, key.salt, nonce, ciphertext, meta)
    with pytest.raises(StoreFileInvalid, match="unexpected content"):
        broken.open(key, "row")


def test_meta_keeps_each_resources_expiry_but_no_token() -> None:
    """Sealing secrets with an Exchange and a Graph token puts each one's expiry (not the
    token) in the readable meta, beside the earliest; it survives the bytes."""
    record = Record.parse(FORMAT_1, "row", "alice@example.com")
    key = record.derive_key(PASSWORD)
    both = SECRETS.with_token(GRAPH, AccessToken("G-access", 1_800_000_000.0), "R-refresh")
    raw = Record.seal(key, both, record.meta).to_bytes()
    meta = json.loads(raw)["meta"]
    assert meta["access_expiries"] == {OUTLOOK: 1_900_000_000.5, GRAPH: 1_800_000_000.0}
    assert meta["access_expires_at"] == 1_800_000_000.0
    assert "A-access" not in json.dumps(meta) and "G-access" not in json.dumps(meta)
    parsed = Record.parse(raw, "row", "alice@example.com").meta
    assert parsed.access_expiries == {OUTLOOK: 1_900_000_000.5, GRAPH: 1_800_000_000.0}


def test_a_record_from_before_per_resource_expiries_reads_with_none() -> None:
    """A record without "access_expiries" in its meta reads with an empty one (the earliest
    expiry is still there); a token without an expiry gives none either."""
    meta = Record.parse(FORMAT_1, "row", "alice@example.com").meta
    assert meta.access_expiries == {} and meta.access_expires_at == 1_900_000_000.5
    assert Secrets("R", "A", None).expiries == {}


@pytest.mark.parametrize("expiries", [[1.0], {"graph": "soon"}, {"graph": True}, {"graph": None}])
def test_a_broken_access_expiries_is_a_broken_record(expiries: object) -> None:
    """Per-resource expiries that are not a map of names to numbers make the record invalid."""
    data = json.loads(FORMAT_1)
    data["meta"]["access_expiries"] = expiries
    with pytest.raises(StoreFileInvalid, match="invalid field .*access_expiries"):
        Record.parse(json.dumps(data).encode(), "row", "alice@example.com")
