"""The HTTPS listener's TLS context, built from :class:`tako_server.tls.CertStore`.

Rule: every process (main with ``workers=0``, or each worker) builds its own store over
the same ``certs_dir``; :meth:`EdgeTls.refresh` re-reads changed certificates when the
main process says "certs changed". The store's SNI callback picks the certificate per
connection (exact, wildcard, then the self-signed default so any handshake completes).
"""

from __future__ import annotations

import ssl
from pathlib import Path

from tako_server.tls import CertStore


class EdgeTls:
    """A listener context plus the store behind its SNI callback."""

    def __init__(self, certs_dir: Path, *, ensure_default: bool = False) -> None:
        self.store = CertStore(Path(certs_dir))
        if ensure_default:  # the main process only; workers never generate keys
            self.store.ensure_default()
        self.context: ssl.SSLContext = self.store.server_context()

    def __repr__(self) -> str:
        return f"EdgeTls({self.store!r})"

    def refresh(self) -> set[str]:
        """Load new/renewed certificates; return the domains that changed."""
        return self.store.refresh()
