"""ACME through the real tako-server: Pebble validates HTTP-01 against tako-server's own
edge on its HTTP port, the certificate lands in the store, the HTTPS listener serves it
(chaining to Pebble's root), ``status`` reports it, and a restart reuses it.

Pebble's mock DNS (pebble-challtestsrv) resolves every name to 127.0.0.1, where the
test's tako-server listens; nothing leaves loopback.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.artifacts import place_artifact, tar_zst_from_dir
from tests.integration.conftest import APPS_DIR, ControlClient, ServerProcess, deploy_message
from tests.integration.pebble import Pebble, pebble_available, run_pebble

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not pebble_available(), reason="needs the Debian package pebble"),
]

PUBLIC = ["shop.tako-acme.net", "api.tako-acme.net"]
PATHS = {"shop.tako-acme.net": "/", "api.tako-acme.net": "/v1/items"}
ROUTES = ["shop.tako-acme.net", "api.tako-acme.net/v1/*", "admin.tako-acme.localhost"]


def certificates(client: ControlClient) -> dict[str, dict[str, Any]]:
    (app,) = client.ok({"command": "status", "app": "web", "env": "production"})["apps"]
    return {c["host"]: c for c in app["certificates"]}


def wait_issued(client: ControlClient, hosts: list[str], timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    certs: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        certs = certificates(client)
        if all(certs.get(h, {}).get("state") == "issued" for h in hosts):
            return certs
        failed = [c for c in certs.values() if c["state"] == "failed"]
        assert not failed, failed
        time.sleep(0.2)
    raise AssertionError(f"certificates not issued in {timeout}s: {certs}")


def https_get(port: int, host: str, cadata: str, path: str = "/") -> tuple[str, bytes]:
    """GET over a verifying TLS connection; returns (peer cert serial hex, response)."""
    ctx = ssl.create_default_context(cadata=cadata)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
            )
            chunks = []
            while chunk := tls.recv(65536):
                chunks.append(chunk)
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    from cryptography import x509

    return format(x509.load_der_x509_certificate(der).serial_number, "x"), b"".join(chunks)


def start_with_pebble(server: ServerProcess, pebble: Pebble) -> None:
    server.extra_env = {
        "TAKO_ACME_ENABLED": "true",
        "TAKO_ACME_DIRECTORY_URL": pebble.directory_url,
        "TAKO_ACME_CA_BUNDLE": str(pebble.ca_bundle),
        "TAKO_ACME_EMAIL": "ops@tako-acme.net",
    }
    server.start()


def test_public_hosts_get_trusted_certificates_through_the_edge_and_survive_a_restart(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = server_factory(edge=True)
    with run_pebble(tmp_path / "pebble", server.http_port) as pebble:
        start_with_pebble(server, pebble)
        name, digest = place_artifact(tar_zst_from_dir(APPS_DIR / "pyapp"), server.incoming)
        with server.client() as client:
            started = time.monotonic()
            client.ok(deploy_message(name, digest, routes=ROUTES))
            assert time.monotonic() - started < 60  # deploy never waits for ACME
            certs = wait_issued(client, PUBLIC)
        assert certs["admin.tako-acme.localhost"]["state"] == "self_signed"
        assert all(certs[h]["not_after"] for h in PUBLIC)

        root = pebble.root_pem().decode()
        serials = {}
        for host in PUBLIC:
            serials[host], response = https_get(server.https_port, host, root, PATHS[host])
            assert response.startswith(b"HTTP/1.1 200"), response[:200]
        account_key = (server.data_dir / "acme").rglob("*.key")
        key_stamps = {p: p.stat().st_mtime_ns for p in account_key}
        assert key_stamps, "the ACME account key is kept under acme/"

        server.restart()
        with server.client() as client:
            certs = wait_issued(client, PUBLIC, timeout=30)
        for host in PUBLIC:
            serial, _ = https_get(server.https_port, host, root)
            assert serial == serials[host], "a restart must reuse the issued certificate"
        assert {p: p.stat().st_mtime_ns for p in key_stamps} == key_stamps


def test_an_unreachable_challenge_leaves_the_fallback_and_the_reason_in_status(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    from tests.integration.conftest import free_port

    server = server_factory(edge=True)
    # Pebble validates on a port where nothing listens: validation must fail.
    with run_pebble(tmp_path / "pebble", free_port()) as pebble:
        start_with_pebble(server, pebble)
        name, digest = place_artifact(tar_zst_from_dir(APPS_DIR / "pyapp"), server.incoming)
        with server.client() as client:
            client.ok(deploy_message(name, digest, routes=["down.tako-acme.net"]))
            deadline = time.monotonic() + 90
            state: dict[str, Any] = {}
            while time.monotonic() < deadline:
                state = certificates(client)["down.tako-acme.net"]
                if state["state"] == "failed":
                    break
                time.sleep(0.2)
        assert state["state"] == "failed", state
        assert state["reason"] and "connection" in state["reason"].lower(), state
        # The self-signed fallback still completes the handshake and the app answers.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", server.https_port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="down.tako-acme.net") as tls:
                tls.sendall(
                    b"GET / HTTP/1.1\r\nHost: down.tako-acme.net\r\nConnection: close\r\n\r\n"
                )
                assert tls.recv(100).startswith(b"HTTP/1.1 200")
