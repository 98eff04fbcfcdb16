"""CertStore: files and modes, refresh of changed files, SNI selection over real TLS.

The handshake tests run a real asyncio TLS listener on 127.0.0.1 that uses
``CertStore.server_context()`` and connect with a real client (SNI or none).
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tako_server.tls import CertStore, ensure_self_signed, make_self_signed

NOW = datetime.now(UTC)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_default_fallback_is_generated_once_with_private_modes(tmp_path: Path) -> None:
    first = CertStore(tmp_path / "certs")
    assert first.info("default") is None  # building a store never generates keys
    info = first.ensure_default()
    assert info.self_signed and first.ensure_default() == info
    second = CertStore(tmp_path / "certs")
    assert second.info("default") == info
    assert mode(tmp_path / "certs") == 0o700
    assert mode(tmp_path / "certs" / "default") == 0o700
    assert mode(tmp_path / "certs" / "default" / "privkey.pem") == 0o600


def test_self_signed_certificate_is_p256_for_the_host_for_about_a_year() -> None:
    cert_pem, _ = make_self_signed("app.localhost", NOW)
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["app.localhost"]
    assert cert.subject.rfc4514_string() == "O=Tako,CN=app.localhost"
    assert timedelta(days=364) < cert.not_valid_after_utc - NOW <= timedelta(days=365)


def test_ensure_self_signed_reuses_until_due_then_replaces(tmp_path: Path) -> None:
    store = CertStore(tmp_path)
    first = ensure_self_signed(store, "app.localhost", NOW)
    assert ensure_self_signed(store, "app.localhost", NOW + timedelta(days=300)) == first
    renewed = ensure_self_signed(store, "app.localhost", NOW + timedelta(days=340))
    assert renewed.serial != first.serial


def test_worker_store_refresh_loads_only_new_changed_or_removed_certs(tmp_path: Path) -> None:
    daemon = CertStore(tmp_path)
    worker = CertStore(tmp_path)
    assert worker.refresh() == set()

    daemon.put("a.example.org", *make_self_signed("a.example.org", NOW))
    daemon.put("*.example.org", *make_self_signed("*.example.org", NOW))
    assert worker.refresh() == {"a.example.org", "*.example.org"}
    assert worker.refresh() == set()
    assert (tmp_path / "_wildcard.example.org" / "fullchain.pem").is_file()

    renewed = daemon.put("a.example.org", *make_self_signed("a.example.org", NOW))
    assert worker.refresh() == {"a.example.org"}
    assert worker.info("a.example.org") == renewed

    shutil.rmtree(tmp_path / "a.example.org")
    assert worker.refresh() == {"a.example.org"}
    assert worker.info("a.example.org") is None


def test_half_written_pair_keeps_previous_certificate_until_fixed(tmp_path: Path) -> None:
    store = CertStore(tmp_path)
    old = store.put("a.example.org", *make_self_signed("a.example.org", NOW))
    new_cert, new_key = make_self_signed("a.example.org", NOW)
    (tmp_path / "a.example.org" / "fullchain.pem").write_bytes(new_cert)  # key not yet

    assert store.refresh() == set()
    assert store.info("a.example.org") == old
    (tmp_path / "a.example.org" / "privkey.pem").write_bytes(new_key)
    assert store.refresh() == {"a.example.org"}
    assert store.info("a.example.org") != old


@pytest.fixture
async def listener(tmp_path: Path) -> AsyncIterator[tuple[CertStore, int]]:
    store = CertStore(tmp_path)
    store.ensure_default()
    for host in ("app.example.com", "*.example.com"):
        store.put(host, *make_self_signed(host, NOW))

    async def hang_up(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0, ssl=store.server_context())
    yield store, server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def handshake(port: int, sni: str) -> tuple[str, str | None, str | None]:
    """(subject of the served leaf, ALPN protocol, TLS version); ``sni=''`` sends none."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=sni)
    tls: ssl.SSLObject = writer.get_extra_info("ssl_object")
    der = tls.getpeercert(binary_form=True)
    assert der is not None
    result = (
        x509.load_der_x509_certificate(der).subject.rfc4514_string(),
        tls.selected_alpn_protocol(),
        tls.version(),
    )
    writer.close()
    return result


@pytest.mark.parametrize(
    ("sni", "subject"),
    [
        ("app.example.com", "O=Tako,CN=app.example.com"),
        ("APP.example.com", "O=Tako,CN=app.example.com"),
        ("www.example.com", "O=Tako,CN=*.example.com"),
        ("deep.www.example.com", "O=Tako,CN=default"),
        ("unknown.org", "O=Tako,CN=default"),
        ("", "O=Tako,CN=default"),
    ],
)
async def test_one_listener_serves_exact_then_wildcard_then_default_by_sni(
    listener: tuple[CertStore, int], sni: str, subject: str
) -> None:
    _, port = listener
    served, alpn, version = await handshake(port, sni)
    assert served == subject
    assert alpn == "http/1.1"
    assert version in {"TLSv1.2", "TLSv1.3"}


async def test_new_certificate_is_served_after_refresh_without_new_listener(
    listener: tuple[CertStore, int], tmp_path: Path
) -> None:
    store, port = listener
    assert (await handshake(port, "new.org"))[0] == "O=Tako,CN=default"
    CertStore(tmp_path).put("new.org", *make_self_signed("new.org", NOW))  # another process
    assert store.refresh() == {"new.org"}
    assert (await handshake(port, "new.org"))[0] == "O=Tako,CN=new.org"
