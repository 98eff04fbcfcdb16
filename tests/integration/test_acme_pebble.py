"""TLS + ACME against a real CA (Pebble): issue, serve, reuse, renew, fail, stay local.

Pebble and the mock DNS run once per module on loopback; every test gets fresh
certificate/account directories and a fresh ChallengeStore behind the HTTP-01 responder.
Certificates are checked through a real TLS handshake against a listener that uses
``CertStore.server_context()``, verified up to the root Pebble generated at start.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509

from tako_server.tls import (
    AcmeIssuer,
    CertManager,
    CertState,
    CertStore,
    ChallengeStore,
)

from .pebble import ChallengeResponder, Pebble, free_port, pebble_available, run_pebble

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not pebble_available(), reason="needs Debian package 'pebble'"),
]

HOST_A = "a.tako-it.org"
HOST_B = "b.tako-it.org"


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


@dataclass
class Node:
    """One tako-server's TLS parts over a data dir (rebuilt to simulate a restart)."""

    data: Path
    store: CertStore
    issuer: AcmeIssuer
    manager: CertManager


def make_node(data: Path, pebble: Pebble, challenges: ChallengeStore) -> Node:
    store = CertStore(data / "certs")
    store.ensure_default()
    issuer = AcmeIssuer(
        data / "acme", pebble.directory_url, "ops@tako-it.org", pebble.ca_bundle, challenges,
        store=store,
    )  # fmt: skip
    return Node(data, store, issuer, CertManager(store, issuer))


@pytest.fixture
async def node(
    tmp_path: Path, pebble: Pebble, responder: ChallengeResponder
) -> AsyncIterator[Node]:
    responder.store = ChallengeStore()
    responder.broken = False
    responder.requests.clear()
    made = make_node(tmp_path, pebble, responder.store)
    made.manager.start()
    yield made
    await made.manager.close()
    made.issuer.close()


@pytest.fixture
async def tls_port(node: Node) -> AsyncIterator[int]:
    async def hang_up(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0, ssl=node.store.server_context())
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def served_cert(port: int, host: str, root_pem: bytes | None) -> x509.Certificate:
    """Handshake with SNI ``host``; verify against ``root_pem`` when given."""
    if root_pem is None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cadata=root_pem.decode())
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=host)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return x509.load_der_x509_certificate(der)


async def test_two_public_hosts_are_issued_in_background_and_served_chained_to_pebble_root(
    node: Node, pebble: Pebble, tls_port: int
) -> None:
    started = time.monotonic()
    first = node.manager.ensure_hosts([HOST_A, HOST_B])
    assert time.monotonic() - started < 1.0, "ensure_hosts must not wait for ACME"
    assert [s.state for s in first] == [CertState.PENDING, CertState.PENDING]

    await node.manager.wait_idle(timeout=60)

    root = await asyncio.to_thread(pebble.root_pem)
    for host in (HOST_A, HOST_B):
        status = node.manager.status(host)
        assert status is not None and status.state is CertState.ISSUED, status
        cert = await served_cert(tls_port, host, root)  # verifies chain + hostname
        assert cert.serial_number == node.store.info(host).serial  # type: ignore[union-attr]
    assert node.issuer.orders_created == 2
    assert node.issuer.accounts_created == 1
    assert oct((node.data / "certs" / HOST_A / "privkey.pem").stat().st_mode & 0o777) == "0o600"
    assert oct((node.data / "acme" / "account.key").stat().st_mode & 0o777) == "0o600"


async def test_restart_reuses_account_and_certificates_without_new_order(
    node: Node, pebble: Pebble, responder: ChallengeResponder
) -> None:
    node.manager.ensure_hosts([HOST_A])
    await node.manager.wait_idle(timeout=60)
    account_before = json.loads((node.data / "acme" / "account.json").read_text())
    serial_before = node.store.info(HOST_A).serial  # type: ignore[union-attr]

    again = make_node(node.data, pebble, responder.store)  # the "restarted" daemon
    again.manager.start()
    try:
        statuses = again.manager.ensure_hosts([HOST_A])
        assert statuses[0].state is CertState.ISSUED
        assert again.store.info(HOST_A).serial == serial_before  # type: ignore[union-attr]
        assert again.issuer.requests_sent == 0, "a valid stored cert needs no ACME traffic"

        again.manager.ensure_hosts([HOST_B])  # a new host after restart: same account
        await again.manager.wait_idle(timeout=60)
        assert again.manager.status(HOST_B).state is CertState.ISSUED  # type: ignore[union-attr]
        assert again.issuer.accounts_created == 0
        assert again.issuer.orders_created == 1
        account_after = json.loads((node.data / "acme" / "account.json").read_text())
        assert account_after["regr"]["uri"] == account_before["regr"]["uri"]
    finally:
        await again.manager.close()
        again.issuer.close()


async def test_certificate_due_for_renewal_is_renewed_and_served_without_restart(
    node: Node, tls_port: int
) -> None:
    node.manager.ensure_hosts([HOST_A])
    await node.manager.wait_idle(timeout=60)
    old = node.store.info(HOST_A)
    assert old is not None
    served_old = await served_cert(tls_port, HOST_A, None)
    assert served_old.serial_number == old.serial

    queued = node.manager.check(now=old.not_after - timedelta(days=10))
    assert queued == [HOST_A]
    await node.manager.wait_idle(timeout=60)

    new = node.store.info(HOST_A)
    assert new is not None and new.serial != old.serial
    assert node.issuer.orders_created == 2
    served_new = await served_cert(tls_port, HOST_A, None)
    assert served_new.serial_number == new.serial
    assert node.manager.check(now=old.not_after - timedelta(days=40)) == []


async def test_failed_validation_keeps_fallback_and_reports_ca_reason(
    node: Node, responder: ChallengeResponder, tls_port: int
) -> None:
    responder.broken = True
    host = "broken.tako-it.org"
    node.manager.ensure_hosts([host])
    await node.manager.wait_idle(timeout=60)

    status = node.manager.status(host)
    assert status is not None and status.state is CertState.FAILED
    assert status.reason is not None
    assert "urn:ietf:params:acme:error:unauthorized" in status.reason
    assert "404" in status.reason
    assert status.retry_at is not None
    assert responder.requests, "Pebble really asked the responder"
    assert not (node.data / "certs" / host).exists()
    served = await served_cert(tls_port, host, None)
    assert served.subject.rfc4514_string() == "O=Tako,CN=default"


async def test_private_hosts_get_self_signed_and_no_acme_traffic(
    node: Node, responder: ChallengeResponder, tls_port: int
) -> None:
    hosts = ["app.localhost", "x.test", "*.preview.localhost", "*.tako-it.org"]
    statuses = {s.host: s for s in node.manager.ensure_hosts(hosts)}
    await node.manager.wait_idle(timeout=10)

    for host in hosts[:3]:
        assert statuses[host].state is CertState.SELF_SIGNED
    assert statuses["*.tako-it.org"].state is CertState.NEEDS_DNS01
    assert "DNS-01" in (statuses["*.tako-it.org"].reason or "")
    assert node.issuer.requests_sent == 0
    assert node.issuer.orders_created == 0
    assert responder.requests == []
    assert not (node.data / "acme" / "account.key").exists()
    served = await served_cert(tls_port, "pr-7.preview.localhost", None)
    assert served.subject.rfc4514_string() == "O=Tako,CN=*.preview.localhost"
