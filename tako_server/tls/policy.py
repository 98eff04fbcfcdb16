"""Pure certificate policy: renewal timing, retry backoff and what to do for a host.

Rules:

- A certificate is *due* when it expires within :data:`RENEW_BEFORE` (30 days).
- A failed issuance/renewal is retried after ``1 min * 2**(failures-1)``, capped at
  12 h (:data:`RETRY_CAP`); the old certificate keeps being served meanwhile.
- :func:`decide` maps a host and what is on disk to one :class:`Action`: private hosts
  get a self-signed certificate, public exact hosts get ACME HTTP-01, public wildcards
  need DNS-01 (HTTP-01 cannot validate a wildcard), a valid stored cert is reused.
- A :class:`CertPlan` says how an app's hosts are issued: ``ssl = "letsencrypt"`` over
  HTTP-01, or DNS-01 when the ``ssl.cloudflare`` token is there (exact hosts too, per the
  tako.toml reference); ``ssl = "cloudflare"`` from the Origin CA (needs the token).
- Time is always an argument (``now``, timezone-aware UTC); nothing here does I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from tako_common.hosts import ip_literal, is_private_host

from .certinfo import CertInfo

RENEW_BEFORE = timedelta(days=30)
CHECK_INTERVAL = timedelta(hours=12)
RETRY_BASE = timedelta(minutes=1)
RETRY_CAP = timedelta(hours=12)


class CertState(enum.StrEnum):
    """What ``status`` reports for a host's certificate."""

    ISSUED = "issued"
    PENDING = "pending"
    FAILED = "failed"
    SELF_SIGNED = "self_signed"
    NEEDS_DNS01 = "needs_dns01"


class Action(enum.StrEnum):
    """What the manager does for a host when it is (re)checked."""

    REUSE = "reuse"
    SELF_SIGN = "self_sign"
    ISSUE = "issue"
    NEEDS_DNS01 = "needs_dns01"


@dataclass(frozen=True)
class HostCertStatus:
    """One host's certificate state as shown by ``status``."""

    host: str
    state: CertState
    not_after: datetime | None = None
    reason: str | None = None
    retry_at: datetime | None = None


class Method(enum.StrEnum):
    """How a public host's certificate is obtained."""

    HTTP01 = "http-01"
    DNS01 = "dns-01"
    ORIGIN_CA = "origin-ca"


@dataclass(frozen=True)
class CertPlan:
    """An app's ``ssl`` setting and its ``ssl.cloudflare`` token (never in a repr)."""

    ssl: Literal["letsencrypt", "cloudflare"] = "letsencrypt"
    cloudflare_token: str | None = field(default=None, repr=False)

    @property
    def method(self) -> Method:
        if self.ssl == "cloudflare":
            return Method.ORIGIN_CA
        return Method.DNS01 if self.cloudflare_token else Method.HTTP01


MISSING_CLOUDFLARE = (
    'ssl = "cloudflare" needs the ssl.cloudflare credential '
    "(tako credentials set ssl.cloudflare --env ENV); the fallback certificate is served"
)


def is_due(not_after: datetime, now: datetime, renew_before: timedelta = RENEW_BEFORE) -> bool:
    """True when a certificate ending at ``not_after`` should be renewed at ``now``."""
    return not_after - now <= renew_before


def retry_delay(failures: int) -> timedelta:
    """Backoff after ``failures`` consecutive failures (>= 1): 1 min doubling, 12 h cap."""
    if failures < 1:
        return timedelta(0)
    exponent = min(failures - 1, 32)
    delay: timedelta = RETRY_BASE * (2**exponent)
    return min(delay, RETRY_CAP)


def next_attempt(failures: int, now: datetime) -> datetime:
    """When to try again after ``failures`` consecutive failures observed at ``now``."""
    return now + retry_delay(failures)


def can_use_acme(host: str, *, dns01_available: bool = False) -> bool:
    """True when a CA can validate ``host``: public, not an IP, wildcard only with DNS-01."""
    if is_private_host(host) or ip_literal(host.removeprefix("*.")) is not None:
        return False
    return dns01_available or not host.startswith("*.")


def decide(
    host: str,
    cert: CertInfo | None,
    now: datetime,
    *,
    acme_enabled: bool,
    dns01_available: bool = False,
) -> Action:
    """What to do for ``host`` given its stored certificate ``cert`` (or None).

    A stored CA-signed certificate that has not expired is always reused (renewal is
    the manager's job); a self-signed one is reused until it is due.
    """
    if cert is not None and not cert.self_signed and not cert.is_expired(now):
        return Action.REUSE
    private = is_private_host(host) or ip_literal(host.removeprefix("*.")) is not None
    if private or not acme_enabled:
        if cert is not None and not is_due(cert.not_after, now):
            return Action.REUSE
        return Action.SELF_SIGN
    if host.startswith("*.") and not dns01_available:
        return Action.NEEDS_DNS01
    return Action.ISSUE


def dns01_reason(host: str) -> str:
    """The status reason for a public wildcard that cannot be validated over HTTP-01."""
    return (
        f"{host} needs a DNS-01 challenge (set ssl.cloudflare credentials); HTTP-01 cannot "
        "validate wildcards, so the fallback certificate is served"
    )
