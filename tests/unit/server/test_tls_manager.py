"""CertManager decisions, states and backoff, without a CA on the network.

The "CA down" cases point a real AcmeIssuer at a closed port on 127.0.0.1, so the
failure is a real connection refusal; time comes from an injected clock.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tako_server.tls import (
    AcmeIssuer,
    CertManager,
    CertState,
    CertStore,
    ChallengeStore,
    directory_url_for,
)

NOW = datetime.now(UTC).replace(microsecond=0)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def ca_signed(host: str, not_after: datetime) -> tuple[bytes, bytes]:
    """A leaf for ``host`` signed by a throw-away CA (i.e. not self-signed)."""
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")])
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return leaf.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.fixture
def store(tmp_path: Path) -> CertStore:
    return CertStore(tmp_path / "certs")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def unreachable(
    tmp_path: Path, store: CertStore, clock: Clock
) -> AsyncIterator[tuple[CertManager, AcmeIssuer]]:
    url = f"https://127.0.0.1:{closed_port()}/dir"  # nothing listens there
    issuer = AcmeIssuer(tmp_path / "acme", url, None, None, ChallengeStore(), store=store)
    manager = CertManager(store, issuer, clock=clock)
    manager.start()
    yield manager, issuer
    await manager.close()
    issuer.close()


def test_private_hosts_are_self_signed_at_once_and_reported(store: CertStore) -> None:
    changed: list[str] = []
    manager = CertManager(store, None, on_change=changed.append)
    statuses = manager.ensure_hosts(["app.localhost", "*.pr.localhost", "api.test"])
    assert [s.state for s in statuses] == [CertState.SELF_SIGNED] * 3
    assert changed == ["app.localhost", "*.pr.localhost", "api.test"]
    assert store.info("*.pr.localhost") is not None

    manager.ensure_hosts(["app.localhost"])  # already there: nothing rewritten
    assert changed == ["app.localhost", "*.pr.localhost", "api.test"]
    manager.forget(["api.test"])
    assert manager.status("api.test") is None
    assert [s.host for s in manager.statuses()] == ["*.pr.localhost", "app.localhost"]


@pytest.mark.parametrize(
    ("acme", "state", "reason_part"),
    [
        (False, CertState.SELF_SIGNED, "ACME is disabled"),
        (True, CertState.NEEDS_DNS01, "DNS-01"),
    ],
)
async def test_public_wildcard_gets_no_order(
    unreachable: tuple[CertManager, AcmeIssuer],
    store: CertStore,
    acme: bool,
    state: CertState,
    reason_part: str,
) -> None:
    manager = unreachable[0] if acme else CertManager(store, None)
    (status,) = manager.ensure_hosts(["*.example.org"])
    await manager.wait_idle(timeout=5)
    assert status.state is state
    assert reason_part in (status.reason or "")
    assert unreachable[1].orders_created == 0


def test_stored_ca_certificate_is_reused_without_issuer(store: CertStore) -> None:
    store.put("shop.example.org", *ca_signed("shop.example.org", NOW + timedelta(days=10)))
    manager = CertManager(store, None)
    (status,) = manager.ensure_hosts(["shop.example.org"])
    assert status.state is CertState.ISSUED
    assert status.not_after == NOW + timedelta(days=10)
    assert manager.check(NOW) == []  # due, but nobody can renew it: keep serving it


async def test_unreachable_ca_fails_with_reason_and_backs_off_per_host(
    unreachable: tuple[CertManager, AcmeIssuer], clock: Clock
) -> None:
    manager, _ = unreachable
    (pending,) = manager.ensure_hosts(["app.example.org"])
    assert pending.state is CertState.PENDING
    await manager.wait_idle(timeout=30)

    failed = manager.status("app.example.org")
    assert failed is not None and failed.state is CertState.FAILED
    assert "cannot reach ACME server" in (failed.reason or "")
    assert failed.retry_at == NOW + timedelta(minutes=1)

    assert manager.ensure_hosts(["app.example.org"])[0].retry_at == failed.retry_at
    assert manager.check(NOW + timedelta(seconds=30)) == []  # still backing off

    clock.now = NOW + timedelta(minutes=1)
    assert manager.check() == ["app.example.org"]
    await manager.wait_idle(timeout=30)
    again = manager.status("app.example.org")
    assert again is not None and again.retry_at == clock.now + timedelta(minutes=2)


async def test_failed_renewal_keeps_old_certificate_and_reports_it(
    unreachable: tuple[CertManager, AcmeIssuer], store: CertStore
) -> None:
    manager, _ = unreachable
    old = store.put("shop.example.org", *ca_signed("shop.example.org", NOW + timedelta(days=5)))
    (status,) = manager.ensure_hosts(["shop.example.org"])  # due: renewal queued
    assert status.state is CertState.ISSUED
    await manager.wait_idle(timeout=30)

    after = manager.status("shop.example.org")
    assert after is not None and after.state is CertState.ISSUED
    assert (after.reason or "").startswith("renewal failed (old certificate kept)")
    assert store.info("shop.example.org") == old


@pytest.mark.parametrize(
    ("staging", "override", "url"),
    [
        (False, None, "https://acme-v02.api.letsencrypt.org/directory"),
        (True, None, "https://acme-staging-v02.api.letsencrypt.org/directory"),
        (True, "https://127.0.0.1:14000/dir", "https://127.0.0.1:14000/dir"),
    ],
)
def test_directory_url_defaults_to_lets_encrypt_and_staging_switch(
    staging: bool, override: str | None, url: str
) -> None:
    assert directory_url_for(staging=staging, override=override) == url
