"""The signed JWT (client assertion) an app presents to Entra ID instead of a client secret.

Entra ID finds the registered certificate by the thumbprint in the header (`x5t#S256`, or the
older SHA-1 `x5t`, both sent for compatibility with older tenants and sovereign clouds), checks
the signature with it, and checks aud = the token URL, iss = sub = client_id, and the time range.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ..errors import ConfigError

ASSERTION_LIFETIME = 600  # seconds; Microsoft's libraries use 10 minutes too
ALGORITHMS = ("RS256", "PS256")
_PRIVATE_KEY_BLOCK = re.compile(
    rb"-----BEGIN ((?:RSA |ENCRYPTED )?PRIVATE KEY)-----.*?-----END \1-----", re.DOTALL
)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class SigningCertificate:
    """A certificate registered on the app, with its private key."""

    certificate: x509.Certificate
    key: rsa.RSAPrivateKey = field(repr=False)

    @property
    def thumbprint_sha256(self) -> str:
        return b64url(self.certificate.fingerprint(hashes.SHA256()))

    @property
    def thumbprint_sha1(self) -> str:
        # SHA-1 here names a certificate, it protects nothing; Entra still accepts only this
        # header in some clouds.
        return b64url(self.certificate.fingerprint(hashes.SHA1()))


def load_signing_certificate(
    certificate: Path, private_key: Path | None = None
) -> SigningCertificate:
    """Read a PEM certificate and its RSA key (from the same file unless private_key is given)."""
    cert_pem = _read(certificate)
    key_path = private_key or certificate
    key_pem = cert_pem if private_key is None else _read(private_key)
    try:
        certificates = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise ConfigError(f"{certificate}: no PEM certificate found in the file") from None
    match = _PRIVATE_KEY_BLOCK.search(key_pem)
    if match is None:
        raise ConfigError(
            f"{key_path}: no PEM private key found; put the key after the certificate in the "
            "same file, or set private_key to the key's file"
        )
    if match.group(1) == b"ENCRYPTED PRIVATE KEY":
        raise ConfigError(
            f"{key_path}: the private key is encrypted with a passphrase, which is not supported; "
            "decrypt it (openssl pkey -in KEY -out KEY.plain) and keep the file mode 0600"
        )
    try:
        key = serialization.load_pem_private_key(match.group(0), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError(f"{key_path}: the private key cannot be read") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(f"{key_path}: Entra ID client assertions need an RSA key")
    public = key.public_key().public_numbers()
    for candidate in certificates:
        cert_key = candidate.public_key()
        if isinstance(cert_key, rsa.RSAPublicKey) and cert_key.public_numbers() == public:
            return SigningCertificate(candidate, key)
    raise ConfigError(f"{certificate}: no certificate in the file matches the private key")


def client_assertion(
    signing: SigningCertificate,
    client_id: str,
    audience: str,
    now: float,
    algorithm: str = "RS256",
) -> str:
    """A compact JWT proving the app holds the certificate's key; valid for ten minutes."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}")
    issued = int(now)
    header = {
        "alg": algorithm,
        "typ": "JWT",
        "x5t#S256": signing.thumbprint_sha256,
        "x5t": signing.thumbprint_sha1,
    }
    claims = {
        "aud": audience,
        "iss": client_id,
        "sub": client_id,
        "jti": str(uuid.uuid4()),
        "nbf": issued,
        "iat": issued,
        "exp": issued + ASSERTION_LIFETIME,
    }
    signing_input = f"{_segment(header)}.{_segment(claims)}".encode("ascii")
    if algorithm == "RS256":
        pad: padding.AsymmetricPadding = padding.PKCS1v15()
    else:
        pad = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
    signature = signing.key.sign(signing_input, pad, hashes.SHA256())
    return f"{signing_input.decode('ascii')}.{b64url(signature)}"


def _segment(part: Mapping[str, object]) -> str:
    return b64url(json.dumps(part, separators=(",", ":")).encode())


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None

