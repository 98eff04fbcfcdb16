"""Pure certificate facts: names on disk, SNI name selection and parsed certificate info.

Rules:

- A certificate belongs to one *domain*: an exact host (``app.example.com``), a wildcard
  (``*.example.com``) or ``default`` (the self-signed fallback). On disk it lives in
  ``certs/{dir}/`` where ``dir`` is the domain, except that a wildcard's ``*.`` is
  spelled ``_wildcard.`` (``certs/_wildcard.example.com/``) so no shell ever globs it.
- Domains are validated before they become paths: lowercase DNS labels, an optional
  leading ``*.``, no ``/`` or ``..``; anything else is a :class:`ValidationError`.
- :func:`select_name` is the SNI rule: exact name, then the wildcard one label up,
  else None (the caller falls back to ``default``). A wildcard covers exactly one label.
- Everything here is pure: bytes in, values out; no files, no clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from tako_common.errors import ValidationError
from tako_common.hosts import normalize_host

from .errors import TlsError

DEFAULT_DOMAIN = "default"
WILDCARD_DIR_PREFIX = "_wildcard."

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN_RE = re.compile(rf"(?:\*\.)?(?:{_LABEL}\.)*{_LABEL}")


@dataclass(frozen=True)
class CertInfo:
    """What Tako needs to know about a stored certificate (its leaf)."""

    domain: str
    not_after: datetime
    issuer: str
    self_signed: bool
    serial: int = 0
    names: tuple[str, ...] = ()

    def is_expired(self, now: datetime) -> bool:
        return now >= self.not_after


def validate_domain(domain: str) -> str:
    """Return ``domain`` normalised (lowercase, no trailing dot) or raise ValidationError."""
    name = normalize_host(domain)
    if len(name) > 253 or not _DOMAIN_RE.fullmatch(name):
        raise ValidationError(
            f"invalid certificate domain {domain!r}: use DNS labels [a-z0-9-] "
            "separated by '.', optionally starting with '*.'"
        )
    return name


def dir_name_for(domain: str) -> str:
    """The directory under ``certs/`` that holds ``domain``'s files."""
    name = validate_domain(domain)
    if name.startswith("*."):
        return WILDCARD_DIR_PREFIX + name[2:]
    return name


def domain_for_dir(dir_name: str) -> str | None:
    """The domain stored in directory ``dir_name``, or None if it is not a cert directory."""
    name = dir_name
    if name.startswith(WILDCARD_DIR_PREFIX):
        name = "*." + name[len(WILDCARD_DIR_PREFIX) :]
    if name != name.lower() or not _DOMAIN_RE.fullmatch(name):
        return None
    return name


def select_name(names: set[str] | frozenset[str], sni: str | None) -> str | None:
    """The stored domain that serves ``sni``: exact, then ``*.{parent}``; else None."""
    if not sni:
        return None
    host = normalize_host(sni)
    if host in names:
        return host
    _, dot, parent = host.partition(".")
    if dot and parent:
        wildcard = "*." + parent
        if wildcard in names:
            return wildcard
    return None


def parse_cert_info(domain: str, fullchain_pem: bytes) -> CertInfo:
    """Parse the leaf (first PEM block) of ``fullchain_pem`` into a :class:`CertInfo`."""
    try:
        leaf = x509.load_pem_x509_certificates(fullchain_pem)[0]
    except (ValueError, IndexError) as exc:
        raise TlsError(f"certificate for {domain} is not valid PEM: {exc}") from exc
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = tuple(san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    return CertInfo(
        domain=domain,
        not_after=leaf.not_valid_after_utc,
        issuer=leaf.issuer.rfc4514_string(),
        self_signed=leaf.issuer == leaf.subject,
        serial=leaf.serial_number,
        names=names,
    )
