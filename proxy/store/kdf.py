"""Key derivation for the encrypted record: which function, at what cost, and how a record
names them.

New keys use Argon2id at one of OWASP's minimum settings, 46 MiB and 1 pass (1 lane): about
80 ms on one core of a 2-vCPU AMD EPYC VM with cryptography 50, like the scrypt cost used
before (N=2**15, r=8, p=1: 32 MiB, about 90 ms, below OWASP's N=2**17). OWASP's equivalent
19 MiB with 2 passes takes half the time, but glibc keeps freed blocks under 32 MiB in the heap
of the thread that used them (its mmap threshold adapts up to 32 MiB), so every thread of the
pool would hold 19 MiB for good; 46 MiB is mapped and returned to the system each time. A record keeps the parameters it
was sealed with, so records written with scrypt still open, and are re-sealed with the current
cost at their next successful login (proxy.store.rekey).

Pure and slow: call derive() from a thread pool, a few at a time (each takes its memory cost).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

KEY_BYTES = 32


def _integers(params: object, *names: str) -> None:
    for name in names:
        if type(getattr(params, name)) is not int:
            raise ValueError(f"{params.name} {name} must be an integer")  # type: ignore[attr-defined]


@dataclass(frozen=True)
class ScryptParams:
    """scrypt cost; n=2**15 needs 32 MiB and took about 90 ms per derivation (see above)."""

    n: int = 2**15
    r: int = 8
    p: int = 1

    name = "scrypt"

    def __post_init__(self) -> None:
        _integers(self, "n", "r", "p")
        # Upper bounds stop a tampered record from asking for gigabytes of memory.
        if not (2 <= self.n <= 2**20 and self.n & (self.n - 1) == 0):
            raise ValueError("scrypt n must be a power of two between 2 and 2**20")
        if not (1 <= self.r <= 32 and 1 <= self.p <= 16):
            raise ValueError("scrypt r must be 1..32 and p 1..16")

    @property
    def memory_bytes(self) -> int:
        return 128 * self.r * self.n * self.p

    def derive(self, secret: bytes, salt: bytes) -> bytes:
        return Scrypt(salt=salt, length=KEY_BYTES, n=self.n, r=self.r, p=self.p).derive(secret)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "n": self.n, "r": self.r, "p": self.p}


@dataclass(frozen=True)
class Argon2Params:
    """Argon2id cost (RFC 9106); memory in KiB."""

    memory_kib: int = 46 * 1024
    iterations: int = 1
    lanes: int = 1

    name = "argon2id"

    def __post_init__(self) -> None:
        _integers(self, "memory_kib", "iterations", "lanes")
        if not (1 <= self.lanes <= 16 and 8 * self.lanes <= self.memory_kib <= 1 << 20):
            raise ValueError("argon2id lanes must be 1..16 and memory_kib 8*lanes..1048576")
        if not 1 <= self.iterations <= 64:
            raise ValueError("argon2id iterations must be 1..64")

    @property
    def memory_bytes(self) -> int:
        return self.memory_kib * 1024

    def derive(self, secret: bytes, salt: bytes) -> bytes:
        return Argon2id(salt=salt, length=KEY_BYTES, iterations=self.iterations,
                        lanes=self.lanes, memory_cost=self.memory_kib).derive(secret)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "memory_kib": self.memory_kib,
                "iterations": self.iterations, "lanes": self.lanes}


KdfParams = ScryptParams | Argon2Params
DEFAULT_KDF: KdfParams = Argon2Params()
KDF_NAMES = (ScryptParams.name, Argon2Params.name)


def derive(password: str, salt: bytes, params: KdfParams) -> bytes:
    # NFC: the same password typed on two systems may arrive composed or decomposed.
    return params.derive(unicodedata.normalize("NFC", password).encode("utf-8"), salt)


def params_from_json(kdf: dict[str, Any]) -> KdfParams:
    """The parameters a record's "kdf" object names; KeyError, TypeError or ValueError when
    they are missing or out of bounds (the name was checked by the caller)."""
    if kdf["name"] == ScryptParams.name:
        return ScryptParams(kdf["n"], kdf["r"], kdf["p"])
    return Argon2Params(kdf["memory_kib"], kdf["iterations"], kdf["lanes"])
