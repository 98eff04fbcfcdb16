"""TLS for tako-server: certificate store, SNI selection, self-signed certs and ACME.

Public API (see docs/tls.md):

- :class:`CertStore` -- certificates on disk as SSL contexts; ``select(sni)``,
  ``server_context()``, ``refresh()``, ``info(domain)``, ``put(...)``.
- :func:`ensure_self_signed` / :func:`make_self_signed` -- ECDSA P-256 self-signed certs.
- :class:`ChallengeStore` and :func:`challenge_response` -- HTTP-01 answers for the edge.
- :class:`AcmeIssuer` -- one ACME account, ``issue(domain)`` over HTTP-01.
- :class:`CertManager` -- per-host decisions, background issuance, renewal, ``status``.
- Pure policy: :func:`is_due`, :func:`next_attempt`, :func:`decide`, :func:`select_name`.

Rule: this package never reads settings or the environment; the daemon passes them in.
"""

from .acme_issuer import (
    LETSENCRYPT_PRODUCTION,
    LETSENCRYPT_STAGING,
    AcmeIssuer,
    directory_url_for,
)
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
from .manager import CertManager
from .policy import (
    Action,
    CertState,
    HostCertStatus,
    can_use_acme,
    decide,
    is_due,
    next_attempt,
    retry_delay,
)
from .selfsigned import ensure_self_signed, make_self_signed
from .store import CertStore, new_server_context

__all__ = [
    "LETSENCRYPT_PRODUCTION",
    "LETSENCRYPT_STAGING",
    "DEFAULT_DOMAIN",
    "AcmeError",
    "AcmeIssuer",
    "Action",
    "CertInfo",
    "CertManager",
    "CertState",
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
