"""DNS-01 through the Cloudflare DNS API and the Cloudflare Origin CA, with real parts.

Pebble validates DNS-01 against pebble-challtestsrv; the TXT records get there through a
local stand-in of the Cloudflare API (:mod:`.cloudflare_standin`), so validation is real.
The Origin CA stand-in signs with a local CA. Certificates are checked through a TLS
handshake on a listener using ``CertStore.server_context()`` (SNI).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tako_server.tls import AcmeIssuer, CertManager, CertState, CertStore, ChallengeStore
from tako_server.tls.cloudflare import CloudflareApi
from tako_server.tls.origin_ca import OriginCaIssuer
from tako_server.tls.policy import CertPlan
from tests.helpers.artifacts import place_artifact, tar_zst_from_dir

from .cloudflare_standin import CloudflareStandIn
from .conftest import APPS_DIR, ControlClient, ServerProcess, deploy_message
from .pebble import ChallengeResponder, Pebble, free_port, pebble_available, run_pebble

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not pebble_available(), reason="needs Debian package 'pebble'"),
]

TOKEN = "cf-test-token-7f3a"
ZONE = "tako-cf.org"
DNS_PLAN = CertPlan("letsencrypt", TOKEN)
ORIGIN_PLAN = CertPlan("cloudflare", TOKEN)


@pytest.fixture(scope="module")
def responder() -> Iterator[ChallengeResponder]:
    with ChallengeResponder(free_port()) as server:
        yield server


@pytest.fixture(scope="module")
def pebble(
    tmp_path_factory: pytest.TempPathFactory, responder: ChallengeResponder
) -> Iterator[Pebble]:
    with run_pebble(tmp_path_factory.mktemp("pebble"), responder.port) as server:
        yield server


@pytest.fixture
def cloudflare(pebble: Pebble) -> Iterator[CloudflareStandIn]:
    with CloudflareStandIn(TOKEN, [ZONE], pebble.dns_management_url) as server:
        yield server


@dataclass
class Node:
    store: CertStore
    issuer: AcmeIssuer
    origin: OriginCaIssuer
    manager: CertManager


@pytest.fixture
async def node(
    tmp_path: Path, pebble: Pebble, responder: ChallengeResponder, cloudflare: CloudflareStandIn
) -> AsyncIterator[Node]:
    responder.requests.clear()
    store = CertStore(tmp_path / "certs")
    store.ensure_default()
    issuer = AcmeIssuer(
        tmp_path / "acme", pebble.directory_url, None, pebble.ca_bundle, ChallengeStore(),
        store=store, dns_propagation=0,
    )  # fmt: skip
    origin = OriginCaIssuer(store)
    manager = CertManager(
        store, issuer, origin_ca=origin,
        cloudflare=lambda token: CloudflareApi(token, cloudflare.base_url),
    )  # fmt: skip
    manager.start()
    yield Node(store, issuer, origin, manager)
    await manager.close()
    issuer.close()


@pytest.fixture
async def tls_port(node: Node) -> AsyncIterator[int]:
    async def hang_up(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0, ssl=node.store.server_context())
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def served_cert(port: int, host: str, root_pem: bytes) -> x509.Certificate:
    """Handshake with SNI ``host``, verified (chain and name) against ``root_pem``."""
    ctx = ssl.create_default_context(cadata=root_pem.decode())
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=host)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return x509.load_der_x509_certificate(der)


async def test_dns01_issues_wildcard_and_exact_hosts_and_cleans_up_records(
    node: Node, pebble: Pebble, cloudflare: CloudflareStandIn, responder: ChallengeResponder,
    tls_port: int,
) -> None:  # fmt: skip
    hosts = [f"*.{ZONE}", f"www.{ZONE}"]
    node.manager.ensure_hosts(hosts, DNS_PLAN)
    await node.manager.wait_idle(timeout=60)

    root = await asyncio.to_thread(pebble.root_pem)
    for host in hosts:
        status = node.manager.status(host)
        assert status is not None and status.state is CertState.ISSUED, status
    wildcard = await served_cert(tls_port, f"pr-9.{ZONE}", root)
    assert wildcard.serial_number == node.store.info(f"*.{ZONE}").serial  # type: ignore[union-attr]
    exact = await served_cert(tls_port, f"www.{ZONE}", root)
    assert exact.serial_number == node.store.info(f"www.{ZONE}").serial  # type: ignore[union-attr]
    assert sorted(cloudflare.created) == [f"_acme-challenge.{ZONE}", f"_acme-challenge.www.{ZONE}"]
    assert cloudflare.records == {}, "TXT records are deleted after validation"
    assert responder.requests == [], "exact hosts used DNS-01 too (a credential is set)"


async def test_dns01_renewal_gets_a_new_certificate(
    node: Node, pebble: Pebble, cloudflare: CloudflareStandIn, tls_port: int
) -> None:
    host = f"*.{ZONE}"
    node.manager.ensure_hosts([host], DNS_PLAN)
    await node.manager.wait_idle(timeout=60)
    old = node.store.info(host)
    assert old is not None

    assert node.manager.check(now=old.not_after - timedelta(days=10)) == [host]
    await node.manager.wait_idle(timeout=60)

    new = node.store.info(host)
    assert new is not None and new.serial != old.serial
    root = await asyncio.to_thread(pebble.root_pem)
    served = await served_cert(tls_port, f"a.{ZONE}", root)
    assert served.serial_number == new.serial
    assert len(cloudflare.created) == 2 and cloudflare.records == {}


async def test_dns_api_error_is_reported_old_certificate_kept_and_retried_later(
    node: Node, cloudflare: CloudflareStandIn
) -> None:
    host = f"api.{ZONE}"
    node.manager.ensure_hosts([host], DNS_PLAN)
    await node.manager.wait_idle(timeout=60)
    old = node.store.info(host)
    assert old is not None

    cloudflare.dns_error = True
    node.manager.check(now=old.not_after - timedelta(days=10))
    await node.manager.wait_idle(timeout=60)

    status = node.manager.status(host)
    assert status is not None and status.state is CertState.ISSUED
    assert status.reason is not None
    assert "renewal failed (old certificate kept)" in status.reason
    assert "81057: The record already exists." in status.reason
    assert status.retry_at is not None
    assert node.store.info(host).serial == old.serial  # type: ignore[union-attr]
    assert cloudflare.records == {}


async def test_wrong_token_fails_with_the_api_reason_and_no_certificate(
    node: Node, cloudflare: CloudflareStandIn
) -> None:
    host = f"*.{ZONE}"
    node.manager.ensure_hosts([host], CertPlan("letsencrypt", "not-the-token"))
    await node.manager.wait_idle(timeout=60)

    status = node.manager.status(host)
    assert status is not None and status.state is CertState.FAILED
    assert "10000: Authentication error" in (status.reason or "")
    assert "not-the-token" not in (status.reason or "")
    assert status.retry_at is not None
    assert node.issuer.orders_created == 1 and cloudflare.created == []


async def test_origin_ca_certificate_issued_served_by_sni_and_renewed(
    node: Node, cloudflare: CloudflareStandIn, tls_port: int
) -> None:
    hosts = [f"shop.{ZONE}", f"*.{ZONE}"]
    statuses = node.manager.ensure_hosts(hosts, ORIGIN_PLAN)
    assert [s.state for s in statuses] == [CertState.PENDING, CertState.PENDING]
    await node.manager.wait_idle(timeout=30)

    for host in hosts:
        assert node.manager.status(host).state is CertState.ISSUED  # type: ignore[union-attr]
    served = await served_cert(tls_port, f"shop.{ZONE}", cloudflare.ca.pem)
    assert served.issuer.rfc4514_string() == "CN=Test Origin CA"
    wildcard = await served_cert(tls_port, f"x.{ZONE}", cloudflare.ca.pem)
    assert wildcard.serial_number == node.store.info(f"*.{ZONE}").serial  # type: ignore[union-attr]
    assert node.issuer.orders_created == 0, "no ACME order for ssl = cloudflare"

    old = node.store.info(f"shop.{ZONE}")
    assert old is not None and old.not_after - datetime.now(UTC) > timedelta(days=360)
    assert f"shop.{ZONE}" in node.manager.check(now=old.not_after - timedelta(days=5))
    await node.manager.wait_idle(timeout=30)
    assert node.store.info(f"shop.{ZONE}").serial != old.serial  # type: ignore[union-attr]
    assert cloudflare.certificates.count([f"shop.{ZONE}"]) == 2


async def test_origin_ca_without_credential_serves_fallback_and_says_why(node: Node) -> None:
    host = f"nocred.{ZONE}"
    [status] = node.manager.ensure_hosts([host], CertPlan("cloudflare", None))
    assert status.state is CertState.SELF_SIGNED
    assert "ssl.cloudflare" in (status.reason or "")
    assert node.origin.issued == 0


# --- through the real tako-server: the deploy carries ssl and the credential -------------


def wait_states(client: ControlClient, app: str, want: dict[str, str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    certs: dict[str, Any] = {}
    while time.monotonic() < deadline:
        (entry,) = client.ok({"command": "status", "app": app, "env": "production"})["apps"]
        certs = {c["host"]: c for c in entry["certificates"]}
        if all(certs.get(h, {}).get("state") == s for h, s in want.items()):
            return
        time.sleep(0.2)
    raise AssertionError(f"certificates not {want} in {timeout}s: {certs}")


def served_issuer(port: int, host: str) -> str:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).issuer.rfc4514_string()


def test_deploys_with_ssl_settings_get_dns01_and_origin_ca_certificates_in_tako_server(
    server_factory: Callable[..., ServerProcess], pebble: Pebble, cloudflare: CloudflareStandIn,
    responder: ChallengeResponder,
) -> None:  # fmt: skip
    server = server_factory(edge=True)
    server.extra_env = {
        "TAKO_ACME_ENABLED": "true",
        "TAKO_ACME_DIRECTORY_URL": pebble.directory_url,
        "TAKO_ACME_CA_BUNDLE": str(pebble.ca_bundle),
        "TAKO_CLOUDFLARE_API_URL": cloudflare.base_url,
        "TAKO_CLOUDFLARE_DNS_PROPAGATION": "0",
    }
    server.start()
    responder.requests.clear()
    name, digest = place_artifact(tar_zst_from_dir(APPS_DIR / "pyapp"), server.incoming)
    creds = {"ssl.cloudflare": TOKEN}
    with server.client() as client:
        client.ok(deploy_message(name, digest, routes=[f"*.{ZONE}", f"www.{ZONE}"],
                                 credentials=creds))  # fmt: skip
        client.ok(deploy_message(name, digest, app="shop", routes=[f"shop.{ZONE}"],
                                 credentials=creds, ssl="cloudflare"))  # fmt: skip
        wait_states(client, "web", {f"*.{ZONE}": "issued", f"www.{ZONE}": "issued"})
        wait_states(client, "shop", {f"shop.{ZONE}": "issued"})
    assert "Pebble" in served_issuer(server.https_port, f"pr-1.{ZONE}")
    assert served_issuer(server.https_port, f"shop.{ZONE}") == "CN=Test Origin CA"
    assert cloudflare.records == {} and responder.requests == []

    server.restart()  # the ssl setting and the credential come back from the state
    with server.client() as client:
        wait_states(client, "shop", {f"shop.{ZONE}": "issued"}, timeout=30)
    assert cloudflare.certificates == [[f"shop.{ZONE}"]], "a restart reuses the certificate"
