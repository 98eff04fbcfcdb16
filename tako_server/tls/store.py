"""CertStore: the certificates on disk and one ``ssl.SSLContext`` per certificate.

Layout: ``certs/{dir}/fullchain.pem`` + ``privkey.pem`` (key 0600, directories 0700);
``dir`` is the domain, wildcards as ``_wildcard.{parent}`` (see :mod:`.certinfo`).

Rules:

- The store loads every certificate directory when it is built, and :meth:`refresh`
  re-reads only directories whose files changed (mtime, size or inode), so a new or
  renewed certificate is served without a restart. Edge worker processes build their
  own store over the same directory and call :meth:`refresh` when told to.
- A directory that fails to load (half-written, key mismatch) keeps its previous
  context and is retried on the next refresh.
- Files are written atomically (temporary file + rename) with their final modes.
- :meth:`select` never fails once ``default`` exists: exact name, wildcard, then the
  self-signed ``default`` (``certs/default/``), which also serves clients without SNI.
  Building a store never generates keys: the main process calls :meth:`ensure_default`
  once; edge workers only read.
- :meth:`server_context` is the listener's context: its ``sni_callback`` swaps the
  connection to the selected context, so one listener serves every certificate.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .certinfo import (
    DEFAULT_DOMAIN,
    CertInfo,
    dir_name_for,
    domain_for_dir,
    parse_cert_info,
    select_name,
    validate_domain,
)
from .errors import TlsError
from .policy import is_due
from .selfsigned import make_self_signed

log = logging.getLogger(__name__)

FULLCHAIN = "fullchain.pem"
PRIVKEY = "privkey.pem"
ALPN_PROTOCOLS = ["http/1.1"]

Signature = tuple[tuple[int, int, int], tuple[int, int, int]]


@dataclass(frozen=True)
class _Entry:
    info: CertInfo
    context: ssl.SSLContext
    signature: Signature


def new_server_context() -> ssl.SSLContext:
    """A server-side context with Tako's TLS policy: TLS 1.2+, ALPN ``http/1.1``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(ALPN_PROTOCOLS)
    return ctx


def _file_signature(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class CertStore:
    """Certificates under ``certs_dir``, loaded as SSL contexts and selected by SNI."""

    def __init__(self, certs_dir: Path) -> None:
        self.certs_dir = Path(certs_dir)
        self.certs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._entries: dict[str, _Entry] = {}
        self._broken: dict[str, Signature] = {}
        self._names: frozenset[str] = frozenset()
        self._lock = threading.RLock()  # the ACME thread writes while the loop refreshes
        self.refresh()

    def ensure_default(self, now: datetime | None = None) -> CertInfo:
        """Create (or renew) the self-signed ``default`` certificate; the main process
        calls this once before any listener starts, so workers never generate keys."""
        return ensure_self_signed(self, DEFAULT_DOMAIN, now)

    def __repr__(self) -> str:
        return f"CertStore({str(self.certs_dir)!r}, domains={sorted(self._entries)})"

    def domains(self) -> list[str]:
        """Every loaded domain (including ``default``), sorted."""
        return sorted(self._entries)

    def info(self, domain: str) -> CertInfo | None:
        """Facts about ``domain``'s loaded certificate, or None if there is none."""
        entry = self._entries.get(validate_domain(domain))
        return entry.info if entry is not None else None

    def path_for(self, domain: str) -> Path:
        """The directory that holds (or will hold) ``domain``'s files."""
        return self.certs_dir / dir_name_for(domain)

    def refresh(self) -> set[str]:
        """Re-read changed certificate directories; return the domains added/changed/removed."""
        with self._lock:
            return self._refresh_locked()

    def _refresh_locked(self) -> set[str]:
        seen: set[str] = set()
        changed: set[str] = set()
        for child in sorted(self.certs_dir.iterdir()):
            domain = domain_for_dir(child.name)
            if domain is None or not child.is_dir():
                continue
            try:
                sig = (_file_signature(child / FULLCHAIN), _file_signature(child / PRIVKEY))
            except FileNotFoundError:
                continue
            seen.add(domain)
            entry = self._entries.get(domain)
            if (entry is not None and entry.signature == sig) or self._broken.get(domain) == sig:
                continue
            if self._load(domain, child, sig):
                changed.add(domain)
        for gone in set(self._entries) - seen:
            del self._entries[gone]
            changed.add(gone)
        self._broken = {d: s for d, s in self._broken.items() if d in seen}
        self._names = frozenset(self._entries)
        return changed

    def _load(self, domain: str, directory: Path, sig: Signature) -> bool:
        try:
            fullchain = (directory / FULLCHAIN).read_bytes()
            info = parse_cert_info(domain, fullchain)
            ctx = new_server_context()
            ctx.load_cert_chain(directory / FULLCHAIN, directory / PRIVKEY)
        except (OSError, ssl.SSLError, TlsError) as exc:
            log.warning("certificate %s not loaded (kept previous if any): %s", domain, exc)
            self._broken[domain] = sig
            return False
        self._broken.pop(domain, None)
        self._entries[domain] = _Entry(info=info, context=ctx, signature=sig)
        return True

    def put(self, domain: str, fullchain_pem: bytes, key_pem: bytes) -> CertInfo:
        """Write ``domain``'s certificate and key atomically, load them, return the info."""
        name = validate_domain(domain)
        serial = parse_cert_info(name, fullchain_pem).serial
        with self._lock:
            return self._put_locked(name, fullchain_pem, key_pem, serial)

    def _put_locked(self, name: str, fullchain_pem: bytes, key_pem: bytes, serial: int) -> CertInfo:
        directory = self.path_for(name)
        directory.mkdir(mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
        _write_atomic(directory / PRIVKEY, key_pem, 0o600)
        _write_atomic(directory / FULLCHAIN, fullchain_pem, 0o644)
        self.refresh()
        entry = self._entries.get(name)
        if entry is None or entry.info.serial != serial:
            raise TlsError(f"certificate for {name} was written but does not load")
        return entry.info

    def select(self, server_name: str | None) -> ssl.SSLContext:
        """The context for SNI ``server_name``: exact, wildcard, else ``default``."""
        name = select_name(self._names, server_name)
        entry = self._entries.get(name) if name is not None else None
        if entry is None:
            entry = self._entries[DEFAULT_DOMAIN]
        return entry.context

    def server_context(self) -> ssl.SSLContext:
        """The listener context: serves ``default`` and switches certificate by SNI."""
        ctx = new_server_context()
        default_dir = self.path_for(DEFAULT_DOMAIN)
        ctx.load_cert_chain(default_dir / FULLCHAIN, default_dir / PRIVKEY)
        ctx.sni_callback = self._on_sni
        return ctx

    def _on_sni(
        self, ssl_object: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: object
    ) -> None:
        ssl_object.context = self.select(server_name)
        return None


def ensure_self_signed(store: CertStore, host: str, now: datetime | None = None) -> CertInfo:
    """The stored certificate for ``host``; a new self-signed one if missing or due."""
    when = now or datetime.now(UTC)
    current = store.info(host)
    if current is not None and not is_due(current.not_after, when):
        return current
    cert_pem, key_pem = make_self_signed(host, when)
    return store.put(host, cert_pem, key_pem)
