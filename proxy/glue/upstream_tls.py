"""TLS on the upstream side: the mail server's certificate always verified, TLS 1.2 at least,
and the last session the server gave offered again, so that a login after the first resumes it
(one round trip and no certificate chain to check, where the server allows it)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL
from service_identity import CertificateError, VerificationError
from service_identity.pyopenssl import verify_hostname, verify_ip_address
from twisted.internet import ssl
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from zope.interface import implementer

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


@implementer(IOpenSSLClientConnectionCreator)
class ResumingTLS:
    """One upstream's client TLS: `client_tls_options`, offering the session that the last
    login to that upstream left (TLS 1.3 tickets, or a TLS 1.2 session), and checking the
    certificate's host name at the end of every handshake.

    The second check is what makes resumption safe: OpenSSL calls the verification callback
    (where Twisted checks the name) only for certificates the server sends, and a resumed
    handshake sends none; the certificate of a resumed session is the one its first handshake
    verified, and the name is checked against it again here."""

    def __init__(self, hostname: str, ca: Path | None = None) -> None:
        self.hostname = hostname
        self._options = client_tls_options(hostname, ca)
        self._session: SSL.Session | None = None
        self._passed: tuple[str, bytes] | None = None  # (name, certificate) last checked good

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection: SSL.Connection = self._options.clientConnectionForTLS(tlsProtocol)
        if self._session is not None:
            connection.set_session(self._session)
        return connection

    def check_peer(self, connection: SSL.Connection) -> None:
        """Raises VerificationError (or CertificateError) unless the certificate the connection
        holds, sent now or resumed, names the host."""
        certificate = connection.get_peer_certificate(as_cryptography=True)
        checked = (self.hostname, certificate.public_bytes(Encoding.DER) if certificate else b"")
        if checked == self._passed:
            return  # the same certificate for the same name: the same answer, without parsing
        try:
            ipaddress.ip_address(self.hostname)
        except ValueError:
            verify_hostname(connection, self.hostname)
        else:
            verify_ip_address(connection, self.hostname)
        self._passed = checked

    def remember(self, connection: SSL.Connection) -> None:
        """Keep the session of a connection whose login succeeded, to offer it next time. Call
        it after the server's first answer: TLS 1.3 tickets arrive after the handshake."""
        self._session = connection.get_session()

    def forget(self) -> None:
        """The server refused a resumed session's connection: the next one starts afresh."""
        self._session = None



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
