"""`tako servers status`: certificates that need attention, with the reason (a table)."""

from __future__ import annotations

import pytest

from tako_client.commands.servers import certificate_lines
from tako_common.protocol.responses import AppStatus, CertStatus

RENEWAL = (
    "renewal failed (old certificate kept): certificate for *.example.com not issued: "
    "Cloudflare API: create TXT record _acme-challenge.example.com failed: HTTP 403: "
    "10000: Authentication error"
)
CASES = [
    ("issued, fine", CertStatus(host="a.example.com", state="issued"), None),
    ("pending", CertStatus(host="a.example.com", state="pending"), None),
    ("private host", CertStatus(host="a.localhost", state="self_signed"), None),
    ("ACME off by choice", CertStatus(host="a.example.com", state="self_signed",
                                      reason="ACME is disabled on this server"), None),
    ("renewal failing", CertStatus(host="*.example.com", state="issued", reason=RENEWAL,
                                   retry_at="2026-01-01T10:02:00+00:00"),
     f"web/production: certificate *.example.com issued: {RENEWAL} "
     "(retry at 2026-01-01T10:02:00+00:00)"),
    ("failed", CertStatus(host="b.example.com", state="failed", reason="no zone"),
     "web/production: certificate b.example.com failed: no zone"),
    ("missing credential", CertStatus(host="c.example.com", state="self_signed",
                                      reason='ssl = "cloudflare" needs the ssl.cloudflare'),
     'web/production: certificate c.example.com self_signed: ssl = "cloudflare" needs the '
     "ssl.cloudflare"),
]  # fmt: skip


@pytest.mark.parametrize(("cert", "line"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_certificate_lines(cert: CertStatus, line: str | None) -> None:
    app = AppStatus(app="web", env="production", version="v1", state="running",
                    desired_instances=1, healthy_instances=1, certificates=[cert])  # fmt: skip
    assert certificate_lines(app) == ([line] if line else [])
