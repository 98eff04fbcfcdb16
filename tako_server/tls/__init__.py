"""TLS for tako-server: certificate store, SNI selection, self-signed certs and ACME.

Public API (see docs/tls.md):

- :class:`CertStore` -- certificates on disk as SSL contexts; ``select(sni)``,
  ``server_context()``, ``refresh()``, ``info(domain)``, ``put(...)``.
- :func:`ensure_self_signed` / :func:`make_self_signed` -- ECDSA P-256 self-signed certs.
- :class:`ChallengeStore` and :func:`challenge_response` -- HTTP-01 answers for the edge.
- :class:`AcmeIssuer` -- one ACME account, ``issue(domain, dns=None)`` over HTTP-01, or
  DNS-01 through a :class:`CloudflareApi`; :class:`OriginCaIssuer` -- Cloudflare Origin CA.
- :class:`CertPlan` -- an app's ``ssl`` and ``ssl.cloudflare`` token: how its hosts are issued.
- :class:`CertManager` -- per-host decisions, background issuance, renewal, ``status``.
- Pure policy: :func:`is_due`, :func:`next_attempt`, :func:`decide`, :func:`select_name`.

Rule: this package never reads settings or the environment; the daemon passes them in.
The ACME side (``acme``, ``josepy``) is imported lazily, on first use of its names, so edge
worker processes that only need :class:`CertStore` stay small.
"""

from typing import TYPE_CHECKING, Any

from .certinfo import (
    DEFAULT_DOMAIN,
    CertInfo,
    dir_name_for,
    domain_for_dir,
    parse_cert_info,
    select_name,
    validate_domain,
)
from .challenges import ChallengeStore, challenge_response
from .errors import AcmeError, TlsError
from .policy import (
    Action,
    CertPlan,
    CertState,
    HostCertStatus,
    can_use_acme,
    decide,
    is_due,
    next_attempt,
    retry_delay,
)
from .selfsigned import make_self_signed
from .store import CertStore, ensure_self_signed, new_server_context

if TYPE_CHECKING:
    from .acme_issuer import (
        LETSENCRYPT_PRODUCTION,
        LETSENCRYPT_STAGING,
        AcmeIssuer,
        directory_url_for,
    )
    from .cloudflare import CloudflareApi, CloudflareError
    from .manager import CertManager
    from .origin_ca import OriginCaIssuer

_LAZY = {
    "LETSENCRYPT_PRODUCTION": "acme_issuer",
    "LETSENCRYPT_STAGING": "acme_issuer",
    "AcmeIssuer": "acme_issuer",
    "directory_url_for": "acme_issuer",
    "CertManager": "manager",
    "CloudflareApi": "cloudflare",
    "CloudflareError": "cloudflare",
    "OriginCaIssuer": "origin_ca",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "LETSENCRYPT_PRODUCTION",
    "LETSENCRYPT_STAGING",
    "DEFAULT_DOMAIN",
    "AcmeError",
    "AcmeIssuer",
    "Action",
    "CertInfo",
    "CertManager",
    "CertPlan",
    "CertState",
    "CloudflareApi",
    "CloudflareError",
    "OriginCaIssuer",
    "CertStore",
    "ChallengeStore",
    "HostCertStatus",
    "TlsError",
    "can_use_acme",
    "challenge_response",
    "decide",
    "dir_name_for",
    "directory_url_for",
    "domain_for_dir",
    "ensure_self_signed",
    "is_due",
    "make_self_signed",
    "new_server_context",
    "next_attempt",
    "parse_cert_info",
    "retry_delay",
    "select_name",
    "validate_domain",
]
