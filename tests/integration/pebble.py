"""Test helpers for a real ACME CA: Pebble + pebble-challtestsrv (Debian package ``pebble``).

Rules:

- Everything listens on 127.0.0.1 on free ports; nothing leaves loopback. The mock DNS
  (pebble-challtestsrv) answers every A query with 127.0.0.1 and no AAAA, so Pebble
  validates HTTP-01 against :class:`ChallengeResponder` on ``http_port``.
- Pebble's own HTTPS listener uses a throw-away self-signed certificate made here; its
  path is the ``ca_bundle`` the ACME client must trust.
- Processes are started with their handles kept and stopped by PID (terminate, then kill
  after a deadline); readiness is polled with a deadline, never a bare sleep.
- :class:`ChallengeResponder` is a tiny threaded HTTP server standing in for the edge's
  port-80 handler: it answers from a :class:`ChallengeStore` through the same
  ``challenge_response`` helper the edge calls, and counts the requests it got.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tako_server.tls import ChallengeStore, challenge_response

PEBBLE = shutil.which("pebble") or "/usr/bin/pebble"
CHALLTESTSRV = shutil.which("pebble-challtestsrv") or "/usr/bin/pebble-challtestsrv"


def pebble_available() -> bool:
    return Path(PEBBLE).is_file() and Path(CHALLTESTSRV).is_file()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_listener_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed cert for 127.0.0.1/localhost (Pebble's HTTPS listener)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble-test-listener")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(IPv4Address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "listener.pem", directory / "listener.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class ChallengeResponder:
    """HTTP server on 127.0.0.1:``port`` answering HTTP-01 from ``store``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.store = ChallengeStore()
        self.broken = False
        self.requests: list[str] = []
        responder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                responder.requests.append(self.path)
                answer = challenge_response(responder.store, self.path)
                if answer is None or responder.broken:
                    answer = (404, b"not found\n")
                status, body = answer
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="challenge-responder", daemon=True
        )

    def __enter__(self) -> ChallengeResponder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@dataclass
class Pebble:
    """A running Pebble: where its directory is and what to trust."""

    directory_url: str
    ca_bundle: Path
    management_url: str
    #: pebble-challtestsrv's management API (``/set-txt``, ``/clear-txt``): DNS-01 records
    dns_management_url: str = ""
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def _get(self, path: str) -> bytes:
        ctx = ssl.create_default_context(cafile=str(self.ca_bundle))
        with urllib.request.urlopen(self.management_url + path, context=ctx, timeout=10) as r:
            return bytes(r.read())

    def root_pem(self) -> bytes:
        """Pebble's current root certificate (regenerated at every Pebble start)."""
        return self._get("/roots/0")

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())


def _wait_ready(pebble: Pebble, deadline_s: float = 20.0) -> None:
    ctx = ssl.create_default_context(cafile=str(pebble.ca_bundle))
    deadline = time.monotonic() + deadline_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        for proc in pebble.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited early:\n{pebble.log_text()}")
        try:
            with urllib.request.urlopen(pebble.directory_url, context=ctx, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.1)  # poll interval inside a deadline-bounded loop
    raise RuntimeError(f"pebble not ready in {deadline_s}s: {last}\n{pebble.log_text()}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextmanager
def run_pebble(workdir: Path, http_port: int) -> Iterator[Pebble]:
    """Start challtestsrv + Pebble validating HTTP-01 on ``http_port``; stop them after."""
    workdir.mkdir(parents=True, exist_ok=True)
    cert, key = write_listener_cert(workdir)
    acme_port, mgmt_port = free_port(), free_port()
    dns_port, dns_mgmt_port = free_port(socket.SOCK_DGRAM), free_port()
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{acme_port}",
            "managementListenAddress": f"127.0.0.1:{mgmt_port}",
            "certificate": str(cert),
            "privateKey": str(key),
            "httpPort": http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    config_path = workdir / "pebble-config.json"
    config_path.write_text(json.dumps(config))
    # no authorization reuse: every order is validated again (DNS-01 tests count records)
    env = {
        "PATH": "/usr/bin:/bin", "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0",
        "PEBBLE_AUTHZREUSE": "0",
    }  # fmt: skip
    pebble = Pebble(
        directory_url=f"https://127.0.0.1:{acme_port}/dir",
        ca_bundle=cert,
        management_url=f"https://127.0.0.1:{mgmt_port}",
        dns_management_url=f"http://127.0.0.1:{dns_mgmt_port}",
    )
    dns_cmd = [
        CHALLTESTSRV,
        "-dns01", f"127.0.0.1:{dns_port}",
        "-http01", "", "-https01", "", "-tlsalpn01", "",
        "-management", f"127.0.0.1:{dns_mgmt_port}",
        "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
    ]  # fmt: skip
    pebble_cmd = [PEBBLE, "-config", str(config_path), "-dnsserver", f"127.0.0.1:{dns_port}"]
    try:
        for name, cmd in (("challtestsrv", dns_cmd), ("pebble", pebble_cmd)):
            log_path = workdir / f"{name}.log"
            pebble.logs.append(log_path)
            with log_path.open("wb") as log_file:
                pebble.procs.append(
                    subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env)
                )
        _wait_ready(pebble)
        yield pebble
    finally:
        for proc in reversed(pebble.procs):
            _stop(proc)
