"""The encrypted backup format: a round trip, and every way of tampering with it fails."""

from __future__ import annotations

import io
import os

import pytest

from tako_common import backup_archive
from tako_common.backup_archive import (
    BackupCryptoError,
    BackupHeader,
    DecryptingReader,
    EncryptingWriter,
    read_header,
)

KEY = bytes(range(32))
HEADER = BackupHeader(
    app="web",
    env="production",
    server="la",
    id="20260102T030405Z-a1b2c3",
    key_id="k1",
    created_at="2026-01-02T03:04:05Z",
)


def seal(plain: bytes, key: bytes = KEY, header: BackupHeader = HEADER) -> bytes:
    sink = io.BytesIO()
    writer = EncryptingWriter(sink, key, header)
    for start in range(0, len(plain), 70_000):  # writes of any size
        writer.write(plain[start : start + 70_000])
    writer.close()
    assert writer.written == len(sink.getvalue())
    return sink.getvalue()


def open_sealed(blob: bytes, key: bytes = KEY) -> tuple[BackupHeader, bytes]:
    source = io.BytesIO(blob)
    header, raw = read_header(source)
    return header, DecryptingReader(source, key, raw).read()


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backup_archive, "CHUNK_SIZE", 4096)  # many chunks in a small test


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 3 * 4096, 100_000])
def test_round_trip_of_any_size(size: int) -> None:
    plain = os.urandom(size)
    header, back = open_sealed(seal(plain))
    assert back == plain and header == HEADER


def test_the_bucket_sees_no_plaintext() -> None:
    plain = b"secret row: alice@example.com " * 500
    blob = seal(plain)
    assert b"alice@example.com" not in blob
    assert blob.startswith(backup_archive.MAGIC)


def test_the_header_is_readable_without_the_key() -> None:
    header, _ = read_header(io.BytesIO(seal(b"x")))
    assert (header.app, header.env, header.key_id) == ("web", "production", "k1")


def _chunks(blob: bytes) -> tuple[bytes, list[bytes]]:
    """Split a sealed blob into its prefix (magic + header) and its length-prefixed chunks."""
    length = int.from_bytes(blob[8:12], "big")
    prefix, rest = blob[: 12 + length], blob[12 + length :]
    chunks = []
    while rest:
        size = int.from_bytes(rest[:4], "big")
        chunks.append(rest[: 4 + size])
        rest = rest[4 + size :]
    return prefix, chunks


def _changed_header(blob: bytes) -> bytes:
    return blob.replace(b'"app":"web"', b'"app":"wex"', 1)


def _swapped(blob: bytes) -> bytes:
    prefix, chunks = _chunks(blob)
    return prefix + chunks[1] + chunks[0] + b"".join(chunks[2:])


def _dropped_last(blob: bytes) -> bytes:
    prefix, chunks = _chunks(blob)
    return prefix + b"".join(chunks[:-1])


def _dropped_middle(blob: bytes) -> bytes:
    prefix, chunks = _chunks(blob)
    return prefix + chunks[0] + b"".join(chunks[2:])


def _flipped(blob: bytes) -> bytes:
    return blob[:-5] + bytes([blob[-5] ^ 1]) + blob[-4:]


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (_changed_header, "does not decrypt"),
        (_swapped, "does not decrypt"),
        (_dropped_last, "truncated"),
        (_dropped_middle, "does not decrypt"),
        (_flipped, "does not decrypt"),
        (lambda b: b[:-3], "truncated"),
        (lambda b: b + b"\x00", "bytes after its final chunk"),
        (lambda b: b"NOTTAKO!" + b[8:], "bad magic"),
    ],
)
def test_tampering_is_detected(tamper: object, message: str) -> None:
    blob = seal(os.urandom(3 * 4096 + 10))
    with pytest.raises(BackupCryptoError, match=message):
        open_sealed(tamper(blob))  # type: ignore[operator]


def test_a_wrong_key_does_not_decrypt() -> None:
    with pytest.raises(BackupCryptoError, match="wrong key"):
        open_sealed(seal(b"data"), key=bytes(32))
