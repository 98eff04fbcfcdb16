"""Self-signed certificates for private/local hosts and for the ``default`` fallback.

Rules: ECDSA P-256 keys, SHA-256 signatures, subject ``CN={host}, O=Tako``, SAN = the
host (IP literals as IP SANs), valid from one hour ago for :data:`VALIDITY` (~1 year).
:func:`make_self_signed` is pure apart from key generation and knows nothing of the
store; ``ensure_self_signed`` (in :mod:`.store`) writes one only when the stored
certificate is missing or due for renewal.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tako_common.hosts import ip_literal

from .certinfo import validate_domain

VALIDITY = timedelta(days=365)


def new_private_key_pem() -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A fresh ECDSA P-256 key and its unencrypted PKCS#8 PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key, pem


def make_self_signed(host: str, now: datetime) -> tuple[bytes, bytes]:
    """Return ``(cert_pem, key_pem)`` of a new self-signed certificate for ``host``."""
    addr = ip_literal(host)
    name = str(addr) if addr is not None else validate_domain(host)
    key, key_pem = new_private_key_pem()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tako"),
        ]
    )
    san: x509.GeneralName = x509.IPAddress(addr) if addr is not None else x509.DNSName(name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem
