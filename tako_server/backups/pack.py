"""An app's data directory into an encrypted archive, and an archive back into a directory.

Rules:

- the archive holds ``data/`` = ``apps/{app}/{env}/data`` (``TAKO_DATA_DIR`` in
  ``data/app`` and each ``local`` storage in ``data/storages/{binding}``) as a tar stream,
  zstd-compressed, then encrypted (:mod:`tako_common.backup_archive`); nothing is written
  in clear outside the data dir;
- an SQLite database (a file that starts with ``SQLite format 3``) is copied with
  SQLite's online backup API while the app keeps running, so the archive holds a
  consistent database; its ``-wal``, ``-shm`` and ``-journal`` companions are left out;
- what a restore would refuse is left out with a warning (sockets, FIFOs, devices,
  symlinks that point outside the data dir), so every archive restores;
- unpacking refuses a backup of another app or environment (read from the archive's
  authenticated header) and one sealed with a key this server does not have; extraction
  follows :func:`tako_common.archive.extract_tar_stream` (no path leaves the staging dir).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import posixpath
import shutil
import sqlite3
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO, cast

import zstandard

from tako_common.archive import extract_tar_stream
from tako_common.backup_archive import (
    BackupHeader,
    DecryptingReader,
    EncryptingWriter,
    read_header,
)
from tako_common.errors import TakoError
from tako_common.protocol import BackupKey

SQLITE_MAGIC = b"SQLite format 3\x00"
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")
DATA = "data"


class PackError(TakoError):
    """The data could not be archived (an unreadable file or database)."""

    code = "backup_failed"


class RestoreRefused(TakoError):
    """The backup belongs to another app or environment, or needs a key we do not have."""

    code = "restore_refused"


@dataclass
class Packed:
    """An archive written to disk: its size and SHA-256 (of the encrypted bytes)."""

    path: Path
    size: int
    sha256: str
    files: int
    warnings: list[str] = field(default_factory=list)


class _HashingSink:
    """Writes to ``fh`` and hashes what it writes."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.fh.write(data)
        self.digest.update(data)
        self.size += len(data)
        return len(data)


def is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def _sqlite_copy(source: Path, dest: Path) -> None:
    """A consistent copy of a live database (SQLite's online backup API)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(source, timeout=30)
    try:
        out = sqlite3.connect(dest)
        try:
            src.backup(out)
        finally:
            out.close()
    finally:
        src.close()


def _entries(root: Path) -> Iterator[Path]:
    """Every path under ``root`` (sorted, directories before their contents)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        for name in dirnames:
            yield base / name
        for name in sorted(filenames):
            yield base / name


def _skip_reason(path: Path, root: Path, info: os.stat_result) -> str | None:
    if stat.S_ISLNK(info.st_mode):
        target = os.readlink(path)
        rel = path.relative_to(root).parent.as_posix()
        resolved = posixpath.normpath(posixpath.join(rel, target))
        if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
            return f"symlink points outside the data dir ({target})"
        return None
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        return "not a regular file, directory or symlink"
    return None


def _add_tree(tar: tarfile.TarFile, root: Path, scratch: Path, warnings: list[str]) -> int:
    count = 0
    tar.add(root, DATA, recursive=False)
    entries = list(_entries(root))
    databases = {p for p in entries if p.is_file() and not p.is_symlink() and is_sqlite(p)}
    skip = {p.with_name(p.name + s) for p in databases for s in SQLITE_COMPANIONS}
    for path in entries:
        arcname = f"{DATA}/{path.relative_to(root).as_posix()}"
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue  # removed while we walked
        reason = _skip_reason(path, root, info)
        if reason is not None:
            warnings.append(f"left out {arcname}: {reason}")
            continue
        if path in skip:
            continue
        if path in databases:
            copy = scratch / f"db-{count}.sqlite3"
            try:
                _sqlite_copy(path, copy)
            except sqlite3.Error as exc:
                raise PackError(f"cannot copy the SQLite database {arcname}: {exc}") from exc
            tar.add(copy, arcname, recursive=False)
        else:
            tar.add(path, arcname, recursive=False)
        count += 1
    return count


def pack(data_root: Path, out: Path, header: BackupHeader, key: BackupKey) -> Packed:
    """Write the encrypted archive of ``data_root`` to ``out`` (removed on failure)."""
    scratch = out.with_name(out.name + ".sqlite")
    scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
    warnings: list[str] = []
    data_root.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            sink = _HashingSink(fh)
            writer = EncryptingWriter(sink, base64.b64decode(key.key), header)
            compressor = zstandard.ZstdCompressor(level=10).stream_writer(
                cast("IO[bytes]", writer), closefd=False
            )
            with tarfile.open(fileobj=compressor, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                files = _add_tree(tar, data_root, scratch, warnings)
            compressor.close()  # type: ignore[no-untyped-call]
            writer.close()
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            out.unlink()
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return Packed(out, sink.size, sink.digest.hexdigest(), files, warnings)


def unpack(
    archive: Path, staging: Path, app: str, env: str, keys: list[BackupKey]
) -> tuple[BackupHeader, Path, int]:
    """Check and extract ``archive`` into the new dir ``staging``: ``(header, data dir, n)``."""
    with archive.open("rb") as fh:
        header, raw = read_header(fh)
        if (header.app, header.env) != (app, env):
            raise RestoreRefused(
                f"backup {header.id} belongs to {header.app}/{header.env}, not {app}/{env}: "
                "a restore only takes backups of the same app and environment"
            )
        key = next((k for k in keys if k.id == header.key_id), None)
        if key is None:
            raise RestoreRefused(
                f"backup {header.id} was encrypted with backup key {header.key_id}, which "
                f"this server was not given (it has: {', '.join(k.id for k in keys)})",
                hint="deploy from a checkout whose .tako/secrets.json holds that key",
            )
        reader = DecryptingReader(fh, base64.b64decode(key.key), raw)
        with zstandard.ZstdDecompressor().stream_reader(reader) as plain:  # type: ignore[arg-type]
            count = extract_tar_stream(plain, staging, f"backup {header.id}")
    data = staging / DATA
    if not data.is_dir() or data.is_symlink():
        shutil.rmtree(staging, ignore_errors=True)
        raise RestoreRefused(f"backup {header.id} holds no data/ directory")
    return header, data, count
