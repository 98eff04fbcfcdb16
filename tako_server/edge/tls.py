"""The HTTPS listener's TLS context, built from :class:`tako_server.tls.CertStore`.

Rules:

- Every process (main with ``workers=0``, or each worker) builds its own store over the
  same ``certs_dir``; :meth:`EdgeTls.refresh` re-reads changed certificates when the main
  process says "certs changed". The store's SNI callback picks the certificate per
  connection (exact, wildcard, then the self-signed default so any handshake completes).
- The listener's connections use :class:`DirectSSLObject`: uvloop's TLS protocol binds
  ``read``, ``write`` and ``pending`` of the connection's SSL object once and calls them
  for every record; on :class:`ssl.SSLObject` each is a Python method that only forwards
  to the C object, so the C methods are bound instead (same arguments and results, one
  Python frame less per call: measured in bench/README.md).
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from tako_server.tls import CertStore


class DirectSSLObject(ssl.SSLObject):
    """An :class:`ssl.SSLObject` whose ``read``/``write``/``pending`` are the C methods."""

    @classmethod
    def _create(cls, *args: Any, **kwargs: Any) -> DirectSSLObject:
        obj: DirectSSLObject = super()._create(*args, **kwargs)  # type: ignore[misc]
        inner = getattr(obj, "_sslobj", None)  # CPython's _ssl._SSLSocket
        if inner is not None:
            # no cycle: obj -> bound method -> inner, and inner holds obj only weakly
            vars(obj).update(read=inner.read, write=inner.write, pending=inner.pending)
        return obj


class EdgeTls:
    """A listener context plus the store behind its SNI callback."""

    def __init__(self, certs_dir: Path, *, ensure_default: bool = False) -> None:
        self.store = CertStore(Path(certs_dir))
        if ensure_default:  # the main process only; workers never generate keys
            self.store.ensure_default()
        self.context: ssl.SSLContext = self.store.server_context()
        self.context.sslobject_class = DirectSSLObject

    def __repr__(self) -> str:
        return f"EdgeTls({self.store!r})"

    def refresh(self) -> set[str]:
        """Load new/renewed certificates; return the domains that changed."""
        return self.store.refresh()
