"""A local stand-in for the parts of the Cloudflare API tako-server uses (tests only).

Rules:

- Plain HTTP on 127.0.0.1, base path ``/client/v4`` (what ``[cloudflare] api_url`` points
  at). Every call needs ``Authorization: Bearer <token>``; another token gets the API's
  own 403 shape (``success: false``, ``errors: [{code, message}]``).
- DNS: ``GET /zones?name=`` answers the configured zones; ``POST /zones/{id}/dns_records``
  with a TXT record writes it into pebble-challtestsrv (``/set-txt``), so Pebble's DNS-01
  validation reads a real DNS answer; ``DELETE`` clears it (``/clear-txt``). ``records``
  holds the live records (cleanup is checked there); ``dns_error`` makes record creation
  fail like the API does.
- Origin CA: ``POST /certificates`` signs the CSR with a throw-away local CA
  (:attr:`ca_pem`) for the requested hostnames and validity.
"""

from __future__ import annotations

import json
import threading
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PREFIX = "/client/v4"


class LocalCa:
    """A throw-away CA that signs CSRs (the Origin CA's stand-in)."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test Origin CA")])
        now = datetime.now(UTC)
        self.name = name
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def sign(self, csr_pem: bytes, hostnames: list[str], days: int) -> bytes:
        csr = x509.load_pem_x509_csr(csr_pem)
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self.name)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=days))
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(h) for h in hostnames]), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)


class CloudflareStandIn:
    """The stand-in server: ``base_url`` is what tako-server's setting points at."""

    def __init__(self, token: str, zones: list[str], dns_management_url: str) -> None:
        self.token = token
        self.zones = {f"zone-{i}": name for i, name in enumerate(zones)}
        self.dns_management_url = dns_management_url
        self.records: dict[str, tuple[str, str]] = {}  # id -> (name, content)
        self.created: list[str] = []  # names of every TXT record ever created
        self.certificates: list[list[str]] = []  # hostnames of every Origin CA request
        self.dns_error = False
        self.ca = LocalCa()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}{PREFIX}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> CloudflareStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _challtestsrv(self, action: str, body: dict[str, str]) -> None:
        req = urllib.request.Request(
            f"{self.dns_management_url}/{action}", data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            resp.read()

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Any:
        """One API call: ``(status, payload)``."""
        if path == "/zones" and method == "GET":
            wanted = (query.get("name") or [""])[0]
            return 200, [{"id": z, "name": n} for z, n in self.zones.items() if n == wanted]
        parts = path.strip("/").split("/")
        if parts[:1] == ["zones"] and len(parts) >= 3 and parts[2] == "dns_records":
            if parts[1] not in self.zones:
                return 404, _error(
                    7003,
                    "Could not route to /zones/..., perhaps your object identifier is invalid?",
                )
            if method == "POST":
                return self._create(body)
            if method == "DELETE" and len(parts) == 4:
                return self._delete(parts[3])
        if path == "/certificates" and method == "POST":
            days = int(body["requested_validity"])
            self.certificates.append(list(body["hostnames"]))
            cert = self.ca.sign(body["csr"].encode(), list(body["hostnames"]), days)
            return 200, {"id": uuid.uuid4().hex, "certificate": cert.decode()}
        return 404, _error(7000, "No route for that URI")

    def _create(self, body: dict[str, Any]) -> Any:
        if self.dns_error:
            return 400, _error(81057, "The record already exists.")
        if body.get("type") != "TXT":
            return 400, _error(9004, "only TXT in this stand-in")
        record_id = uuid.uuid4().hex
        name, content = str(body["name"]), str(body["content"])
        self._challtestsrv("set-txt", {"host": name + ".", "value": content})
        with self._lock:
            self.records[record_id] = (name, content)
            self.created.append(name)
        return 200, {"id": record_id, "type": "TXT", "name": name, "content": content}

    def _delete(self, record_id: str) -> Any:
        with self._lock:
            found = self.records.pop(record_id, None)
        if found is None:
            return 404, _error(81044, "Record does not exist.")
        self._challtestsrv("clear-txt", {"host": found[0] + "."})
        return 200, {"id": record_id}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if self.headers.get("Authorization") != f"Bearer {standin.token}":
                    status, payload = 403, _error(10000, "Authentication error")
                elif not url.path.startswith(PREFIX):
                    status, payload = 404, _error(7000, "No route for that URI")
                else:
                    body = json.loads(raw) if raw else None
                    path = url.path[len(PREFIX) :]
                    status, result = standin.handle(self.command, path, parse_qs(url.query), body)
                    payload = result if status >= 400 else _ok(result)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _serve  # noqa: N815 (http.server API)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                return

        return Handler


def _ok(result: Any) -> dict[str, Any]:
    return {"success": True, "errors": [], "messages": [], "result": result}


def _error(code: int, message: str) -> dict[str, Any]:
    return {"success": False, "errors": [{"code": code, "message": message}], "result": None}
