"""The parts of the Cloudflare API tako-server uses: DNS TXT records and the Origin CA.

Rules:

- One :class:`CloudflareApi` per API token (the ``ssl.cloudflare`` credential), over one
  base URL (server setting ``[cloudflare] api_url``, default the real API, so tests point
  it at a local stand-in). The token goes in ``Authorization: Bearer``; it is never logged
  and never part of an error message.
- DNS: :meth:`find_zone` walks the host's suffixes (``a.b.example.com`` → ``b.example.com``
  → ``example.com``) with ``GET /zones?name=``; :meth:`create_txt` /
  :meth:`delete_record` add and remove the ``_acme-challenge`` TXT records of a DNS-01
  order. :class:`Dns01Records` is the cleanup list: records are deleted after validation,
  failed or not.
- Origin CA: :meth:`origin_certificate` posts a CSR to ``POST /certificates``
  (``request_type = origin-ecc``) and returns the signed PEM.
- Every failure (network, HTTP status, ``success: false``) is a :class:`CloudflareError`
  naming the operation and the API's own reason (``code: message``), which is what
  ``tako servers status`` shows for the host. Calls are blocking (``requests``); callers
  run them off the event loop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from .errors import TlsError

log = logging.getLogger(__name__)

CLOUDFLARE_API = "https://api.cloudflare.com/client/v4"
#: Origin CA validity asked for, in days (Cloudflare accepts 7, 30, 90, 365, 730, 1095,
#: 5475); one year, so an Origin CA certificate is renewed like an ACME one
ORIGIN_CA_VALIDITY_DAYS = 365
TXT_TTL = 60  # seconds; Cloudflare's minimum ("1" means automatic)


class CloudflareError(TlsError):
    """A Cloudflare API call failed; ``reason`` is the API's own words."""

    code = "cloudflare"

    def __init__(self, operation: str, reason: str) -> None:
        self.operation = operation
        self.reason = reason
        super().__init__(
            f"Cloudflare API: {operation} failed: {reason}",
            hint="check the ssl.cloudflare credential (tako credentials set ssl.cloudflare)",
        )


class CloudflareApi:
    """Blocking client of the DNS records and Origin CA endpoints for one API token."""

    def __init__(
        self, token: str, base_url: str = CLOUDFLARE_API, *, ca_bundle: Path | None = None,
        timeout: float = 30.0,
    ) -> None:  # fmt: skip
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._verify: str | bool = str(ca_bundle) if ca_bundle is not None else True
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {token}"
        self.calls = 0  # requests sent (tests check that nothing was asked)

    def __repr__(self) -> str:  # never the token
        return f"CloudflareApi({self.base_url!r}, calls={self.calls})"

    def close(self) -> None:
        self._session.close()

    def find_zone(self, host: str) -> tuple[str, str]:
        """``(zone id, zone name)`` of the zone that holds ``host`` (``*.`` ignored)."""
        labels = host.removeprefix("*.").rstrip(".").split(".")
        for i in range(len(labels) - 1):
            name = ".".join(labels[i:])
            result = self._call("GET", "/zones", f"find the zone of {host}", params={"name": name})
            if isinstance(result, list) and result:
                return str(result[0]["id"]), str(result[0]["name"])
        raise CloudflareError(
            f"find the zone of {host}", "no zone of this account holds it (is the token's "
            "Zone:DNS:Edit permission for that zone?)"
        )  # fmt: skip

    def create_txt(self, zone_id: str, name: str, content: str) -> str:
        """Add a TXT record ``name`` = ``content``; returns the record id."""
        body = {"type": "TXT", "name": name.rstrip("."), "content": content, "ttl": TXT_TTL}
        result = self._call(
            "POST", f"/zones/{zone_id}/dns_records", f"create TXT record {name}", json=body
        )
        return str(result["id"])

    def delete_record(self, zone_id: str, record_id: str) -> None:
        self._call(
            "DELETE", f"/zones/{zone_id}/dns_records/{record_id}", f"delete DNS record {record_id}"
        )

    def origin_certificate(self, csr_pem: bytes, hostnames: list[str]) -> bytes:
        """A certificate for ``hostnames`` signed by the Cloudflare Origin CA (PEM)."""
        body = {
            "csr": csr_pem.decode("ascii"),
            "hostnames": hostnames,
            "request_type": "origin-ecc",
            "requested_validity": ORIGIN_CA_VALIDITY_DAYS,
        }
        what = f"Origin CA certificate for {', '.join(hostnames)}"
        result = self._call("POST", "/certificates", what, json=body)
        cert = result.get("certificate") if isinstance(result, dict) else None
        if not isinstance(cert, str) or "BEGIN CERTIFICATE" not in cert:
            raise CloudflareError(what, "the answer holds no certificate")
        return cert.encode("ascii")

    def _call(self, method: str, path: str, operation: str, **kwargs: Any) -> Any:
        self.calls += 1
        try:
            resp = self._session.request(
                method, self.base_url + path, timeout=self.timeout, verify=self._verify, **kwargs
            )
        except requests.RequestException as exc:
            raise CloudflareError(operation, f"cannot reach {self.base_url}: {exc}") from exc
        try:
            data = resp.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise CloudflareError(operation, f"HTTP {resp.status_code}, not a JSON answer")
        if resp.status_code >= 400 or not data.get("success", False):
            raise CloudflareError(operation, _reason(data, resp.status_code))
        return data.get("result")


def _reason(data: dict[str, Any], status: int) -> str:
    errors = data.get("errors")
    if isinstance(errors, list) and errors:
        parts = [
            f"{e.get('code')}: {e.get('message')}" if isinstance(e, dict) else str(e)
            for e in errors
        ]
        return f"HTTP {status}: " + "; ".join(parts)
    return f"HTTP {status}"


@dataclass
class Dns01Records:
    """The TXT records one DNS-01 order created; :meth:`cleanup` deletes them all."""

    api: CloudflareApi
    created: list[tuple[str, str]] = field(default_factory=list)  # (zone id, record id)

    def add(self, host: str, name: str, content: str) -> None:
        zone_id, _ = self.api.find_zone(host)
        self.created.append((zone_id, self.api.create_txt(zone_id, name, content)))

    def cleanup(self) -> None:
        """Delete every record made (a failed delete is logged; the others still go)."""
        for zone_id, record_id in self.created:
            try:
                self.api.delete_record(zone_id, record_id)
            except CloudflareError as exc:
                log.warning("DNS-01 cleanup: %s", exc)
        self.created = []
