"""The local certificate authority of ``tako dev``: made once, signs the dev hosts.

Rules:

- the CA lives in ``$TAKO_HOME/ca/``: ``tako-dev-ca.pem`` (the certificate, the file
  ``tako dev trust`` installs) and ``tako-dev-ca-key.pem`` (mode 0600, directory 0700);
  it is made on the first ``tako dev`` and reused after, never overwritten: a key that
  does not match its certificate is an error, not a reason to make a new CA (that would
  silently break what was trusted);
- ECDSA P-256, SHA-256; the CA is valid 10 years, ``CA:TRUE, pathlen:0``, may only sign
  certificates (key usage ``keyCertSign, cRLSign``); its name says whose it is
  (``Tako dev CA (user@host)``);
- leaf certificates (:meth:`LocalCA.issue`) are made fresh for each registration: one
  host (or ``*.`` wildcard) per certificate, SAN = that host, ``serverAuth`` only, valid
  for :data:`LEAF_VALIDITY` (under the 398 days browsers accept); the ``default`` one
  names ``localhost``, ``127.0.0.1`` and ``::1``.
"""

from __future__ import annotations

import getpass
import ipaddress
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tako_common.errors import TakoError

CA_CERT = "tako-dev-ca.pem"
CA_KEY = "tako-dev-ca-key.pem"
CA_VALIDITY = timedelta(days=3650)
LEAF_VALIDITY = timedelta(days=397)
DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")


class CaError(TakoError):
    """The local CA's files are unusable."""

    code = "dev_ca"


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _public(item: ec.EllipticCurvePrivateKey | x509.Certificate) -> bytes:
    return item.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


@dataclass(frozen=True)
class LocalCA:
    """The CA's certificate and key, loaded."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: Path

    @property
    def name(self) -> str:
        found = self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(found[0].value) if found else self.cert.subject.rfc4514_string()

    @property
    def fingerprint(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex(":").upper()

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def ensure(cls, directory: Path, now: datetime | None = None) -> tuple[LocalCA, bool]:
        """The CA in ``directory``, made first when there is none: ``(ca, made)``."""
        cert_path, key_path = directory / CA_CERT, directory / CA_KEY
        if cert_path.exists() or key_path.exists():
            return cls.load(directory), False
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _ca_certificate(key, now or datetime.now(UTC))
        _write(key_path, _key_pem(key), 0o600)
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        return cls(cert, key, cert_path), True

    @classmethod
    def load(cls, directory: Path) -> LocalCA:
        cert_path, key_path = directory / CA_CERT, directory / CA_KEY
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise CaError(
                f"the local CA in {directory} cannot be read: {exc}",
                hint=f"remove {directory} to make a new one (then run `tako dev trust` again)",
            ) from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey) or _public(key) != _public(cert):
            raise CaError(
                f"the local CA key in {key_path} does not match {cert_path}",
                hint=f"remove {directory} to make a new one (then run `tako dev trust` again)",
            )
        return cls(cert, key, cert_path)

    def issue(self, host: str, now: datetime | None = None) -> tuple[bytes, bytes]:
        """``(fullchain_pem, key_pem)`` of a new leaf for ``host`` (``default``: the
        loopback names)."""
        names = DEFAULT_NAMES if host == "default" else (host,)
        when = now or datetime.now(UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, names[0]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tako dev"),
        ])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(when - timedelta(hours=1))
            .not_valid_after(when + LEAF_VALIDITY)
            .add_extension(x509.SubjectAlternativeName([_san(n) for n in names]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_leaf_usage(), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
            .sign(self.key, hashes.SHA256())
        )
        chain = cert.public_bytes(serialization.Encoding.PEM) + self.cert_pem
        return chain, _key_pem(key)


def _owner() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def _ca_certificate(key: ec.EllipticCurvePrivateKey, now: datetime) -> x509.Certificate:
    owner = _owner()
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, f"Tako dev CA ({owner})"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tako dev"),
    ])
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )


def _leaf_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )
