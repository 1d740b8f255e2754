"""A throwaway certificate authority for TLS on 127.0.0.1 in tests."""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Leaf and CA validity: a little in the past to survive clock skew between processes.
_BACKDATE = datetime.timedelta(hours=1)
_LIFETIME = datetime.timedelta(days=1)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "xoauth2-proxy tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _general_name(san: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(san))
    except ValueError:
        return x509.DNSName(san)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    path.write_bytes(data)
    os.chmod(path, mode)


@dataclass(frozen=True)
class TestCA:
    """A self-signed CA whose certificate clients load as their only trust root."""

    __test__ = False  # not a pytest test class despite the name

    cert_path: Path
    key_path: Path
    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey

    def _leaf(
        self, name: str, sans: list[str]
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _LIFETIME)
            .add_extension(
                x509.SubjectAlternativeName([_general_name(s) for s in sans]), critical=False
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.private_key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(self.private_key, hashes.SHA256())
        )
        return cert, key

    def issue(self, directory: Path, name: str, sans: list[str]) -> tuple[Path, Path]:
        """Write NAME.crt and NAME.key (PEM) for a leaf valid for the given DNS names / IPs."""
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = self._leaf(name, sans)
        cert_path = directory / f"{name}.crt"
        key_path = directory / f"{name}.key"
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        # Readable by others on purpose: servers under test may drop privileges before reading it.
        _write(key_path, _key_pem(key), 0o644)
        return cert_path, key_path

    def issue_combined(self, directory: Path, name: str, sans: list[str]) -> Path:
        """Write NAME.pem holding the leaf certificate followed by its key (Twisted's PEM form)."""
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = self._leaf(name, sans)
        path = directory / f"{name}.pem"
        _write(path, cert.public_bytes(serialization.Encoding.PEM) + _key_pem(key), 0o644)
        return path


def make_ca(directory: Path) -> TestCA:
    """Create a fresh CA in DIRECTORY (ca.crt, ca.key)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = _name("xoauth2-proxy test CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "ca.crt"
    key_path = directory / "ca.key"
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(key_path, _key_pem(key), 0o600)
    return TestCA(cert_path=cert_path, key_path=key_path, certificate=cert, private_key=key)
