"""A certificate authority of one's own, for brokers and clients that talk TLS in tests and
local development: never for production, where certificates come from the cluster's own PKI."""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertificateAuthority", "IssuedCertificate"]

_VALIDITY = datetime.timedelta(days=365)
# A clock a little behind the machine's must not find a certificate made a moment ago not yet valid.
_BACKDATE = datetime.timedelta(hours=1)


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate signed by the authority and its key, as PEM files and as a PKCS12 keystore
    (what a Java server such as Kafka's broker reads)."""

    certfile: Path
    keyfile: Path
    keystore: Path
    keystore_password: str = field(repr=False)


class CertificateAuthority:
    """A self-signed CA whose certificate (`ca_file`, PEM) clients trust, and that issues
    certificates for servers and clients. Its key never leaves `directory`."""

    def __init__(self, directory: Path, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey):
        self.directory = Path(directory)
        self._certificate = certificate
        self._key = key

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    @classmethod
    def create(cls, directory: Path, name: str = "ragstream test CA") -> CertificateAuthority:
        """Make a new CA in `directory` (created if missing), replacing one that was there."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        certificate = (
            _builder(subject, subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .sign(key, hashes.SHA256())
        )
        _write_key(directory / "ca.key", key)
        (directory / "ca.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return cls(directory, certificate, key)

    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority:
        """The CA that `create` made in `directory` earlier (in this process or another)."""
        directory = Path(directory)
        certificate = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
        key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError(f"{directory / 'ca.key'} is not the key of a CA made by CertificateAuthority")
        return cls(directory, certificate, key)

    def issue(self, name: str, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> IssuedCertificate:
        """A certificate for `name` valid for each of `hosts` (IP addresses or DNS names), usable by
        a server and by a client; its files are ``directory/<name>.*``, keys readable by the owner only."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        certificate = (
            _builder(subject, self._certificate.subject, key.public_key())
            .add_extension(
                x509.SubjectAlternativeName([_general_name(host) for host in hosts]), critical=False
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        certfile = self.directory / f"{name}.pem"
        keyfile = self.directory / f"{name}.key"
        keystore = self.directory / f"{name}.p12"
        password = secrets.token_urlsafe(24)
        certfile.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        _write_key(keyfile, key)
        _write_private(
            keystore,
            pkcs12.serialize_key_and_certificates(
                name.encode(),
                key,
                certificate,
                [self._certificate],
                serialization.BestAvailableEncryption(password.encode()),
            ),
        )
        return IssuedCertificate(certfile, keyfile, keystore, password)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _VALIDITY)
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not cert_sign,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    _write_private(
        path,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


def _write_private(path: Path, data: bytes) -> None:
    # Created 0600 from the start, so that the key is never readable by others, even for a moment.
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
