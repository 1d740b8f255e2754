"""TLS on the device side of a listener: the certificate (given or generated) and its context.

A generated certificate is self-signed RSA-2048 (old printers rarely speak ECDSA), names
127.0.0.1, localhost, the listen address and the host name, and is kept in the store so its
fingerprint stays the same across restarts: devices can pin it.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet import ssl

from ..config import ListenerConfig, endpoint_parts
from ..errors import ConfigError
from ..private_files import make_private_folder, write_atomically

VALIDITY = datetime.timedelta(days=825)  # the longest lifetime Apple devices accept
RENEW_BEFORE = datetime.timedelta(days=30)
TLS_VERSIONS = {
    "1.0": ssl.TLSVersion.TLSv1_0,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}


@dataclass(frozen=True)
class ServerCertificate:
    pem_path: Path
    fingerprint: str  # SHA-256, colon-separated hex, as devices show it
    generated: bool


class _ServerOptions(ssl.CertificateOptions):
    """CertificateOptions that can go below OpenSSL's default security level when asked:
    OpenSSL 3 refuses TLS 1.0/1.1 at level 1 even when the protocol range allows them."""

    def __init__(self, legacy: bool, **kwargs: object) -> None:
        self._legacy = legacy
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def _makeContext(self, skipCiphers: bool = False) -> SSL.Context:
        # Once: pyOpenSSL refuses changes to a context that has served a connection.
        context: SSL.Context = super()._makeContext(skipCiphers)
        if self._legacy:
            context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
        return context


def server_tls_options(listener: ListenerConfig, certificate: ServerCertificate) -> ssl.CertificateOptions:
    pem = certificate.pem_path.read_bytes()
    try:
        loaded = ssl.PrivateCertificate.loadPEM(pem)  # the certificate and its key, one file
    except Exception as e:  # pyOpenSSL raises its own error types for each kind of damage
        raise ConfigError(f"tls_cert {certificate.pem_path}: not a PEM certificate and key ({e})") from None
    minimum = TLS_VERSIONS[listener.tls_minimum]
    legacy = listener.tls_minimum in ("1.0", "1.1")
    # Twisted's default minimum is TLS 1.2; going below it takes the explicitly insecure knob.
    version = {"insecurelyLowerMinimumTo" if legacy else "raiseMinimumTo": minimum}
    return _ServerOptions(
        legacy=legacy,
        privateKey=loaded.privateKey.original,
        certificate=loaded.original,
        **version,
    )


def server_certificate(listener: ListenerConfig, store_path: Path) -> ServerCertificate:
    """The listener's certificate: `tls_cert` if set, else one generated and kept in the store."""
    if listener.tls_cert is not None:
        try:
            pem = listener.tls_cert.read_bytes()
        except OSError as e:
            raise ConfigError(f"tls_cert {listener.tls_cert}: cannot read: {e.strerror}") from None
        return ServerCertificate(listener.tls_cert, fingerprint(pem), generated=False)
    names = _subject_names(listener)
    path = certificate_path(listener, store_path)
    if path.exists() and _still_good(path.read_bytes(), names):
        return ServerCertificate(path, fingerprint(path.read_bytes()), generated=True)
    pem = _generate(names)
    store_path.parent.mkdir(parents=True, exist_ok=True)
    make_private_folder(store_path, tighten_existing=False)  # as the store itself does
    make_private_folder(path.parent, tighten_existing=True)
    write_atomically(path, pem)
    return ServerCertificate(path, fingerprint(pem), generated=True)


def certificate_path(listener: ListenerConfig, store_path: Path) -> Path:
    """Where the listener's certificate is: `tls_cert`, or the one generated in the store."""
    if listener.tls_cert is not None:
        return listener.tls_cert
    return store_path / "tls" / f"{listener.protocol}-{_safe(listener.listen)}.pem"


def _subject_names(listener: ListenerConfig) -> list[str]:
    _, _, kwargs = endpoint_parts(listener.listen)
    names = ["127.0.0.1", "localhost", socket.gethostname()]
    interface = kwargs.get("interface", "")
    if interface and interface not in ("0.0.0.0", "::"):
        names.append(interface)
    return list(dict.fromkeys(n for n in names if n))


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _generate(names: list[str]) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    common_name = (socket.gethostname() or "xoauth2-proxy")[:64]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM) + key_pem


def _still_good(pem: bytes, names: list[str]) -> bool:
    """Keep a generated certificate while it is valid a while longer and names what it must."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    present = {str(v) for v in san.get_values_for_type(x509.IPAddress)}
    present |= set(san.get_values_for_type(x509.DNSName))
    expires = cert.not_valid_after_utc
    fresh = expires - datetime.datetime.now(datetime.timezone.utc) > RENEW_BEFORE
    return fresh and all(n in present for n in names)


def fingerprint(pem: bytes) -> str:
    """SHA-256 of the first certificate in `pem`, colon-separated hex, as devices show it."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as e:
        raise ConfigError(f"not a PEM certificate: {e}") from None
    digest = cert.fingerprint(hashes.SHA256())
    return ":".join(f"{b:02X}" for b in digest)


def _safe(listen: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in listen)[:80]
