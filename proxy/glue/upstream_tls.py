"""TLS on the upstream side: the mail server's certificate always verified, TLS 1.2 at least."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL
from service_identity import CertificateError, VerificationError
from twisted.internet import ssl
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator

from ..errors import ConfigError


def client_tls_options(hostname: str, ca: Path | None = None) -> IOpenSSLClientConnectionCreator:
    """Verifies the server's certificate for `hostname` (a name or an IP address) against the
    system's trust store, or only against the CA certificates in `ca` (a PEM file or a folder)."""
    trust = _trust_root(ca) if ca is not None else ssl.platformTrust()
    return ssl.optionsForClientTLS(
        hostname,
        trustRoot=trust,
        extraCertificateOptions={"raiseMinimumTo": ssl.TLSVersion.TLSv1_2},
    )


def _trust_root(ca: Path) -> IOpenSSLTrustRoot:
    files = sorted(p for p in ca.iterdir() if p.is_file()) if ca.is_dir() else [ca]
    certificates = []
    for path in files:
        try:
            loaded = x509.load_pem_x509_certificates(path.read_bytes())
        except (OSError, ValueError) as e:
            if ca.is_dir():
                continue  # a folder may hold other files (hash links, READMEs)
            raise ConfigError(f"upstream_ca {path}: not a PEM certificate file ({e})") from None
        certificates += [ssl.Certificate.loadPEM(c.public_bytes(Encoding.PEM)) for c in loaded]
    if not certificates:
        raise ConfigError(f"upstream_ca {ca}: no PEM certificates found")
    trust: IOpenSSLTrustRoot = ssl.trustRootFromCertificates(certificates)
    return trust


def describe_tls_error(reason: BaseException) -> str | None:
    """A sentence for a certificate verification failure, or None when it is something else."""
    # A certificate from a trusted CA for another name fails in service_identity, after
    # OpenSSL accepted the chain.
    if isinstance(reason, (VerificationError, CertificateError)):
        return "its TLS certificate could not be verified (it names another host)"
    if isinstance(reason, SSL.Error):
        text = str(reason)
        if "certificate verify failed" in text or "CERTIFICATE_VERIFY_FAILED" in text:
            return "its TLS certificate could not be verified (wrong host name, or an unknown CA)"
        return "the TLS handshake failed"
    return None
