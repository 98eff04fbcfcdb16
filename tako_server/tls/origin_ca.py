"""OriginCaIssuer: certificates from the Cloudflare Origin CA (``ssl = "cloudflare"``).

Rules:

- A fresh ECDSA P-256 key per certificate; the CSR names the host (a wildcard as is) and
  goes to ``POST /certificates`` through :class:`~.cloudflare.CloudflareApi` with the
  ``ssl.cloudflare`` token; the signed certificate and the key are written through the
  :class:`CertStore`, so SNI serves them and the manager renews them like ACME ones
  (30 days before the end of their one-year validity).
- Origin CA certificates are trusted by Cloudflare's proxy only, not by browsers: a
  route on ``ssl = "cloudflare"`` is meant to be proxied (orange cloud).
- Blocking calls run off the event loop (:meth:`issue`); failures are
  :class:`~.cloudflare.CloudflareError` with the API's reason.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from .certinfo import CertInfo, validate_domain
from .selfsigned import new_private_key_pem
from .store import CertStore

if TYPE_CHECKING:  # requests loads only when a Cloudflare API client is made
    from .cloudflare import CloudflareApi


def make_csr(host: str) -> tuple[bytes, bytes]:
    """``(csr_pem, key_pem)`` for ``host`` with a fresh key."""
    key, key_pem = new_private_key_pem()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM), key_pem


class OriginCaIssuer:
    """Issues Origin CA certificates for single hosts into ``store``."""

    def __init__(self, store: CertStore) -> None:
        self.store = store
        self.issued = 0

    def __repr__(self) -> str:
        return f"OriginCaIssuer(issued={self.issued})"

    async def issue(self, domain: str, api: CloudflareApi) -> CertInfo:
        return await asyncio.to_thread(self.issue_blocking, domain, api)

    def issue_blocking(self, domain: str, api: CloudflareApi) -> CertInfo:
        name = validate_domain(domain)
        csr_pem, key_pem = make_csr(name)
        cert_pem = api.origin_certificate(csr_pem, [name])
        info = self.store.put(name, cert_pem, key_pem)
        self.issued += 1
        return info
