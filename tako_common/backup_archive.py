"""The encrypted backup format (``.tkb``): a clear header, then AES-256-GCM chunks.

Layout::

    b"TAKOBKP1" | u32 header length | header JSON | chunk* (the last one flagged final)
    chunk = u32 record length | nonce (12 random bytes) | ciphertext + 16-byte tag

Rules:

- the header says whose backup it is (``app``, ``env``, ``server``, ``id``), which key
  sealed it (``key_id``), when, and how the plaintext is packed (``tar`` + ``zstd``); it
  is readable without the key (a restore refuses another app's backup by reading it) but
  cannot be changed: every chunk's associated data is the header's SHA-256, the chunk's
  index (u64) and a final flag, so a changed header, a reordered, dropped or truncated
  chunk, or bytes after the final one all fail to decrypt (:class:`BackupCryptoError`);
- the key is 32 random bytes that never go into the bucket: the client keeps it
  encrypted in ``.tako/secrets.json`` and sends it to the server with each deploy;
- streaming both ways (:class:`EncryptingWriter` is a file object that zstd writes into;
  :class:`DecryptingReader` one that zstd reads from), so archives need no memory of
  their size.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
from dataclasses import asdict, dataclass
from typing import BinaryIO, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tako_common.errors import TakoError

MAGIC = b"TAKOBKP1"
FORMAT = 1
CHUNK_SIZE = 1024 * 1024
NONCE_BYTES = 12
TAG_BYTES = 16
MAX_HEADER = 64 * 1024
_U32 = struct.Struct(">I")


class BackupCryptoError(TakoError):
    """A backup is not a Tako backup, was changed, is truncated, or needs another key."""

    code = "backup_corrupt"


@dataclass(frozen=True)
class BackupHeader:
    """Who and what a backup is; stored in clear, authenticated with every chunk."""

    app: str
    env: str
    server: str
    id: str
    key_id: str
    created_at: str
    packing: str = "tar+zstd"
    format: int = FORMAT

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> BackupHeader:
        try:
            data = json.loads(raw)
            header = cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        except (ValueError, TypeError, KeyError) as exc:
            raise BackupCryptoError(f"backup header is unreadable: {exc}") from exc
        if header.format != FORMAT:
            raise BackupCryptoError(
                f"backup format {header.format} is not supported (this version reads {FORMAT})"
            )
        return header


def _aad(header_digest: bytes, index: int, final: bool) -> bytes:
    return header_digest + struct.pack(">QB", index, 1 if final else 0)


class Sink(Protocol):
    """Where sealed bytes go (a binary file, or anything with ``write``)."""

    def write(self, data: bytes, /) -> int: ...


class EncryptingWriter(io.RawIOBase):
    """A write-only file: bytes written are sealed in chunks onto ``sink``; ``close``
    writes the final chunk (``sink`` stays open)."""

    def __init__(self, sink: Sink, key: bytes, header: BackupHeader) -> None:
        super().__init__()
        self._sink = sink
        self._aead = AESGCM(key)
        raw = header.encode()
        self._digest = hashlib.sha256(raw).digest()
        self._buffer = bytearray()
        self._index = 0
        self.written = 0
        self._put(MAGIC + _U32.pack(len(raw)) + raw)

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._buffer += data
        while len(self._buffer) > CHUNK_SIZE:
            self._seal(bytes(self._buffer[:CHUNK_SIZE]), final=False)
            del self._buffer[:CHUNK_SIZE]
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._seal(bytes(self._buffer), final=True)
            self._buffer.clear()
        super().close()

    def _seal(self, plain: bytes, *, final: bool) -> None:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plain, _aad(self._digest, self._index, final))
        self._index += 1
        self._put(_U32.pack(len(nonce) + len(sealed)) + nonce + sealed)

    def _put(self, data: bytes) -> None:
        self._sink.write(data)
        self.written += len(data)


def read_header(source: BinaryIO) -> tuple[BackupHeader, bytes]:
    """Read the magic and header from ``source``: ``(header, its raw bytes)``."""
    magic = source.read(len(MAGIC))
    if magic != MAGIC:
        raise BackupCryptoError("not a Tako backup (bad magic bytes)")
    length = _read_u32(source, "header length")
    if length > MAX_HEADER:
        raise BackupCryptoError(f"backup header of {length} bytes is too large")
    raw = _read_exact(source, length, "header")
    return BackupHeader.decode(raw), raw


class DecryptingReader(io.RawIOBase):
    """A read-only file of the plaintext of a backup whose header was read from ``source``."""

    def __init__(self, source: BinaryIO, key: bytes, header_raw: bytes) -> None:
        super().__init__()
        self._source = source
        self._aead = AESGCM(key)
        self._digest = hashlib.sha256(header_raw).digest()
        self._index = 0
        self._pending = b""
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._pending and not self._done:
            self._pending = self._open_next()
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size

    def _open_next(self) -> bytes:
        length = _read_u32(self._source, "chunk length")
        if length < NONCE_BYTES + TAG_BYTES or length > CHUNK_SIZE + NONCE_BYTES + TAG_BYTES:
            raise BackupCryptoError(f"backup chunk {self._index} has an impossible length")
        record = _read_exact(self._source, length, f"chunk {self._index}")
        nonce, sealed = record[:NONCE_BYTES], record[NONCE_BYTES:]
        for final in (False, True):
            try:
                plain = self._aead.decrypt(nonce, sealed, _aad(self._digest, self._index, final))
            except InvalidTag:
                continue
            self._index += 1
            if final:
                self._done = True
                if self._source.read(1):
                    raise BackupCryptoError("backup has bytes after its final chunk")
            return plain
        raise BackupCryptoError(
            f"backup chunk {self._index} does not decrypt: wrong key, or the backup was changed"
        )


def _read_u32(source: BinaryIO, what: str) -> int:
    value: int = _U32.unpack(_read_exact(source, _U32.size, what))[0]
    return value


def _read_exact(source: BinaryIO, size: int, what: str) -> bytes:
    data = source.read(size)
    if len(data) != size:
        raise BackupCryptoError(f"backup is truncated (in its {what})")
    return data
