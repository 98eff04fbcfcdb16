"""Pure TLS policy: renewal timing, retry backoff, per-host decisions, SNI name choice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

import pytest

from tako_server.tls import (
    Action,
    CertInfo,
    can_use_acme,
    decide,
    is_due,
    next_attempt,
    retry_delay,
    select_name,
)
from tako_server.tls.policy import CertPlan, Method

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("remaining", "due"),
    [
        (timedelta(days=90), False),
        (timedelta(days=30, seconds=1), False),
        (timedelta(days=30), True),
        (timedelta(days=1), True),
        (timedelta(days=-1), True),
    ],
)
def test_certificate_is_due_within_30_days_of_expiry(remaining: timedelta, due: bool) -> None:
    assert is_due(NOW + remaining, NOW) is due


@pytest.mark.parametrize(
    ("failures", "delay"),
    [
        (0, timedelta(0)),
        (1, timedelta(minutes=1)),
        (2, timedelta(minutes=2)),
        (3, timedelta(minutes=4)),
        (10, timedelta(minutes=512)),
        (11, timedelta(hours=12)),
        (500, timedelta(hours=12)),
    ],
)
def test_retry_backoff_doubles_from_one_minute_and_caps_at_12_hours(
    failures: int, delay: timedelta
) -> None:
    assert retry_delay(failures) == delay
    assert next_attempt(failures, NOW) == NOW + delay


def cert(days_left: float, *, self_signed: bool) -> CertInfo:
    return CertInfo("x", NOW + timedelta(days=days_left), "CN=x", self_signed)


@pytest.mark.parametrize(
    ("host", "stored", "acme", "action"),
    [
        ("app.localhost", None, True, Action.SELF_SIGN),
        ("x.test", None, True, Action.SELF_SIGN),
        ("*.preview.localhost", None, True, Action.SELF_SIGN),
        ("10.1.2.3", None, True, Action.SELF_SIGN),
        ("app.localhost", cert(200, self_signed=True), True, Action.REUSE),
        ("app.localhost", cert(10, self_signed=True), True, Action.SELF_SIGN),
        ("app.example.org", None, True, Action.ISSUE),
        ("app.example.org", cert(60, self_signed=False), True, Action.REUSE),
        ("app.example.org", cert(5, self_signed=False), True, Action.REUSE),
        ("app.example.org", cert(-1, self_signed=False), True, Action.ISSUE),
        ("app.example.org", cert(300, self_signed=True), True, Action.ISSUE),
        ("app.example.org", None, False, Action.SELF_SIGN),
        ("app.example.org", cert(5, self_signed=False), False, Action.REUSE),
        ("*.example.org", None, True, Action.NEEDS_DNS01),
        ("*.example.org", cert(60, self_signed=False), True, Action.REUSE),
    ],
)
def test_decide_picks_self_signed_for_private_acme_for_public_and_reuses_valid_certs(
    host: str, stored: CertInfo | None, acme: bool, action: Action
) -> None:
    assert decide(host, stored, NOW, acme_enabled=acme) is action


def test_public_wildcard_is_issued_only_when_dns01_is_available() -> None:
    assert decide("*.example.org", None, NOW, acme_enabled=True, dns01_available=True) is (
        Action.ISSUE
    )


@pytest.mark.parametrize(
    ("host", "dns01", "expected"),
    [
        ("app.example.org", False, True),
        ("*.example.org", False, False),
        ("*.example.org", True, True),
        ("app.localhost", True, False),
        ("203.0.113.7", False, False),
    ],
)
def test_acme_is_used_only_for_names_a_ca_can_validate(
    host: str, dns01: bool, expected: bool
) -> None:
    assert can_use_acme(host, dns01_available=dns01) is expected


NAMES = frozenset({"example.com", "*.example.com", "api.example.com", "default"})


@pytest.mark.parametrize(
    ("sni", "selected"),
    [
        ("api.example.com", "api.example.com"),
        ("API.Example.com.", "api.example.com"),
        ("www.example.com", "*.example.com"),
        ("example.com", "example.com"),
        ("a.b.example.com", None),
        ("other.org", None),
        ("", None),
        (None, None),
    ],
)
def test_select_name_prefers_exact_then_one_label_wildcard(
    sni: str | None, selected: str | None
) -> None:
    assert select_name(NAMES, sni) == selected


@pytest.mark.parametrize(
    ("ssl", "token", "method"),
    [
        ("letsencrypt", None, Method.HTTP01),
        ("letsencrypt", "t", Method.DNS01),
        ("cloudflare", "t", Method.ORIGIN_CA),
        ("cloudflare", None, Method.ORIGIN_CA),
    ],
)
def test_cert_plan_method(ssl: Literal["letsencrypt", "cloudflare"], token: str | None,
                          method: Method) -> None:  # fmt: skip
    assert CertPlan(ssl, token).method is method


def test_cert_plan_repr_never_shows_the_token() -> None:
    assert "secret-token" not in repr(CertPlan("letsencrypt", "secret-token"))
